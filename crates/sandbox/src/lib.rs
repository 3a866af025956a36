//! Runs untrusted models where they cannot hurt the server: in supervised
//! worker processes with a memory bound the kernel enforces, a deadline
//! after which the worker is killed, and a seccomp filter.
//!
//! - [`Executor`] is what the server calls: [`Executor::load`] validates an
//!   upload, [`Executor::run`] runs a call. It is either a pool of worker
//!   processes ([`Isolation::Process`], the default) or the runtime in the
//!   server's own process ([`Isolation::None`], for trusted single-user
//!   setups: a hostile model can then abort the server).
//! - `pool.rs` is the supervisor (slots, routing by digest, replacement),
//!   `process.rs` one worker seen from the server (start, call, kill, why it
//!   died), `worker.rs` the worker's own loop (`vitrine worker`),
//!   `confine.rs` how a worker confines itself, `protocol.rs` the binary
//!   messages between them.
//!
//! This crate knows nothing about money, storage or HTTP.

mod confine;
mod inprocess;
mod pool;
mod process;
mod protocol;
mod worker;

use std::future::Future;
use std::path::PathBuf;

use domain::Sha256;
use runtime::{ModelLimits, Signature, Tensor};
use tokio::time::Instant;

pub use confine::{ConfineError, confine};
pub use process::{StartFailure, WorkerCommand};
pub use worker::main as worker_main;

/// Where models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In worker processes (the default).
    Process,
    /// In the server's own process: no memory bound, and a timed-out call
    /// runs on in the background. For trusted single-user setups only.
    None,
}

/// The executor's settings, from the server's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub isolation: Isolation,
    /// Worker processes for calls (or, in process, models running at once).
    pub workers: usize,
    /// Worker processes that validate uploads, apart from the calls' (at
    /// least one): an upload never waits for, nor holds, a call's worker.
    /// In process, uploads share the calls' threads.
    pub upload_workers: usize,
    /// `worker_memory_bytes_max`: address space of one worker.
    pub worker_memory_bytes_max: u64,
    /// `model_cache_bytes_max`: loaded models kept by one worker.
    pub model_cache_bytes_max: u64,
    pub model_limits: ModelLimits,
    /// `output_elements_max`: elements over all outputs of one call.
    pub output_elements_max: u64,
    /// How to start a worker; `None`: this program with the argument `worker`.
    pub worker_command: Option<WorkerCommand>,
    /// ONNX Runtime's library, to run models with; `None`: tract.
    pub onnxruntime_library: Option<PathBuf>,
}

/// A model's file, open for reading: the supervisor writes it to a worker
/// in pieces, so the server never holds a model whole, whatever its size.
#[derive(Debug)]
pub struct ModelFile {
    pub file: tokio::fs::File,
    pub size_bytes: u64,
}

impl ModelFile {
    /// Opens `path`, read-only.
    pub async fn open(path: &std::path::Path) -> std::io::Result<ModelFile> {
        ModelFile::of(tokio::fs::File::open(path).await?).await
    }

    /// An open file, as it is now.
    pub async fn of(file: tokio::fs::File) -> std::io::Result<ModelFile> {
        let size_bytes = file.metadata().await?.len();
        Ok(ModelFile { file, size_bytes })
    }

    /// Its bytes whole, from the start (in process, where the runtime needs them).
    async fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        self.file.seek(std::io::SeekFrom::Start(0)).await?;
        let mut bytes = Vec::with_capacity(usize::try_from(self.size_bytes).unwrap_or(0));
        (&mut self.file).take(self.size_bytes).read_to_end(&mut bytes).await?;
        Ok(bytes)
    }
}

/// A successful run.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// In the signature's order.
    pub outputs: Vec<(String, Tensor)>,
    /// CPU time the run used, user and system.
    pub cpu_us: u64,
}

/// A failed run, and the CPU time it used before it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailure {
    pub failure: Failure,
    pub cpu_us: u64,
}

