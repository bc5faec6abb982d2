//! A process's connection to one manager, shared by every proxy of that manager in the process.
//!
//! Calls from many tasks go over the one socket at once, each tagged with an id; a driver task
//! reads the replies and hands each to its caller. One-way messages (reference counts, holds,
//! cancellations) go through an ordered queue that the driver writes, so they can be sent from
//! `Drop` and from serde, where nothing can be awaited.
//!
//! Sessions are found by manager address and authkey: proxies that arrive in messages join the
//! process's existing session. A session closes when its last proxy (and manager handle) is
//! dropped; the manager then drops this process's references, which is also what happens when
//! the process dies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::{mpsc, oneshot, watch};

use super::address::ManagerAddress;
use super::wire::{self, Message, Outbox, Ring};
use crate::connection::wire::serde_bytes_vec::Bytes;
use crate::connection::{Client, Receiver, Sender};
use crate::{Error, Result};

/// What a request withdrawn too late must undo.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Undo {
    /// Run `method` of `object` with the reply's bytes as its arguments (a queue's `get` puts
    /// the item back; a lock's `acquire` releases).
    Call { object: u64, method: &'static str },
    /// The reply names a new object counted for us: give the reference back.
    Unref,
}

enum Pending {
    /// A caller awaits the reply.
    Waiting(oneshot::Sender<Result<Vec<u8>>>),
    /// The caller went away; the reply, if it brings something, is undone.
    Abandoned(Option<Undo>),
}

#[derive(Clone)]
enum Link {
    Connecting,
    Up(Outbox),
    Down,
}

/// The state the driver task shares with callers.
struct Shared {
    pending: Mutex<HashMap<u64, Pending>>,
    control: mpsc::UnboundedSender<Message>,
    link: watch::Receiver<Link>,
    next_id: AtomicU64,
    /// One-way messages queued and not yet written: while there are any, requests queue behind
    /// them, so that a call never overtakes a release (or a count) made before it.
    queued: AtomicUsize,
    /// The receiving half, once connected: whichever caller expects a reply soon reads the
    /// socket (or the ring) itself, with no task hop and no reactor wake-up; the driver reads
    /// when nobody does.
    reader: OnceLock<Reader>,
    /// How many live proxies of each object this process has; the manager counts one reference
    /// for any number of them.
    local_refs: Mutex<HashMap<u64, usize>>,
}

struct Reader {
    rx: tokio::sync::Mutex<Receiver<Message>>,
    /// The ring replies come through, for a manager on this machine.
    replies: Option<Ring>,
}

/// One process's connection to one manager.
pub(crate) struct Session {
    pub(crate) address: ManagerAddress,
    pub(crate) authkey: Vec<u8>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

type SessionKey = (ManagerAddress, Vec<u8>);

static SESSIONS: Mutex<Option<HashMap<SessionKey, Weak<Session>>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// This process's session with the manager at `address`, connecting (in the background) if
    /// there is none or the old one is closed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] outside a tokio runtime.
    pub(crate) fn get(address: &ManagerAddress, authkey: &[u8]) -> Result<Arc<Session>> {
        let key = (address.clone(), authkey.to_vec());
        let mut sessions = lock(&SESSIONS);
        let sessions = sessions.get_or_insert_with(HashMap::new);
        if let Some(session) = sessions.get(&key).and_then(Weak::upgrade)
            && !session.shared.control.is_closed()
            && !matches!(*session.shared.link.borrow(), Link::Down)
        {
            return Ok(session);
        }
        sessions.retain(|_, s| s.strong_count() > 0);
        let session = Session::connect(address.clone(), authkey.to_vec())?;
        sessions.insert(key, Arc::downgrade(&session));
        Ok(session)
    }

