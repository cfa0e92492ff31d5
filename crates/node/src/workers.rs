//! Named, supervised background workers.
//!
//! Everything a node does on its own time (repair, audits, scrub, lease
//! sweeps, draining, upload expiry, heartbeat figures, and the gateway's
//! event watchers and multipart reaper) is a [`Worker`]: a name, a loop, and
//! a [`WorkerCtx`] through which it says what it is doing and learns that it
//! should stop. One [`Workers`] registry, owned by the node, starts them,
//! lists them (`datamesh status`, `GET /v1/status`), and stops them in the
//! reverse of the order they started, each finishing the step it is in.
//!
//! Why a supervisor: a worker is a long loop over data that peers and disks
//! control. A panic in one pass (a bug, a record nobody expected) must not
//! silently end repairs until the next restart: the registry restarts the
//! worker after a pause that grows with repeated panics, logs it as an
//! error and counts it in the listing.
//!
//! Why cooperative stop rather than `abort()`: a worker stopped between two
//! steps leaves nothing half-done for the next start to guess about, and a
//! shutdown can say which worker held it up. A worker that does not stop
//! within the grace period is aborted all the same.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// A long-running piece of background work.
#[async_trait::async_trait]
pub trait Worker: Send + Sync + 'static {
    /// A short, stable name (`repair`, `audit`, ...): shown in the status
    /// listing and in log lines.
    fn name(&self) -> &'static str;

    /// Runs until `ctx` says stop ([`WorkerCtx::stopped`]), or until the
    /// work is done for good. Called again after a panic, so it must not
    /// assume a fresh start means a fresh node.
    async fn run(&self, ctx: &WorkerCtx);
}

/// What a worker is doing, as the listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Inside its loop, doing work or waiting for its next step.
    Running,
    /// Paused after a panic; it starts again shortly.
    Restarting,
    /// Asked to stop, finishing its step.
    Stopping,
    /// Returned (its work is done, or it was stopped).
    Stopped,
}

/// One worker in the listing.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// The worker's name.
    pub name: &'static str,
    /// Its state.
    pub state: WorkerState,
    /// What it said it is doing, e.g. `idle: next pass in 30s`.
    pub doing: String,
    /// Seconds since it last said so.
    pub since_secs: u64,
    /// How many times it panicked and was restarted.
    pub restarts: u32,
    /// The last panic's message, if any.
    pub last_panic: Option<String>,
}

struct Status {
    state: WorkerState,
    doing: String,
    since: Instant,
    restarts: u32,
    last_panic: Option<String>,
}

/// A worker's handle on its own status and on the stop signal.
#[derive(Clone)]
pub struct WorkerCtx {
    name: &'static str,
    status: Arc<Mutex<Status>>,
    stop: CancellationToken,
}

impl WorkerCtx {
    /// Says what the worker is doing now (shown by `datamesh status`).
    pub fn set(&self, doing: impl Into<String>) {
        if let Ok(mut s) = self.status.lock() {
            s.doing = doing.into();
            s.since = Instant::now();
        }
    }

