//! The supervisor: a fixed number of worker slots, each holding at most one
//! live worker process; requests routed by model digest so that a hot model
//! stays loaded; a worker that dies or overruns is killed and replaced at
//! once, in the background, by a new one.
//!
//! While every slot is taken, requests wait in one queue, and a slot given
//! back goes straight to one of them: the oldest of those whose tenant (the
//! caller, for a call) holds the fewest slots. One caller's many slow calls
//! then take turns with everyone else's instead of filling every slot: a
//! caller alone still gets every slot, in the order of its calls. A call
//! that has just written its request to a worker also writes the next
//! waiting call of the same model behind it (pipelining): the worker starts
//! that call the moment it has answered, instead of idling through the
//! server's round trip (reading the answer, waking the next call, writing
//! its request). The next call inherits the worker and its slot; if the
//! worker dies before answering the first call, the next call never ran
//! there, and waits again, first in line.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::Sha256;
use runtime::Tensor;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::process::{Death, StartFailure, WorkerCommand, WorkerProcess};
use crate::protocol::{self, Hello, Response};
use crate::{Failure, LoadFailure, Metrics, ModelFile, Ran, RunFailure};

/// A call's request up to this size may be written to a busy worker's pipe
/// ahead of its turn: well inside a pipe's buffer (64 KiB on Linux), so that
/// writing it never waits for the worker. A larger one waits for its turn.
const PIPELINED_REQUEST_BYTES_MAX: usize = 16 << 10;

#[derive(Debug)]
pub(crate) struct WorkerPool {
    command: WorkerCommand,
    hello: Hello,
    workers: usize,
    /// Each worker serves one request, then goes: a fresh process for each
    /// upload's validation, so nothing a hostile model left in a worker
    /// (memory, a loaded graph) outlives its upload.
    one_request_each: bool,
    state: Mutex<PoolState>,
    /// Bound on one answer's frame: the outputs allowed, plus room for names,
    /// shapes and the signature of a large graph.
    answer_bytes_max: u64,
    started: AtomicU64,
    timed_out: AtomicU64,
    out_of_memory: AtomicU64,
    crashed: AtomicU64,
    pipelined: AtomicU64,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Live workers nobody is using, least recently used first.
    idle: Vec<WorkerProcess>,
    /// Workers alive or being started, idle or busy; never above `workers`.
    live: usize,
    /// Slots held by a lease or by a replacement being started; never above
    /// `workers`.
    taken: usize,
    /// Requests waiting for a slot, oldest first (some may have given up).
    /// Never empty unless every slot is taken.
    waiting: VecDeque<Waiter>,
    /// Slots held by each tenant's leases; no entry at zero.
    held: HashMap<Tenant, usize>,
}

/// Who a request is for, in the pool's fair share: the caller's account for
/// a call, the uploader's for a load; [`SYSTEM`] for the pool's own.
pub(crate) type Tenant = u64;

/// The pool's own requests (its first worker's start).
pub(crate) const SYSTEM: Tenant = 0;

impl PoolState {
    fn hold(&mut self, tenant: Tenant) {
        *self.held.entry(tenant).or_default() += 1;
    }

    fn unhold(&mut self, tenant: Tenant) {
        if let Some(held) = self.held.get_mut(&tenant) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(&tenant);
            }
        }
    }

    /// The waiting request next in turn: the oldest of those whose tenant
    /// holds the fewest slots. Requests that gave up are dropped on the way.
    fn next_in_turn(&mut self) -> Option<usize> {
        self.waiting.retain(|waiter| !waiter.handoff.is_closed());
        let held = |waiter: &Waiter| self.held.get(&waiter.tenant).copied().unwrap_or(0);
        // `min_by_key` keeps the first of equals: the oldest.
        self.waiting.iter().enumerate().min_by_key(|(_, waiter)| held(waiter)).map(|(index, _)| index)
    }
}

/// A request waiting for a slot.
struct Waiter {
    tenant: Tenant,
    /// The model it runs, if any: a call of the model a busy worker runs may
    /// be written behind that call.
    digest: Option<Sha256>,
    /// Its request, encoded, where it may be written ahead of its turn.
    ahead: Option<Arc<[u8]>>,
    /// The time it had left when it began to wait: how long its answer may
    /// take if it gives up after its request was written.
    budget: Duration,
    handoff: oneshot::Sender<Handoff>,
}