    fn connect(address: ManagerAddress, authkey: Vec<u8>) -> Result<Arc<Session>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidArgument("manager proxies are used inside a tokio runtime".into())
        })?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let (link_tx, link) = watch::channel(Link::Connecting);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            control,
            link,
            next_id: AtomicU64::new(1),
            queued: AtomicUsize::new(0),
            reader: OnceLock::new(),
            local_refs: Mutex::new(HashMap::new()),
        });
        runtime.spawn(drive(
            address.clone(),
            authkey.clone(),
            Arc::downgrade(&shared),
            control_rx,
            link_tx,
        ));
        Ok(Arc::new(Session {
            address,
            authkey,
            shared,
        }))
    }

    /// Sends a one-way message, in order with the others; lost only if the session is closed.
    pub(crate) fn post(&self, message: Message) {
        self.shared.post(message);
    }

    /// One more live proxy of `object` in this process.
    pub(crate) fn add_ref(&self, object: u64) {
        let mut refs = lock(&self.shared.local_refs);
        let count = refs.entry(object).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.post(Message::IncRef { object });
        }
    }

    /// A proxy of `object` whose reference the manager has already counted (a create or a
    /// lookup): if this process had one already, give the extra back.
    pub(crate) fn adopt_ref(&self, object: u64) {
        let mut refs = lock(&self.shared.local_refs);
        let count = refs.entry(object).or_insert(0);
        *count += 1;
        if *count > 1 {
            self.post(Message::DecRef { object });
        }
    }

    /// One live proxy of `object` fewer.
    pub(crate) fn drop_ref(&self, object: u64) {
        let mut refs = lock(&self.shared.local_refs);
        if let Some(count) = refs.get_mut(&object) {
            *count -= 1;
            if *count == 0 {
                refs.remove(&object);
                self.post(Message::DecRef { object });
            }
        }
    }

    /// Sends the request `make(id)` and awaits its reply.
    ///
    /// # Cancel safety
    ///
    /// If the returned future is dropped before the reply, the manager is told to withdraw the
    /// request; a request it had already completed is undone with `undo`, if given.
    pub(crate) async fn request(
        &self,
        make: impl FnOnce(u64) -> Message,
        undo: Option<Undo>,
    ) -> Result<Vec<u8>> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, Pending::Waiting(tx));
        let mut guard = CallGuard {
            shared: &self.shared,
            id,
            undo,
            rx: Some(rx),
        };
        let path = match self.path().await {
            Ok(path) => path,
            Err(e) => {
                guard.forget();
                return Err(e);
            }
        };
        let message = make(id);
        if self.shared.queued.load(Ordering::Acquire) > 0 {
            // Behind the one-way messages queued before it.
            self.shared.post(message);
        } else if let Err(e) = path.send(&message).await {
            guard.forget();
            return Err(match e {
                Error::Closed | Error::Io(_) => Error::Closed,
                e => e,
            });
        }
        let rx = guard.rx.as_mut().expect("present until completion");
        let replies = self.shared.reader.get().and_then(|r| r.replies.as_ref());
        let soon = match replies {
            Some(replies) => self.shared.read_ring_reply_soon(replies, rx).await,
            None => self.shared.read_reply_soon(rx),
        };
        let outcome = match soon {
            Some(outcome) => outcome,
            None => self.shared.await_reply(rx).await,
        };
        guard.rx = None;
        outcome
    }

    async fn path(&self) -> Result<Outbox> {
        let mut link = self.shared.link.clone();
        let link = link
            .wait_for(|l| !matches!(l, Link::Connecting))
            .await
            .map_err(|_| Error::Closed)?;
        match &*link {
            Link::Up(path) => Ok(path.clone()),
            _ => Err(Error::Closed),
        }
    }
}