/// Why a call or an upload did not run to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The runtime refused these inputs or failed on them; the worker lives.
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    OutputTooLarge(String),
    /// More memory than the worker's bound.
    #[error("{0}")]
    OutOfMemory(String),
    /// The deadline passed, waiting for a worker or running.
    #[error("the deadline passed")]
    TimedOut,
    /// The worker died of something else (a signal, a forbidden system call).
    #[error("{0}")]
    Crashed(String),
    /// The stored model no longer loads (limits lowered since its upload).
    #[error("{0}")]
    ModelNoLongerLoads(String),
    /// The model's file could not be read.
    #[error("{0}")]
    ModelUnreadable(String),
    /// No worker could be started.
    #[error("{0}")]
    Unavailable(String),
}

impl Failure {
    /// Crashes and exhausted memory count against a model (quarantine);
    /// refusals of inputs and deadlines do not.
    pub fn is_strike(&self) -> bool {
        matches!(self, Failure::OutOfMemory(_) | Failure::Crashed(_))
    }

    fn describe(&self) -> String {
        match self {
            Failure::TimedOut => "timed out".into(),
            other => other.to_string(),
        }
    }
}

/// Why an upload was not accepted as a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadFailure {
    /// The runtime's own refusal, for the creator.
    #[error("{0}")]
    Refused(String),
    #[error("loading the model needs more memory than the worker's bound")]
    OutOfMemory,
    #[error("loading the model took longer than its time limit")]
    TimedOut,
    #[error("the runtime crashed loading the model ({0})")]
    Crashed(String),
    /// No worker could be started: the server's problem, not the model's.
    #[error("{0}")]
    Unavailable(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Calls' workers.
    pub workers_max: u64,
    pub workers_live: u64,
    /// Uploads' workers.
    pub upload_workers_max: u64,
    pub upload_workers_live: u64,
    /// Over all workers, calls' and uploads'.
    pub workers_started: u64,
    pub worker_timeouts: u64,
    pub worker_out_of_memory: u64,
    pub worker_crashes: u64,
    /// Calls written to a busy worker behind the call it was running.
    pub worker_requests_pipelined: u64,
    /// Calls waiting for a worker now.
    pub calls_waiting: u64,
    /// Calls' worker slots taken now (0 without isolation: not counted).
    pub workers_busy: u64,
}

impl Metrics {
    /// The calls' pool's counters with the uploads' pool's added.
    fn with_uploads(self, uploads: &Metrics) -> Metrics {
        Metrics {
            upload_workers_max: uploads.workers_max,
            upload_workers_live: uploads.workers_live,
            workers_started: self.workers_started + uploads.workers_started,
            worker_timeouts: self.worker_timeouts + uploads.worker_timeouts,
            worker_out_of_memory: self.worker_out_of_memory + uploads.worker_out_of_memory,
            worker_crashes: self.worker_crashes + uploads.worker_crashes,
            ..self
        }
    }
}

/// Runs models, isolated or in process.
#[derive(Debug)]
pub struct Executor {
    kind: Kind,
    engine: runtime::Engine,
    onnxruntime_library: Option<PathBuf>,
}

/// tract's release, the one the workspace pins.
const TRACT_VERSION: &str = "0.23.9";

#[derive(Debug)]
enum Kind {
    Isolated { calls: std::sync::Arc<pool::WorkerPool>, uploads: std::sync::Arc<pool::WorkerPool> },
    InProcess(inprocess::InProcess),
}

