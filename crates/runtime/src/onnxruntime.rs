//! ONNX Runtime as an engine: its C library, loaded at run time
//! (`libonnxruntime.so`, as the PyPI wheel ships it: `scripts/onnxruntime`
//! puts one under `target/`), never linked, so the build needs nothing but
//! Rust and a market without the library runs on tract.
//!
//! [`init`] loads the library and creates ONNX Runtime's environment: a
//! worker calls it before it confines itself (the library is a file, and
//! the environment starts a thread of its own). Sessions are made from the
//! model's bytes (no file is opened), run on the calling thread alone (one
//! intra-op thread, sequential execution: the pool's workers are the
//! parallelism), after the same checks on the protobuf as with tract.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use domain::{Dim, Dtype, TensorSpec};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};

use crate::{ModelError, RunError, TENSOR_NAME_BYTES_MAX, Tensor, TensorData};

/// The variable (and value) that keeps ONNX Runtime's telemetry client
/// (OneDS, posting to Microsoft's collector over libcurl) from starting
/// with the environment; `with_telemetry(false)` alone leaves it running.
/// The library reads it when [`init`] creates the environment, so every
/// process that loads the library has it set before it starts.
pub const TELEMETRY_OFF: (&str, &str) = ("ORT_DISABLE_TELEMETRY", "1");

static ENVIRONMENT: OnceLock<(ort::environment::Environment, String)> = OnceLock::new();

/// Why ONNX Runtime could not be started ([`init`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum InitError {
    #[error("cannot load {library}: {message}")]
    Load { library: String, message: String },
    #[error("cannot start ONNX Runtime: {0}")]
    Start(String),
}

/// Loads the library at `library` and creates the environment, once per
/// process; the library's version. Later calls return the first's.
pub fn init(library: &Path) -> Result<String, InitError> {
    if let Some((_, version)) = ENVIRONMENT.get() {
        return Ok(version.clone());
    }
    let builder = ort::init_from(library)
        .map_err(|e| InitError::Load { library: library.display().to_string(), message: e.to_string() })?;
    let environment =
        builder.with_name("vitrine").with_telemetry(false).build().map_err(|e| InitError::Start(e.to_string()))?;
    // Its errors come back through its API, with the call's answer; what it
    // would also print (a worker's standard error goes to the server's log)
    // only repeats them.
    environment.set_log_level(ort::logging::LogLevel::Fatal);
    let version = release_of(ort::info()).unwrap_or_else(|| "unknown".to_owned());
    let _ = ENVIRONMENT.set((environment, version.clone()));
    Ok(version)
}

/// Builds and runs one small model, so that what ONNX Runtime sets up on
/// its first session (and may read from the system for) is done now: a
/// worker calls this before it confines itself.
pub fn probe() {
    let model = crate::synthetic::mlp(&[4, 8, 2], 0);
    if let Ok(loaded) = crate::load_model_with(crate::Engine::OnnxRuntime, &model.bytes, &crate::ModelLimits::TRUSTED) {
        let input = Tensor { shape: vec![1, 4], data: TensorData::F32(vec![0.5; 4]) };
        let _ = loaded.run(vec![input], u64::MAX);
    }
}

/// The version of the library [`init`] loaded, if it did.
pub fn version() -> Option<&'static str> {
    ENVIRONMENT.get().map(|(_, version)| version.as_str())
}

/// "1.32.0" from a library's file name `libonnxruntime.so.1.32.0` (the
/// wheel's), before the library is loaded (the server never loads it when
/// its workers run the models).
pub fn version_of_library(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let version = name.split_once(".so.")?.1;
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.')).then(|| version.to_owned())
}

/// "1.32.0" from a build string "… git-branch=rel-1.32.0, …".
fn release_of(info: &str) -> Option<String> {
    let rest = info.split("rel-").nth(1)?;
    Some(rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect())
}

/// A session: one call at a time (its calls come from one worker thread).
#[derive(Debug)]
pub(crate) struct OrtModel {
    session: Mutex<Session>,
}

