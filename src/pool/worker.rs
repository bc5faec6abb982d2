//! The worker process of a pool: runs the initializer, then calls as they come, up to
//! `concurrency` at once, until its task queue closes.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use super::wire::{Call, Calls, Done, Outcome, Reply, ReplyRef};
use crate::connection::Connection;
use crate::process::entry::{ChildCall, Returned};
use crate::sys::code_address::{self, Trampoline};
use crate::{Error, Queue, Result};

/// How long an idle worker checks its task queue before it parks (bounded: an idle pool
/// uses no CPU once this has passed after its last task).
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// A worker's spawn arguments.
#[derive(Serialize, Deserialize)]
pub(super) struct WorkerArgs {
    pub(super) tasks: Queue<Vec<u8>>,
    pub(super) results: Queue<Vec<u8>>,
    pub(super) socket: Connection<()>,
    pub(super) parent_exe: (u64, u64),
    pub(super) concurrency: usize,
    /// The initializer's trampoline and encoded arguments.
    pub(super) init: Option<(i64, Vec<u8>)>,
}

/// The entry of every pool worker.
pub(super) async fn worker_main(args: WorkerArgs) {
    let WorkerArgs {
        tasks,
        results,
        mut socket,
        parent_exe,
        concurrency,
        init,
    } = args;
    let mut entries: HashMap<i64, Trampoline> = HashMap::new();
    if let Some((entry, init_args)) = init {
        let call = Call {
            id: 0,
            entry,
            args: init_args,
            nfds: 0,
        };
        let (done, _, failed) = run_owned(&mut entries, parent_exe, call, Vec::new()).await;
        let why = match done.outcome {
            Outcome::Panicked(why) | Outcome::Failed(why) => Some(why),
            Outcome::Returned { .. } if failed => Some("the initializer returned an error".into()),
            Outcome::Returned { .. } => None,
        };
        if let Some(why) = why {
            let reply = postcard::to_allocvec(&Reply::InitFailed(why)).unwrap_or_default();
            let _ = results.put_bytes(&reply).await;
            return;
        }
    }
    let mut running = FuturesUnordered::new();
    let (mut tasks_open, mut socket_open) = (true, true);
    loop {
        // First, without the `select!` below (whose socket read is a syscall each time):
        // take calls from the ring while there is room, run each until it first waits, and
        // answer those that finished at once (tiny tasks stream through here). A call leaves
        // the ring only when it can run, so a death loses only what was running.
        let mut budget = INLINE_BUDGET;
        while tasks_open && running.len() < concurrency.max(1) && budget > 0 {
            budget -= 1;
            let calls = match tasks.try_take_with(decode_calls) {
                Ok(Some(calls)) => calls,
                Ok(None) => break,
                Err(_) => {
                    tasks_open = false;
                    break;
                }
            };
            for call in calls {
                let mut call = run_owned(&mut entries, parent_exe, call, Vec::new());
                match (&mut call).now_or_never() {
                    Some((done, fds, _)) => send_reply(&results, &socket, done, fds).await,
                    None => running.push(call),
                }
            }
        }
        if budget == 0 {
            // Let this process's other tasks (a task's own spawns) run too.
            tokio::task::yield_now().await;
            continue;
        }
        let room = running.len() < concurrency.max(1);
        if running.is_empty() && tasks_open {
            // Idle: the next job of a caller awaiting one `apply` after another comes a few
            // tens of µs after our reply on a busy small VM, longer than a queue getter's
            // usual spin; a parked worker costs each such job a reactor wake-up (W7). This
            // process runs nothing else, so it checks a while longer before it parks.
            if tasks.spin_until_readable(IDLE_SPIN) && !tasks.is_empty() {
                continue;
            }
        }
        tokio::select! {
            got = tasks.get_bytes(), if room && tasks_open => match got {
                Ok(bytes) => {
                    for call in decode_calls(&bytes) {
                        running.push(run_owned(&mut entries, parent_exe, call, Vec::new()));
                    }
                }
                Err(_) => tasks_open = false,
            },
            frame = socket.recv_frame(), if room && socket_open => match frame {
                Ok(frame) => {
                    let mut fds = frame.fds.into_iter();
                    for call in decode_calls(&frame.payload) {
                        let mine: Vec<OwnedFd> = fds.by_ref().take(call.nfds as usize).collect();
                        running.push(run_owned(&mut entries, parent_exe, call, mine));
                    }
                }
                Err(_) => socket_open = false,
            },
            Some((done, fds, _)) = running.next() => {
                send_reply(&results, &socket, done, fds).await;
            }
            else => return,
        }
        if !tasks_open && running.is_empty() {
            return;
        }
    }
}

