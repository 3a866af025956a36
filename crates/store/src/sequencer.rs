//! The sequencer: the one writer of the ledger, beside `apply_batch`.
//! Requests queue on a channel; the sequencer takes whatever has queued (up
//! to its batch size) and writes it as one transaction with one fsync (group
//! commit), then answers each request. Nobody is answered before their
//! batch is durable, and before the batch's account states are handed to
//! `committed` (the server's in-memory reservations).
//!
//! A batch costs the same few round trips, pages and fsync whether it
//! holds one command or a hundred. While callers have announced commands
//! on their way ([`Sequencer::coming`]: calls running their model), the
//! sequencer lets a batch smaller than its bound wait [`Batching::delay`]
//! for them: under load batches grow and the writer's work per call falls;
//! alone, a call never waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ledger::{AccountId, AccountState};
use tokio::sync::{mpsc, oneshot};

use crate::{BatchItem, BatchOutcome, ItemError, Store};

/// Requests waiting for the sequencer at most; past this, callers wait to queue.
const QUEUE_CAPACITY: usize = 4096;

/// Upper bounds of the batch-size histogram's buckets.
pub const BATCH_SIZE_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 64, 256, u64::MAX];

#[derive(Debug, Clone)]
pub struct Sequencer {
    queue: mpsc::Sender<Request>,
    pub stats: Arc<SequencerStats>,
    coming: Arc<AtomicUsize>,
}

/// How the sequencer forms its batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Commands in one transaction at most.
    pub max: usize,
    /// How long a batch below `max` waits for commands announced as coming
    /// (zero: never).
    pub delay: Duration,
}

/// A command on its way to the sequencer (see [`Sequencer::coming`]);
/// dropping it withdraws the announcement.
#[derive(Debug)]
pub struct Coming(Arc<AtomicUsize>);

impl Drop for Coming {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct SequencerStats {
    pub batches: AtomicU64,
    pub items: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Count of batches per size bucket ([`BATCH_SIZE_BUCKETS`]).
    pub batch_sizes: [AtomicU64; 8],
}

/// Why a request got no outcome of its own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SequencerError {
    /// The whole batch failed (a database fault or a broken invariant) and
    /// wrote nothing; every request in it gets this.
    #[error("a ledger batch of {size} failed: {message}")]
    Batch { size: usize, message: String },
    /// The sequencer is gone: the server is shutting down.
    #[error("the ledger's sequencer has stopped")]
    Stopped,
}

/// A request's outcome: its own (done, or refused by the ledger's rules),
/// or its batch's failure.
pub type Reply = Result<Result<BatchOutcome, ItemError>, SequencerError>;

#[derive(Debug)]
struct Request {
    item: BatchItem,
    reply: oneshot::Sender<Reply>,
}

impl Sequencer {
    /// Starts the sequencer on a thread of its own; it ends when every
    /// handle is dropped. `committed` sees the state, after each batch, of
    /// every account the batch loaded, before anyone in it is answered.
    pub fn start(
        store: Store,
        batching: Batching,
        committed: impl Fn(&HashMap<AccountId, AccountState>) + Send + 'static,
    ) -> Sequencer {
        let (queue, mut receiver) = mpsc::channel::<Request>(QUEUE_CAPACITY);
        let stats = Arc::new(SequencerStats::default());
        let task_stats = stats.clone();
        let coming = Arc::new(AtomicUsize::new(0));
        let announced = coming.clone();
        let Batching { max: batch_max, delay } = batching;
        // The writer runs on a thread of its own, not as one task among the
        // request handlers: each of a batch's statements is an await, and
        // under load a task waits behind every runnable handler before it
        // runs again, which stretched a batch of 30 from under a
        // millisecond to two, while every caller in it waited.
        let writer = async move {
            let mut batch = Vec::with_capacity(batch_max);
            while receiver.recv_many(&mut batch, batch_max).await > 0 {
                if !delay.is_zero() && batch.len() < batch_max && announced.load(Ordering::Relaxed) > 0 {
                    // One sleep of this thread, not a wake per arrival; what
                    // queued meanwhile joins the batch.
                    std::thread::sleep(delay);
                    while batch.len() < batch_max
                        && let Ok(request) = receiver.try_recv()
                    {
                        batch.push(request);
                    }
                }
                let (items, replies): (Vec<BatchItem>, Vec<_>) =
                    batch.drain(..).map(|request| (request.item, request.reply)).unzip();
                task_stats.record(items.len() as u64);
                match store.apply_batch_reporting(&items).await {
                    Ok((outcomes, accounts)) => {
                        committed(&accounts);
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(error) => {
                        tracing::error!(size = items.len(), %error, "a ledger batch failed");
                        let error = SequencerError::Batch { size: items.len(), message: error.to_string() };
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(runtime) => {
                let spawned = std::thread::Builder::new()
                    .name("vitrine-sequencer".into())
                    .spawn(move || runtime.block_on(writer));
                if let Err(error) = spawned {
                    panic!("cannot start the sequencer's thread: {error}");
                }
            }
            Err(error) => panic!("cannot start the sequencer's runtime: {error}"),
        }
        Sequencer { queue, stats, coming }
    }

    /// Announces a command that will be submitted soon (a call about to run
    /// its model), until the returned guard is dropped: a batch formed
    /// meanwhile waits for it a little (see [`Batching::delay`]).
    pub fn coming(&self) -> Coming {
        self.coming.fetch_add(1, Ordering::Relaxed);
        Coming(self.coming.clone())
    }

    /// Queues one command and waits until its batch is durable.
    pub async fn submit(&self, item: BatchItem) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Request { item, reply }).await.map_err(|_| SequencerError::Stopped)?;
        answer.await.map_err(|_| SequencerError::Stopped)?
    }
}

impl SequencerStats {
    fn record(&self, size: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(size, Ordering::Relaxed);
        self.largest_batch.fetch_max(size, Ordering::Relaxed);
        let bucket = BATCH_SIZE_BUCKETS.iter().position(|&bound| size <= bound).unwrap_or(BATCH_SIZE_BUCKETS.len() - 1);
        self.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }
}
