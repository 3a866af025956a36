//! Loads, validates and runs ONNX models, with tract (pure Rust, always
//! there) or ONNX Runtime (its library loaded at run time: `onnxruntime.rs`),
//! the [`Engine`] a market chooses.
//!
//! - [`load_model`] turns uploaded bytes into a [`LoadedModel`]: it checks the
//!   protobuf against [`ModelLimits`] and the operators tract implements, then
//!   optimises the graph once, keeping symbolic dimensions (a batch size `N`)
//!   symbolic so that one plan serves every size.
//! - [`Signature::check_inputs`] checks a call's tensors against the declared
//!   inputs before anything runs.
//! - [`LoadedModel::run`] runs the plan. It is synchronous and CPU-bound: the
//!   server calls it in a worker process (see the `sandbox` crate).
//! - [`ModelCache`] keeps loaded models by blob digest, bounded by bytes.
//!
//! This crate knows nothing about money, storage or HTTP.

pub mod archive;
mod cache;
mod inspect;
pub mod onnxruntime;
pub mod sniff;
pub mod synthetic;
mod tensor;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use domain::{Dim, Dtype, TensorSpec};
use tract_onnx::prelude::*;

pub use cache::ModelCache;
pub use tensor::{InputError, Tensor, TensorBytesError, TensorData, dtype_width, stack_rows};

/// Limits on what an upload may contain. Each one names the configuration key
/// that sets it, so a refusal tells the operator what to raise.
#[derive(Debug, Clone)]
pub struct ModelLimits {
    /// `model_nodes_max`: graph nodes, subgraphs included.
    pub nodes_max: usize,
    /// `model_initializer_bytes_max`: bytes of weights and constants.
    pub initializer_bytes_max: u64,
    /// `model_inputs_max`: inputs the graph declares (initializers listed
    /// as inputs not counted). Every version's signature is shown on public
    /// pages and sent with every listing of versions, so its size is bounded.
    pub inputs_max: usize,
    /// `model_outputs_max`: outputs the graph declares.
    pub outputs_max: usize,
    /// `tensor_rank_max`: dimensions of one declared input or output.
    pub rank_max: usize,
}

impl ModelLimits {
    /// Generous bounds on everything, for models the code wrote itself
    /// (the demo's, the machine probe's, tests').
    pub const TRUSTED: ModelLimits = ModelLimits {
        nodes_max: 10_000,
        initializer_bytes_max: 1 << 30,
        inputs_max: 256,
        outputs_max: 256,
        rank_max: 16,
    };
}

/// What runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// tract, in Rust, built in.
    Tract,
    /// ONNX Runtime, its library loaded by [`onnxruntime::init`] first.
    OnnxRuntime,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Tract => "tract",
            Engine::OnnxRuntime => "onnxruntime",
        }
    }
}

/// Bytes of one input's or output's name, and of one symbolic dimension's
/// name: a name is shown on pages, written into every receipt's digest and
/// sent with every listing, and no exporter writes longer ones.
pub const TENSOR_NAME_BYTES_MAX: usize = 255;

