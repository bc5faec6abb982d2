//! [`Map`]: the stream a pool's `map` and `map_unordered` return.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pool;
use super::direct_map::{Chunk, DirectMap, NextChunk, results_of};
use super::task::Answer;
use crate::Result;

type Results<R> = Pin<Box<dyn Stream<Item = Result<R>> + Send>>;

/// How a started map runs.
enum Engine<R> {
    /// Each chunk a task through the pool's queue and drivers.
    Queued(Results<R>),
    /// The stream feeds the workers itself (see `direct_map.rs`).
    Direct(Box<Direct<R>>),
}

struct Direct<R> {
    map: DirectMap,
    /// Results ready to be yielded.
    ready: VecDeque<Result<R>>,
    /// For an ordered map: chunks answered ahead of their turn, and whose turn it is.
    ahead: BTreeMap<u64, Vec<Result<R>>>,
    next: u64,
    answers: Vec<(u64, Answer)>,
}

/// The results of a pool's [`map`](Pool::map) (in order) or
/// [`map_unordered`](Pool::map_unordered) (as they finish): a `Stream` of one `Result` per item.
///
/// Items are taken from the iterator lazily, in chunks of [`chunksize`](Self::chunksize), and
/// a bounded number of chunks is in flight, so a long (or endless) iterator never floods the
/// workers. An item whose worker died (with no retry left) gives [`Error::WorkerDied`](crate::Error::WorkerDied); an item
/// whose task panicked gives [`Error::Process`](crate::Error::Process); every other item goes on.
///
/// Unless the pool has a task timeout, a task budget per worker or an initializer (whose
/// bookkeeping needs the pool's drivers to see every task), the stream hands its chunks to
/// the workers' queues itself — a batch at a time, to the workers holding the fewest — and
/// reads their answers while it is polled, checking for up to 50 µs before it parks when
/// answers are due. A worker that dies still fails (or, with retries, reruns) only the chunk
/// it was running; the ones queued behind it run elsewhere.
///
/// # Cancel safety
///
/// Dropping the stream drops the results still to come; chunks already sent run to the end.
#[must_use = "streams do nothing unless polled"]
pub struct Map<R> {
    pool: Pool,
    entry: i64,
    next_chunk: Option<NextChunk>,
    /// How many items the iterator will give, when it knows.
    known_len: Option<usize>,
    chunksize: Option<usize>,
    ordered: bool,
    engine: Option<Engine<R>>,
}

impl<R> std::fmt::Debug for Map<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("chunksize", &self.chunksize)
            .field("ordered", &self.ordered)
            .finish_non_exhaustive()
    }
}

impl<R: Serialize + DeserializeOwned + Send + 'static> Map<R> {
    pub(super) fn new<A, I>(pool: Pool, entry: i64, mut items: I, ordered: bool) -> Map<R>
    where
        A: Serialize + Send + 'static,
        I: Iterator<Item = A> + Send + 'static,
    {
        let (low, high) = items.size_hint();
        let known_len = (Some(low) == high).then_some(low);
        let next_chunk: NextChunk = Box::new(move |size| {
            if size == 1 {
                // A one-item chunk has the wire form of a one-element `Vec`, without building one.
                let item = items.next()?;
                return Some(Chunk {
                    items: 1,
                    encoded: crate::handle::encode(std::slice::from_ref(&item)),
                });
            }
            let chunk: Vec<A> = items.by_ref().take(size).collect();
            (!chunk.is_empty()).then(|| Chunk {
                items: chunk.len(),
                encoded: crate::handle::encode(&chunk),
            })
        });
        Map {
            pool,
            entry,
            next_chunk: Some(next_chunk),
            known_len,
            chunksize: None,
            ordered,
            engine: None,
        }
    }

    /// Items per task message (Python's `chunksize`). By default, for an iterator that knows
    /// its length, a quarter of each worker's share (as Python); otherwise 64. `1` sends every
    /// item as a task of its own. Takes effect before the first poll.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n.max(1));
        self
    }

    /// Every result, in the stream's order; the first error, if any.
    ///
    /// # Errors
    ///
    /// The first item's error, as the stream gives it.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: the stream is consumed, so dropping this future loses the results
    /// gathered so far (as dropping the stream does; chunks already sent run to the end).
    pub async fn collect_vec(self) -> Result<Vec<R>> {
        self.try_collect().await
    }

    fn start(&mut self) -> Engine<R> {
        let processes = self.pool.processes();
        let chunksize = self.chunksize.unwrap_or_else(|| match self.known_len {
            Some(len) => len.div_ceil(4 * processes).max(1),
            None => 64,
        });
        let next_chunk = self.next_chunk.take().expect("started once");
        let mut next_chunk = match DirectMap::new(&self.pool, self.entry, next_chunk, chunksize) {
            Ok(map) => {
                return Engine::Direct(Box::new(Direct {
                    map,
                    ready: VecDeque::new(),
                    ahead: BTreeMap::new(),
                    next: 0,
                    answers: Vec::new(),
                }));
            }
            Err(next_chunk) => next_chunk,
        };
        let chunks = futures::stream::iter(std::iter::from_fn(move || next_chunk(chunksize)));
        let (pool, entry) = (self.pool.clone(), self.entry);
        let tasks = chunks.map(move |chunk| {
            let pool = pool.clone();
            async move { run_chunk::<R>(&pool, entry, chunk).await }
        });
        let window = self.pool.window();
        let chunks: Pin<Box<dyn Stream<Item = Vec<Result<R>>> + Send>> = if self.ordered {
            tasks.buffered(window).boxed()
        } else {
            tasks.buffer_unordered(window).boxed()
        };
        Engine::Queued(chunks.flat_map(futures::stream::iter).boxed())
    }
}

async fn run_chunk<R: Serialize + DeserializeOwned + Send + 'static>(
    pool: &Pool,
    entry: i64,
    chunk: Chunk,
) -> Vec<Result<R>> {
    let task = pool.submit_encoded::<()>(entry, chunk.encoded).await;
    let answer = task.answer.await.unwrap_or(Err(crate::Error::Closed));
    results_of(answer, chunk.items)
}

impl<R: DeserializeOwned> Direct<R> {
    fn poll_next(&mut self, cx: &mut Context<'_>, ordered: bool) -> Poll<Option<Result<R>>> {
        loop {
            if let Some(result) = self.ready.pop_front() {
                return Poll::Ready(Some(result));
            }
            let done = match self.map.poll_answers(cx, &mut self.answers) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => done,
            };
            for (chunk, answer) in self.answers.drain(..) {
                let results = results_of(answer, self.map.items_in(chunk));
                if ordered {
                    self.ahead.insert(chunk, results);
                } else {
                    self.ready.extend(results);
                }
            }
            while let Some(results) = self.ahead.remove(&self.next) {
                self.ready.extend(results);
                self.next += 1;
            }
            if done && self.ready.is_empty() {
                return Poll::Ready(None);
            }
        }
    }
}

impl<R: Serialize + DeserializeOwned + Send + 'static> Stream for Map<R> {
    type Item = Result<R>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        if self.engine.is_none() {
            let engine = self.start();
            self.engine = Some(engine);
        }
        let ordered = self.ordered;
        match self.engine.as_mut().expect("started above") {
            Engine::Queued(results) => results.as_mut().poll_next(cx),
            Engine::Direct(direct) => direct.poll_next(cx, ordered),
        }
    }
}