impl Shared {
    /// Reads replies from the ring for up to [`REPLY_SPIN`], routing each, until the one `mine`
    /// waits for has come; `None` if it has not. Any number of callers may read at once. After
    /// a few tight checks it yields to the runtime between checks, so that the other tasks of
    /// this thread (more calls of this client, say) go on meanwhile. Cancel-safe.
    async fn read_ring_reply_soon(
        &self,
        replies: &Ring,
        mine: &mut oneshot::Receiver<Result<Vec<u8>>>,
    ) -> Option<Result<Vec<u8>>> {
        const TIGHT_CHECKS: u32 = 64;
        let start = std::time::Instant::now();
        let mut checks = 0u32;
        loop {
            loop {
                match replies.try_get_bytes().map(|b| wire::decode::<Message>(&b)) {
                    Ok(Ok(message)) => route(self, message),
                    Err(Error::Empty) => break,
                    // Broken: the driver finds out and fails every call.
                    Ok(Err(_)) | Err(_) => return None,
                }
            }
            if let Some(outcome) = arrived(mine) {
                return Some(outcome);
            }
            checks += 1;
            if checks <= TIGHT_CHECKS {
                std::hint::spin_loop();
            } else if start.elapsed() >= REPLY_SPIN {
                return None;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Reads replies from the socket for up to [`REPLY_SPIN`], routing each, until the one
    /// `mine` waits for has come; `None` if it has not (or someone else is reading: one
    /// caller at a time holds the socket's reading half).
    fn read_reply_soon(
        &self,
        mine: &mut oneshot::Receiver<Result<Vec<u8>>>,
    ) -> Option<Result<Vec<u8>>> {
        let reader = self.reader.get()?;
        let mut rx = reader.rx.try_lock().ok()?;
        crate::notify::spin_until(REPLY_SPIN, || {
            loop {
                match rx.try_recv() {
                    Ok(message) => route(self, message),
                    Err(Error::Empty) => break,
                    // Broken: the driver finds out and fails every call.
                    Err(_) => return Some(None),
                }
            }
            arrived(mine).map(Some)
        })
        .flatten()
    }

    /// Waits for the reply `mine` waits for. With rings, the waiting callers read the ring
    /// themselves (each routes what it finds): the driver does not, so a manager answering a
    /// caller that spins for its reply never has a parked reader to wake. Cancel-safe.
    async fn await_reply(&self, mine: &mut oneshot::Receiver<Result<Vec<u8>>>) -> Result<Vec<u8>> {
        let Some(replies) = self.reader.get().and_then(|r| r.replies.as_ref()) else {
            return mine.await.unwrap_or(Err(Error::Closed));
        };
        loop {
            tokio::select! {
                biased;
                outcome = &mut *mine => return outcome.unwrap_or(Err(Error::Closed)),
                bytes = replies.get_bytes() => {
                    match bytes.and_then(|b| wire::decode::<Message>(&b)) {
                        Ok(message) => route(self, message),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Whether a reply is due to a caller that went away (the driver then reads the ring, to
    /// undo what it brings).
    fn has_abandoned(&self) -> bool {
        lock(&self.pending)
            .values()
            .any(|p| matches!(p, Pending::Abandoned(_)))
    }

    fn post(&self, message: Message) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.control.send(message).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The reply, if it has arrived (a session that closed counts as [`Error::Closed`]).
fn arrived(mine: &mut oneshot::Receiver<Result<Vec<u8>>>) -> Option<Result<Vec<u8>>> {
    match mine.try_recv() {
        Ok(outcome) => Some(outcome),
        Err(oneshot::error::TryRecvError::Empty) => None,
        Err(oneshot::error::TryRecvError::Closed) => Some(Err(Error::Closed)),
    }
}

/// Withdraws a request whose caller went away before its reply.
struct CallGuard<'a> {
    shared: &'a Shared,
    id: u64,
    undo: Option<Undo>,
    rx: Option<oneshot::Receiver<Result<Vec<u8>>>>,
}

impl CallGuard<'_> {
    /// The request was never sent: nothing to withdraw.
    fn forget(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
        self.rx = None;
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut pending = lock(&self.shared.pending);
        if let Some(entry) = pending.get_mut(&self.id) {
            *entry = Pending::Abandoned(self.undo);
            drop(pending);
            self.shared.post(Message::Cancel { id: self.id });
        } else if let (Ok(Ok(bytes)), Some(undo)) = (rx.try_recv(), self.undo) {
            // The reply arrived but nobody took it.
            self.shared.post(undo_call(undo, bytes));
        }
    }
}

fn undo_call(undo: Undo, bytes: Vec<u8>) -> Message {
    match undo {
        Undo::Call { object, method } => Message::Call {
            id: 0,
            object,
            method: method.to_owned(),
            args: Bytes(bytes),
        },
        Undo::Unref => match wire::decode::<u64>(&bytes) {
            Ok(object) => Message::DecRef { object },
            // A lookup's reply: `(object, type_name)`.
            Err(_) => match wire::decode::<(u64, String)>(&bytes) {
                Ok((object, _)) => Message::DecRef { object },
                Err(_) => Message::DecRef { object: 0 },
            },
        },
    }
}

/// How long a caller reads the socket for its own reply before leaving it to the driver and
/// parking: longer than a manager takes to answer a small call, far shorter than a call that
/// waits (a queue's `get` on an empty queue).
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(30);

/// Connects, then writes one-way messages and routes replies until the connection or the
/// session ends. Every caller still waiting then gets [`Error::Closed`].
async fn drive(
    address: ManagerAddress,
    authkey: Vec<u8>,
    shared: Weak<Shared>,
    mut control: mpsc::UnboundedReceiver<Message>,
    link: watch::Sender<Link>,
) {
    let connected = Client::builder(address.to_address())
        .authkey(Some(&authkey))
        .connect::<Message>()
        .await;
    let (rx, tx) = match connected {
        Ok(conn) => conn.into_split(),
        Err(e) => {
            tracing::debug!(%address, error = %e, "could not connect to the manager");
            link.send_replace(Link::Down);
            fail_all(&shared);
            return;
        }
    };
    let readiness = match rx.readiness() {
        Ok(readiness) => readiness,
        Err(e) => {
            tracing::debug!(%address, error = %e, "could not wait on the manager connection");
            link.send_replace(Link::Down);
            fail_all(&shared);
            return;
        }
    };
    if address.is_tcp() {
        // A manager whose host vanishes fails the calls within about this long.
        let _ = crate::sys::tcp::fail_after_silence(rx.raw_socket(), super::SILENCE_LIMIT);
    }
    // A manager on this machine: move to shared-memory rings (the socket stays, for its close).
    let rings = if address.is_tcp() {
        None
    } else {
        match attach(&tx).await {
            Ok(rings) => Some(rings),
            Err(e) => {
                tracing::debug!(%address, error = %e, "staying on the socket");
                None
            }
        }
    };
    let replies = rings.as_ref().map(|(_, replies)| replies.clone());
    match shared.upgrade() {
        Some(s) => {
            let _ = s.reader.set(Reader {
                rx: tokio::sync::Mutex::new(rx),
                replies: replies.clone(),
            });
        }
        None => return,
    }
    let path = match rings {
        Some((requests, _)) => Outbox::Ring(requests),
        None => Outbox::Socket(tx.clone()),
    };
    link.send_replace(Link::Up(path.clone()));
    loop {
        // Callers read their own replies from the ring; the driver only reads those of
        // callers that went away (re-checked after each message: a withdrawal posts a cancel).
        let abandoned = replies.is_some() && shared.upgrade().is_some_and(|s| s.has_abandoned());
        let next_on_ring = async {
            match &replies {
                Some(replies) if abandoned => replies.get_bytes().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            message = control.recv() => match message {
                Some(message) => {
                    if write_queued(&path, &tx, message, &mut control, &shared).await.is_err() {
                        break;
                    }
                }
                // The session was dropped and everything it queued is written.
                None => break,
            },
            bytes = next_on_ring => {
                let Some(shared) = shared.upgrade() else { break };
                let Some(replies) = &replies else { break };
                let mut next = bytes;
                let broken = loop {
                    match next.map(|b| wire::decode::<Message>(&b)) {
                        Ok(Ok(message)) => route(&shared, message),
                        Err(Error::Empty) => break false,
                        Ok(Err(e)) | Err(e) => {
                            tracing::debug!(%address, error = %e, "the manager's ring failed");
                            break true;
                        }
                    }
                    next = replies.try_get_bytes();
                };
                if broken {
                    break;
                }
            },
            ready = readiness.readable() => {
                let Ok(mut ready) = ready else { break };
                let Some(shared) = shared.upgrade() else { break };
                let Some(reader) = shared.reader.get() else { break };
                // A caller reading its own reply holds the reader for a few µs at most.
                let mut rx = reader.rx.lock().await;
                let broken = loop {
                    match rx.try_recv() {
                        Ok(message) => route(&shared, message),
                        Err(Error::Empty) => break false,
                        Err(e) => {
                            tracing::debug!(%address, error = %e, "the manager connection closed");
                            break true;
                        }
                    }
                };
                // Keeps readiness that arrived after `readable` returned.
                ready.clear_ready();
                if broken {
                    break;
                }
            },
        }
    }
    link.send_replace(Link::Down);
    // Callers blocked on a ring (a full request ring, say) wake with `Closed`.
    if let Outbox::Ring(requests) = &path {
        requests.shutdown(true);
    }
    if let Some(replies) = &replies {
        replies.shutdown(true);
    }
    fail_all(&shared);
}

/// Makes the two rings and hands them to the manager.
async fn attach(tx: &Sender<Message>) -> Result<(Ring, Ring)> {
    let requests = Ring::new(0)?;
    let replies = Ring::new(0)?;
    tx.send(&Message::Attach {
        requests: requests.clone(),
        replies: replies.clone(),
    })
    .await?;
    Ok((requests, replies))
}

/// Writes `first` and whatever else is queued, in order, then counts them as written.
async fn write_queued(
    path: &Outbox,
    tx: &Sender<Message>,
    first: Message,
    control: &mut mpsc::UnboundedReceiver<Message>,
    shared: &Weak<Shared>,
) -> Result<()> {
    let mut written = 0;
    let mut next = Some(first);
    while let Some(message) = next {
        match path {
            // Batched into one write.
            Outbox::Socket(_) => tx.feed(&message).await?,
            Outbox::Ring(_) => path.send(&message).await?,
        }
        written += 1;
        next = control.try_recv().ok();
    }
    if let Outbox::Socket(_) = path {
        tx.flush().await?;
    }
    if let Some(shared) = shared.upgrade() {
        shared.queued.fetch_sub(written, Ordering::AcqRel);
    }
    Ok(())
}

/// Hands a reply to its caller, or undoes it if the caller went away.
fn route(shared: &Shared, message: Message) {
    let (id, outcome) = match message {
        Message::Reply { id, outcome } => (id, outcome.map(|b| b.0)),
        Message::Cancelled { id } => (id, Err(Error::Closed)),
        other => {
            tracing::debug!(?other, "a manager sent a request to a client; ignored");
            return;
        }
    };
    // Under the lock: a caller going away in between would otherwise find neither the entry
    // nor the reply, and could not undo it.
    let mut pending = lock(&shared.pending);
    let entry = pending.remove(&id);
    match entry {
        Some(Pending::Waiting(tx)) => {
            let _ = tx.send(outcome);
        }
        Some(Pending::Abandoned(Some(undo))) => {
            if let Ok(bytes) = outcome {
                shared.post(undo_call(undo, bytes));
            }
        }
        Some(Pending::Abandoned(None)) | None => {}
    }
}

fn fail_all(shared: &Weak<Shared>) {
    if let Some(shared) = shared.upgrade() {
        // Dropping the senders wakes every caller with `Closed`.
        lock(&shared.pending).clear();
    }
}

/// Decodes a reply.
pub(crate) fn decode_reply<R: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<R> {
    wire::decode(bytes)
}
