//! The thread that forks every child, and reaps the ones nobody joins.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked a child exits, not the process
//! (reliability-design.md §B.6, gotcha 13). tokio's blocking-pool threads retire after idling,
//! and test threads end with their test, so children are forked from this one thread, which
//! lives as long as the process.

use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::sys::pidfd;

type Job = Box<dyn FnOnce() + Send>;

static JOBS: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
/// Pidfds of exited-or-running children whose `Process` handle was dropped unjoined.
static ORPHANS: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

fn jobs() -> &'static mpsc::Sender<Job> {
    JOBS.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tokio-multiprocessing-spawner".into())
            .spawn(move || serve(rx))
            .expect("cannot start the spawner thread");
        tx
    })
}

fn serve(rx: mpsc::Receiver<Job>) {
    loop {
        // Wake once a second only while there are orphans to reap; otherwise sleep until asked.
        let job = if ORPHANS.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(Duration::from_secs(1))
        };
        match job {
            Ok(job) => job(),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        reap_orphans();
    }
}

fn reap_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    orphans.retain(|fd| matches!(pidfd::try_reap(fd), Ok(None)));
}

/// Runs `f` on the spawner thread and returns its result.
pub(crate) fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::sync_channel(1);
    jobs()
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .expect("spawner thread is gone");
    rx.recv().expect("spawner thread dropped a job")
}

/// Hands the pidfd of a child nobody will join to the spawner, which reaps it once it exits.
pub(crate) fn adopt(pidfd: OwnedFd) {
    ORPHANS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(pidfd);
    let _ = jobs().send(Box::new(|| {}));
}
