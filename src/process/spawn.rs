//! [`Process`]: a child running an async function, and its [`Builder`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::bootstrap::{self, Bootstrap, Outcome};
use super::{entry, init, spawner};
use crate::connection::{FdChannel, Frame};
use crate::error::ProcessFailure;
use crate::handle;
use crate::sys::pidfd::{self, AsyncPidfd, Exit};
use crate::sys::{self, scm_rights};
use crate::{Error, Result};

static COUNTER: AtomicUsize = AtomicUsize::new(1);

/// Options for a child process (Python's `Process(name=...)`).
///
/// # Examples
///
/// ```no_run
/// # #![allow(dead_code)]
/// # use tokio_multiprocessing as mp;
/// # async fn work(_: ()) {}
/// # async fn f() -> mp::Result<()> {
/// let mut child = mp::Process::builder().name("worker-1").spawn(work, ())?;
/// child.join().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default, Clone)]
#[must_use = "a Builder does nothing until `spawn` is called"]
pub struct Builder {
    name: Option<String>,
    kill_on_drop: bool,
    daemon: bool,
    /// The test a child re-runs, found when the spawner is created on the test's own thread
    /// (a pool spawns its workers later, from runtime threads).
    rerun_test: Option<Option<String>>,
    /// Not killed with its parent: it watches for the death itself and cleans up (a manager).
    outlives_parent: bool,
}

impl Builder {
    /// Kill the child (`SIGKILL`) when its [`Process`] handle is dropped, as tokio's
    /// `Command::kill_on_drop` (default: dropping detaches; the child still dies with us).
    pub fn kill_on_drop(mut self, kill: bool) -> Self {
        self.kill_on_drop = kill;
        self
    }

    /// Whether [`shutdown`](crate::shutdown) leaves the child alone (Python's `daemon`).
    /// Default `false`: `shutdown` waits for it, as Python waits for non-daemon children at
    /// exit. Either way the child dies if this process dies.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The child is not killed when this process dies; it must notice by itself (a manager
    /// watches a pipe whose other end this process holds) and exit.
    pub(crate) fn outlives_parent(mut self) -> Self {
        self.outlives_parent = true;
        self
    }

    /// Re-run `test` in the child (found earlier with `init::test_to_rerun`).
    pub(crate) fn rerun_test(mut self, test: Option<String>) -> Self {
        self.rerun_test = Some(test);
        self
    }

    /// The child's name (default `Process-N`, as in Python); see
    /// [`current_process`](crate::current_process).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Starts the child; see [`Process::spawn`].
    ///
    /// # Errors
    ///
    /// As [`Process::spawn`].
    pub fn spawn<F, A, Fut, R>(self, entry: F, args: A) -> Result<Process<R>>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        Fut: Future<Output = R> + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "a spawn entry must be a function item or a closure that captures nothing; \
                 pass data through the arguments"
            )
        };
        if !init::is_initialised() {
            return Err(Error::InvalidArgument(
                "call `tokio_multiprocessing::init()` first in `main` (or in the test) before \
                 spawning: the child re-runs this program and needs it to find the entry"
                    .into(),
            ));
        }
        // The child conjures its own copy of the (zero-sized) entry from its type.
        let _ = entry;
        let test = match self.rerun_test {
            Some(test) => test,
            None => init::test_to_rerun()?,
        };
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let (args, fds) = handle::encode(&args)?;
        let boot = Bootstrap {
            entry: entry::offset_for::<F, A, Fut, R>(),
            exe: sys::code_address::executable_identity()?,
            name: name.clone(),
            parent_name: crate::current_process().name,
            test: test.clone(),
            args,
        };
        let frame =
            postcard::to_allocvec(&boot).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if frame.len() > bootstrap::MAX_FRAME {
            return Err(Error::TooLarge {
                size: frame.len(),
                max: bootstrap::MAX_FRAME,
            });
        }

        let (ours, theirs) = scm_rights::socketpair()?;
        let mut cmd = std::process::Command::new("/proc/self/exe");
        if let Some(arg0) = std::env::args_os().next() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
        }
        if let Some(test) = test {
            cmd.args([
                test.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ]);
        }
        cmd.env(
            bootstrap::ENV,
            format!("{}:{}", sys::getpid(), theirs.as_raw_fd()),
        )
        .stdin(Stdio::null());
        // The child joins our resource tracker, so what it queues outlives it but not us all.
        if let Some(address) = crate::shm::tracker::address() {
            cmd.env(crate::shm::tracker::ADDRESS_VAR, address);
        }
        sys::spawn::die_with_parent(&mut cmd, vec![theirs.as_raw_fd()], !self.outlives_parent);
        let child = spawner::run(move || cmd.spawn())?;
        drop(theirs);
        let pid = child.id();
        // The std handle is only a pid; the pidfd below names the child for good.
        drop(child);
        let pidfd = pidfd::open(pid)?;
        super::children::record(&name, pid, self.daemon, &pidfd);
        tracing::info!(target: "tokio_multiprocessing::process", %pid, name = %name, daemon = self.daemon, dies_with_parent = true, "child spawned");

        // The bootstrap goes out from a short-lived thread of its own, so the child starts even if
        // the caller blocks its runtime thread right after spawning (as Python programs do with
        // `p.start(); time.sleep(...)`). A child that dies before reading gets EPIPE here and is
        // reported by `join`.
        let sender = sys::dup(&ours)?;
        std::thread::Builder::new()
            .name("tokio-multiprocessing-bootstrap".into())
            .spawn(move || {
                let _ = scm_rights::send_all_blocking(
                    &sender,
                    &frame_with_header(&frame, fds.len()),
                    &fds,
                );
            })?;

        Ok(Process {
            pid,
            name,
            results: Some(ours),
            results_channel: None,
            frame: None,
            exit: Mutex::new(None),
            async_pidfd: None,
            pidfd,
            joined: false,
            kill_on_drop: self.kill_on_drop,
            _result: PhantomData,
        })
    }
}