/// Makes a session of `bytes` (a whole `.onnx` file, external data inline).
/// The outputs' specs come from the session, named as the graph names them.
pub(crate) fn load(
    bytes: &[u8],
    output_names: &[String],
    rank_max: usize,
) -> Result<(OrtModel, Vec<TensorSpec>), ModelError> {
    let (environment, _) =
        ENVIRONMENT.get().ok_or_else(|| ModelError::Rejected("ONNX Runtime is not loaded in this process".into()))?;
    let rejected = |e: &dyn std::fmt::Display| load_error(&e.to_string());
    let session = Session::builder(environment)
        .map_err(|e| rejected(&e))?
        .with_intra_threads(1)
        .map_err(|e| rejected(&e))?
        .with_inter_threads(1)
        .map_err(|e| rejected(&e))?
        .with_parallel_execution(false)
        .map_err(|e| rejected(&e))?
        // No arena: what a call allocates is freed when it ends, so a worker
        // holding many sessions holds their weights, not the high-water mark
        // of every call each has run (an arena never shrinks, and one hostile
        // call would leave the next model of the worker no memory).
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
        .map_err(|e| rejected(&e))?
        .with_memory_pattern(false)
        .map_err(|e| rejected(&e))?
        .commit_from_memory(bytes)
        .map_err(|e| rejected(&e))?;
    let mut outputs = Vec::with_capacity(output_names.len());
    for name in output_names {
        let outlet = session
            .outputs()
            .iter()
            .find(|outlet| outlet.name() == name)
            .ok_or_else(|| ModelError::Rejected(format!("the runtime has no output '{name}'")))?;
        let ValueType::Tensor { ty, shape, dimension_symbols } = outlet.dtype() else {
            return Err(ModelError::UnsupportedDtype {
                what: "output",
                name: name.clone(),
                elem_type: format!("{}", outlet.dtype()),
            });
        };
        let dtype = dtype_of(*ty).ok_or_else(|| ModelError::UnsupportedDtype {
            what: "output",
            name: name.clone(),
            elem_type: format!("{ty:?}"),
        })?;
        if shape.len() > rank_max {
            return Err(ModelError::RankTooLarge {
                what: "output",
                name: name.clone(),
                rank: shape.len(),
                limit: rank_max,
            });
        }
        let shape = shape
            .iter()
            .enumerate()
            .map(|(axis, &size)| match (size, dimension_symbols.get(axis)) {
                (size, _) if size >= 0 => Dim::Fixed(size as u64),
                (_, Some(symbol)) if !symbol.is_empty() && symbol.len() <= TENSOR_NAME_BYTES_MAX => {
                    Dim::Symbol(symbol.clone())
                }
                _ => Dim::Symbol(format!("{name}_dim{axis}")),
            })
            .collect();
        outputs.push(TensorSpec { name: name.clone(), dtype, shape });
    }
    Ok((OrtModel { session: Mutex::new(session) }, outputs))
}

/// ONNX Runtime says an allocation failed in words of its own.
fn load_error(message: &str) -> ModelError {
    if is_allocation_failure(message) {
        ModelError::OutOfMemory(message.to_owned())
    } else {
        ModelError::Rejected(short(message))
    }
}

/// How ONNX Runtime says a model needs more memory than it may have: a
/// failed allocation, or a tensor past the size it supports.
fn is_allocation_failure(message: &str) -> bool {
    ["bad_alloc", "Failed to allocate", "bad_array_new_length", "exceeds the supported maximum"]
        .iter()
        .any(|marker| message.contains(marker))
}

fn short(message: &str) -> String {
    const MESSAGE_CHARS_MAX: usize = 400;
    if message.chars().count() <= MESSAGE_CHARS_MAX {
        return message.to_owned();
    }
    let cut: String = message.chars().take(MESSAGE_CHARS_MAX).collect();
    format!("{cut}…")
}

fn dtype_of(ty: TensorElementType) -> Option<Dtype> {
    Some(match ty {
        TensorElementType::Float32 => Dtype::F32,
        TensorElementType::Float64 => Dtype::F64,
        TensorElementType::Int8 => Dtype::I8,
        TensorElementType::Int16 => Dtype::I16,
        TensorElementType::Int32 => Dtype::I32,
        TensorElementType::Int64 => Dtype::I64,
        TensorElementType::Uint8 => Dtype::U8,
        TensorElementType::Uint16 => Dtype::U16,
        TensorElementType::Uint32 => Dtype::U32,
        TensorElementType::Uint64 => Dtype::U64,
        TensorElementType::Bool => Dtype::Bool,
        TensorElementType::Float16 => Dtype::F16,
        TensorElementType::Bfloat16 => Dtype::Bf16,
        _ => return None,
    })
}