/// A waiting request written behind a lease's own.
struct Successor {
    tenant: Tenant,
    handoff: oneshot::Sender<Handoff>,
    budget: Duration,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("tenant", &self.tenant)
            .field("digest", &self.digest)
            .field("ahead", &self.ahead.is_some())
            .finish()
    }
}

/// What a waiting request is given.
enum Handoff {
    /// A slot, with the worker that used it (none if it died and could not
    /// be replaced: the request starts one).
    Slot(Lease),
    /// A worker whose pipe already holds this request, with its slot.
    Written(Lease),
    /// Its request was written to a worker that died before getting to it:
    /// it never ran; wait again, first in line.
    Retry,
}

impl Handoff {
    /// The worker of a handoff nobody took, and its slot given up.
    fn into_worker(self) -> Option<WorkerProcess> {
        match self {
            Handoff::Slot(mut lease) | Handoff::Written(mut lease) => lease.disown(),
            Handoff::Retry => None,
        }
    }
}

/// A slot, and the worker it uses, taken for one request. Dropped, they go
/// to the request written behind this one, else to the first waiting
/// request, else back to the pool; unless the worker is in the middle of a
/// request (the request was abandoned) or died: then it is killed, and a
/// replacement is started holding the slot, so no request waits on an empty
/// slot.
struct Lease {
    pool: Arc<WorkerPool>,
    /// Whose slot it is: counted in [`PoolState::held`] while `slot`.
    tenant: Tenant,
    /// `None` only for a slot whose worker could not be replaced, until
    /// `fill` finds or starts one.
    worker: Option<WorkerProcess>,
    /// False while a request written to the worker has no answer read.
    reusable: bool,
    /// Whether it still holds its slot: false once handed on.
    slot: bool,
    /// Its worker goes when the lease does, its request answered or not,
    /// and is not replaced: the next request starts one.
    retire: bool,
    /// The waiting request whose request this lease wrote behind its own.
    successor: Option<Successor>,
}

impl WorkerPool {
    pub(crate) fn new(command: WorkerCommand, hello: Hello, workers: usize) -> WorkerPool {
        let answer_bytes_max = hello.output_elements_max.saturating_mul(8).saturating_add(64 << 20);
        WorkerPool {
            command,
            hello,
            workers,
            one_request_each: false,
            state: Mutex::new(PoolState::default()),
            answer_bytes_max,
            started: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            out_of_memory: AtomicU64::new(0),
            crashed: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
        }
    }

    /// A pool whose workers each serve one request, then go.
    pub(crate) fn one_request_each(self) -> WorkerPool {
        WorkerPool { one_request_each: true, ..self }
    }

    /// Starts one worker and keeps it idle: a worker that cannot start or
    /// confine itself is a reason not to start the server.
    pub(crate) async fn start_one(self: &Arc<Self>, deadline: Instant) -> Result<(), StartFailure> {
        let (lease, _) =
            self.lease(SYSTEM, None, None, deadline).await.map_err(|failure| StartFailure(failure.describe()))?;
        drop(lease);
        Ok(())
    }

    pub(crate) async fn load(
        self: &Arc<Self>,
        tenant: Tenant,
        digest: Sha256,
        mut model: ModelFile,
        deadline: Instant,
    ) -> Result<runtime::Signature, LoadFailure> {
        let (mut lease, _) =
            self.lease(tenant, Some(&digest), None, deadline).await.map_err(|failure| match failure {
                // Busy workers are no fault of the model's.
                Failure::TimedOut => LoadFailure::Unavailable("every worker stayed busy past the time limit".into()),
                other => LoadFailure::Unavailable(other.describe()),
            })?;
        let head = protocol::load_head(&digest, model.size_bytes);
        lease.retire = self.one_request_each;
        match lease.call(&head, Some(&mut model), deadline, None).await {
            Ok(Response::Loaded { signature, evicted, .. }) => {
                lease.note_loaded(digest, &evicted);
                Ok(signature)
            }
            Ok(Response::Refused { out_of_memory: true, .. }) => Err(LoadFailure::OutOfMemory),
            Ok(Response::Refused { message, .. }) => Err(LoadFailure::Refused(message)),
            Ok(other) => Err(lease.protocol_error(&other)).map_err(|f| LoadFailure::Crashed(f.describe())),
            Err(Death::TimedOut { .. }) => Err(LoadFailure::TimedOut),
            Err(Death::OutOfMemory) => Err(LoadFailure::OutOfMemory),
            Err(Death::Crashed { cause }) => Err(LoadFailure::Crashed(cause)),
            Err(Death::ModelUnreadable { cause }) => Err(LoadFailure::Unavailable(cause)),
        }
    }

