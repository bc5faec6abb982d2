//! Supervising children as Python does: [`active_children`], [`shutdown`] (waiting for the
//! non-daemon ones, as Python does at exit), [`cpu_count`], and [`ProcessSet`] (Python's
//! `connection.wait` on sentinels: whichever child ends first).

use std::os::fd::OwnedFd;
use std::sync::Mutex;

use futures::future::select_all;

use super::init::ProcessInfo;
use super::spawn::Process;
use crate::Result;
use crate::sys::{self, pidfd};

/// A child this process started, for [`active_children`] and [`shutdown`].
struct Child {
    info: ProcessInfo,
    daemon: bool,
    pidfd: OwnedFd,
}

static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<Child>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a child just started (with its own duplicate of the pidfd).
pub(crate) fn record(name: &str, pid: u32, daemon: bool, pidfd: &OwnedFd) {
    let Ok(pidfd) = sys::dup(pidfd) else { return };
    let mut all = children();
    // Forget the ones that ended, so the list stays as long as what runs.
    all.retain(|child| !pidfd::has_exited(&child.pidfd).unwrap_or(true));
    all.push(Child {
        info: ProcessInfo {
            name: name.to_owned(),
            pid,
        },
        daemon,
        pidfd,
    });
}

/// The children of this process that are still running (Python's `active_children()`).
pub fn active_children() -> Vec<ProcessInfo> {
    let mut all = children();
    all.retain(|child| !pidfd::has_exited(&child.pidfd).unwrap_or(true));
    all.iter().map(|child| child.info.clone()).collect()
}

/// Waits until every non-daemon child has exited (Python waits for them when the interpreter
/// exits). Call it at the end of `main` to let children finish their work; without it, children
/// die with this process, daemon or not. Daemon children ([`Builder::daemon`]) are not waited
/// for. Children keep dying with this process if it is killed meanwhile.
///
/// [`Builder::daemon`]: super::Builder::daemon
///
/// # Errors
///
/// [`Error::Io`](crate::Error::Io) when a child's exit cannot be watched.
///
/// # Cancel safety
///
/// Cancel-safe: it only watches.
///
/// # Panics
///
/// Outside a tokio runtime.
pub async fn shutdown() -> Result<()> {
    let watched = {
        let mut all = children();
        all.retain(|child| !pidfd::has_exited(&child.pidfd).unwrap_or(true));
        for child in all.iter().filter(|child| child.daemon) {
            tracing::info!(target: "tokio_multiprocessing::process", pid = child.info.pid, name = %child.info.name, "daemon child left running: it is killed when this process exits");
        }
        all.iter()
            .filter(|child| !child.daemon)
            .map(|child| pidfd::AsyncPidfd::register(&child.pidfd))
            .collect::<std::io::Result<Vec<_>>>()?
    };
    for child in &watched {
        child.exited().await?;
    }
    Ok(())
}

/// How many CPUs this process may run on (Python's `os.process_cpu_count()`, the right size for
/// a pool): the CPUs in its affinity mask, lowered by a cgroup v2 CPU quota if one is set. At
/// least 1.
pub fn cpu_count() -> usize {
    let allowed = sys::cpus_allowed()
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|text| cgroup_cpus(&text));
    quota.map_or(allowed, |q| allowed.min(q)).max(1)
}

/// CPUs a cgroup v2 `cpu.max` ("quota period", or "max period") allows, rounded up.
fn cgroup_cpus(cpu_max: &str) -> Option<usize> {
    let mut words = cpu_max.split_whitespace();
    let quota: u64 = words.next()?.parse().ok()?;
    let period: u64 = words.next()?.parse().ok()?;
    (period > 0).then(|| quota.div_ceil(period) as usize)
}

/// Several children of one result type, joined in the order they finish (Python's
/// `multiprocessing.connection.wait` on their sentinels; tokio's `JoinSet`).
///
/// # Examples
///
/// ```no_run
/// # #![allow(dead_code)]
/// use tokio_multiprocessing as mp;
///
/// async fn nap(ms: u64) -> u64 {
///     tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
///     ms
/// }
///
/// # async fn f() -> mp::Result<()> {
/// let mut set = mp::ProcessSet::new();
/// for ms in [300, 100, 200] {
///     set.spawn(nap, ms)?;
/// }
/// while let Some((info, result)) = set.join_next().await {
///     println!("{} slept {} ms", info.name, result?);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ProcessSet<R> {
    running: Vec<Process<R>>,
}

impl<R> Default for ProcessSet<R> {
    fn default() -> Self {
        ProcessSet {
            running: Vec::new(),
        }
    }
}

impl<R: serde::Serialize + serde::de::DeserializeOwned + 'static> ProcessSet<R> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a child in the set; see [`Process::spawn`].
    ///
    /// # Errors
    ///
    /// As [`Process::spawn`].
    pub fn spawn<F, A, Fut>(&mut self, entry: F, args: A) -> Result<ProcessInfo>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: serde::Serialize + serde::de::DeserializeOwned + 'static,
        Fut: std::future::Future<Output = R> + 'static,
    {
        let child = Process::spawn(entry, args)?;
        let info = ProcessInfo {
            name: child.name().to_owned(),
            pid: child.pid(),
        };
        self.running.push(child);
        Ok(info)
    }

    /// Adds a child started elsewhere.
    pub fn insert(&mut self, child: Process<R>) {
        self.running.push(child);
    }

    /// How many children have not been joined yet.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether every child was joined.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Waits for whichever child finishes first and returns who it was and what
    /// [`Process::join`] says; `None` once the set is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future joins nobody (each [`Process::join`] is cancel-safe).
    pub async fn join_next(&mut self) -> Option<(ProcessInfo, Result<R>)> {
        if self.running.is_empty() {
            return None;
        }
        let (result, index) = {
            let joins = self.running.iter_mut().map(|child| Box::pin(child.join()));
            let (result, index, _rest) = select_all(joins).await;
            (result, index)
        };
        let child = self.running.swap_remove(index);
        let info = ProcessInfo {
            name: child.name().to_owned(),
            pid: child.pid(),
        };
        Some((info, result))
    }
}

#[cfg(test)]
mod tests {
    use super::cgroup_cpus;

    #[test]
    fn cgroup_quotas_round_up() {
        assert_eq!(cgroup_cpus("max 100000\n"), None);
        assert_eq!(cgroup_cpus("200000 100000\n"), Some(2));
        assert_eq!(cgroup_cpus("150000 100000"), Some(2));
        assert_eq!(cgroup_cpus("50000 100000"), Some(1));
        assert_eq!(cgroup_cpus("garbage"), None);
    }
}