/// Calls a worker takes from its ring in a row before it lets its other tasks run.
const INLINE_BUDGET: usize = 256;

fn decode_calls(bytes: &[u8]) -> Vec<Call> {
    postcard::from_bytes::<Calls>(bytes)
        .map(|calls| calls.0)
        .unwrap_or_default()
}

/// Sends a finished call back: over the queue, or over the socket when its result holds fds.
async fn send_reply(
    results: &Queue<Vec<u8>>,
    socket: &Connection<()>,
    done: Done,
    fds: Vec<OwnedFd>,
) {
    thread_local! {
        static MESSAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if fds.is_empty() {
        // Encoded into a buffer this thread reuses, and put from it when there is room.
        let put = MESSAGE.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            let done = std::slice::from_ref(&done);
            let message = postcard::to_extend(&ReplyRef::Done(done), std::mem::take(&mut *buf));
            let Ok(message) = message else {
                return Ok(true);
            };
            let put = results.try_put_bytes_now(&message);
            *buf = message;
            put
        });
        if let Ok(false) = put {
            let message = MESSAGE.with(|buf| buf.borrow().clone());
            let _ = results.put_bytes(&message).await;
        }
        return;
    }
    let Ok(message) = postcard::to_allocvec(&Reply::Done(vec![done])) else {
        return;
    };
    {
        let _ = socket.send_frame(&message, fds).await;
    }
}

/// A call being run: its answer, the fds of its result, and whether the result is an `Err`.
type Running = std::pin::Pin<Box<dyn std::future::Future<Output = (Done, Vec<OwnedFd>, bool)>>>;

/// Runs one call: its trampoline found (once per entry), panics caught.
fn run_owned(
    entries: &mut HashMap<i64, Trampoline>,
    parent_exe: (u64, u64),
    call: Call,
    fds: Vec<OwnedFd>,
) -> Running {
    let id = call.id;
    let trampoline = resolve(entries, parent_exe, call.entry);
    let args = call.args;
    Box::pin(async move {
        let trampoline = match trampoline {
            Ok(t) => t,
            Err(e) => {
                return (
                    Done {
                        id,
                        outcome: Outcome::Failed(e.to_string()),
                    },
                    Vec::new(),
                    false,
                );
            }
        };
        let ran = std::panic::AssertUnwindSafe(trampoline(Box::new(ChildCall { args, fds })))
            .catch_unwind()
            .await;
        outcome_of(id, ran)
    })
}

fn outcome_of(
    id: u64,
    ran: std::result::Result<Box<dyn std::any::Any + Send>, Box<dyn std::any::Any + Send>>,
) -> (Done, Vec<OwnedFd>, bool) {
    let (outcome, fds, failed) = match ran {
        Err(panic) => (
            Outcome::Panicked(crate::process::panic_message(&*panic)),
            Vec::new(),
            false,
        ),
        Ok(returned) => match returned.downcast::<Returned>().map(|r| *r) {
            Ok(Ok((bytes, fds, failed))) => {
                let nfds = fds.len() as u32;
                (Outcome::Returned { bytes, nfds }, fds, failed)
            }
            Ok(Err(e)) => (Outcome::Failed(e.to_string()), Vec::new(), false),
            Err(_) => (
                Outcome::Failed("the task returned the wrong type".into()),
                Vec::new(),
                false,
            ),
        },
    };
    (Done { id, outcome }, fds, failed)
}

fn resolve(
    entries: &mut HashMap<i64, Trampoline>,
    parent_exe: (u64, u64),
    entry: i64,
) -> Result<Trampoline> {
    if let Some(t) = entries.get(&entry) {
        return Ok(*t);
    }
    let t = code_address::resolve(entry, parent_exe).map_err(|e| Error::Corrupt(e.to_string()))?;
    entries.insert(entry, t);
    Ok(t)
}
