//! A small helper process that starts the CLI runs, so that the peak RSS
//! `wait4` reports for each run is the CLI's own.
//!
//! **Why a helper.** Linux carries a process's peak RSS across `exec`: when
//! a child execs, the high-water mark of the memory image it is leaving (a
//! copy of its parent's after `fork`, the parent's own after `vfork`) is
//! kept in `ru_maxrss`. A CLI started directly by this benchmark, which by
//! then holds hundreds of MB of test buffers, would report the benchmark's
//! size, not its own (we saw 76 MB for every CLI run, whatever it did).
//! The helper is started first thing, while this process is a few MB, and
//! stays that small; children it starts inherit at most its size, far
//! below anything the CLI reaches.
//!
//! Protocol: one JSON [`Request`] per line on the helper's stdin, one JSON
//! [`Response`] per line on its stdout; the helper exits at end of input.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::sys;

/// The first argument that makes this binary act as the helper.
pub const HELPER_ARG: &str = "__datamesh_bench_spawner";

/// A program to run to completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables to set.
    pub env: Vec<(OsString, OsString)>,
    /// Variables to remove.
    pub env_remove: Vec<OsString>,
}

/// How the run went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Set when the program could not be started or waited for.
    pub error: Option<String>,
    /// The raw wait status.
    pub status: i32,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Wall time from spawn to reap.
    pub secs: f64,
    /// Its own peak RSS, bytes.
    pub max_rss: u64,
    /// Its user + system CPU time, seconds.
    pub cpu_secs: f64,
}

impl Response {
    /// The exit status.
    pub fn status(&self) -> ExitStatus {
        ExitStatus::from_raw(self.status)
    }
}

/// The benchmark's handle on the helper.
pub struct Spawner {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Spawner {
    /// Starts the helper (this executable with [`HELPER_ARG`]). Call it
    /// before allocating anything large.
    pub fn start() -> Result<Spawner> {
        let exe = std::env::current_exe().context("cannot find this executable to start the spawner")?;
        let mut cmd = Command::new(exe);
        cmd.arg(HELPER_ARG).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        sys::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("cannot start the spawner helper")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("spawner has no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("spawner has no stdout"))?);
        Ok(Spawner { child, stdin: Some(stdin), stdout })
    }

    /// Runs `req` to completion in the helper.
    pub fn run(&mut self, req: &Request) -> Result<Response> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("spawner closed"))?;
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()).context("the spawner helper is gone")?;
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer)? == 0 {
            bail!("the spawner helper exited");
        }
        let resp: Response = serde_json::from_str(&answer).context("bad answer from the spawner helper")?;
        if let Some(e) = &resp.error {
            bail!("{e}");
        }
        Ok(resp)
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // End of input tells the helper to exit; give it a moment, then kill.
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper's main loop: serves requests until end of input.
pub fn serve() -> Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => run(&req).unwrap_or_else(|e| failed(format!("{e:#}"))),
            Err(e) => failed(format!("bad request: {e}")),
        };
        let mut s = serde_json::to_string(&resp)?;
        s.push('\n');
        out.write_all(s.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

fn failed(error: String) -> Response {
    Response {
        error: Some(error),
        status: 0,
        stdout: String::new(),
        stderr: String::new(),
        secs: 0.0,
        max_rss: 0,
        cpu_secs: 0.0,
    }
}

fn run(req: &Request) -> Result<Response> {
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for k in &req.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in &req.env {
        cmd.env(k, v);
    }
    sys::die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", req.program.display()))?;
    let pid = child.id();
    let mut err_pipe = child.stderr.take().ok_or_else(|| anyhow!("no stderr pipe"))?;
    // Drain stderr on a thread so a chatty child cannot block on a full pipe.
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    // Read to the end before reaping, and reap even if reading failed, so
    // no child is left behind.
    let read = match child.stdout.take() {
        Some(mut o) => o.read_to_string(&mut stdout).map(drop),
        None => Ok(()),
    };
    // Reaped here, not through `child`, to get this child's own rusage.
    let reaped = sys::wait_with_rusage(pid).context("waiting for the child")?;
    let secs = start.elapsed().as_secs_f64();
    let stderr = err_reader.join().unwrap_or_default();
    read.context("reading the child's output")?;
    Ok(Response {
        error: None,
        status: reaped.status.into_raw(),
        stdout,
        stderr,
        secs,
        max_rss: reaped.max_rss,
        cpu_secs: reaped.cpu_secs,
    })
}
