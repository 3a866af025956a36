//! The messages between the server and a worker, and their binary encoding.
//!
//! A frame is a little-endian `u64` length, then that many bytes of one
//! message. A message starts with its tag byte; its fields follow in the
//! order written below, each in the encoding of its type:
//!
//! | type | bytes |
//! |---|---|
//! | `u8`, `u64` | little-endian |
//! | bytes | `u64` length, then the bytes |
//! | text | as bytes, UTF-8 |
//! | digest | 32 bytes |
//! | list of T | `u64` count, then each T |
//! | option of T | `0`, or `1` then T |
//! | dtype | `u8`: its index in `domain::Dtype::ALL` (f32 = 0 … bool = 10, f16 = 11, bf16 = 12) |
//! | tensor spec | name (text), dtype, rank (`u64`), per dimension `0` + size (`u64`) or `1` + symbol (text) |
//! | tensor | name (text), dtype, rank (`u64`), each dimension (`u64`), data (bytes: the elements row-major, little-endian; bool as one byte 0 or 1) |
//!
//! A model's bytes, where a request carries them, come last in it: the
//! server writes them straight from the model's file ([`load_head`],
//! [`run_head`]: the message up to them), never holding a model whole, and
//! the worker takes them out of the frame it read without a copy.
//!
//! Tensors cross as raw little-endian bytes, never as JSON. Frames from a
//! worker are untrusted (it runs a stranger's model): the reader bounds
//! their size and every count inside them before allocating.

use std::io::{self, Read, Write};

use domain::{Dim, Dtype, Sha256, TensorSpec};
use runtime::{Tensor, dtype_width};

/// The server's first frame to a new worker: its bounds. The worker applies
/// them to itself before it reads anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub memory_bytes_max: u64,
    pub cache_bytes_max: u64,
    pub nodes_max: u64,
    pub initializer_bytes_max: u64,
    pub output_elements_max: u64,
    /// The bounds on a model's signature (`runtime::ModelLimits`).
    pub inputs_max: u64,
    pub outputs_max: u64,
    pub rank_max: u64,
    /// The ONNX Runtime library the worker loads and runs models with,
    /// before it confines itself; empty: tract.
    pub onnxruntime_library: String,
}

/// What the server asks of a worker after [`Hello`].
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Validate a model and keep it loaded (an upload).
    Load { digest: Sha256, model: Vec<u8> },
    /// Run a model; `model` carries its bytes when the server believes the
    /// worker does not hold it loaded. `start_by` is the moment past which
    /// the caller no longer waits ([`monotonic_ns`]; 0: none): a worker that
    /// reaches the request later (it may wait in the pipe behind another)
    /// answers [`Response::Expired`] without running it.
    Run { digest: Sha256, inputs: Vec<Tensor>, start_by: u64, model: Option<Vec<u8>> },
}

/// A worker's answer to [`Hello`] or to one [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The bounds are in force; the worker serves requests now.
    Ready,
    /// It could not confine itself; it exits after saying so.
    ConfinementFailed {
        message: String,
    },
    Loaded {
        signature: runtime::Signature,
        cpu_us: u64,
        evicted: Vec<Sha256>,
    },
    /// The model is not one the runtime will serve.
    Refused {
        out_of_memory: bool,
        message: String,
    },
    Ran {
        outputs: Vec<(String, Tensor)>,
        cpu_us: u64,
        evicted: Vec<Sha256>,
    },
    RunFailed {
        failure: RunFailureKind,
        message: String,
        cpu_us: u64,
    },
    /// `Run` without the model's bytes, for a model this worker does not hold.
    NeedModel,
    /// `Run` reached after its `start_by`: not run.
    Expired,
}

/// Why a run that the worker survived failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFailureKind {
    /// tract refused these inputs, or failed on them.
    Failed = 0,
    OutOfMemory = 1,
    OutputTooLarge = 2,
    /// The stored model no longer loads (limits lowered since its upload).
    ModelNoLongerLoads = 3,
}

