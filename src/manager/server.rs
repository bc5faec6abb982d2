//! The manager's side: the object table, reference counts, and one task per connection.
//!
//! Every object has one count: a reference per connection that holds proxies of it (however
//! many proxies that process has), one per published name, and one per proxy in flight (a
//! *hold*, released by whoever receives the proxy). When a connection closes — its process
//! exited, dropped its last proxy, or was killed — its references go with it; an object whose
//! count reaches zero is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::served::{Call, Served, TypeTable};
use super::wire::{self, Message, Outbox, Ring};
use crate::connection::wire::serde_bytes_vec::Bytes;
use crate::connection::{Connection, Listener};
use crate::{Error, Result};

/// Most requests taken from a client's ring at once.
const BATCH: usize = 64;

/// How many releases that arrived before their holds the manager remembers.
const MAX_EARLY_RELEASES: usize = 1 << 16;

struct Entry {
    served: Arc<dyn Served>,
    type_name: &'static str,
    refs: usize,
}

#[derive(Default)]
struct State {
    objects: HashMap<u64, Entry>,
    next_object: u64,
    names: HashMap<String, u64>,
    holds: HashMap<u128, u64>,
    /// Releases that arrived before their hold (they travel on different connections).
    early_releases: HashSet<u128>,
    conn_refs: HashMap<u64, HashMap<u64, usize>>,
}

impl State {
    fn incref(&mut self, object: u64) -> bool {
        match self.objects.get_mut(&object) {
            Some(entry) => {
                entry.refs += 1;
                true
            }
            None => false,
        }
    }

    fn incref_for(&mut self, conn: u64, object: u64) {
        if self.incref(object) {
            *self
                .conn_refs
                .entry(conn)
                .or_default()
                .entry(object)
                .or_insert(0) += 1;
        }
    }

    /// Drops one reference; returns the object if that was the last.
    #[must_use]
    fn decref(&mut self, object: u64) -> Option<Arc<dyn Served>> {
        let entry = self.objects.get_mut(&object)?;
        entry.refs -= 1;
        if entry.refs > 0 {
            return None;
        }
        self.objects.remove(&object).map(|e| e.served)
    }

    #[must_use]
    fn decref_for(&mut self, conn: u64, object: u64) -> Option<Arc<dyn Served>> {
        let refs = self.conn_refs.get_mut(&conn)?;
        let count = refs.get_mut(&object)?;
        *count -= 1;
        if *count == 0 {
            refs.remove(&object);
        }
        self.decref(object)
    }
}

/// A running manager.
pub(crate) struct Server {
    types: TypeTable,
    state: Mutex<State>,
    stop: CancellationToken,
    next_conn: AtomicU64,
}

