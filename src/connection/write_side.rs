//! The sending half of a connection: direct writes when idle, a writer task that coalesces
//! queued frames when busy.
//!
//! A send first tries to write its frame straight to the socket (one `sendmsg`, no task hop). If
//! another send or the writer task is already writing, or the socket is full, the whole frame is
//! queued and the writer task sends everything queued with one `sendmsg` per batch. Whole frames
//! are queued before anything can be cancelled, so a dropped `send` future never leaves half a
//! frame on the wire: the writer finishes it.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, oneshot};

use super::frame::{self, Framing};
use super::socket::Socket;
use crate::sys::scm_rights;
use crate::{Error, Result};

/// Queued bytes above which `feed` waits for the writer (backpressure).
const QUEUE_LIMIT: usize = 4 << 20;
/// Largest chunk small frames are gathered into.
const CHUNK_BYTES: usize = 256 * 1024;
/// Queued bytes at which `feed` wakes the writer without waiting for `flush`.
const WAKE_BYTES: usize = 64 * 1024;
/// Most frames and bytes one `sendmsg` carries.
const BATCH_FRAMES: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

struct OutFrame {
    bytes: Vec<u8>,
    offset: usize,
    fds: Vec<OwnedFd>,
    done: Option<oneshot::Sender<Result<()>>>,
}

impl OutFrame {
    fn new(
        framing: Framing,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        done: Option<oneshot::Sender<Result<()>>>,
    ) -> Self {
        let header = framing.header(payload.len(), fds.len());
        let mut bytes = Vec::with_capacity(header.as_slice().len() + payload.len());
        bytes.extend_from_slice(header.as_slice());
        bytes.extend_from_slice(payload);
        OutFrame {
            bytes,
            offset: 0,
            fds,
            done,
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<OutFrame>,
    queued_bytes: usize,
    /// Somebody (a direct send or the writer task) is writing to the socket.
    writing: bool,
    /// The socket failed (peer gone); every later send fails with `Closed`.
    failed: bool,
}

impl State {
    /// Queues a frame. Frames without fds are appended to the last queued chunk when that one
    /// has no waiting sender yet, so a burst of small frames becomes one buffer (and one
    /// `sendmsg`) instead of one allocation each; a waiting sender's completion then fires when
    /// the whole chunk, ending with its frame, is written.
    fn push(
        &mut self,
        framing: Framing,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        done: Option<oneshot::Sender<Result<()>>>,
    ) {
        let header = framing.header(payload.len(), fds.len());
        let size = header.as_slice().len() + payload.len();
        self.queued_bytes += size;
        if fds.is_empty()
            && let Some(last) = self.queue.back_mut()
            && last.done.is_none()
            && last.bytes.len() + size <= CHUNK_BYTES
        {
            last.bytes.extend_from_slice(header.as_slice());
            last.bytes.extend_from_slice(payload);
            last.done = done;
            return;
        }
        self.queue
            .push_back(OutFrame::new(framing, payload, fds, done));
    }
}

/// Waiting for room in the socket's send buffer, through a registration made only for that.
///
/// The connection's own registration with the reactor is for reading only: registered for
/// writing too, every frame the peer reads (which frees send-buffer space) would wake this
/// process's reactor thread, whether anyone waits for room or not — a wake-up per message,
/// a third of a small message's cost. A sender that finds the buffer full registers a
/// duplicate of the socket for writability (which reports the current state at once, so no
/// space freed meanwhile is missed), waits, and keeps it until its send is done.
struct Room<'a> {
    side: &'a WriteSide,
    registered: Option<Arc<AsyncFd<OwnedFd>>>,
    waited: bool,
}

impl<'a> Room<'a> {
    /// The registration the last writer kept, if it had to wait for room (so a stream of large
    /// frames registers once).
    fn new(side: &'a WriteSide) -> Self {
        let registered = side.room.lock().unwrap_or_else(|e| e.into_inner()).take();
        Room {
            side,
            registered,
            waited: false,
        }
    }