/// Why an uploaded file is not a model Vitrine will serve. Each message is
/// written for the creator who uploaded it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("the file is not an ONNX model: {0}")]
    NotOnnx(String),
    #[error(
        "the model keeps tensors in external data files ({0}); push the .onnx file with its data files as one \
         tar archive (vitrine model push owner/name FOLDER)"
    )]
    ExternalData(String),
    #[error("the archive's external data does not fit the model: {0}")]
    ArchiveData(String),
    #[error("the model uses operators the runtime does not implement: {}", .0.join(", "))]
    UnsupportedOperators(Vec<String>),
    #[error("the model has {count} nodes, more than the limit model_nodes_max = {limit}")]
    TooManyNodes { count: usize, limit: usize },
    #[error("the model has {bytes} bytes of weights, more than the limit model_initializer_bytes_max = {limit}")]
    InitializersTooLarge { bytes: u64, limit: u64 },
    #[error("the model's {what} '{name}' has element type {elem_type}, which Vitrine does not serve (it serves {list})", list = Dtype::ALL.map(Dtype::as_str).join(", "))]
    UnsupportedDtype { what: &'static str, name: String, elem_type: String },
    #[error(
        "the model's {what} '{name}' is {dtype}, which this market's engine ({engine}) does not run \
         (a market on ONNX Runtime runs it)"
    )]
    EngineLacksDtype { what: &'static str, name: String, dtype: Dtype, engine: &'static str },
    #[error("the model's input '{0}' declares no shape")]
    NoShape(String),
    #[error("the model declares {count} {what}, more than the limit {setting} = {limit}")]
    TooManyTensors { what: &'static str, count: usize, limit: usize, setting: &'static str },
    #[error(
        "the model's {what} name of {bytes} bytes (starting '{start}') is longer than {TENSOR_NAME_BYTES_MAX} bytes"
    )]
    NameTooLong { what: &'static str, bytes: usize, start: String },
    #[error("the model's {what} '{name}' has {rank} dimensions, more than the limit tensor_rank_max = {limit}")]
    RankTooLarge { what: &'static str, name: String, rank: usize, limit: usize },
    #[error("the model declares {what} '{name}' more than once: each {what} needs a name of its own")]
    DuplicateName { what: &'static str, name: String },
    #[error("the runtime cannot load the model: {0}")]
    Rejected(String),
    /// An allocation failed while loading: the model needs more memory than
    /// this process may use (the worker's bound, `worker_memory_bytes_max`).
    #[error("loading the model needs more memory than the runtime may use ({0})")]
    OutOfMemory(String),
}

/// Why a call could not run. Input checks come first and never reach tract.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("the model could not run on these inputs: {0}")]
    Failed(String),
    /// tract asserts some input properties (such as Gather indices in
    /// range) by panicking; the panic is caught, and the inputs are what
    /// triggered it.
    #[error("the model could not run on these inputs (the runtime failed: {0})")]
    Panicked(String),
    /// An allocation failed while running: these inputs make the model need
    /// more memory than this process may use.
    #[error("the model needs more memory than the runtime may use on these inputs ({0})")]
    OutOfMemory(String),
    #[error("the model's outputs have {elements} elements, more than the limit output_elements_max = {limit}")]
    OutputTooLarge { elements: u64, limit: u64 },
}

/// A model's declared inputs and outputs, in the model's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A validated, optimised model, ready to run from any thread.
#[derive(Debug)]
pub struct LoadedModel {
    runner: Runner,
    pub signature: Signature,
    /// What this model is charged against the cache's byte budget.
    pub cost_bytes: u64,
}

/// What runs a loaded model.
#[derive(Debug)]
enum Runner {
    Tract(Arc<TypedSimplePlan>),
    OnnxRuntime(onnxruntime::OrtModel),
}

/// Reads, checks and optimises an ONNX model with tract. Never panics: a
/// panic inside tract is caught and reported as [`ModelError::Rejected`].
pub fn load_model(bytes: &[u8], limits: &ModelLimits) -> Result<LoadedModel, ModelError> {
    load_model_with(Engine::Tract, bytes, limits)
}

/// Reads and checks an ONNX model, then has `engine` build it.
pub fn load_model_with(engine: Engine, bytes: &[u8], limits: &ModelLimits) -> Result<LoadedModel, ModelError> {
    match catch_unwind(AssertUnwindSafe(|| match engine {
        Engine::Tract => load_model_unguarded(bytes, limits),
        Engine::OnnxRuntime => load_with_onnxruntime(bytes, limits),
    })) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_message(&panic);
            if is_allocation_failure(&message) {
                return Err(ModelError::OutOfMemory(message));
            }
            Err(ModelError::Rejected(format!("the runtime failed on it ({message})")))
        }
    }
}

