//! The worker process: `vitrine worker`, started by the server with its
//! standard input and output as the request and answer pipes. It confines
//! itself (see [`crate::confine`]) before it reads a model, then serves one
//! request at a time until its input closes or it dies.

use std::io::{self, BufReader, BufWriter};
use std::sync::Arc;

use domain::Sha256;
use runtime::{LoadedModel, ModelCache, ModelError, ModelLimits, RunError};

use crate::confine;
use crate::protocol::{self, Hello, Request, Response, RunFailureKind};

/// Requests from the server are trusted: the bound only catches a broken pipe
/// that reads as a huge length.
const REQUEST_BYTES_MAX: u64 = 1 << 40;

/// The worker's entry point; returns the process's exit code.
pub fn main() -> i32 {
    // Die with the server: a worker must never outlive its supervisor.
    if confine::die_with_parent().is_err() {
        return 3;
    }
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut input = BufReader::with_capacity(1 << 16, stdin.lock());
    let mut output = BufWriter::with_capacity(1 << 16, stdout.lock());
    let hello = match protocol::read_frame(&mut input, REQUEST_BYTES_MAX).and_then(|frame| match frame {
        Some(frame) => Hello::decode(&frame),
        None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no hello")),
    }) {
        Ok(hello) => hello,
        Err(error) => {
            eprintln!("vitrine worker: cannot read the server's hello: {error}");
            return 2;
        }
    };
    runtime::probe_machine();
    // ONNX Runtime's library is a file: loaded, and its environment
    // created, before the worker confines itself. With its telemetry off
    // (`TELEMETRY_OFF`, from the pool) and one thread per session, it
    // starts no thread: the worker stays one thread.
    let engine = if hello.onnxruntime_library.is_empty() {
        runtime::Engine::Tract
    } else {
        if let Err(error) = runtime::onnxruntime::init(std::path::Path::new(&hello.onnxruntime_library)) {
            let answer = Response::ConfinementFailed { message: error.to_string() };
            let _ = protocol::write_frame(&mut output, &answer.encode());
            return 4;
        }
        runtime::onnxruntime::probe();
        runtime::Engine::OnnxRuntime
    };
    if let Err(error) = confine::confine(hello.memory_bytes_max) {
        let answer = Response::ConfinementFailed { message: error.to_string() };
        let _ = protocol::write_frame(&mut output, &answer.encode());
        return 4;
    }
    let mut worker = Worker {
        engine,
        cache: ModelCache::new(hello.cache_bytes_max),
        limits: ModelLimits {
            nodes_max: usize::try_from(hello.nodes_max).unwrap_or(usize::MAX),
            initializer_bytes_max: hello.initializer_bytes_max,
            inputs_max: usize::try_from(hello.inputs_max).unwrap_or(usize::MAX),
            outputs_max: usize::try_from(hello.outputs_max).unwrap_or(usize::MAX),
            rank_max: usize::try_from(hello.rank_max).unwrap_or(usize::MAX),
        },
        output_elements_max: hello.output_elements_max,
    };
    if protocol::write_frame(&mut output, &Response::Ready.encode()).is_err() {
        return 2;
    }
    loop {
        let request = match protocol::read_frame(&mut input, REQUEST_BYTES_MAX) {
            Ok(Some(frame)) => frame,
            // The server closed the pipe: it is done with this worker.
            Ok(None) => return 0,
            Err(error) => {
                eprintln!("vitrine worker: cannot read a request: {error}");
                return 2;
            }
        };
        // The request's bytes (a model, the inputs) go with it once served:
        // not kept while the answer is written.
        let answer = match Request::decode(request) {
            Ok(request) => worker.serve(request),
            Err(error) => {
                eprintln!("vitrine worker: a request does not decode: {error}");
                return 2;
            }
        };
        if protocol::write_frame(&mut output, &answer.encode()).is_err() {
            return 2;
        }
    }
}

