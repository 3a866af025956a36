//! The runtime in the server's own process (`isolation = "none"`): a bounded
//! blocking pool and one model cache. No memory bound: a model that fails an
//! allocation aborts the server. A timed-out call is answered at its
//! deadline, but tract cannot be interrupted, so its computation finishes in
//! the background still holding its slot (which keeps runaway models from
//! multiplying).

use std::future::Future;
use std::sync::Arc;

use domain::Sha256;
use runtime::{LoadedModel, ModelCache, ModelError, ModelLimits, RunError, Signature, Tensor};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::{Failure, LoadFailure, Metrics, Ran, RunFailure, Settings};

#[derive(Debug)]
pub(crate) struct InProcess {
    cache: Arc<ModelCache>,
    limits: ModelLimits,
    output_elements_max: u64,
    /// One permit per model loading or running at once.
    slots: Arc<Semaphore>,
    workers: usize,
    engine: runtime::Engine,
}

impl InProcess {
    /// Loads ONNX Runtime's library into this process first, if the
    /// settings name one.
    pub(crate) fn new(settings: &Settings, workers: usize) -> Result<InProcess, crate::StartFailure> {
        let engine = match &settings.onnxruntime_library {
            Some(library) => {
                runtime::onnxruntime::init(library).map_err(|e| crate::StartFailure(e.to_string()))?;
                runtime::Engine::OnnxRuntime
            }
            None => runtime::Engine::Tract,
        };
        Ok(InProcess {
            engine,
            cache: Arc::new(ModelCache::new(settings.model_cache_bytes_max)),
            limits: settings.model_limits.clone(),
            output_elements_max: settings.output_elements_max,
            slots: Arc::new(Semaphore::new(workers)),
            workers,
        })
    }

    pub(crate) async fn load(
        &self,
        digest: Sha256,
        model: Vec<u8>,
        deadline: Instant,
    ) -> Result<Signature, LoadFailure> {
        let loaded = tokio::time::timeout_at(deadline, self.load_blocking(model))
            .await
            .map_err(|_| LoadFailure::TimedOut)?
            .map_err(|error| match error {
                LoadError::Model(ModelError::OutOfMemory(_)) => LoadFailure::OutOfMemory,
                LoadError::Model(error) => LoadFailure::Refused(error.to_string()),
                LoadError::Pool(message) => LoadFailure::Unavailable(message),
            })?;
        let signature = loaded.signature.clone();
        self.cache.insert(digest, loaded);
        Ok(signature)
    }

    pub(crate) async fn run<F, Fut>(
        &self,
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
        let work = async {
            let model = match self.cache.get(&digest) {
                Some(model) => model,
                None => {
                    let bytes = model_bytes().await.map_err(|e| failed(Failure::ModelUnreadable(e.to_string())))?;
                    let model = self.load_blocking(bytes).await.map_err(|error| {
                        failed(match error {
                            LoadError::Model(ModelError::OutOfMemory(message)) => Failure::OutOfMemory(message),
                            LoadError::Model(error) => Failure::ModelNoLongerLoads(error.to_string()),
                            LoadError::Pool(message) => Failure::Unavailable(message),
                        })
                    })?;
                    self.cache.insert(digest, model.clone());
                    model
                }
            };
            let output_elements_max = self.output_elements_max;
            let (result, cpu_us) = self
                .blocking(move || {
                    let started = thread_cpu_time_us();
                    let result = model.run(inputs, output_elements_max);
                    (result, thread_cpu_time_us().saturating_sub(started))
                })
                .await
                .map_err(|message| failed(Failure::Unavailable(message)))?;
            match result {
                Ok(outputs) => Ok(Ran { outputs, cpu_us }),
                Err(error) => {
                    let message = error.to_string();
                    let failure = match error {
                        RunError::OutOfMemory(_) => Failure::OutOfMemory(message),
                        RunError::OutputTooLarge { .. } => Failure::OutputTooLarge(message),
                        RunError::Input(_) | RunError::Failed(_) | RunError::Panicked(_) => Failure::Failed(message),
                    };
                    Err(RunFailure { failure, cpu_us })
                }
            }
        };
        tokio::time::timeout_at(deadline, work).await.unwrap_or(Err(failed(Failure::TimedOut)))
    }

    pub(crate) fn metrics(&self) -> Metrics {
        Metrics { workers_max: self.workers as u64, ..Metrics::default() }
    }

    async fn load_blocking(&self, bytes: Vec<u8>) -> Result<Arc<LoadedModel>, LoadError> {
        let (limits, engine) = (self.limits.clone(), self.engine);
        let loaded =
            self.blocking(move || runtime::load_model_with(engine, &bytes, &limits)).await.map_err(LoadError::Pool)?;
        Ok(Arc::new(loaded.map_err(LoadError::Model)?))
    }

    /// Runs CPU-bound work on the blocking pool, holding a slot until the
    /// work ends, even if the caller has given up.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let permit = self.slots.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|e| e.to_string())
    }
}

enum LoadError {
    Model(ModelError),
    Pool(String),
}

fn thread_cpu_time_us() -> u64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    time.tv_sec as u64 * 1_000_000 + time.tv_nsec as u64 / 1_000
}