/// A child process running an async function (Python's `multiprocessing.Process`).
///
/// Made by [`Process::spawn`] or [`Process::builder`]. [`join`](Self::join) waits for the
/// function's return value. Dropping the handle detaches the child: it runs on, is reaped when it
/// exits, and is killed if this process dies (or at once, with
/// [`Builder::kill_on_drop`]).
pub struct Process<R> {
    pid: u32,
    name: String,
    pidfd: OwnedFd,
    async_pidfd: Option<AsyncPidfd>,
    /// Our end of the bootstrap socket; the result arrives on it.
    results: Option<OwnedFd>,
    results_channel: Option<FdChannel>,
    frame: Option<Result<Frame>>,
    exit: Mutex<Option<Exit>>,
    joined: bool,
    kill_on_drop: bool,
    _result: PhantomData<fn() -> R>,
}

impl Process<()> {
    /// A [`Builder`] for a child with options.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<R: Serialize + DeserializeOwned + 'static> Process<R> {
    /// Starts a child process that runs `entry(args)` and returns its result to
    /// [`join`](Self::join).
    ///
    /// The child re-executes this program (`/proc/self/exe`), whose [`init`](crate::init) call
    /// runs the entry. `entry` is an `async fn(A) -> R` (or a closure that captures nothing);
    /// `args` and the result are serde values and may contain handles (shared memory, and later
    /// queues, locks, connections), which cross with their file descriptors. The child inherits
    /// stdout and stderr; its stdin is `/dev/null`.
    ///
    /// It needs no runtime (only [`join`](Self::join) does). Forking happens on a dedicated
    /// thread and takes a few milliseconds, like `tokio::process::Command::spawn`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when [`init`](crate::init) was not called first or the
    /// arguments cannot be serialised; [`Error::Io`] when the child cannot be started.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #![allow(dead_code)]
    /// # use tokio_multiprocessing as mp;
    /// async fn greet(who: String) -> String {
    ///     format!("hello {who} from pid {}", std::process::id())
    /// }
    ///
    /// # async fn f() -> mp::Result<()> {
    /// let mut child = mp::Process::spawn(greet, "bob".to_string())?;
    /// println!("{}", child.join().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn<F, A, Fut>(entry: F, args: A) -> Result<Process<R>>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        Fut: Future<Output = R> + 'static,
    {
        Builder::default().spawn(entry, args)
    }

