use std::fmt;
use std::str::FromStr;

/// Element types a caller can send and receive. Strings and other ONNX types
/// are not offered. `F16` and `Bf16` are the half-precision floats of
/// half-precision exports (IEEE binary16 and bfloat16); tract runs no `Bf16`.
/// New dtypes go at the end of [`Dtype::ALL`]: the worker protocol sends a
/// dtype as its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    F16,
    Bf16,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown dtype '{0}'; the dtypes are: {list}", list = Dtype::ALL.map(Dtype::as_str).join(", "))]
pub struct DtypeError(pub String);

impl Dtype {
    pub const ALL: [Dtype; 13] = [
        Dtype::F32,
        Dtype::F64,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::Bool,
        Dtype::F16,
        Dtype::Bf16,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::I8 => "i8",
            Dtype::I16 => "i16",
            Dtype::I32 => "i32",
            Dtype::I64 => "i64",
            Dtype::U8 => "u8",
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
            Dtype::U64 => "u64",
            Dtype::Bool => "bool",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    /// numpy's name of the dtype (`float32`), for hints to Python callers.
    pub fn numpy_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::Bool => "bool",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
        }
    }
}

impl FromStr for Dtype {
    type Err = DtypeError;

    fn from_str(text: &str) -> Result<Dtype, DtypeError> {
        Dtype::ALL.into_iter().find(|d| d.as_str() == text).ok_or_else(|| DtypeError(text.to_owned()))
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dimension of a declared shape: a fixed size, or a symbol (such as the
/// batch size `N`) that each call chooses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(u64),
    Symbol(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(size) => write!(f, "{size}"),
            Dim::Symbol(symbol) => f.write_str(symbol),
        }
    }
}

/// A model input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<Dim>,
}

impl fmt::Display for TensorSpec {
    /// `x: f32[N, 4]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        write!(f, "{}: {}[{}]", self.name, self.dtype, dims.join(", "))
    }
}