    /// Waits until the socket may have room, then tries `write`: `None` when it found none
    /// after all (the readiness is cleared, so the next call waits for more room).
    async fn write_when_ready<R>(
        &mut self,
        write: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<Option<R>> {
        self.waited = true;
        if self.registered.is_none() {
            self.registered = Some(Arc::new(self.side.sock.register(Interest::WRITABLE)?));
        }
        let registered = self.registered.as_ref().expect("registered above");
        let mut ready = registered.writable().await?;
        match ready.try_io(|_| write()) {
            Ok(result) => result.map(Some),
            Err(_would_block) => Ok(None),
        }
    }
}

impl Drop for Room<'_> {
    /// A writer that waited for room hands its registration to the next one; one that never
    /// had to wait drops it (the socket keeps up again).
    fn drop(&mut self) {
        if self.waited {
            *self.side.room.lock().unwrap_or_else(|e| e.into_inner()) = self.registered.take();
        }
    }
}

/// Shared by every `Sender` clone of one socket and its writer task.
pub(crate) struct WriteSide {
    sock: Arc<Socket>,
    state: Mutex<State>,
    wake_writer: Notify,
    progress: Notify,
    senders: AtomicUsize,
    can_pass_fds: bool,
    max_frame: usize,
    framing: Framing,
    /// A registration for writability kept by the last writer that had to wait (see [`Room`]).
    room: Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
}

/// A frame its sender writes itself, straight from the caller's buffer, while holding the
/// `writing` flag.
struct DirectWrite<'a> {
    side: &'a WriteSide,
    header: frame::Header,
    payload: &'a [u8],
    fds: Vec<OwnedFd>,
    sent: usize,
    released: bool,
}

impl<'a> DirectWrite<'a> {
    fn new(side: &'a WriteSide, payload: &'a [u8], fds: Vec<OwnedFd>) -> Self {
        let header = side.framing.header(payload.len(), fds.len());
        DirectWrite {
            side,
            header,
            payload,
            fds,
            sent: 0,
            released: false,
        }
    }

    fn total(&self) -> usize {
        self.header.as_slice().len() + self.payload.len()
    }

    /// One `sendmsg`; `Ok(true)` once the whole frame is out.
    fn write_once(&mut self) -> io::Result<bool> {
        let header = self.header.as_slice();
        let (h, p) = if self.sent < header.len() {
            (&header[self.sent..], self.payload)
        } else {
            (&header[..0], &self.payload[self.sent - header.len()..])
        };
        let attach: Vec<_> = if self.sent == 0 {
            self.fds.iter().map(AsFd::as_fd).collect()
        } else {
            Vec::new()
        };
        let n = scm_rights::send(
            self.side.sock.get_ref().as_fd(),
            &[IoSlice::new(h), IoSlice::new(p)],
            &attach,
        )?;
        if n > 0 {
            // The fds went with the first byte.
            self.fds.clear();
        }
        self.sent += n;
        Ok(self.sent == self.total())
    }

    /// Gives the socket back. An unfinished frame goes to the front of the queue first, so no
    /// other frame can slip into the middle of it.
    fn release(&mut self, failed: bool) {
        if self.released {
            return;
        }
        self.released = true;
        let mut state = self.side.lock();
        state.writing = false;
        if failed {
            fail(&mut state);
        } else if self.sent < self.total() {
            let mut rest = Vec::with_capacity(self.total() - self.sent);
            let header = self.header.as_slice();
            if self.sent < header.len() {
                rest.extend_from_slice(&header[self.sent..]);
                rest.extend_from_slice(self.payload);
            } else {
                rest.extend_from_slice(&self.payload[self.sent - header.len()..]);
            }
            state.queued_bytes += rest.len();
            let fds = std::mem::take(&mut self.fds);
            state.queue.push_front(OutFrame {
                bytes: rest,
                offset: 0,
                fds,
                done: None,
            });
        }
        let more = !state.queue.is_empty();
        drop(state);
        if more {
            self.side.wake_writer.notify_one();
        }
        self.side.progress.notify_waiters();
    }
}

impl Drop for DirectWrite<'_> {
    fn drop(&mut self) {
        // A cancelled send: the writer task finishes the frame.
        self.release(false);
    }
}

/// Who writes a frame: the caller, right now, or the writer task.
enum Claim {
    Direct(Vec<OwnedFd>),
    Queued(oneshot::Receiver<Result<()>>),
}