    /// Waits for the child to finish and returns what its entry returned.
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when the child panicked ([`ProcessFailure::Panicked`] with the
    /// message), exited without a result ([`ProcessFailure::Exited`] with its code) or was killed
    /// ([`ProcessFailure::Signaled`]); [`Error::Corrupt`] when its arguments or result failed
    /// validation; [`Error::InvalidArgument`] when it was joined already.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a partly received result is kept, and a later `join` continues.
    pub async fn join(&mut self) -> Result<R> {
        if self.joined {
            return Err(Error::InvalidArgument(format!(
                "{} was joined already",
                self.name
            )));
        }
        if self.async_pidfd.is_none() {
            self.async_pidfd = Some(AsyncPidfd::register(&self.pidfd)?);
        }
        if let Some(sock) = self.results.take() {
            self.results_channel = Some(FdChannel::new(sock, bootstrap::MAX_FRAME)?);
        }
        let exited = self.async_pidfd.as_ref().expect("registered above");
        if self.frame.is_none()
            && let Some(results) = self.results_channel.as_mut()
        {
            let received = tokio::select! {
                frame = results.recv() => Some(frame),
                _ = exited.exited() => None,
            };
            let received = match received {
                Some(frame) => frame,
                // Exited: whatever it sent is in the socket buffer already. Unless it handed its
                // end of the socket to a process of its own, the end of stream comes at once.
                None => tokio::time::timeout(Duration::from_secs(2), results.recv())
                    .await
                    .unwrap_or(Err(Error::Closed)),
            };
            self.frame = Some(received);
            self.results_channel = None;
        }
        exited.exited().await?;
        let exit = self.reap()?;
        self.joined = true;
        let exit = exit
            .ok_or_else(|| Error::Io(std::io::Error::other("child exited but cannot be reaped")))?;
        match exit {
            Exit::Code(0) => {
                tracing::info!(target: "tokio_multiprocessing::process", pid = self.pid, name = %self.name, "child exited");
            }
            Exit::Code(code) => {
                tracing::warn!(target: "tokio_multiprocessing::process", pid = self.pid, name = %self.name, code, "child exited with an error status");
            }
            Exit::Signal(signal) => {
                tracing::warn!(target: "tokio_multiprocessing::process", pid = self.pid, name = %self.name, signal, "child was killed by a signal");
            }
        }
        match self.frame.take().unwrap_or(Err(Error::Closed)) {
            Ok(Frame {
                payload: frame,
                fds,
            }) => {
                let outcome: Outcome = postcard::from_bytes(&frame)
                    .map_err(|e| Error::Corrupt(format!("bad result frame from child: {e}")))?;
                match outcome {
                    Outcome::Returned(bytes) => handle::decode(&bytes, fds),
                    Outcome::Panicked(msg) => Err(Error::Process(ProcessFailure::Panicked(msg))),
                    Outcome::Failed(msg) => Err(Error::Corrupt(format!(
                        "child could not run its entry: {msg}"
                    ))),
                }
            }
            Err(_) => Err(Error::Process(match exit {
                Exit::Code(code) => ProcessFailure::Exited(code),
                Exit::Signal(sig) => ProcessFailure::Signaled(sig),
            })),
        }
    }

    /// [`join`](Self::join) with a deadline; on [`Error::Timeout`] the child runs on and can be
    /// joined later.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or those of [`join`](Self::join).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`join`](Self::join).
    pub async fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        tokio::time::timeout(timeout, self.join())
            .await
            .unwrap_or(Err(Error::Timeout))
    }
}

impl<R> Process<R> {
    /// The child's OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        self.exit_lock().is_none() && !pidfd::has_exited(&self.pidfd).unwrap_or(true)
    }

    /// The exit code once the child has exited: its code, or `-signal` when a signal killed it
    /// (as Python's `exitcode`); `None` while it runs.
    pub fn exitcode(&self) -> Option<i32> {
        let cached = *self.exit_lock();
        let exit = match cached {
            Some(exit) => Some(exit),
            None => self.reap().ok().flatten(),
        };
        exit.map(|e| match e {
            Exit::Code(code) => code,
            Exit::Signal(sig) => -sig,
        })
    }

    /// Asks the child to stop (`SIGTERM`). A child that exited already is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the signal cannot be sent.
    pub fn terminate(&self) -> Result<()> {
        self.signal(false)
    }

    /// Kills the child (`SIGKILL`). A child that exited already is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the signal cannot be sent.
    pub fn kill(&self) -> Result<()> {
        self.signal(true)
    }

    fn signal(&self, kill: bool) -> Result<()> {
        if self.exit_lock().is_some() {
            return Ok(());
        }
        Ok(pidfd::signal(&self.pidfd, kill)?)
    }

    fn exit_lock(&self) -> std::sync::MutexGuard<'_, Option<Exit>> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps the child if it exited, caching how it ended.
    fn reap(&self) -> Result<Option<Exit>> {
        let mut exit = self.exit_lock();
        if exit.is_none() {
            *exit = pidfd::try_reap(&self.pidfd)?;
        }
        Ok(*exit)
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        if matches!(self.reap(), Ok(Some(_))) {
            return;
        }
        if self.kill_on_drop {
            let _ = self.kill();
        }
        if let Ok(fd) = sys::dup(&self.pidfd) {
            spawner::adopt(fd);
        }
    }
}

/// The bootstrap frame as `FdChannel` lays it out: length and fd count, then the payload.
fn frame_with_header(payload: &[u8], nfds: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&crate::connection::frame_header(payload.len(), nfds));
    out.extend_from_slice(payload);
    out
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("exitcode", &self.exitcode())
            .finish_non_exhaustive()
    }
}
