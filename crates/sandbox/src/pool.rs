//! The supervisor: a fixed number of worker slots, each holding at most one
//! live worker process; requests routed by model digest so that a hot model
//! stays loaded; a worker that dies or overruns is killed and replaced at
//! once, in the background, by a new one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use domain::Sha256;
use runtime::Tensor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::process::{Death, StartFailure, WorkerCommand, WorkerProcess};
use crate::protocol::{self, Hello, Request, Response};
use crate::{Failure, LoadFailure, Metrics, Ran, RunFailure};

#[derive(Debug)]
pub(crate) struct WorkerPool {
    command: WorkerCommand,
    hello: Hello,
    workers: usize,
    /// One permit per slot: a request holds one from before it picks a
    /// worker until the worker is back (or dead).
    slots: Arc<Semaphore>,
    state: Mutex<PoolState>,
    /// Bound on one answer's frame: the outputs allowed, plus room for names,
    /// shapes and the signature of a large graph.
    answer_bytes_max: u64,
    started: AtomicU64,
    timed_out: AtomicU64,
    out_of_memory: AtomicU64,
    crashed: AtomicU64,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Live workers nobody is using, least recently used first.
    idle: Vec<WorkerProcess>,
    /// Workers alive or being started, idle or busy; never above `workers`.
    live: usize,
}

/// A worker taken from the pool for one request. Dropped, it goes back to
/// the idle list, unless it is in the middle of a request (the request was
/// abandoned) or died: then it is killed, and a replacement is started
/// holding the slot's permit, so no request waits on an empty slot.
struct Lease {
    pool: Arc<WorkerPool>,
    worker: Option<WorkerProcess>,
    /// False from sending a request until its answer is read.
    reusable: bool,
    /// Always `Some` until dropped.
    permit: Option<OwnedSemaphorePermit>,
}

impl WorkerPool {
    pub(crate) fn new(command: WorkerCommand, hello: Hello, workers: usize) -> WorkerPool {
        let answer_bytes_max = hello.output_elements_max.saturating_mul(8).saturating_add(64 << 20);
        WorkerPool {
            command,
            hello,
            workers,
            slots: Arc::new(Semaphore::new(workers)),
            state: Mutex::new(PoolState::default()),
            answer_bytes_max,
            started: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            out_of_memory: AtomicU64::new(0),
            crashed: AtomicU64::new(0),
        }
    }

    /// Starts one worker and keeps it idle: a worker that cannot start or
    /// confine itself is a reason not to start the server.
    pub(crate) async fn start_one(self: &Arc<Self>, deadline: Instant) -> Result<(), StartFailure> {
        let lease = self.lease(None, deadline).await.map_err(|failure| StartFailure(failure.describe()))?;
        drop(lease);
        Ok(())
    }

    pub(crate) async fn load(
        self: &Arc<Self>,
        digest: Sha256,
        model: Vec<u8>,
        deadline: Instant,
    ) -> Result<runtime::Signature, LoadFailure> {
        let mut lease = self.lease(Some(&digest), deadline).await.map_err(|failure| match failure {
            // Busy workers are no fault of the model's.
            Failure::TimedOut => LoadFailure::Unavailable("every worker stayed busy past the time limit".into()),
            other => LoadFailure::Unavailable(other.describe()),
        })?;
        let request = Request::Load { digest, model }.encode();
        match lease.call(&request, deadline).await {
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
        }
    }