    /// Resolves once the worker should stop.
    ///
    /// # Cancel safety
    /// Cancel safe: use it in `select!` beside the worker's wait.
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    /// True once the worker should stop.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Waits `d`, saying `idle` meanwhile. Returns false if the worker was
    /// asked to stop first (the caller returns).
    pub async fn idle(&self, d: Duration) -> bool {
        self.set(format!("idle: next step in {}", humantime::format_duration(d)));
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

struct Entry {
    ctx: WorkerCtx,
    task: tokio::task::JoinHandle<()>,
}

/// The registry of a node's workers. Cheap to clone.
#[derive(Clone, Default)]
pub struct Workers {
    entries: Arc<Mutex<Vec<Entry>>>,
}

/// The first pause after a panic; doubled per panic in a row, up to
/// [`MAX_RESTART_PAUSE`]. A worker that ran a minute without panicking
/// starts over from this pause.
const FIRST_RESTART_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between restarts.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(60);

impl Workers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `worker` on the current Tokio runtime under supervision.
    pub fn spawn(&self, worker: impl Worker) {
        let name = worker.name();
        let ctx = WorkerCtx {
            name,
            status: Arc::new(Mutex::new(Status {
                state: WorkerState::Running,
                doing: "starting".into(),
                since: Instant::now(),
                restarts: 0,
                last_panic: None,
            })),
            stop: CancellationToken::new(),
        };
        let worker = Arc::new(worker);
        let task = tokio::spawn(supervise(worker, ctx.clone()));
        tracing::debug!(worker = name, "worker started");
        if let Ok(mut e) = self.entries.lock() {
            e.push(Entry { ctx, task });
        }
    }

    /// Every worker, in the order they started.
    pub fn list(&self) -> Vec<WorkerInfo> {
        let Ok(entries) = self.entries.lock() else { return Vec::new() };
        entries
            .iter()
            .map(|e| {
                let s = e.ctx.status.lock().map(|s| WorkerInfo {
                    name: e.ctx.name,
                    state: if e.task.is_finished() { WorkerState::Stopped } else { s.state },
                    doing: s.doing.clone(),
                    since_secs: s.since.elapsed().as_secs(),
                    restarts: s.restarts,
                    last_panic: s.last_panic.clone(),
                });
                s.unwrap_or_else(|_| WorkerInfo {
                    name: e.ctx.name,
                    state: WorkerState::Stopped,
                    doing: String::new(),
                    since_secs: 0,
                    restarts: 0,
                    last_panic: None,
                })
            })
            .collect()
    }

    /// Stops every worker, the last started first, each given `grace` to
    /// finish its step before it is aborted. Workers started meanwhile are
    /// stopped too.
    pub async fn shutdown(&self, grace: Duration) {
        loop {
            let next = self.entries.lock().ok().and_then(|mut e| e.pop());
            let Some(Entry { ctx, mut task }) = next else { return };
            if let Ok(mut s) = ctx.status.lock() {
                s.state = WorkerState::Stopping;
            }
            ctx.stop.cancel();
            match tokio::time::timeout(grace, &mut task).await {
                Ok(_) => tracing::debug!(worker = ctx.name, "worker stopped"),
                Err(_) => {
                    let doing = ctx.status.lock().map(|s| s.doing.clone()).unwrap_or_default();
                    tracing::warn!(worker = ctx.name, %doing, "worker did not stop in time; aborted");
                    task.abort();
                }
            }
        }
    }
}

/// Runs the worker, restarting it after a panic until it returns normally
/// or is asked to stop.
async fn supervise<W: Worker>(worker: Arc<W>, ctx: WorkerCtx) {
    let mut pause = FIRST_RESTART_PAUSE;
    loop {
        let started = Instant::now();
        let (w, c) = (worker.clone(), ctx.clone());
        // The worker runs in a task of its own so that a panic ends that
        // task, not the supervisor.
        let mut run = tokio::spawn(async move { w.run(&c).await });
        // If the supervisor is aborted (a worker that did not stop in
        // time), the worker's own task goes with it.
        let _guard = AbortOnDrop(run.abort_handle());
        let outcome = (&mut run).await;
        let state = |st: WorkerState| {
            if let Ok(mut s) = ctx.status.lock() {
                s.state = st;
            }
        };
        match outcome {
            Ok(()) => {
                state(WorkerState::Stopped);
                return;
            }
            Err(e) if e.is_panic() => {
                let msg = panic_message(e.into_panic());
                if started.elapsed() > Duration::from_secs(60) {
                    pause = FIRST_RESTART_PAUSE;
                }
                tracing::error!(worker = ctx.name, panic = %msg, restart_in = ?pause, "worker panicked; restarting it");
                if let Ok(mut s) = ctx.status.lock() {
                    s.state = WorkerState::Restarting;
                    s.restarts += 1;
                    s.last_panic = Some(msg);
                }
                tokio::select! {
                    () = ctx.stop.cancelled() => { state(WorkerState::Stopped); return; }
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_RESTART_PAUSE);
                state(WorkerState::Running);
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => {
                state(WorkerState::Stopped);
                return;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// How long each worker may take to finish its step at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Panics on its first two runs, then counts ticks until stopped.
    struct Flaky {
        runs: AtomicU32,
        ticks: Arc<AtomicU32>,
    }

    #[async_trait::async_trait]
    impl Worker for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn run(&self, ctx: &WorkerCtx) {
            if self.runs.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("boom {}", self.runs.load(Ordering::SeqCst));
            }
            while ctx.idle(Duration::from_millis(5)).await {
                self.ticks.fetch_add(1, Ordering::SeqCst);
                ctx.set("ticking");
            }
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_worker_is_restarted_and_says_so() {
        let ticks = Arc::new(AtomicU32::new(0));
        let ws = Workers::new();
        ws.spawn(Flaky { runs: AtomicU32::new(0), ticks: ticks.clone() });
        until("the third run to tick", || ticks.load(Ordering::SeqCst) > 3).await;
        let l = ws.list();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].name, l[0].state, l[0].restarts), ("flaky", WorkerState::Running, 2));
        assert_eq!(l[0].last_panic.as_deref(), Some("boom 2"));
        ws.shutdown(Duration::from_secs(5)).await;
        assert!(ws.list().is_empty());
    }

    /// Records the order in which workers saw the stop.
    struct Ordered {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    #[async_trait::async_trait]
    impl Worker for Ordered {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn run(&self, ctx: &WorkerCtx) {
            ctx.set("waiting");
            ctx.stopped().await;
            self.log.lock().unwrap().push(self.name);
        }
    }

    #[tokio::test]
    async fn shutdown_stops_the_last_started_first_and_waits_for_each() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let ws = Workers::new();
        for name in ["store-side", "middle", "front"] {
            ws.spawn(Ordered { name, log: log.clone() });
        }
        until("all three to wait", || ws.list().iter().all(|w| w.doing == "waiting")).await;
        let names: Vec<_> = ws.list().iter().map(|w| w.name).collect();
        assert_eq!(names, ["store-side", "middle", "front"]);
        ws.shutdown(Duration::from_secs(5)).await;
        assert_eq!(*log.lock().unwrap(), ["front", "middle", "store-side"]);
    }

    /// Ignores the stop signal.
    struct Stubborn;

    #[async_trait::async_trait]
    impl Worker for Stubborn {
        fn name(&self) -> &'static str {
            "stubborn"
        }
        async fn run(&self, _ctx: &WorkerCtx) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    #[tokio::test]
    async fn a_worker_that_ignores_the_stop_is_aborted_after_the_grace() {
        let ws = Workers::new();
        ws.spawn(Stubborn);
        let t = Instant::now();
        ws.shutdown(Duration::from_millis(100)).await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(ws.list().is_empty());
    }
}