impl Server {
    pub(crate) fn new(types: TypeTable) -> Arc<Server> {
        Arc::new(Server {
            types,
            state: Mutex::new(State {
                next_object: 1,
                ..State::default()
            }),
            stop: CancellationToken::new(),
            next_conn: AtomicU64::new(1),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token cancelled when the manager stops.
    pub(crate) fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops serving and drops every object.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
        let objects = {
            let mut state = self.state();
            state.names.clear();
            state.holds.clear();
            state.conn_refs.clear();
            std::mem::take(&mut state.objects)
        };
        // Dropped outside the lock: a user object's `Drop` may take its time.
        drop(objects);
    }

    /// How many objects the manager holds.
    pub(crate) fn object_count(&self) -> usize {
        self.state().objects.len()
    }

    /// Accepts connections until stopped, then drops every object.
    pub(crate) async fn run(self: Arc<Self>, mut listener: Listener<Message>) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => {
                        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(self.clone().serve_connection(conn, conn_id));
                    }
                    Err(e) => tracing::debug!(error = %e, "a manager client failed to connect"),
                },
            }
        }
        drop(listener);
        self.stop();
    }

    async fn serve_connection(self: Arc<Self>, connection: Connection<Message>, conn: u64) {
        let (rx, tx) = connection.into_split();
        // A remote client whose host vanishes is let go within about this long (not a TCP
        // socket: nothing to do, and the call says so).
        let _ = crate::sys::tcp::fail_after_silence(rx.raw_socket(), super::SILENCE_LIMIT);
        // Until the client attaches its rings, requests come over the socket.
        let mut socket = Some(rx);
        let mut reply = Outbox::Socket(tx);
        let mut requests: Option<Ring> = None;
        // Requests taken from the ring and not handled yet.
        let mut waiting: std::collections::VecDeque<bytes::Bytes> = Default::default();
        // Cancelled when the client hangs up (or we do).
        let hangup = CancellationToken::new();
        let inflight: Arc<Mutex<HashMap<u64, CancellationToken>>> = Arc::default();
        loop {
            if self.stop.is_cancelled() || hangup.is_cancelled() {
                break;
            }
            let message = match (&requests, socket.as_mut()) {
                // Requests are taken in batches (one lock for all that wait: several tasks of a
                // client call at once), and those already there without building any waiter.
                (Some(ring), _) => {
                    if waiting.is_empty() {
                        let got = match ring.get_many_bytes(BATCH).now_or_never() {
                            Some(got) => got,
                            None => tokio::select! {
                                () = self.stop.cancelled() => break,
                                () = hangup.cancelled() => break,
                                got = ring.get_many_bytes(BATCH) => got,
                            },
                        };
                        match got {
                            Ok(requests) => waiting.extend(requests),
                            Err(e) => {
                                if !matches!(e, Error::Closed) {
                                    tracing::debug!(error = %e, "a client's ring failed");
                                }
                                break;
                            }
                        }
                    }
                    match waiting.pop_front() {
                        Some(bytes) => wire::decode::<Message>(&bytes),
                        None => continue,
                    }
                }
                (None, Some(rx)) => tokio::select! {
                    () = self.stop.cancelled() => break,
                    message = rx.recv() => message,
                },
                (None, None) => break,
            };
            let message = match message {
                Ok(Message::Attach {
                    requests: ring,
                    replies,
                }) if requests.is_none() => {
                    // From now on the socket only tells when the client is gone; a watcher
                    // then closes both rings, which wakes this loop even while a reply waits
                    // for room in a ring nobody reads.
                    if let Some(rx) = socket.take() {
                        tokio::spawn(watch_hangup(
                            rx,
                            [ring.clone(), replies.clone()],
                            hangup.clone(),
                        ));
                    }
                    requests = Some(ring);
                    reply = Outbox::Ring(replies);
                    continue;
                }
                other => other,
            };
            let handled = match message {
                Ok(message) => {
                    let mut handling =
                        std::pin::pin!(self.handle(conn, message, &reply, &inflight));
                    // Usually done at once (the reply fits in the ring); only a reply that must
                    // wait for room also watches for the client hanging up.
                    match (&mut handling).now_or_never() {
                        Some(handled) => handled,
                        None => tokio::select! {
                            handled = handling => handled,
                            () = hangup.cancelled() => Err(Error::Closed),
                        },
                    }
                }
                Err(e) => {
                    if !matches!(e, Error::Closed) {
                        tracing::debug!(error = %e, "dropping a manager client that sent garbage");
                    }
                    Err(e)
                }
            };
            if handled.is_err() {
                break;
            }
        }
        // Hang up now, whoever else still holds the socket or the rings.
        hangup.cancel();
        if let Some(rx) = socket {
            rx.shutdown();
        }
        for token in lock(&inflight).drain().map(|(_, t)| t) {
            token.cancel();
        }
        self.connection_closed(conn);
    }

    fn connection_closed(&self, conn: u64) {
        let (released, everyone) = {
            let mut state = self.state();
            let refs = state.conn_refs.remove(&conn).unwrap_or_default();
            let mut released = Vec::new();
            for (object, count) in refs {
                for _ in 0..count {
                    released.extend(state.decref(object));
                }
            }
            let everyone: Vec<_> = state.objects.values().map(|e| e.served.clone()).collect();
            (released, everyone)
        };
        for object in released.iter().chain(&everyone) {
            object.caller_gone(conn);
        }
    }

    /// Handles one message; `Err` only when the connection is broken.
    async fn handle(
        &self,
        conn: u64,
        message: Message,
        tx: &Outbox,
        inflight: &Arc<Mutex<HashMap<u64, CancellationToken>>>,
    ) -> Result<()> {
        let reply = |id: u64, outcome: Result<Vec<u8>>| Message::Reply {
            id,
            outcome: outcome.map(Bytes),
        };
        match message {
            Message::Call {
                id,
                object,
                method,
                args,
            } => {
                let served = self.state().objects.get(&object).map(|e| e.served.clone());
                let Some(served) = served else {
                    if id != 0 {
                        let e = Error::Remote(format!("no object {object} (it was dropped)"));
                        tx.send(&reply(id, Err(e))).await?;
                    }
                    return Ok(());
                };
                let mut future = served.call(Call {
                    method,
                    args: args.0,
                    conn,
                });
                if let Some(outcome) = (&mut future).now_or_never() {
                    if id != 0 {
                        tx.send(&reply(id, outcome)).await?;
                    }
                    return Ok(());
                }
                let token = CancellationToken::new();
                if id != 0 {
                    lock(inflight).insert(id, token.clone());
                }
                let tx = tx.clone();
                let inflight = inflight.clone();
                tokio::spawn(async move {
                    let message = tokio::select! {
                        biased;
                        outcome = future => reply(id, outcome),
                        () = token.cancelled() => Message::Cancelled { id },
                    };
                    if id != 0 {
                        lock(&inflight).remove(&id);
                        let _ = tx.send(&message).await;
                    }
                });
            }
            Message::Cancel { id } => {
                if let Some(token) = lock(inflight).get(&id) {
                    token.cancel();
                }
            }
            Message::Create {
                id,
                type_name,
                init,
            } => {
                let outcome = self.create(conn, &type_name, &init.0);
                tx.send(&reply(id, outcome.and_then(|o| wire::encode(&o))))
                    .await?;
            }
            Message::Publish { id, name, object } => {
                let outcome = self.publish(name, object);
                tx.send(&reply(id, outcome.and_then(|()| wire::encode(&()))))
                    .await?;
            }
            Message::Lookup { id, name } => {
                let outcome = self.lookup(conn, &name);
                tx.send(&reply(id, outcome.and_then(|o| wire::encode(&o))))
                    .await?;
            }
            Message::IncRef { object } => self.state().incref_for(conn, object),
            Message::DecRef { object } => {
                let released = self.state().decref_for(conn, object);
                drop(released);
            }
            Message::Hold { object, token } => {
                let mut state = self.state();
                if !state.early_releases.remove(&token) && state.incref(object) {
                    state.holds.insert(token, object);
                }
            }
            Message::Release { token } => {
                let released = {
                    let mut state = self.state();
                    match state.holds.remove(&token) {
                        Some(object) => state.decref(object),
                        None => {
                            // Bounded: a client sending releases of holds that never come
                            // must not grow the manager without end (a forgotten early
                            // release only keeps one object until shutdown).
                            if state.early_releases.len() >= MAX_EARLY_RELEASES {
                                state.early_releases.clear();
                            }
                            state.early_releases.insert(token);
                            None
                        }
                    }
                };
                drop(released);
            }
            Message::ObjectCount { id } => {
                let count = self.object_count() as u64;
                tx.send(&reply(id, wire::encode(&count))).await?;
            }
            Message::Shutdown { id } => {
                tx.send(&reply(id, wire::encode(&()))).await?;
                self.stop();
            }
            Message::Reply { .. } | Message::Cancelled { .. } | Message::Attach { .. } => {
                return Err(Error::Corrupt(
                    "a client sent a message out of place".into(),
                ));
            }
        }
        Ok(())
    }

    fn create(&self, conn: u64, type_name: &str, init: &[u8]) -> Result<u64> {
        let (&type_name, constructor) = self
            .types
            .0
            .get_key_value(type_name)
            .ok_or_else(|| Error::Remote(format!("no type {type_name:?} is registered")))?;
        let served = std::panic::catch_unwind(|| constructor(init))
            .map_err(|p| Error::Remote(crate::process::panic_message(&*p)))??;
        let mut state = self.state();
        let object = state.next_object;
        state.next_object += 1;
        state.objects.insert(
            object,
            Entry {
                served,
                type_name,
                refs: 0,
            },
        );
        state.incref_for(conn, object);
        Ok(object)
    }

    fn publish(&self, name: String, object: u64) -> Result<()> {
        let replaced = {
            let mut state = self.state();
            if !state.incref(object) {
                return Err(Error::Remote(format!(
                    "no object {object} (it was dropped)"
                )));
            }
            match state.names.insert(name, object) {
                Some(old) => state.decref(old),
                None => None,
            }
        };
        drop(replaced);
        Ok(())
    }

    fn lookup(&self, conn: u64, name: &str) -> Result<(u64, String)> {
        let mut state = self.state();
        let object = *state
            .names
            .get(name)
            .ok_or_else(|| Error::Remote(format!("nothing is published as {name:?}")))?;
        let type_name = state.objects.get(&object).map(|e| e.type_name.to_owned());
        let type_name =
            type_name.ok_or_else(|| Error::Remote(format!("nothing is published as {name:?}")))?;
        state.incref_for(conn, object);
        Ok((object, type_name))
    }
}

/// Watches a ring client's socket: when the client hangs up (or sends anything there, which it
/// never does once attached), or we do, closes both rings so that every wait on them ends.
async fn watch_hangup(
    mut rx: crate::connection::Receiver<Message>,
    rings: [Ring; 2],
    hangup: CancellationToken,
) {
    tokio::select! {
        _ = rx.recv_parked() => {}
        () = hangup.cancelled() => {}
    }
    hangup.cancel();
    for ring in &rings {
        ring.shutdown(true);
    }
    rx.shutdown();
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