    pub(crate) async fn run<F, Fut>(
        self: &Arc<Self>,
        tenant: Tenant,
        digest: Sha256,
        inputs: Vec<Tensor>,
        deadline: Instant,
        model_file: F,
    ) -> Result<Ran, RunFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::io::Result<ModelFile>>,
    {
        let failed = |failure| RunFailure { failure, cpu_us: 0 };
        let start_by = protocol::monotonic_ns().saturating_add(
            u64::try_from(deadline.saturating_duration_since(Instant::now()).as_nanos()).unwrap_or(u64::MAX),
        );
        // Encoded once: written ahead of its turn, or when its turn comes.
        let bare: Arc<[u8]> = protocol::run_head(&digest, &inputs, start_by, None).into();
        let ahead = (bare.len() <= PIPELINED_REQUEST_BYTES_MAX).then(|| bare.clone());
        let (mut lease, written) = self.lease(tenant, Some(&digest), ahead, deadline).await.map_err(failed)?;
        let mut model_file = Some(model_file);
        // With the model's file, read as it is written to the worker.
        let mut sent_model = false;
        let mut with_model = async |lease: &mut Lease, pipeline: Option<&Sha256>| {
            let fetch =
                model_file.take().ok_or_else(|| failed(Failure::Crashed("it asked twice for the model".into())))?;
            let mut model = fetch().await.map_err(|e| failed(Failure::ModelUnreadable(e.to_string())))?;
            let head = protocol::run_head(&digest, &inputs, start_by, Some(model.size_bytes));
            Ok::<_, RunFailure>(lease.call(&head, Some(&mut model), deadline, pipeline).await)
        };
        let mut answer = if written {
            lease.receive(deadline, Some(&digest)).await
        } else if lease.holds(&digest) {
            lease.call(&bare, None, deadline, Some(&digest)).await
        } else {
            sent_model = true;
            with_model(&mut lease, Some(&digest)).await?
        };
        if let Ok(Response::NeedModel) = answer {
            // The worker evicted it without the pool knowing: send it now.
            sent_model = true;
            answer = with_model(&mut lease, None).await?;
        }
        match answer {
            Ok(Response::Ran { outputs, cpu_us, evicted }) => {
                lease.note_loaded(digest, &evicted);
                // The worker is free from here (or busy with the call written
                // behind this one): a call waiting for it should reach it
                // now, not after this call's answer is built.
                drop(lease);
                tokio::task::yield_now().await;
                Ok(Ran { outputs, cpu_us })
            }
            Ok(Response::RunFailed { failure, message, cpu_us }) => {
                use protocol::RunFailureKind as Kind;
                // The load succeeded unless it is what failed.
                if !sent_model || !matches!(failure, Kind::OutOfMemory | Kind::ModelNoLongerLoads) {
                    lease.note_loaded(digest, &[]);
                }
                let failure = match failure {
                    Kind::Failed => Failure::Failed(message),
                    Kind::OutOfMemory => {
                        // tract refused the allocation and the worker lives on.
                        self.out_of_memory.fetch_add(1, Ordering::Relaxed);
                        Failure::OutOfMemory(message)
                    }
                    Kind::OutputTooLarge => Failure::OutputTooLarge(message),
                    Kind::ModelNoLongerLoads => Failure::ModelNoLongerLoads(message),
                };
                Err(RunFailure { failure, cpu_us })
            }
            // Reached past its deadline, as this call stopped waiting for it.
            Ok(Response::Expired) => Err(failed(Failure::TimedOut)),
            Ok(other) => Err(failed(lease.protocol_error(&other))),
            Err(Death::TimedOut { cpu_us }) => Err(RunFailure { failure: Failure::TimedOut, cpu_us }),
            Err(Death::OutOfMemory) => {
                Err(failed(Failure::OutOfMemory("an allocation failed past the worker's memory bound".into())))
            }
            Err(Death::Crashed { cause }) => Err(failed(Failure::Crashed(cause))),
            Err(Death::ModelUnreadable { cause }) => Err(failed(Failure::ModelUnreadable(cause))),
        }
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let state = self.lock();
        Metrics {
            workers_max: self.workers as u64,
            workers_live: state.live as u64,
            workers_started: self.started.load(Ordering::Relaxed),
            worker_timeouts: self.timed_out.load(Ordering::Relaxed),
            worker_out_of_memory: self.out_of_memory.load(Ordering::Relaxed),
            worker_crashes: self.crashed.load(Ordering::Relaxed),
            worker_requests_pipelined: self.pipelined.load(Ordering::Relaxed),
            calls_waiting: state.waiting.iter().filter(|waiter| !waiter.handoff.is_closed()).count() as u64,
            workers_busy: state.taken as u64,
            ..Metrics::default()
        }
    }