struct Worker {
    engine: runtime::Engine,
    cache: ModelCache,
    limits: ModelLimits,
    output_elements_max: u64,
}

impl Worker {
    fn serve(&mut self, request: Request) -> Response {
        let started_cpu_us = confine::cpu_time_us();
        let cpu_us = || confine::cpu_time_us().saturating_sub(started_cpu_us);
        match request {
            Request::Load { digest, model } => match self.load(digest, &model) {
                Ok((model, evicted)) => {
                    Response::Loaded { signature: model.signature.clone(), cpu_us: cpu_us(), evicted }
                }
                Err(error) => Response::Refused {
                    out_of_memory: matches!(error, ModelError::OutOfMemory(_)),
                    message: error.to_string(),
                },
            },
            Request::Run { start_by, .. } if start_by != 0 && protocol::monotonic_ns() > start_by => Response::Expired,
            Request::Run { digest, model, inputs, .. } => {
                let (loaded, evicted) = match (self.cache.get(&digest), model) {
                    (Some(loaded), _) => (loaded, Vec::new()),
                    (None, None) => return Response::NeedModel,
                    (None, Some(bytes)) => match self.load(digest, &bytes) {
                        Ok(loaded) => loaded,
                        Err(error) => {
                            let failure = match error {
                                ModelError::OutOfMemory(_) => RunFailureKind::OutOfMemory,
                                _ => RunFailureKind::ModelNoLongerLoads,
                            };
                            return Response::RunFailed { failure, message: error.to_string(), cpu_us: cpu_us() };
                        }
                    },
                };
                match loaded.run(inputs, self.output_elements_max) {
                    Ok(outputs) => Response::Ran { outputs, cpu_us: cpu_us(), evicted },
                    Err(error) => {
                        let failure = match error {
                            RunError::OutOfMemory(_) => RunFailureKind::OutOfMemory,
                            RunError::OutputTooLarge { .. } => RunFailureKind::OutputTooLarge,
                            RunError::Input(_) | RunError::Failed(_) | RunError::Panicked(_) => RunFailureKind::Failed,
                        };
                        Response::RunFailed { failure, message: error.to_string(), cpu_us: cpu_us() }
                    }
                }
            }
        }
    }

    /// Loads and keeps a model; returns it and the digests the cache let go.
    fn load(&mut self, digest: Sha256, bytes: &[u8]) -> Result<(Arc<LoadedModel>, Vec<Sha256>), ModelError> {
        let model = Arc::new(runtime::load_model_with(self.engine, bytes, &self.limits)?);
        let evicted = self.cache.insert(digest, model.clone());
        Ok((model, evicted))
    }
}

#[cfg(test)]
mod tests {
    use runtime::{Tensor, TensorData};

    use super::*;

    #[test]
    fn a_run_reached_past_its_start_by_is_answered_expired_without_running() {
        let model = runtime::synthetic::mlp(&[4, 8, 2], 1);
        let digest = Sha256::digest(&model.bytes);
        let mut worker = Worker {
            engine: runtime::Engine::Tract,
            cache: ModelCache::new(1 << 30),
            limits: ModelLimits { nodes_max: 100, initializer_bytes_max: 1 << 20, ..ModelLimits::TRUSTED },
            output_elements_max: 1000,
        };
        let input = Tensor { shape: vec![1, 4], data: TensorData::F32(vec![0.5; 4]) };
        let run =
            |start_by| Request::Run { digest, inputs: vec![input.clone()], start_by, model: Some(model.bytes.clone()) };
        assert_eq!(worker.serve(run(protocol::monotonic_ns() - 1)), Response::Expired);
        assert!(worker.cache.get(&digest).is_none(), "an expired run does not even load its model");
        let a_minute_on = protocol::monotonic_ns() + 60_000_000_000;
        assert!(matches!(worker.serve(run(a_minute_on)), Response::Ran { .. }));
        assert!(matches!(worker.serve(run(0)), Response::Ran { .. }), "0: no deadline");
    }
}
