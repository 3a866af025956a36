//! Dynamic batching (`batch_calls_max` > 1): one caller's concurrent calls
//! of one model version, whose inputs differ only in their first dimension,
//! run as one call of a worker, their rows stacked; each call then gets its
//! own rows of every output, and is charged, logged and answered as if it
//! had run alone.
//!
//! Only a caller's own calls are batched together: a model is untrusted
//! and may mix the rows of a batch (a sum over the batch, say), so one
//! caller's inputs never meet another's. Only models whose every input and
//! output has the same symbol as its first dimension (`N`), and only calls
//! whose inputs together stay within `tensor_elements_max`.
//!
//! The first call of a batch (its leader) waits `batch_wait_us` for others
//! (or until `batch_calls_max` joined), then runs them all. A call runs at
//! once, alone, when no other call of its key is in flight or a worker is
//! free: waiting pays only while every worker is busy (and a caller alone
//! waits for nobody). Without isolation, workers are not counted as busy,
//! and calls are not batched. If the batch
//! fails, or its outputs cannot be split by rows, every call runs alone, so
//! that a failure (and a quarantine strike) is its own call's. A call whose
//! leader is dropped (its client gone) runs alone too.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::{Dim, Dtype, Sha256, TensorSpec};
use runtime::Tensor;
use sandbox::{Executor, Failure, ModelFile, Ran, RunFailure};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// How often a batch's leader looks for a free worker while it waits.
const WORKER_POLL: Duration = Duration::from_micros(500);

pub struct Batcher {
    calls_max: usize,
    wait: Duration,
    elements_max: u64,
    forming: Mutex<HashMap<Key, Arc<Forming>>>,
    /// Calls of each key between their start and their answer.
    in_flight: Mutex<HashMap<Key, usize>>,
    /// Batches of two calls or more run (`vitrine_batches_total`).
    pub batches: AtomicU64,
    /// Calls answered from such a batch (`vitrine_batched_calls_total`).
    pub batched_calls: AtomicU64,
}

/// Calls that may share a batch: one caller's, of one model, with inputs
/// of the same dtypes and sizes but the first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: u64,
    digest: Sha256,
    inputs: Vec<(Dtype, Vec<usize>)>,
}

/// A batch being formed: the calls that joined its leader.
struct Forming {
    /// `None` once the leader took them.
    joined: Mutex<Option<Joining>>,
    full: Notify,
}

struct Joining {
    calls: Vec<Joined>,
    /// Elements of every call's inputs, the leader's included.
    elements: u64,
}

struct Joined {
    inputs: Arc<Vec<Tensor>>,
    rows: usize,
    answer: oneshot::Sender<Outcome>,
}

enum Outcome {
    Ran(Ran),
    /// Run alone instead.
    Alone,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("calls_max", &self.calls_max).field("wait", &self.wait).finish_non_exhaustive()
    }
}

impl Batcher {
    pub fn new(calls_max: usize, wait: Duration, elements_max: u64) -> Batcher {
        Batcher {
            calls_max,
            wait,
            elements_max,
            forming: Mutex::default(),
            in_flight: Mutex::default(),
            batches: AtomicU64::new(0),
            batched_calls: AtomicU64::new(0),
        }
    }

    /// Runs a call's checked inputs on the executor, in a batch where it may.
    pub async fn run<F, Fut>(
        &self,
        executor: &Executor,
        tenant: u64,
        version: &store::Version,
        inputs: Vec<Tensor>,
        deadline: Instant,
        model_file: F,
    ) -> Result<Ran, RunFailure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::io::Result<ModelFile>>,
    {
        let digest = version.blob_sha256;
        let rows = inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(0);
        if self.calls_max <= 1 || rows == 0 || !batchable(&version.inputs, &version.outputs) {
            return executor.run(tenant, digest, inputs, deadline, model_file).await;
        }
        let key = Key { tenant, digest, inputs: inputs.iter().map(|t| (t.dtype(), t.shape[1..].to_vec())).collect() };
        let elements: u64 = inputs.iter().map(|t| t.len() as u64).sum();
        let flying = InFlight::enter(self, &key);
        let inputs = Arc::new(inputs);
        let (answer, answered) = oneshot::channel();
        let joined = Joined { inputs: inputs.clone(), rows, answer };
        match self.join(&key, joined, elements) {
            Ok(()) => {
                let outcome = tokio::time::timeout_at(deadline, answered).await;
                match outcome {
                    Ok(Ok(Outcome::Ran(ran))) => Ok(ran),
                    // The batch failed, or its leader is gone: alone.
                    Ok(Ok(Outcome::Alone) | Err(_)) => {
                        executor.run(tenant, digest, unshared(inputs), deadline, model_file).await
                    }
                    Err(_) => Err(RunFailure { failure: Failure::TimedOut, cpu_us: 0 }),
                }
            }
            // Nothing to wait for: no other call of the key in flight, or
            // a worker free to run this one now.
            Err(_) if flying.alone || !every_worker_busy(executor) => {
                executor.run(tenant, digest, unshared(inputs), deadline, model_file).await
            }
            Err(_) => self.lead(executor, key, unshared(inputs), elements, deadline, model_file).await,
        }
    }