    /// Takes a slot by `deadline`, at once if one is free, else in turn;
    /// then a worker for it. Says whether the request, `ahead`, was already
    /// written to that worker.
    async fn lease(
        self: &Arc<Self>,
        tenant: Tenant,
        digest: Option<&Sha256>,
        ahead: Option<Arc<[u8]>>,
        deadline: Instant,
    ) -> Result<(Lease, bool), Failure> {
        let mut first_in_line = false;
        loop {
            let turn = {
                let mut state = self.lock();
                if state.taken < self.workers {
                    state.taken += 1;
                    state.hold(tenant);
                    None
                } else {
                    let (handoff, turn) = oneshot::channel();
                    let budget = deadline.saturating_duration_since(Instant::now());
                    let waiter = Waiter { tenant, digest: digest.copied(), ahead: ahead.clone(), budget, handoff };
                    if first_in_line {
                        state.waiting.push_front(waiter);
                    } else {
                        state.waiting.push_back(waiter);
                    }
                    Some(turn)
                }
            };
            let Some(turn) = turn else {
                return Ok((self.fill(Lease::new(self.clone(), tenant, None), digest, deadline).await?, false));
            };
            // Given up at the deadline, a handoff sent meanwhile is dropped
            // with the channel: its lease goes on to the next request.
            match tokio::time::timeout_at(deadline, turn).await.map_err(|_| Failure::TimedOut)? {
                Ok(Handoff::Slot(lease)) => return Ok((self.fill(lease, digest, deadline).await?, false)),
                Ok(Handoff::Written(lease)) => return Ok((lease, true)),
                // A lease ends in a handoff; a dropped sender is a retry too.
                Ok(Handoff::Retry) | Err(_) => first_in_line = true,
            }
        }
    }

    /// A worker for a slot: an idle one holding `digest`, else the one the
    /// slot came with, else a new one if the slots have fewer workers, else
    /// the idle one used least recently.
    async fn fill(
        self: &Arc<Self>,
        mut lease: Lease,
        digest: Option<&Sha256>,
        deadline: Instant,
    ) -> Result<Lease, Failure> {
        let holds = |worker: &WorkerProcess| digest.is_some_and(|d| worker.loaded.contains(d));
        loop {
            let picked = {
                let mut state = self.lock();
                let holding = state.idle.iter().position(holds);
                match (lease.worker.take(), holding) {
                    (Some(own), Some(index)) if !holds(&own) => {
                        let other = state.idle.remove(index);
                        state.idle.push(own);
                        Some(other)
                    }
                    (Some(own), _) => Some(own),
                    (None, Some(index)) => Some(state.idle.remove(index)),
                    (None, None) if state.live < self.workers => {
                        state.live += 1;
                        None
                    }
                    (None, None) if !state.idle.is_empty() => Some(state.idle.remove(0)),
                    (None, None) => {
                        drop(state);
                        return Err(Failure::Unavailable("no worker is free although a slot is".into()));
                    }
                }
            };
            match picked {
                Some(mut worker) => {
                    if worker.has_exited() {
                        // It died while idle (killed from outside): not this request's fault.
                        self.lock().live -= 1;
                        continue;
                    }
                    lease.worker = Some(worker);
                }
                None => match WorkerProcess::start(&self.command, &self.hello, deadline).await {
                    Ok(worker) => {
                        self.started.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(pid = worker.pid, "worker started");
                        lease.worker = Some(worker);
                    }
                    Err(failure) => {
                        self.lock().live -= 1;
                        tracing::error!(%failure, "cannot start a worker");
                        return Err(Failure::Unavailable(failure.0));
                    }
                },
            }
            return Ok(lease);
        }
    }