/// Tags of the messages, one byte each.
mod tag {
    pub const HELLO: u8 = 0x01;
    pub const LOAD: u8 = 0x02;
    pub const RUN: u8 = 0x03;
    pub const READY: u8 = 0x81;
    pub const CONFINEMENT_FAILED: u8 = 0x82;
    pub const LOADED: u8 = 0x83;
    pub const REFUSED: u8 = 0x84;
    pub const RAN: u8 = 0x85;
    pub const RUN_FAILED: u8 = 0x86;
    pub const NEED_MODEL: u8 = 0x87;
    pub const EXPIRED: u8 = 0x88;
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for the server and its
/// workers, for [`Request::Run`]'s `start_by`.
pub fn monotonic_ns() -> u64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (time.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(time.tv_nsec as u64)
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, message: &[u8]) -> io::Result<()> {
    out.write_all(&(message.len() as u64).to_le_bytes())?;
    out.write_all(message)?;
    out.flush()
}

/// Reads one frame's length and checks it against `bytes_max`. `Ok(None)`
/// at a clean end of the stream.
pub fn read_frame(input: &mut impl Read, bytes_max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 8];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = frame_length(length, bytes_max)?;
    let mut message = vec![0u8; length];
    input.read_exact(&mut message)?;
    Ok(Some(message))
}

/// A frame's length prefix, refused above `bytes_max`.
pub fn frame_length(prefix: [u8; 8], bytes_max: u64) -> io::Result<usize> {
    let length = u64::from_le_bytes(prefix);
    if length > bytes_max {
        return Err(invalid(format!("a frame of {length} bytes, above the bound of {bytes_max}")));
    }
    usize::try_from(length).map_err(|_| invalid("a frame larger than this machine's address space"))
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Encoder(vec![tag::HELLO]);
        for value in [
            self.memory_bytes_max,
            self.cache_bytes_max,
            self.nodes_max,
            self.initializer_bytes_max,
            self.output_elements_max,
            self.inputs_max,
            self.outputs_max,
            self.rank_max,
        ] {
            out.u64(value);
        }
        out.text(&self.onnxruntime_library);
        out.0
    }

    pub fn decode(bytes: &[u8]) -> io::Result<Hello> {
        let mut input = Decoder::new(bytes);
        input.expect_tag(tag::HELLO)?;
        let hello = Hello {
            memory_bytes_max: input.u64()?,
            cache_bytes_max: input.u64()?,
            nodes_max: input.u64()?,
            initializer_bytes_max: input.u64()?,
            output_elements_max: input.u64()?,
            inputs_max: input.u64()?,
            outputs_max: input.u64()?,
            rank_max: input.u64()?,
            onnxruntime_library: input.text()?,
        };
        input.end()?;
        Ok(hello)
    }
}

/// A `Load` request up to its model's bytes, which are `model_bytes` long
/// and follow it on the wire.
pub fn load_head(digest: &Sha256, model_bytes: u64) -> Vec<u8> {
    let mut out = Encoder(vec![tag::LOAD]);
    out.digest(digest);
    out.u64(model_bytes);
    out.0
}

/// A `Run` request up to its model's bytes (`model_bytes` long, following
/// it on the wire), or whole when it carries no model.
pub fn run_head(digest: &Sha256, inputs: &[Tensor], start_by: u64, model_bytes: Option<u64>) -> Vec<u8> {
    let mut out = Encoder(vec![tag::RUN]);
    out.digest(digest);
    out.u64(inputs.len() as u64);
    for input in inputs {
        out.tensor("", input);
    }
    out.u64(start_by);
    match model_bytes {
        Some(length) => {
            out.u8(1);
            out.u64(length);
        }
        None => out.u8(0),
    }
    out.0
}