/// The model's protobuf (an archive's external data put inline), checked
/// against `limits`; with `operators`, also that tract implements every
/// operator it uses.
fn read_checked(
    onnx: &tract_onnx::Onnx,
    bytes: &[u8],
    limits: &ModelLimits,
    operators: bool,
) -> Result<(tract_onnx::pb::ModelProto, inspect::Inspected, bool), ModelError> {
    if bytes.is_empty() {
        return Err(ModelError::NotOnnx("the file is empty".into()));
    }
    let archived = archive::is_archive(bytes);
    let proto = if archived {
        let archive = archive::read(bytes)?;
        let mut proto =
            onnx.proto_model_for_read(&mut &*archive.model).map_err(|e| ModelError::NotOnnx(short_error(&e)))?;
        archive.inline_external_data(&mut proto, limits.initializer_bytes_max)?;
        proto
    } else {
        onnx.proto_model_for_read(&mut &*bytes).map_err(|e| ModelError::NotOnnx(short_error(&e)))?
    };
    let inspected = inspect::inspect(&proto, onnx, limits, operators)?;
    Ok((proto, inspected, archived))
}

fn load_with_onnxruntime(bytes: &[u8], limits: &ModelLimits) -> Result<LoadedModel, ModelError> {
    let onnx = tract_onnx::onnx();
    let (proto, inspected, archived) = read_checked(&onnx, bytes, limits, false)?;
    // ONNX Runtime reads the model from memory: an archive's, with its
    // external data inline, is written out whole again.
    let whole = if archived { std::borrow::Cow::Owned(prost::Message::encode_to_vec(&proto)) } else { bytes.into() };
    drop(proto);
    let (model, outputs) = onnxruntime::load(&whole, &inspected.output_names, limits.rank_max)?;
    Ok(LoadedModel {
        runner: Runner::OnnxRuntime(model),
        signature: Signature { inputs: inspected.inputs, outputs },
        cost_bytes: whole.len() as u64 + 64 * 1024,
    })
}

fn load_model_unguarded(bytes: &[u8], limits: &ModelLimits) -> Result<LoadedModel, ModelError> {
    let onnx = tract_onnx::onnx();
    let (proto, inspected, _) = read_checked(&onnx, bytes, limits, true)?;
    let model = onnx.model_for_proto_model(&proto).map_err(|e| ModelError::Rejected(short_error(&e)))?;
    let model = model.into_optimized().map_err(|e| ModelError::Rejected(short_error(&e)))?;
    let mut outputs = Vec::with_capacity(model.outputs.len());
    for (index, name) in inspected.output_names.iter().enumerate() {
        let fact = model.output_fact(index).map_err(|e| ModelError::Rejected(short_error(&e)))?;
        let dtype = tensor::dtype_of(fact.datum_type).ok_or_else(|| ModelError::UnsupportedDtype {
            what: "output",
            name: name.clone(),
            elem_type: format!("{:?}", fact.datum_type),
        })?;
        if fact.shape.len() > limits.rank_max {
            return Err(ModelError::RankTooLarge {
                what: "output",
                name: name.clone(),
                rank: fact.shape.len(),
                limit: limits.rank_max,
            });
        }
        let shape = fact
            .shape
            .iter()
            .enumerate()
            .map(|(axis, dim)| match dim.to_i64() {
                Ok(size) if size >= 0 => Dim::Fixed(size as u64),
                // An expression of the inputs' symbols may grow past a name's
                // bound; it is shown, never computed with, so a short stand-in does.
                _ => match dim.to_string() {
                    text if text.len() <= TENSOR_NAME_BYTES_MAX => Dim::Symbol(text),
                    _ => Dim::Symbol(format!("{name}_dim{axis}")),
                },
            })
            .collect();
        outputs.push(TensorSpec { name: name.clone(), dtype, shape });
    }
    let plan = model.into_runnable().map_err(|e| ModelError::Rejected(short_error(&e)))?;
    Ok(LoadedModel {
        runner: Runner::Tract(plan),
        signature: Signature { inputs: inspected.inputs, outputs },
        // The optimised plan holds about one copy of the weights; the file
        // size is the best cheap estimate of that, plus the graph itself.
        cost_bytes: bytes.len() as u64 + 64 * 1024,
    })
}