impl Executor {
    /// With isolation, starts one worker now, so that a machine where
    /// workers cannot start or confine themselves refuses to serve.
    pub async fn start(settings: Settings) -> Result<Executor, StartFailure> {
        let workers = settings.workers.max(1);
        let kind = match settings.isolation {
            Isolation::None => Kind::InProcess(inprocess::InProcess::new(&settings, workers)?),
            Isolation::Process => {
                let command = match settings.worker_command {
                    Some(command) => command,
                    None => WorkerCommand { program: current_program()?, args: vec!["worker".into()] },
                };
                let hello = protocol::Hello {
                    memory_bytes_max: settings.worker_memory_bytes_max,
                    cache_bytes_max: settings.model_cache_bytes_max,
                    nodes_max: settings.model_limits.nodes_max as u64,
                    initializer_bytes_max: settings.model_limits.initializer_bytes_max,
                    output_elements_max: settings.output_elements_max,
                    inputs_max: settings.model_limits.inputs_max as u64,
                    outputs_max: settings.model_limits.outputs_max as u64,
                    rank_max: settings.model_limits.rank_max as u64,
                    onnxruntime_library: settings
                        .onnxruntime_library
                        .as_ref()
                        .map(|path| path.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                };
                // Upload workers say so on their command line (for `ps`).
                let mut upload_command = command.clone();
                upload_command.args.push("--uploads".into());
                let uploads = pool::WorkerPool::new(upload_command, hello.clone(), settings.upload_workers.max(1));
                let uploads = std::sync::Arc::new(uploads.one_request_each());
                let calls = std::sync::Arc::new(pool::WorkerPool::new(command, hello, workers));
                calls.start_one(Instant::now() + std::time::Duration::from_secs(30)).await?;
                Kind::Isolated { calls, uploads }
            }
        };
        let engine =
            if settings.onnxruntime_library.is_some() { runtime::Engine::OnnxRuntime } else { runtime::Engine::Tract };
        Ok(Executor { kind, engine, onnxruntime_library: settings.onnxruntime_library.clone() })
    }

    /// Validates a model for `tenant` (the uploader's account) by loading
    /// it in an upload worker, within `deadline`; returns its signature.
    /// Uploads take turns by tenant, as calls do.
    pub async fn load(
        &self,
        tenant: u64,
        digest: Sha256,
        mut model: ModelFile,
        deadline: Instant,
    ) -> Result<Signature, LoadFailure> {
        match &self.kind {
            Kind::Isolated { uploads, .. } => uploads.load(tenant, digest, model, deadline).await,
            Kind::InProcess(in_process) => {
                let bytes = model.read_all().await.map_err(|e| LoadFailure::Unavailable(e.to_string()))?;
                in_process.load(digest, bytes, deadline).await
            }
        }
    }

    /// Runs the model `digest` on checked inputs for `tenant` (the caller's
    /// account: while every worker is busy, the caller holding the fewest
    /// goes next), within `deadline`. `model_bytes` is called only where
    /// the model is not loaded yet, for its file.
    pub async fn run<F, Fut>(
        &self,
        tenant: u64,
        digest: Sha256,
        inputs: Vec<Tensor>,
        deadline: Instant,
        model_bytes: F,
    ) -> Result<Ran, RunFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::io::Result<ModelFile>>,
    {
        match &self.kind {
            Kind::Isolated { calls, .. } => calls.run(tenant, digest, inputs, deadline, model_bytes).await,
            Kind::InProcess(in_process) => {
                let bytes = move || async move { model_bytes().await?.read_all().await };
                in_process.run(digest, inputs, deadline, bytes).await
            }
        }
    }

    /// What runs the models.
    pub fn engine(&self) -> runtime::Engine {
        self.engine
    }

    /// The engine's version: tract's, or what the ONNX Runtime library's
    /// file name says (`None` if it says none).
    pub fn engine_version(&self) -> Option<String> {
        match self.engine {
            runtime::Engine::Tract => Some(TRACT_VERSION.to_owned()),
            runtime::Engine::OnnxRuntime => {
                self.onnxruntime_library.as_deref().and_then(runtime::onnxruntime::version_of_library)
            }
        }
    }

    pub fn metrics(&self) -> Metrics {
        match &self.kind {
            Kind::Isolated { calls, uploads } => calls.metrics().with_uploads(&uploads.metrics()),
            Kind::InProcess(in_process) => in_process.metrics(),
        }
    }
}

fn current_program() -> Result<PathBuf, StartFailure> {
    std::env::current_exe().map_err(|e| StartFailure(format!("cannot find this program to start workers: {e}")))
}