impl Request {
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let (mut out, model) = match self {
            Request::Load { digest, model } => (load_head(digest, model.len() as u64), Some(model)),
            Request::Run { digest, inputs, start_by, model } => {
                (run_head(digest, inputs, *start_by, model.as_ref().map(|m| m.len() as u64)), model.as_ref())
            }
        };
        out.extend_from_slice(model.map_or(&[][..], |m| m.as_slice()));
        out
    }

    /// Decodes a request's frame; a model's bytes, the frame's end, are
    /// moved to its front and kept (no second copy of the model).
    pub fn decode(mut frame: Vec<u8>) -> io::Result<Request> {
        let (request, model_at) = {
            let mut input = Decoder::new(&frame);
            let (request, has_model) = match input.u8()? {
                tag::LOAD => (Request::Load { digest: input.digest()?, model: Vec::new() }, true),
                tag::RUN => {
                    let digest = input.digest()?;
                    let count = input.count(MIN_TENSOR_BYTES)?;
                    let inputs = (0..count).map(|_| input.tensor().map(|(_, t)| t)).collect::<io::Result<_>>()?;
                    let start_by = input.u64()?;
                    let has_model = match input.u8()? {
                        0 => false,
                        1 => true,
                        other => return Err(invalid(format!("option tag {other}"))),
                    };
                    (Request::Run { digest, inputs, start_by, model: None }, has_model)
                }
                other => return Err(invalid(format!("unknown request tag {other:#x}"))),
            };
            if has_model && input.length()? != input.rest.len() {
                return Err(invalid("a model's length that is not the rest of its request"));
            }
            if !has_model {
                input.end()?;
            }
            (request, has_model.then(|| frame.len() - input.rest.len()))
        };
        let Some(at) = model_at else { return Ok(request) };
        frame.drain(..at);
        Ok(match request {
            Request::Load { digest, .. } => Request::Load { digest, model: frame },
            Request::Run { digest, inputs, start_by, .. } => {
                Request::Run { digest, inputs, start_by, model: Some(frame) }
            }
        })
    }
}

impl Response {
    /// The message's name, for logs (never its contents: they can be large).
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Ready => "Ready",
            Response::ConfinementFailed { .. } => "ConfinementFailed",
            Response::Loaded { .. } => "Loaded",
            Response::Refused { .. } => "Refused",
            Response::Ran { .. } => "Ran",
            Response::RunFailed { .. } => "RunFailed",
            Response::NeedModel => "NeedModel",
            Response::Expired => "Expired",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Encoder(Vec::new());
        match self {
            Response::Ready => out.u8(tag::READY),
            Response::ConfinementFailed { message } => {
                out.u8(tag::CONFINEMENT_FAILED);
                out.text(message);
            }
            Response::Loaded { signature, cpu_us, evicted } => {
                out.u8(tag::LOADED);
                for specs in [&signature.inputs, &signature.outputs] {
                    out.u64(specs.len() as u64);
                    for spec in specs {
                        out.spec(spec);
                    }
                }
                out.u64(*cpu_us);
                out.digests(evicted);
            }
            Response::Refused { out_of_memory, message } => {
                out.u8(tag::REFUSED);
                out.u8(u8::from(*out_of_memory));
                out.text(message);
            }
            Response::Ran { outputs, cpu_us, evicted } => {
                out.u8(tag::RAN);
                out.u64(outputs.len() as u64);
                for (name, tensor) in outputs {
                    out.tensor(name, tensor);
                }
                out.u64(*cpu_us);
                out.digests(evicted);
            }
            Response::RunFailed { failure, message, cpu_us } => {
                out.u8(tag::RUN_FAILED);
                out.u8(*failure as u8);
                out.text(message);
                out.u64(*cpu_us);
            }
            Response::NeedModel => out.u8(tag::NEED_MODEL),
            Response::Expired => out.u8(tag::EXPIRED),
        }
        out.0
    }

    pub fn decode(bytes: &[u8]) -> io::Result<Response> {
        let mut input = Decoder::new(bytes);
        let response = match input.u8()? {
            tag::READY => Response::Ready,
            tag::CONFINEMENT_FAILED => Response::ConfinementFailed { message: input.text()? },
            tag::LOADED => {
                let mut specs = || -> io::Result<Vec<TensorSpec>> {
                    let count = input.count(MIN_SPEC_BYTES)?;
                    (0..count).map(|_| input.spec()).collect()
                };
                let signature = runtime::Signature { inputs: specs()?, outputs: specs()? };
                Response::Loaded { signature, cpu_us: input.u64()?, evicted: input.digests()? }
            }
            tag::REFUSED => Response::Refused { out_of_memory: input.u8()? != 0, message: input.text()? },
            tag::RAN => {
                let count = input.count(MIN_TENSOR_BYTES)?;
                let outputs = (0..count).map(|_| input.tensor()).collect::<io::Result<_>>()?;
                Response::Ran { outputs, cpu_us: input.u64()?, evicted: input.digests()? }
            }
            tag::RUN_FAILED => {
                let failure = match input.u8()? {
                    0 => RunFailureKind::Failed,
                    1 => RunFailureKind::OutOfMemory,
                    2 => RunFailureKind::OutputTooLarge,
                    3 => RunFailureKind::ModelNoLongerLoads,
                    other => return Err(invalid(format!("unknown run failure {other}"))),
                };
                Response::RunFailed { failure, message: input.text()?, cpu_us: input.u64()? }
            }
            tag::NEED_MODEL => Response::NeedModel,
            tag::EXPIRED => Response::Expired,
            other => return Err(invalid(format!("unknown response tag {other:#x}"))),
        };
        input.end()?;
        Ok(response)
    }
}

