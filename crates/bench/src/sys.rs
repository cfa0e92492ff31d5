//! The few process-level system calls the standard library does not offer:
//! reaping a child with its resource usage (`wait4`, for the child's own
//! peak RSS), sending it a signal, and tying a child's life to ours.
//!
//! This is the only module with `unsafe`; each block is one libc call on
//! plain data, with its safety argument next to it.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

/// How a reaped child ended, and the most memory it ever had resident.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// Exit status, as `std` reports it.
    pub status: ExitStatus,
    /// `ru_maxrss` of that child alone, in bytes.
    pub max_rss: u64,
    /// User plus system CPU time the child used, in seconds.
    pub cpu_secs: f64,
}

/// Waits for child `pid` and returns its status and peak RSS.
///
/// `wait4` reports the usage of exactly this child, unlike
/// `getrusage(RUSAGE_CHILDREN)`, whose `ru_maxrss` is the maximum over
/// every child ever reaped and so could not tell a small put after a big
/// one. The caller must not wait for the same child through `std` later
/// (it would find it already reaped).
pub fn wait_with_rusage(pid: u32) -> io::Result<Reaped> {
    let pid = to_pid(pid)?;
    let mut status: libc::c_int = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the types
        // wait4 expects; it writes nothing else.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // Linux reports ru_maxrss in KiB.
    let max_rss = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_secs = tv(usage.ru_utime) + tv(usage.ru_stime);
    Ok(Reaped { status: ExitStatus::from_raw(status), max_rss, cpu_secs })
}

/// Clock ticks per second, the unit of CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf(2) takes an integer and reads no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // 100 is what Linux reports on every common configuration.
    if t > 0 { t as f64 } else { 100.0 }
}

/// Sends `SIGTERM` to `pid` (a process we started).
pub fn terminate(pid: u32) -> io::Result<()> {
    signal(pid, libc::SIGTERM)
}

/// Sends `SIGKILL` to `pid` (a process we started that ignored `SIGTERM`).
pub fn kill(pid: u32) -> io::Result<()> {
    signal(pid, libc::SIGKILL)
}

fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = to_pid(pid)?;
    // SAFETY: kill(2) takes plain integers; pid is positive, so it names one
    // process (never a group or "every process").
    if unsafe { libc::kill(pid, sig) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Makes the child receive `SIGTERM` if the thread that spawned it dies,
/// so an interrupted or crashing benchmark never leaves a node running.
/// Spawn from the main thread: the signal follows the spawning thread.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), which is async-signal-safe, with integer arguments.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
    }
}

fn to_pid(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    // Reaped by wait_with_rusage, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn wait4_reports_the_childs_own_peak_rss() {
        // The shell itself holds a 20 MB string (command substitution is
        // read into its memory), so its own peak RSS must show it.
        let child = Command::new("sh")
            .args(["-c", "x=$(head -c 20000000 /dev/zero | tr '\\0' a); test ${#x} -eq 20000000"])
            .spawn()
            .unwrap();
        let r = wait_with_rusage(child.id()).unwrap();
        assert!(r.status.success(), "{:?}", r.status);
        assert!(r.max_rss >= 20_000_000 && r.max_rss < 1 << 30, "{}", r.max_rss);
    }
}