    /// Joins the batch forming for `key`, if there is one with room.
    fn join(&self, key: &Key, joined: Joined, elements: u64) -> Result<(), Joined> {
        let forming = self.lock().get(key).cloned();
        let Some(forming) = forming else { return Err(joined) };
        let mut joining = forming.joined.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Joining { calls, elements: total }) = joining.as_mut() else { return Err(joined) };
        if calls.len() + 1 >= self.calls_max || *total + elements > self.elements_max {
            return Err(joined);
        }
        *total += elements;
        calls.push(joined);
        if calls.len() + 1 >= self.calls_max {
            forming.full.notify_one();
        }
        Ok(())
    }

    async fn lead<F, Fut>(
        &self,
        executor: &Executor,
        key: Key,
        inputs: Vec<Tensor>,
        elements: u64,
        deadline: Instant,
        model_file: F,
    ) -> Result<Ran, RunFailure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::io::Result<ModelFile>>,
    {
        let joining = Joining { calls: Vec::new(), elements };
        let forming = Arc::new(Forming { joined: Mutex::new(Some(joining)), full: Notify::new() });
        // Another call of the key may lead a batch already, one with no
        // room left: this one then forms the next.
        self.lock().insert(key.clone(), forming.clone());
        let mut leading = Leading { batcher: self, key, forming, joined: Vec::new() };
        // Until the batch is full, the wait is over, or a worker is free.
        let until = Instant::now() + self.wait;
        loop {
            let poll = WORKER_POLL.min(until.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = leading.forming.full.notified() => break,
            }
            if Instant::now() >= until || !every_worker_busy(executor) {
                break;
            }
        }
        leading.seal();
        let (tenant, digest) = (leading.key.tenant, leading.key.digest);
        if leading.joined.is_empty() {
            return executor.run(tenant, digest, inputs, deadline, model_file).await;
        }
        let mut rows = vec![inputs[0].shape[0]];
        rows.extend(leading.joined.iter().map(|j| j.rows));
        let stacked: Option<Vec<Tensor>> = (0..inputs.len())
            .map(|i| {
                runtime::stack_rows(std::iter::once(&inputs[i]).chain(leading.joined.iter().map(|j| &j.inputs[i])))
            })
            .collect();
        let Some(stacked) = stacked else {
            drop(leading);
            return executor.run(tenant, digest, inputs, deadline, model_file).await;
        };
        let shares = match executor.run(tenant, digest, stacked, deadline, &model_file).await {
            Ok(ran) => split(ran, &rows),
            Err(_) => None,
        };
        let Some(mut shares) = shares else {
            // Each call alone, so that a failure is its own.
            drop(leading);
            return executor.run(tenant, digest, inputs, deadline, model_file).await;
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_calls.fetch_add(rows.len() as u64, Ordering::Relaxed);
        let own = shares.remove(0);
        for (joined, share) in std::mem::take(&mut leading.joined).into_iter().zip(shares) {
            // A call that gave up meanwhile is charged nothing: its handler is gone.
            let _ = joined.answer.send(Outcome::Ran(share));
        }
        Ok(own)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Forming>>> {
        self.forming.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A call counted in flight for its key until dropped.
struct InFlight<'a> {
    batcher: &'a Batcher,
    key: Key,
    /// No other call of the key was in flight when this one began.
    alone: bool,
}

impl<'a> InFlight<'a> {
    fn enter(batcher: &'a Batcher, key: &Key) -> InFlight<'a> {
        let mut in_flight = batcher.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let count = in_flight.entry(key.clone()).or_default();
        *count += 1;
        InFlight { batcher, key: key.clone(), alone: *count == 1 }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.batcher.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = in_flight.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}

/// A leader's hold on its batch: dropped before the batch ran (its call
/// failed, or its client went and the handler with it), every call that
/// joined it runs alone.
struct Leading<'a> {
    batcher: &'a Batcher,
    key: Key,
    forming: Arc<Forming>,
    joined: Vec<Joined>,
}

impl Leading<'_> {
    /// No call joins from here; the calls that did are the leader's.
    fn seal(&mut self) {
        let mut forming = self.batcher.lock();
        if forming.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.forming)) {
            forming.remove(&self.key);
        }
        drop(forming);
        let mut joined = self.forming.joined.lock().unwrap_or_else(|p| p.into_inner());
        self.joined = joined.take().map(|joining| joining.calls).unwrap_or_default();
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.seal();
        for joined in self.joined.drain(..) {
            let _ = joined.answer.send(Outcome::Alone);
        }
    }
}

/// Each call's rows of every output, and its share of the worker's CPU.
fn split(ran: Ran, rows: &[usize]) -> Option<Vec<Ran>> {
    let total: usize = rows.iter().sum();
    let mut shares: Vec<Ran> = rows
        .iter()
        .map(|&r| Ran { outputs: Vec::new(), cpu_us: ran.cpu_us * r as u64 / total.max(1) as u64 })
        .collect();
    for (name, tensor) in ran.outputs {
        for (share, part) in shares.iter_mut().zip(tensor.split_rows(rows)?) {
            share.outputs.push((name.clone(), part));
        }
    }
    Some(shares)
}

/// Every input and output has one symbol, the same, as its first dimension.
fn batchable(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> bool {
    let Some(Dim::Symbol(symbol)) = inputs.first().and_then(|spec| spec.shape.first()) else {
        return false;
    };
    let leads = |spec: &TensorSpec| matches!(spec.shape.first(), Some(Dim::Symbol(s)) if s == symbol);
    !outputs.is_empty() && inputs.iter().all(leads) && outputs.iter().all(leads)
}

fn every_worker_busy(executor: &Executor) -> bool {
    let metrics = executor.metrics();
    metrics.workers_max > 0 && metrics.workers_busy >= metrics.workers_max
}

fn unshared(inputs: Arc<Vec<Tensor>>) -> Vec<Tensor> {
    Arc::try_unwrap(inputs).unwrap_or_else(|shared| (*shared).clone())
}