/// The fewest bytes a tensor or a spec takes, so that a count read from an
/// untrusted frame can be checked against the bytes left before anything is
/// allocated for it.
const MIN_TENSOR_BYTES: usize = 8 + 1 + 8 + 8;
const MIN_SPEC_BYTES: usize = 8 + 1 + 8;

struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn text(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    fn digest(&mut self, digest: &Sha256) {
        self.0.extend_from_slice(digest.as_bytes());
    }

    fn digests(&mut self, digests: &[Sha256]) {
        self.u64(digests.len() as u64);
        for digest in digests {
            self.digest(digest);
        }
    }

    fn dtype(&mut self, dtype: Dtype) {
        let index = Dtype::ALL.iter().position(|d| *d == dtype).expect("every dtype is in Dtype::ALL");
        self.u8(index as u8);
    }

    fn spec(&mut self, spec: &TensorSpec) {
        self.text(&spec.name);
        self.dtype(spec.dtype);
        self.u64(spec.shape.len() as u64);
        for dim in &spec.shape {
            match dim {
                Dim::Fixed(size) => {
                    self.u8(0);
                    self.u64(*size);
                }
                Dim::Symbol(symbol) => {
                    self.u8(1);
                    self.text(symbol);
                }
            }
        }
    }

    fn tensor(&mut self, name: &str, tensor: &Tensor) {
        self.text(name);
        self.dtype(tensor.dtype());
        self.u64(tensor.shape.len() as u64);
        for &size in &tensor.shape {
            self.u64(size as u64);
        }
        self.u64((tensor.len() * dtype_width(tensor.dtype())) as u64);
        tensor.write_le(&mut self.0);
    }
}

struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { rest: bytes }
    }

    fn take(&mut self, count: usize) -> io::Result<&'a [u8]> {
        if count > self.rest.len() {
            return Err(invalid("a message ends early"));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn end(&self) -> io::Result<()> {
        if self.rest.is_empty() { Ok(()) } else { Err(invalid("a message has bytes past its end")) }
    }

    fn expect_tag(&mut self, expected: u8) -> io::Result<()> {
        let found = self.u8()?;
        if found != expected {
            return Err(invalid(format!("tag {found:#x} where {expected:#x} belongs")));
        }
        Ok(())
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn length(&mut self) -> io::Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| invalid("a length past the address space"))
    }

    /// A count of items each at least `item_bytes_min` long, checked against
    /// the bytes left.
    fn count(&mut self, item_bytes_min: usize) -> io::Result<usize> {
        let count = self.length()?;
        if count.saturating_mul(item_bytes_min) > self.rest.len() {
            return Err(invalid(format!("a count of {count} items in {} bytes", self.rest.len())));
        }
        Ok(count)
    }

    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let length = self.length()?;
        self.take(length)
    }

    fn text(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| invalid("text that is not UTF-8"))
    }

    fn digest(&mut self) -> io::Result<Sha256> {
        Ok(Sha256::from_bytes(self.take(32)?.try_into().expect("32 bytes")))
    }

    fn digests(&mut self) -> io::Result<Vec<Sha256>> {
        let count = self.count(32)?;
        (0..count).map(|_| self.digest()).collect()
    }

    fn dtype(&mut self) -> io::Result<Dtype> {
        let index = self.u8()?;
        Dtype::ALL.get(index as usize).copied().ok_or_else(|| invalid(format!("unknown dtype {index}")))
    }

    fn spec(&mut self) -> io::Result<TensorSpec> {
        let name = self.text()?;
        let dtype = self.dtype()?;
        let rank = self.count(9)?;
        let shape = (0..rank)
            .map(|_| match self.u8()? {
                0 => Ok(Dim::Fixed(self.u64()?)),
                1 => Ok(Dim::Symbol(self.text()?)),
                other => Err(invalid(format!("unknown dimension tag {other}"))),
            })
            .collect::<io::Result<_>>()?;
        Ok(TensorSpec { name, dtype, shape })
    }

    fn tensor(&mut self) -> io::Result<(String, Tensor)> {
        let name = self.text()?;
        let dtype = self.dtype()?;
        let rank = self.count(8)?;
        let shape = (0..rank).map(|_| self.length()).collect::<io::Result<Vec<usize>>>()?;
        let data = self.bytes()?;
        let tensor = Tensor::from_le(dtype, shape, data).map_err(|e| invalid(format!("tensor '{name}': {e}")))?;
        Ok((name, tensor))
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use runtime::TensorData;

    use super::*;

    fn every_dtype() -> Vec<Tensor> {
        vec![
            Tensor { shape: vec![2, 2], data: TensorData::F32(vec![1.5, f32::NAN, f32::INFINITY, -0.0]) },
            Tensor { shape: vec![1], data: TensorData::F64(vec![f64::MIN_POSITIVE]) },
            Tensor { shape: vec![2], data: TensorData::I8(vec![-128, 127]) },
            Tensor { shape: vec![1], data: TensorData::I16(vec![-300]) },
            Tensor { shape: vec![1], data: TensorData::I32(vec![i32::MIN]) },
            Tensor { shape: vec![], data: TensorData::I64(vec![i64::MAX]) },
            Tensor { shape: vec![3], data: TensorData::U8(vec![0, 1, 255]) },
            Tensor { shape: vec![1], data: TensorData::U16(vec![65535]) },
            Tensor { shape: vec![1], data: TensorData::U32(vec![u32::MAX]) },
            Tensor { shape: vec![1], data: TensorData::U64(vec![u64::MAX]) },
            Tensor { shape: vec![2, 0], data: TensorData::Bool(vec![]) },
            Tensor { shape: vec![2], data: TensorData::Bool(vec![true, false]) },
            Tensor { shape: vec![2], data: TensorData::F16(vec![half::f16::MAX, half::f16::NEG_INFINITY]) },
            Tensor { shape: vec![1], data: TensorData::Bf16(vec![half::bf16::MIN_POSITIVE_SUBNORMAL]) },
        ]
    }

    #[test]
    fn every_message_decodes_to_itself() {
        let digest = Sha256::digest(b"model");
        let hello = Hello {
            memory_bytes_max: 1 << 31,
            cache_bytes_max: 7,
            nodes_max: 10,
            initializer_bytes_max: 11,
            output_elements_max: 12,
            inputs_max: 13,
            outputs_max: 14,
            rank_max: 15,
            onnxruntime_library: "/opt/lib/libonnxruntime.so".into(),
        };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        for request in [
            Request::Load { digest, model: vec![1, 2, 3] },
            Request::Run { digest, inputs: every_dtype(), start_by: 0, model: None },
            Request::Run { digest, inputs: vec![], start_by: monotonic_ns(), model: Some(vec![]) },
            Request::Run { digest, inputs: every_dtype(), start_by: 7, model: Some(vec![9; 100]) },
        ] {
            // NaN is not equal to itself: compare the encodings.
            assert_eq!(Request::decode(request.encode()).unwrap().encode(), request.encode());
        }
        let spec = |name: &str, shape| TensorSpec { name: name.into(), dtype: Dtype::I64, shape };
        let signature = runtime::Signature {
            inputs: vec![spec("x", vec![Dim::Symbol("N".into()), Dim::Fixed(4)])],
            outputs: vec![spec("y", vec![]), spec("z", vec![Dim::Fixed(0)])],
        };
        let outputs = every_dtype().into_iter().enumerate().map(|(i, t)| (format!("out{i}"), t)).collect();
        for response in [
            Response::Ready,
            Response::ConfinementFailed { message: "no seccomp".into() },
            Response::Loaded { signature, cpu_us: 5, evicted: vec![digest, digest] },
            Response::Refused { out_of_memory: true, message: "big".into() },
            Response::Ran { outputs, cpu_us: 9, evicted: vec![] },
            Response::RunFailed { failure: RunFailureKind::OutputTooLarge, message: "m".into(), cpu_us: 1 },
            Response::NeedModel,
            Response::Expired,
        ] {
            assert_eq!(Response::decode(&response.encode()).unwrap().encode(), response.encode());
        }
    }

    #[test]
    fn a_models_bytes_end_its_request_and_are_kept_as_they_came() {
        let digest = Sha256::digest(b"m");
        let model: Vec<u8> = (0..=255).collect();
        let head = run_head(&digest, &every_dtype(), 3, Some(model.len() as u64));
        let frame = [head.as_slice(), &model].concat();
        let Request::Run { model: Some(decoded), start_by: 3, .. } = Request::decode(frame.clone()).unwrap() else {
            panic!("not a run with its model")
        };
        assert_eq!(decoded, model);
        let load = [load_head(&digest, 256).as_slice(), &model].concat();
        assert!(matches!(Request::decode(load).unwrap(), Request::Load { model: m, .. } if m == model));
        // A model shorter or longer than its length says is refused.
        assert!(Request::decode(frame[..frame.len() - 1].to_vec()).is_err());
        assert!(Request::decode([frame.as_slice(), &[0]].concat()).is_err());
        // A run without a model has nothing after its end.
        let bare = run_head(&digest, &[], 0, None);
        assert!(Request::decode([bare.as_slice(), &[0]].concat()).is_err());
    }

    #[test]
    fn damaged_messages_are_refused_not_trusted() {
        let response = Response::Ran {
            outputs: vec![("y".into(), Tensor { shape: vec![2], data: TensorData::F32(vec![1.0, 2.0]) })],
            cpu_us: 1,
            evicted: vec![],
        }
        .encode();
        // Every truncation fails cleanly.
        for cut in 0..response.len() {
            assert!(Response::decode(&response[..cut]).is_err(), "cut at {cut}");
        }
        // A count of outputs far past the bytes there is refused before any allocation.
        let mut huge_count = response.clone();
        huge_count[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Response::decode(&huge_count).is_err());
        // A shape that disagrees with the data's length is refused.
        let mut wrong_shape = response.clone();
        let shape_at = 1 + 8 + 8 + 1 + 1 + 8;
        wrong_shape[shape_at..shape_at + 8].copy_from_slice(&3u64.to_le_bytes());
        assert!(Response::decode(&wrong_shape).is_err());
        // A frame above its bound is refused from its length alone.
        let mut framed = Vec::new();
        write_frame(&mut framed, &response).unwrap();
        assert!(read_frame(&mut &framed[..], response.len() as u64 - 1).is_err());
        assert_eq!(read_frame(&mut &framed[..], response.len() as u64).unwrap(), Some(response));
        assert_eq!(read_frame(&mut &[][..], 10).unwrap(), None);
    }
}