    /// A slot given back by `from` (none for a replacement's), with its
    /// idle worker if it has one: to the waiting request next in turn, else
    /// free.
    fn release(self: &Arc<Self>, from: Option<Tenant>, mut worker: Option<WorkerProcess>) {
        let mut state = self.lock();
        if let Some(tenant) = from {
            state.unhold(tenant);
        }
        while let Some(index) = state.next_in_turn() {
            let Some(waiter) = state.waiting.remove(index) else { break };
            state.hold(waiter.tenant);
            match waiter.handoff.send(Handoff::Slot(Lease::new(self.clone(), waiter.tenant, worker.take()))) {
                Ok(()) => return,
                // It gave up waiting.
                Err(unsent) => {
                    state.unhold(waiter.tenant);
                    worker = unsent.into_worker();
                }
            }
        }
        state.taken -= 1;
        state.idle.extend(worker);
    }

    /// The waiting request next in turn, if it runs `digest` and may be
    /// written ahead of its turn: taken out of the queue, with its request.
    fn next_waiting_for(&self, digest: &Sha256) -> Option<(Arc<[u8]>, Successor)> {
        let mut state = self.lock();
        let index = state.next_in_turn()?;
        let next = &state.waiting[index];
        if next.digest.as_ref() != Some(digest) || next.ahead.is_none() {
            return None;
        }
        let waiter = state.waiting.remove(index)?;
        let successor = Successor { tenant: waiter.tenant, handoff: waiter.handoff, budget: waiter.budget };
        Some((waiter.ahead?, successor))
    }

    /// Starts a worker for a slot whose worker died, holding that slot until
    /// the new worker is handed on (or could not start).
    async fn replace(self: Arc<Self>) {
        let deadline = Instant::now() + crate::process::START_TIMEOUT;
        match WorkerProcess::start(&self.command, &self.hello, deadline).await {
            Ok(worker) => {
                self.started.fetch_add(1, Ordering::Relaxed);
                self.release(None, Some(worker));
            }
            Err(failure) => {
                tracing::error!(%failure, "cannot start a replacement worker");
                self.lock().live -= 1;
                self.release(None, None);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Every update under this lock completes before anything that could panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Lease {
    /// A lease of a slot already counted as `tenant`'s.
    fn new(pool: Arc<WorkerPool>, tenant: Tenant, worker: Option<WorkerProcess>) -> Lease {
        Lease { pool, tenant, worker, reusable: true, slot: true, retire: false, successor: None }
    }

    fn holds(&self, digest: &Sha256) -> bool {
        self.worker.as_ref().is_some_and(|worker| worker.loaded.contains(digest))
    }

    /// Sends a request (with its model's file after `request`, if given)
    /// and reads its answer. With `pipeline`, the model the request runs,
    /// the waiting call next in turn, if it runs that model, is written
    /// behind it, and inherits the worker when this lease ends.
    async fn call(
        &mut self,
        request: &[u8],
        model: Option<&mut ModelFile>,
        deadline: Instant,
        pipeline: Option<&Sha256>,
    ) -> Result<Response, Death> {
        self.reusable = false;
        let worker = self.worker.as_mut().expect("a lease holds its worker until dropped");
        let answer = match worker.send_with_model(request, model, deadline).await {
            Ok(()) => self.answer(deadline, pipeline).await,
            Err(death) => Err(death),
        };
        self.settle(answer)
    }

    /// Reads the answer to a request that was written to the worker before
    /// this lease was handed over, pipelining as `call` does.
    async fn receive(&mut self, deadline: Instant, pipeline: Option<&Sha256>) -> Result<Response, Death> {
        let answer = self.answer(deadline, pipeline).await;
        self.settle(answer)
    }

    /// With a request written: writes the next waiting call of `pipeline`
    /// behind it, then reads the request's answer.
    async fn answer(&mut self, deadline: Instant, pipeline: Option<&Sha256>) -> Result<Response, Death> {
        let worker = self.worker.as_mut().expect("a lease holds its worker until dropped");
        let next = pipeline.filter(|_| self.successor.is_none()).and_then(|digest| self.pool.next_waiting_for(digest));
        if let Some((next, successor)) = next {
            // From here the successor is this lease's to hand on, even if
            // writing its request fails (then it waits again).
            self.successor = Some(successor);
            self.pool.pipelined.fetch_add(1, Ordering::Relaxed);
            worker.send(&next, deadline).await?;
        }
        let answer = worker.receive(deadline, self.pool.answer_bytes_max).await?;
        if !matches!(answer, Response::NeedModel) || self.successor.is_none() {
            return Ok(answer);
        }
        // The call written behind lacks the model too: read its answer, so
        // that this call can send the model, and let it wait again.
        match worker.receive(deadline, self.pool.answer_bytes_max).await? {
            Response::NeedModel | Response::Expired => {
                if let Some(successor) = self.successor.take() {
                    let _ = successor.handoff.send(Handoff::Retry);
                }
                Ok(answer)
            }
            other => {
                worker.kill();
                Err(Death::Crashed { cause: format!("it answered out of turn ({})", other.kind()) })
            }
        }
    }

    /// An answer read: the worker is reusable, or it died and is counted.
    fn settle(&mut self, answer: Result<Response, Death>) -> Result<Response, Death> {
        match &answer {
            Ok(_) => self.reusable = true,
            Err(death) => {
                let counter = match death {
                    Death::TimedOut { .. } => Some(&self.pool.timed_out),
                    Death::OutOfMemory => Some(&self.pool.out_of_memory),
                    Death::Crashed { .. } => Some(&self.pool.crashed),
                    // Killed for the server's own failure, not the worker's.
                    Death::ModelUnreadable { .. } => None,
                };
                if let Some(counter) = counter {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                let pid = self.worker.as_ref().map_or(0, |worker| worker.pid);
                tracing::warn!(pid, death = %death.describe(), "a worker ended in the middle of a request");
            }
        }
        answer
    }

    fn note_loaded(&mut self, digest: Sha256, evicted: &[Sha256]) {
        if let Some(worker) = self.worker.as_mut() {
            worker.loaded.insert(digest);
            for gone in evicted {
                worker.loaded.remove(gone);
            }
        }
    }

    /// An answer that does not fit the request: the worker is not trusted again.
    fn protocol_error(&mut self, answer: &Response) -> Failure {
        self.reusable = false;
        Failure::Crashed(format!("it answered out of turn ({})", answer.kind()))
    }

    /// A lease whose request was written ahead, for a request that gave up
    /// waiting: its answer is read and dropped (nobody else may read the
    /// worker's next answer), then the worker goes on as usual; it is killed
    /// only if the answer takes longer than the request had to wait and run.
    fn drain(mut self, budget: Duration) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                let _ = self.receive(Instant::now() + budget, None).await;
            })),
            Err(_) => drop(self),
        }
    }