impl WriteSide {
    /// Creates the write side and its writer task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn new(
        sock: Arc<Socket>,
        can_pass_fds: bool,
        max_frame: usize,
        framing: Framing,
    ) -> Arc<Self> {
        let side = Arc::new(WriteSide {
            sock,
            state: Mutex::new(State::default()),
            wake_writer: Notify::new(),
            progress: Notify::new(),
            senders: AtomicUsize::new(1),
            can_pass_fds: can_pass_fds && framing == Framing::Native,
            max_frame,
            framing,
            room: Mutex::new(None),
        });
        tokio::spawn(run_writer(side.clone()));
        side
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub(crate) fn framing(&self) -> Framing {
        self.framing
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Another `Sender` handle now shares this side.
    pub(crate) fn add_sender(&self) {
        self.senders.fetch_add(1, Ordering::Relaxed);
    }

    /// A `Sender` handle went away; the last one lets the writer task finish and exit.
    pub(crate) fn remove_sender(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wake_writer.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a frame's size and whether its fds may travel.
    fn check(&self, payload: &[u8], fds: &[OwnedFd]) -> Result<()> {
        if payload.len() > self.max_frame {
            return Err(Error::TooLarge {
                size: payload.len(),
                max: self.max_frame,
            });
        }
        if !fds.is_empty() && !self.can_pass_fds {
            return Err(Error::InvalidArgument(
                "handles (file descriptors) can only travel over Unix sockets, not TCP".into(),
            ));
        }
        if fds.len() > scm_rights::MAX_FDS {
            return Err(Error::InvalidArgument(format!(
                "a message may carry at most {} handles' file descriptors",
                scm_rights::MAX_FDS
            )));
        }
        Ok(())
    }

    /// Sends one frame and returns once it is written.
    ///
    /// When the socket is free the caller writes the frame itself, straight from `payload`, and
    /// waits for room as needed: no copy and no task hop. If the future is dropped half-way, the
    /// rest of the frame is copied to the front of the queue and the writer task finishes it.
    pub(crate) async fn send(&self, payload: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        self.check(payload, &fds)?;
        let fds = match self.claim_or_enqueue(payload, fds)? {
            Claim::Direct(fds) => fds,
            Claim::Queued(rx) => return rx.await.unwrap_or(Err(Error::Closed)),
        };
        let mut direct = DirectWrite::new(self, payload, fds);
        let mut room = Room::new(self);
        let result = loop {
            match direct.write_once() {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match room.write_when_ready(|| direct.write_once()).await {
                        Ok(Some(true)) => break Ok(()),
                        Ok(Some(false) | None) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(closed_or(e)),
                    }
                }
                Err(e) => break Err(closed_or(e)),
            }
        };
        direct.release(result.is_err());
        result
    }

    /// [`send`](Self::send) for threads outside the runtime: blocks until written.
    pub(crate) fn send_blocking(&self, payload: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        self.check(payload, &fds)?;
        let fds = match self.claim_or_enqueue(payload, fds)? {
            Claim::Direct(fds) => fds,
            Claim::Queued(rx) => return rx.blocking_recv().unwrap_or(Err(Error::Closed)),
        };
        let mut direct = DirectWrite::new(self, payload, fds);
        let result = loop {
            match direct.write_once() {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = scm_rights::wait_ready(self.sock.get_ref(), true, None) {
                        break Err(Error::Io(e));
                    }
                }
                Err(e) => break Err(closed_or(e)),
            }
        };
        direct.release(result.is_err());
        result
    }

    /// Queues a frame for the writer task without writing it now: the batching path (`feed`,
    /// `Sink::start_send`). The writer is woken once enough is queued, or by `flush`.
    pub(crate) fn enqueue(&self, payload: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        self.check(payload, &fds)?;
        let mut state = self.lock();
        if state.failed {
            return Err(Error::Closed);
        }
        state.push(self.framing, payload, fds, None);
        let wake = state.queued_bytes >= WAKE_BYTES;
        drop(state);
        if wake {
            self.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Takes the socket for a direct write when nobody writes and nothing waits; otherwise
    /// queues a copy of the frame for the writer task.
    fn claim_or_enqueue(&self, payload: &[u8], fds: Vec<OwnedFd>) -> Result<Claim> {
        let mut state = self.lock();
        if state.failed {
            return Err(Error::Closed);
        }
        if !state.writing && state.queue.is_empty() {
            state.writing = true;
            return Ok(Claim::Direct(fds));
        }
        let (tx, rx) = oneshot::channel();
        state.push(self.framing, payload, fds, Some(tx));
        drop(state);
        self.wake_writer.notify_one();
        Ok(Claim::Queued(rx))
    }

    /// Waits while more than `QUEUE_LIMIT` bytes are queued.
    pub(crate) async fn wait_for_space(&self) -> Result<()> {
        // The usual case, without registering as a waiter (a lock of its own) first.
        {
            let state = self.lock();
            if state.failed {
                return Err(Error::Closed);
            }
            if state.queued_bytes <= QUEUE_LIMIT {
                return Ok(());
            }
        }
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let state = self.lock();
                if state.failed {
                    return Err(Error::Closed);
                }
                if state.queued_bytes <= QUEUE_LIMIT {
                    return Ok(());
                }
            }
            progress.await;
        }
    }

    /// Waits until everything queued so far is written.
    pub(crate) async fn flush(&self) -> Result<()> {
        self.wake_writer.notify_one();
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let state = self.lock();
                if state.failed {
                    return Err(Error::Closed);
                }
                if state.queue.is_empty() && !state.writing {
                    return Ok(());
                }
            }
            progress.await;
        }
    }
}

