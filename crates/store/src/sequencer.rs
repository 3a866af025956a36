//! The sequencer: the one writer of the ledger, beside `apply_batch`.
//! Requests queue on a channel; the sequencer takes whatever has queued (up
//! to its batch size) and writes it as one transaction (group commit), hands
//! the batch's account states, with the reservations its applied charges
//! end ([`Charge::release`]), to `committed` (the server's in-memory
//! reservations), and goes on to the next batch while a thread beside it
//! (the syncer) makes the commit durable: one fsync for every batch
//! committed since its last (see [`crate::WalSync`]), then answers each
//! request. Nobody is answered before their batch is durable.
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

use crate::{BatchItem, BatchOutcome, Charge, ItemError, Store};

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
    /// The syncer's fsyncs (each makes every batch committed before it durable).
    pub syncs: AtomicU64,
}

/// Why a request got no outcome of its own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SequencerError {
    /// The whole batch failed (a database fault or a broken invariant) and
    /// wrote nothing; every request in it gets this.
    #[error("a ledger batch of {size} failed: {message}")]
    Batch { size: usize, message: String },
    /// The batch committed, but the fsync that makes it durable failed: what
    /// it wrote may be lost with the machine's power.
    #[error("a committed ledger batch could not be made durable: {0}")]
    NotDurable(String),
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
    /// Starts the sequencer on a thread of its own, and its syncer on
    /// another; they end when every handle is dropped. `committed` sees the
    /// state, after each batch, of every account the batch loaded, and the
    /// `release` of each charge it applied, before anyone in it is answered.
    pub fn start(
        store: Store,
        batching: Batching,
        committed: impl Fn(&HashMap<AccountId, AccountState>, &[u64]) + Send + 'static,
    ) -> Sequencer {
        let wal = store.wal_sync();
        Sequencer::start_syncing(store, batching, committed, move || wal.sync())
    }

    /// [`Sequencer::start`] with `sync` as what makes commits durable.
    fn start_syncing(
        store: Store,
        batching: Batching,
        committed: impl Fn(&HashMap<AccountId, AccountState>, &[u64]) + Send + 'static,
        sync: impl Fn() -> std::io::Result<()> + Send + 'static,
    ) -> Sequencer {
        let (queue, mut receiver) = mpsc::channel::<Request>(QUEUE_CAPACITY);
        let stats = Arc::new(SequencerStats::default());
        let task_stats = stats.clone();
        let coming = Arc::new(AtomicUsize::new(0));
        let announced = coming.clone();
        let Batching { max: batch_max, delay } = batching;
        let syncer = start_syncer(sync, stats.clone());
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
                        let released: Vec<u64> = items
                            .iter()
                            .zip(&outcomes)
                            .filter_map(|(item, outcome)| match (item, outcome) {
                                (BatchItem::Charge(Charge { release: Some(id), .. }), Ok(_)) => Some(*id),
                                _ => None,
                            })
                            .collect();
                        committed(&accounts, &released);
                        if syncer.send(replies.into_iter().zip(outcomes).collect()).is_err() {
                            tracing::error!("the ledger's syncer has stopped");
                            break;
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

/// A committed batch's requests with their outcomes, to answer once durable.
type Committed = Vec<(oneshot::Sender<Reply>, Result<BatchOutcome, ItemError>)>;

/// Starts the syncer: it waits for a committed batch, takes every other one
/// committed meanwhile, makes them durable with one `sync`, then answers
/// their requests; the sequencer meanwhile writes its next batch.
fn start_syncer(
    sync: impl Fn() -> std::io::Result<()> + Send + 'static,
    stats: Arc<SequencerStats>,
) -> std::sync::mpsc::Sender<Committed> {
    let (sender, receiver) = std::sync::mpsc::channel::<Committed>();
    let syncer = move || {
        while let Ok(first) = receiver.recv() {
            let mut batches = vec![first];
            batches.extend(receiver.try_iter());
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            let synced = sync();
            if let Err(error) = &synced {
                tracing::error!(%error, "committed ledger batches could not be made durable");
            }
            for (reply, outcome) in batches.into_iter().flatten() {
                let answer = match &synced {
                    Ok(()) => Ok(outcome),
                    Err(error) => Err(SequencerError::NotDurable(error.to_string())),
                };
                let _ = reply.send(answer);
            }
        }
    };
    if let Err(error) = std::thread::Builder::new().name("vitrine-syncer".into()).spawn(syncer) {
        panic!("cannot start the sequencer's syncer: {error}");
    }
    sender
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use domain::{AccountName, Amount};
    use ledger::{Command, Transfer, TransferKind};

    use super::*;
    use crate::AccountKind;

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The sequencer writes its next batch while the last one's fsync runs,
    /// and answers nobody before an fsync that began after their commit
    /// returned.
    #[tokio::test]
    async fn the_next_batch_commits_while_the_last_one_syncs() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let store = Store::open(&folder.path().join("vitrine.sqlite")).await.expect("open");
        let issuer = store.ensure_system_account(&AccountName::issuer(), AccountKind::Issuer).await.expect("issuer");
        let treasury =
            store.ensure_system_account(&AccountName::treasury(), AccountKind::Treasury).await.expect("treasury");
        // Each sync waits until the test lets it return.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let sync = move || {
            let _ = gate.lock().expect("never poisoned").recv();
            Ok(())
        };
        let batching = Batching { max: 16, delay: Duration::ZERO };
        let sequencer = Sequencer::start_syncing(store.clone(), batching, |_, _| {}, sync);
        let deposit = |n: u64| {
            let transfer = Transfer {
                debit: issuer.id,
                credit: treasury.id,
                amount: Amount::from_minor_units(n).expect("an amount"),
                kind: TransferKind::Deposit,
                reference: format!("deposit {n}"),
            };
            let sequencer = sequencer.clone();
            tokio::spawn(async move { sequencer.submit(BatchItem::command(Command::Transfer(transfer))).await })
        };
        let stats = sequencer.stats.clone();
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

        let first = deposit(1);
        until("the first batch syncs", || count(&stats.batches) == 1 && count(&stats.syncs) == 1).await;
        let second = deposit(2);
        until("the second batch commits", || count(&stats.batches) == 2).await;
        // Both committed (visible), neither answered: the first's fsync has not returned.
        let (treasury_balance, _) = store.balances(treasury.id).await.expect("balances");
        assert_eq!(treasury_balance.balance(), 3);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!first.is_finished() && !second.is_finished(), "nobody is answered before their fsync");

        release.send(()).expect("the syncer waits");
        first.await.expect("the first call").expect("a batch").expect("deposited");
        until("the second batch syncs", || count(&stats.syncs) == 2).await;
        assert!(!second.is_finished(), "the second batch committed after the first fsync began");
        release.send(()).expect("the syncer waits");
        second.await.expect("the second call").expect("a batch").expect("deposited");
    }
}