impl LoadedModel {
    /// Runs the model on inputs already checked by [`Signature::check_inputs`]
    /// (in the signature's order). Returns the outputs in the signature's
    /// order, unless they hold more than `output_elements_max` elements in all.
    pub fn run(&self, inputs: Vec<Tensor>, output_elements_max: u64) -> Result<Vec<(String, Tensor)>, RunError> {
        let plan = match &self.runner {
            Runner::Tract(plan) => plan,
            Runner::OnnxRuntime(model) => {
                let names: Vec<String> = self.signature.inputs.iter().map(|spec| spec.name.clone()).collect();
                return model.run(&names, inputs, &self.signature.outputs, output_elements_max);
            }
        };
        let run = || -> Result<Vec<(String, Tensor)>, RunError> {
            let values: TVec<TValue> = inputs
                .into_iter()
                .map(|t| t.into_tract().map(TValue::from))
                .collect::<TractResult<_>>()
                .map_err(|e| RunError::Failed(short_error(&e)))?;
            let outputs = plan.run(values).map_err(|e| RunError::Failed(short_error(&e)))?;
            // Checked before the outputs are copied: an answer too large to
            // send must not be built either.
            let elements = outputs.iter().map(|value| value.len() as u64).sum::<u64>();
            if elements > output_elements_max {
                return Err(RunError::OutputTooLarge { elements, limit: output_elements_max });
            }
            self.signature
                .outputs
                .iter()
                .zip(outputs)
                .map(|(spec, value)| {
                    let tensor = Tensor::from_tract(&value).map_err(|e| RunError::Failed(short_error(&e)))?;
                    Ok((spec.name.clone(), tensor))
                })
                .collect()
        };
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic_message(&panic);
                if is_allocation_failure(&message) {
                    return Err(RunError::OutOfMemory(message));
                }
                Err(RunError::Panicked(message))
            }
        }
    }
}

/// Makes tract read now what it otherwise reads from the system the first
/// time a model runs (cache sizes under `/sys`, CPU features), by asking for
/// them and running one small model. A worker calls this before it gives up
/// file access, so that its models run tuned to this machine's caches.
pub fn probe_machine() {
    let _ = tract_linalg::cache::cache_info();
    let _ = tract_linalg::cache::last_level_cache();
    let model = synthetic::model_for_task(domain::Task::Classification, 0);
    if let Ok(loaded) = load_model(&model.bytes, &ModelLimits::TRUSTED) {
        let input = Tensor { shape: vec![1, model.width], data: TensorData::F32(vec![0.5; model.width]) };
        let _ = loaded.run(vec![input], u64::MAX);
    }
}

/// tract's errors are chains of context; the outermost few lines say what
/// went wrong without pages of graph dump.
fn short_error(error: &TractError) -> String {
    const MESSAGE_CHARS_MAX: usize = 400;
    let text = error.chain().map(|e| e.to_string()).collect::<Vec<_>>().join(": ");
    if text.chars().count() <= MESSAGE_CHARS_MAX {
        return text;
    }
    let cut: String = text.chars().take(MESSAGE_CHARS_MAX).collect();
    format!("{cut}…")
}

/// tract asserts that its own allocations succeed ("failed to allocate
/// Layout { .. }"), and a size past what the address space can hold panics
/// as a capacity overflow: both mean the model asked for more memory than it
/// may have. (Other failed allocations abort the process: see `sandbox`.)
fn is_allocation_failure(panic_message: &str) -> bool {
    panic_message.contains("failed to allocate") || panic_message.contains("capacity overflow")
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}