    pub(crate) async fn run<F, Fut>(
        self: &Arc<Self>,
        digest: Sha256,
        inputs: Vec<Tensor>,
        deadline: Instant,
        model_bytes: F,
    ) -> Result<Ran, RunFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::io::Result<Vec<u8>>>,
    {
        let failed = |failure| RunFailure { failure, cpu_us: 0 };
        let mut lease = self.lease(Some(&digest), deadline).await.map_err(failed)?;
        let mut model_bytes = Some(model_bytes);
        let mut fetch = async || -> Result<Vec<u8>, RunFailure> {
            let fetch =
                model_bytes.take().ok_or_else(|| failed(Failure::Crashed("it asked twice for the model".into())))?;
            fetch().await.map_err(|e| failed(Failure::ModelUnreadable(e.to_string())))
        };
        let holds_model = lease.worker.as_ref().is_some_and(|w| w.loaded.contains(&digest));
        let model = if holds_model { None } else { Some(fetch().await?) };
        let mut request = Request::Run { digest, model, inputs };
        let mut answer = lease.call(&request.encode(), deadline).await;
        if let Ok(Response::NeedModel) = answer {
            // The worker evicted it without the pool knowing: send it now.
            if let Request::Run { model, .. } = &mut request {
                *model = Some(fetch().await?);
            }
            answer = lease.call(&request.encode(), deadline).await;
        }
        let sent_model = matches!(&request, Request::Run { model: Some(_), .. });
        match answer {
            Ok(Response::Ran { outputs, cpu_us, evicted }) => {
                lease.note_loaded(digest, &evicted);
                // The worker is idle from here: the next request for it
                // should reach it now, not after this call's answer is built.
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
            Ok(other) => Err(failed(lease.protocol_error(&other))),
            Err(Death::TimedOut { cpu_us }) => Err(RunFailure { failure: Failure::TimedOut, cpu_us }),
            Err(Death::OutOfMemory) => {
                Err(failed(Failure::OutOfMemory("an allocation failed past the worker's memory bound".into())))
            }
            Err(Death::Crashed { cause }) => Err(failed(Failure::Crashed(cause))),
        }
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Metrics {
            workers_max: self.workers as u64,
            workers_live: state.live as u64,
            workers_started: self.started.load(Ordering::Relaxed),
            worker_timeouts: self.timed_out.load(Ordering::Relaxed),
            worker_out_of_memory: self.out_of_memory.load(Ordering::Relaxed),
            worker_crashes: self.crashed.load(Ordering::Relaxed),
        }
    }

    /// Takes a slot by `deadline`, then a worker for it: an idle one holding
    /// `digest`, else a new one if a slot has none, else the idle one used
    /// least recently.
    async fn lease(self: &Arc<Self>, digest: Option<&Sha256>, deadline: Instant) -> Result<Lease, Failure> {
        let permit = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Failure::TimedOut)?
            .map_err(|_| Failure::Unavailable("the worker pool is closed".into()))?;
        loop {
            let picked = {
                let mut state = self.lock();
                let holding = digest.and_then(|d| state.idle.iter().position(|w| w.loaded.contains(d)));
                match holding {
                    Some(index) => Some(state.idle.remove(index)),
                    None if state.live < self.workers => {
                        state.live += 1;
                        None
                    }
                    None if !state.idle.is_empty() => Some(state.idle.remove(0)),
                    None => return Err(Failure::Unavailable("no worker is free although a slot is".into())),
                }
            };
            let worker = match picked {
                Some(mut worker) => {
                    if worker.has_exited() {
                        // It died while idle (killed from outside): not this request's fault.
                        self.lock().live -= 1;
                        continue;
                    }
                    worker
                }
                None => match WorkerProcess::start(&self.command, &self.hello, deadline).await {
                    Ok(worker) => {
                        self.started.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(pid = worker.pid, "worker started");
                        worker
                    }
                    Err(failure) => {
                        self.lock().live -= 1;
                        tracing::error!(%failure, "cannot start a worker");
                        return Err(Failure::Unavailable(failure.0));
                    }
                },
            };
            return Ok(Lease { pool: self.clone(), worker: Some(worker), reusable: true, permit: Some(permit) });
        }
    }

    /// Starts a worker for a slot whose worker died, holding that slot's
    /// permit until it is idle (or could not start).
    async fn replace(self: Arc<Self>, permit: OwnedSemaphorePermit) {
        let deadline = Instant::now() + crate::process::START_TIMEOUT;
        match WorkerProcess::start(&self.command, &self.hello, deadline).await {
            Ok(worker) => {
                self.started.fetch_add(1, Ordering::Relaxed);
                self.lock().idle.push(worker);
            }
            Err(failure) => {
                tracing::error!(%failure, "cannot start a replacement worker");
                self.lock().live -= 1;
            }
        }
        drop(permit);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Every update under this lock completes before anything that could panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Lease {
    async fn call(&mut self, request: &[u8], deadline: Instant) -> Result<Response, Death> {
        let worker = self.worker.as_mut().expect("a lease holds its worker until dropped");
        self.reusable = false;
        let answer = worker.call(request, deadline, self.pool.answer_bytes_max).await;
        match &answer {
            Ok(_) => self.reusable = true,
            Err(death) => {
                let counter = match death {
                    Death::TimedOut { .. } => &self.pool.timed_out,
                    Death::OutOfMemory => &self.pool.out_of_memory,
                    Death::Crashed { .. } => &self.pool.crashed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pid = worker.pid, death = %death.describe(), "a worker ended in the middle of a request");
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
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(mut worker), Some(permit)) = (self.worker.take(), self.permit.take()) else { return };
        if self.reusable {
            self.pool.lock().idle.push(worker);
            return;
        }
        worker.kill();
        // The slot stays counted as live while its replacement starts.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(self.pool.clone().replace(permit))),
            Err(_) => self.pool.lock().live -= 1,
        }
    }
}