fn closed_or(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}

fn fail(state: &mut State) {
    state.failed = true;
    state.queued_bytes = 0;
    for out in state.queue.drain(..) {
        if let Some(done) = out.done {
            let _ = done.send(Err(Error::Closed));
        }
    }
}

/// One `sendmsg` of as many whole frames of `batch` as fit in an iovec; the first frame's fds go
/// with its first byte.
fn send_slices(sock: &OwnedFd, batch: &[OutFrame]) -> io::Result<usize> {
    let slices: Vec<IoSlice<'_>> = batch
        .iter()
        .map(|f| IoSlice::new(&f.bytes[f.offset..]))
        .collect();
    let first = &batch[0];
    let fds: Vec<_> = if first.offset == 0 {
        first.fds.iter().map(AsFd::as_fd).collect()
    } else {
        Vec::new()
    };
    scm_rights::send(sock.as_fd(), &slices, &fds)
}

/// Moves `n` written bytes through `batch`, completing whole frames.
fn advance(batch: &mut [OutFrame], mut n: usize) {
    for out in batch.iter_mut() {
        if n == 0 {
            break;
        }
        // Any byte of a frame written means its fds went with its first byte.
        out.fds.clear();
        let left = out.bytes.len() - out.offset;
        let step = left.min(n);
        out.offset += step;
        n -= step;
    }
}

async fn run_writer(side: Arc<WriteSide>) {
    loop {
        let mut batch: Vec<OutFrame> = Vec::new();
        loop {
            let wake = side.wake_writer.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            {
                let mut state = side.lock();
                if state.failed {
                    return;
                }
                if !state.writing && !state.queue.is_empty() {
                    state.writing = true;
                    let mut bytes = 0;
                    while let Some(front) = state.queue.front() {
                        let first = batch.is_empty();
                        if !first
                            && (!front.fds.is_empty()
                                || batch.len() >= BATCH_FRAMES
                                || bytes >= BATCH_BYTES)
                        {
                            break;
                        }
                        let out = state.queue.pop_front().expect("front exists");
                        bytes += out.bytes.len() - out.offset;
                        batch.push(out);
                    }
                    state.queued_bytes -= bytes.min(state.queued_bytes);
                    break;
                }
                if state.queue.is_empty()
                    && !state.writing
                    && side.senders.load(Ordering::Acquire) == 0
                {
                    return;
                }
            }
            wake.await;
        }

        let mut result = Ok(());
        let mut room = Room::new(&side);
        while !batch.is_empty() {
            let written = loop {
                match send_slices(side.sock.get_ref(), &batch) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match room
                            .write_when_ready(|| send_slices(side.sock.get_ref(), &batch))
                            .await
                        {
                            Ok(Some(n)) => break Ok(n),
                            Ok(None) => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            match written {
                Ok(n) => {
                    advance(&mut batch, n);
                    while batch.first().is_some_and(|f| f.offset == f.bytes.len()) {
                        if let Some(done) = batch.remove(0).done {
                            let _ = done.send(Ok(()));
                        }
                    }
                }
                Err(e) => {
                    result = Err(closed_or(e));
                    break;
                }
            }
        }
        let mut state = side.lock();
        state.writing = false;
        if result.is_err() {
            for out in batch.drain(..) {
                if let Some(done) = out.done {
                    let _ = done.send(Err(Error::Closed));
                }
            }
            fail(&mut state);
        }
        drop(state);
        side.progress.notify_waiters();
    }
}