    /// Its worker, taken out; the slot is no longer this lease's to give
    /// back (nor counted as its tenant's: the caller's to see to).
    fn disown(&mut self) -> Option<WorkerProcess> {
        self.slot = false;
        self.worker.take()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.slot {
            return;
        }
        let successor = self.successor.take();
        match self.worker.take() {
            Some(worker) if self.reusable && !self.retire => match successor {
                Some(successor) => {
                    // Its request is in the worker's pipe: worker and slot are its own.
                    {
                        let mut state = self.pool.lock();
                        state.unhold(self.tenant);
                        state.hold(successor.tenant);
                    }
                    let next = Lease {
                        pool: self.pool.clone(),
                        tenant: successor.tenant,
                        worker: Some(worker),
                        reusable: false,
                        slot: true,
                        retire: false,
                        successor: None,
                    };
                    if let Err(Handoff::Written(orphan)) = successor.handoff.send(Handoff::Written(next)) {
                        orphan.drain(successor.budget);
                    }
                }
                None => self.pool.release(Some(self.tenant), Some(worker)),
            },
            Some(mut worker) => {
                if let Some(successor) = successor {
                    let _ = successor.handoff.send(Handoff::Retry);
                }
                worker.kill();
                if self.retire {
                    self.pool.lock().live -= 1;
                    self.pool.release(Some(self.tenant), None);
                    return;
                }
                // The slot stays taken while its replacement starts; it is
                // no longer this tenant's.
                self.pool.lock().unhold(self.tenant);
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(self.pool.clone().replace())),
                    Err(_) => {
                        self.pool.lock().live -= 1;
                        self.pool.release(None, None);
                    }
                }
            }
            None => {
                if let Some(successor) = successor {
                    let _ = successor.handoff.send(Handoff::Retry);
                }
                self.pool.release(Some(self.tenant), None);
            }
        }
    }
}