impl OrtModel {
    /// Runs on checked inputs, named as the signature names them; the
    /// outputs in the order of `outputs`, unless they hold more than
    /// `output_elements_max` elements in all (checked before any is copied).
    pub(crate) fn run(
        &self,
        input_names: &[String],
        inputs: Vec<Tensor>,
        outputs: &[TensorSpec],
        output_elements_max: u64,
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        let failed = |e: ort::Error| {
            let message = e.to_string();
            if is_allocation_failure(&message) {
                RunError::OutOfMemory(short(&message))
            } else {
                RunError::Failed(short(&message))
            }
        };
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (name, tensor) in input_names.iter().zip(inputs) {
            values.push((Cow::Owned(name.clone()), SessionInputValue::from(to_value(tensor).map_err(failed)?)));
        }
        let mut session = self.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let answer = session.run(values).map_err(failed)?;
        let mut elements = 0u64;
        for spec in outputs {
            let value =
                answer.get(spec.name.as_str()).ok_or_else(|| RunError::Failed(format!("no output '{}'", spec.name)))?;
            let shape = match value.dtype() {
                ValueType::Tensor { shape, .. } => shape.clone(),
                other => return Err(RunError::Failed(format!("output '{}' is a {other}, not a tensor", spec.name))),
            };
            elements = elements.saturating_add(shape.iter().map(|&d| d.max(0) as u64).product::<u64>());
        }
        if elements > output_elements_max {
            return Err(RunError::OutputTooLarge { elements, limit: output_elements_max });
        }
        outputs
            .iter()
            .map(|spec| {
                let value = answer.get(spec.name.as_str()).expect("checked above");
                Ok((spec.name.clone(), from_value(value).map_err(failed)?))
            })
            .collect()
    }
}

fn to_value(tensor: Tensor) -> ort::Result<DynValue> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    Ok(match tensor.data {
        TensorData::F32(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::F64(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::I8(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::I16(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::I32(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::I64(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::U8(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::U16(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::U32(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::U64(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::Bool(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::F16(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
        TensorData::Bf16(data) => ort::value::Tensor::from_array((shape, data))?.into_dyn(),
    })
}

fn from_value(value: &DynValue) -> ort::Result<Tensor> {
    fn take<T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug>(
        value: &DynValue,
    ) -> ort::Result<(Vec<usize>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((shape.iter().map(|&d| d.max(0) as usize).collect(), data.to_vec()))
    }
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(ort::Error::new("not a tensor"));
    };
    Ok(match ty {
        TensorElementType::Float32 => {
            take::<f32>(value).map(|(shape, d)| Tensor { shape, data: TensorData::F32(d) })?
        }
        TensorElementType::Float64 => {
            take::<f64>(value).map(|(shape, d)| Tensor { shape, data: TensorData::F64(d) })?
        }
        TensorElementType::Int8 => take::<i8>(value).map(|(shape, d)| Tensor { shape, data: TensorData::I8(d) })?,
        TensorElementType::Int16 => take::<i16>(value).map(|(shape, d)| Tensor { shape, data: TensorData::I16(d) })?,
        TensorElementType::Int32 => take::<i32>(value).map(|(shape, d)| Tensor { shape, data: TensorData::I32(d) })?,
        TensorElementType::Int64 => take::<i64>(value).map(|(shape, d)| Tensor { shape, data: TensorData::I64(d) })?,
        TensorElementType::Uint8 => take::<u8>(value).map(|(shape, d)| Tensor { shape, data: TensorData::U8(d) })?,
        TensorElementType::Uint16 => take::<u16>(value).map(|(shape, d)| Tensor { shape, data: TensorData::U16(d) })?,
        TensorElementType::Uint32 => take::<u32>(value).map(|(shape, d)| Tensor { shape, data: TensorData::U32(d) })?,
        TensorElementType::Uint64 => take::<u64>(value).map(|(shape, d)| Tensor { shape, data: TensorData::U64(d) })?,
        TensorElementType::Bool => take::<bool>(value).map(|(shape, d)| Tensor { shape, data: TensorData::Bool(d) })?,
        TensorElementType::Float16 => {
            take::<half::f16>(value).map(|(shape, d)| Tensor { shape, data: TensorData::F16(d) })?
        }
        TensorElementType::Bfloat16 => {
            take::<half::bf16>(value).map(|(shape, d)| Tensor { shape, data: TensorData::Bf16(d) })?
        }
        other => {
            return Err(ort::Error::new(format!("an output of element type {other:?}, which Vitrine does not serve")));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_read_from_the_build_string() {
        let info = "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release";
        assert_eq!(release_of(info).as_deref(), Some("1.32.0"));
        assert_eq!(release_of("no release here"), None);
        let wheel = Path::new("/x/onnxruntime/capi/libonnxruntime.so.1.32.0");
        assert_eq!(version_of_library(wheel).as_deref(), Some("1.32.0"));
        assert_eq!(version_of_library(Path::new("/usr/lib/libonnxruntime.so")), None);
    }
}
