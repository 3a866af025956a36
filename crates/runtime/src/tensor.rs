use std::collections::{BTreeMap, HashMap};

use domain::{Dim, Dtype, TensorSpec};
use half::{bf16, f16};
use tract_onnx::prelude::{DatumType, TractResult, tract_ndarray};

use crate::Signature;

/// A dense tensor: a shape and its elements, flat and row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// The elements of a [`Tensor`], one vector per element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

/// Why a call's inputs do not fit the model. Messages name the input and say
/// what was expected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("missing input '{name}' (the model's inputs are: {expected})")]
    Missing { name: String, expected: String },
    #[error("unknown input '{name}' (the model's inputs are: {expected})")]
    Unknown { name: String, expected: String },
    #[error(
        "input '{name}' has dtype {given}, the model expects {expected}: convert it first (numpy: \
         {name}.astype(\"{numpy}\"))",
        numpy = expected.numpy_name()
    )]
    Dtype { name: String, given: Dtype, expected: Dtype },
    #[error("input '{name}' has {given} dimensions, the model expects {expected} ({spec})")]
    Rank { name: String, given: usize, expected: usize, spec: String },
    #[error("input '{name}' has size {given} in dimension {axis}, the model expects {expected} ({spec})")]
    Dimension { name: String, axis: usize, given: usize, expected: String, spec: String },
    #[error("input '{name}' has shape {shape:?}, whose product is not the {given} elements given")]
    ElementCount { name: String, shape: Vec<usize>, given: usize },
    #[error("the inputs have {given} elements, more than the limit tensor_elements_max = {limit}")]
    TooManyElements { given: u64, limit: u64 },
    /// A zero in a shape makes a tensor empty whatever its other sizes, but
    /// a model may still compute with those sizes (a ConstantOfShape of the
    /// input's shape): so each size counts, as if the zeros were ones.
    #[error(
        "input '{name}' has shape {shape:?}: its sizes multiply to more than the limit tensor_elements_max = {limit} \
         (sizes beside a zero count too)"
    )]
    ShapeTooLarge { name: String, shape: Vec<usize>, limit: u64 },
}

impl TensorData {
    /// Appends the elements as little-endian bytes (a bool is one byte, 0 or 1).
    pub fn write_le(&self, out: &mut Vec<u8>) {
        out.reserve(self.len() * dtype_width(self.dtype()));
        match self {
            Self::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::I8(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::I16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::U8(v) => out.extend_from_slice(v),
            Self::U16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::U32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::U64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Bool(v) => v.iter().for_each(|&x| out.push(u8::from(x))),
            Self::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::Bf16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::F64(_) => Dtype::F64,
            Self::I8(_) => Dtype::I8,
            Self::I16(_) => Dtype::I16,
            Self::I32(_) => Dtype::I32,
            Self::I64(_) => Dtype::I64,
            Self::U8(_) => Dtype::U8,
            Self::U16(_) => Dtype::U16,
            Self::U32(_) => Dtype::U32,
            Self::U64(_) => Dtype::U64,
            Self::Bool(_) => Dtype::Bool,
            Self::F16(_) => Dtype::F16,
            Self::Bf16(_) => Dtype::Bf16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies `$body` to the vector of whichever dtype `$data` holds, and
/// wraps the result in the same variant.
macro_rules! map_elements {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::I16($v) => TensorData::I16($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::U16($v) => TensorData::U16($body),
            TensorData::U32($v) => TensorData::U32($body),
            TensorData::U64($v) => TensorData::U64($body),
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::Bf16($v) => TensorData::Bf16($body),
        }
    };
}

impl TensorData {
    /// The elements from `at` on, which leave `self`.
    fn split_off(&mut self, at: usize) -> TensorData {
        map_elements!(self, v => v.split_off(at))
    }

    /// `other`'s elements after these; `None` (and `self` unchanged) if
    /// their dtypes differ.
    fn extend_from(&mut self, other: &TensorData) -> Option<()> {
        match (self, other) {
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
            (TensorData::I16(a), TensorData::I16(b)) => a.extend_from_slice(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
            (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::U16(a), TensorData::U16(b)) => a.extend_from_slice(b),
            (TensorData::U32(a), TensorData::U32(b)) => a.extend_from_slice(b),
            (TensorData::U64(a), TensorData::U64(b)) => a.extend_from_slice(b),
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
            (TensorData::F16(a), TensorData::F16(b)) => a.extend_from_slice(b),
            (TensorData::Bf16(a), TensorData::Bf16(b)) => a.extend_from_slice(b),
            _ => return None,
        }
        Some(())
    }
}

/// Tensors of one dtype whose shapes differ in their first dimension only,
/// one after the other along it (a copy); `None` if they do not fit so.
pub fn stack_rows<'a>(parts: impl IntoIterator<Item = &'a Tensor>) -> Option<Tensor> {
    let mut parts = parts.into_iter();
    let mut whole = parts.next()?.clone();
    if whole.shape.is_empty() {
        return None;
    }
    for part in parts {
        if part.shape.len() != whole.shape.len() || part.shape[1..] != whole.shape[1..] {
            return None;
        }
        whole.data.extend_from(&part.data)?;
        whole.shape[0] += part.shape[0];
    }
    Some(whole)
}

impl Tensor {
    /// [`stack_rows`] undone: the first `rows[0]` rows, then the next
    /// `rows[1]`, …; `None` unless the first dimension is their sum.
    pub fn split_rows(self, rows: &[usize]) -> Option<Vec<Tensor>> {
        let total = rows.iter().try_fold(0usize, |sum, &r| sum.checked_add(r))?;
        if self.shape.first() != Some(&total) {
            return None;
        }
        let per_row: usize = self.shape[1..].iter().product();
        let mut data = self.data;
        let mut parts = Vec::with_capacity(rows.len());
        for &count in rows.iter().rev() {
            let tail = data.split_off(data.len() - count * per_row);
            let mut shape = self.shape.clone();
            shape[0] = count;
            parts.push(Tensor { shape, data: tail });
        }
        parts.reverse();
        Some(parts)
    }
}

/// Bytes per element in [`Tensor::write_le`]'s form.
pub fn dtype_width(dtype: Dtype) -> usize {
    match dtype {
        Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::Bf16 => 2,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
    }
}

/// Bytes that are not a tensor ([`Tensor::from_le`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorBytesError {
    #[error("shape {shape:?} of {dtype} does not fit {bytes} bytes")]
    Size { shape: Vec<usize>, dtype: Dtype, bytes: usize },
    #[error("a bool is the byte 0 or 1, not {0}")]
    Bool(u8),
}

impl Tensor {
    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the elements as little-endian bytes (a bool is one byte, 0 or 1).
    pub fn write_le(&self, out: &mut Vec<u8>) {
        self.data.write_le(out);
    }

    /// Reads [`Tensor::write_le`]'s bytes back: exactly the shape's elements
    /// of `dtype`, bools 0 or 1. The error says what did not fit.
    pub fn from_le(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Result<Tensor, TensorBytesError> {
        let width = dtype_width(dtype);
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if elements.and_then(|n| n.checked_mul(width)) != Some(data.len()) {
            return Err(TensorBytesError::Size { shape, dtype, bytes: data.len() });
        }
        fn le<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
            data.chunks_exact(N).map(|chunk| from(chunk.try_into().expect("chunks of N"))).collect()
        }
        let data = match dtype {
            Dtype::F32 => TensorData::F32(le(data, f32::from_le_bytes)),
            Dtype::F64 => TensorData::F64(le(data, f64::from_le_bytes)),
            Dtype::I8 => TensorData::I8(le(data, i8::from_le_bytes)),
            Dtype::I16 => TensorData::I16(le(data, i16::from_le_bytes)),
            Dtype::I32 => TensorData::I32(le(data, i32::from_le_bytes)),
            Dtype::I64 => TensorData::I64(le(data, i64::from_le_bytes)),
            Dtype::U8 => TensorData::U8(data.to_vec()),
            Dtype::U16 => TensorData::U16(le(data, u16::from_le_bytes)),
            Dtype::U32 => TensorData::U32(le(data, u32::from_le_bytes)),
            Dtype::U64 => TensorData::U64(le(data, u64::from_le_bytes)),
            Dtype::F16 => TensorData::F16(le(data, f16::from_le_bytes)),
            Dtype::Bf16 => TensorData::Bf16(le(data, bf16::from_le_bytes)),
            Dtype::Bool => TensorData::Bool(
                data.iter()
                    .map(|&b| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        other => Err(TensorBytesError::Bool(other)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Tensor { shape, data })
    }

    pub(crate) fn into_tract(self) -> TractResult<tract_onnx::prelude::Tensor> {
        fn array<T: tract_onnx::prelude::Datum>(
            shape: &[usize],
            v: Vec<T>,
        ) -> TractResult<tract_onnx::prelude::Tensor> {
            Ok(tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into())
        }
        let shape = &self.shape;
        match self.data {
            TensorData::F32(v) => array(shape, v),
            TensorData::F64(v) => array(shape, v),
            TensorData::I8(v) => array(shape, v),
            TensorData::I16(v) => array(shape, v),
            TensorData::I32(v) => array(shape, v),
            TensorData::I64(v) => array(shape, v),
            TensorData::U8(v) => array(shape, v),
            TensorData::U16(v) => array(shape, v),
            TensorData::U32(v) => array(shape, v),
            TensorData::U64(v) => array(shape, v),
            TensorData::Bool(v) => array(shape, v),
            TensorData::F16(v) => array(shape, v),
            TensorData::Bf16(_) => Err(tract_onnx::tract_hir::internal::format_err!("tract runs no bf16 tensors")),
        }
    }

    pub(crate) fn from_tract(value: &tract_onnx::prelude::Tensor) -> TractResult<Tensor> {
        fn elements<T: tract_onnx::prelude::Datum>(value: &tract_onnx::prelude::Tensor) -> TractResult<Vec<T>> {
            // Iterating the view is row-major whatever the tensor's strides.
            Ok(value.to_plain_array_view::<T>()?.iter().cloned().collect())
        }
        let data = match value.datum_type() {
            DatumType::F32 => TensorData::F32(elements(value)?),
            DatumType::F64 => TensorData::F64(elements(value)?),
            DatumType::I8 => TensorData::I8(elements(value)?),
            DatumType::I16 => TensorData::I16(elements(value)?),
            DatumType::I32 => TensorData::I32(elements(value)?),
            DatumType::I64 => TensorData::I64(elements(value)?),
            DatumType::U8 => TensorData::U8(elements(value)?),
            DatumType::U16 => TensorData::U16(elements(value)?),
            DatumType::U32 => TensorData::U32(elements(value)?),
            DatumType::U64 => TensorData::U64(elements(value)?),
            DatumType::Bool => TensorData::Bool(elements(value)?),
            // Shapes computed inside the graph surface as symbolic dims.
            DatumType::TDim => TensorData::I64(elements(&*value.cast_to::<i64>()?)?),
            DatumType::F16 => TensorData::F16(elements(value)?),
            other => {
                return Err(tract_onnx::tract_hir::internal::format_err!(
                    "output of type {other:?} cannot be returned"
                ));
            }
        };
        Ok(Tensor { shape: value.shape().to_vec(), data })
    }
}

pub(crate) fn dtype_of(datum: DatumType) -> Option<Dtype> {
    Some(match datum {
        DatumType::F32 => Dtype::F32,
        DatumType::F16 => Dtype::F16,
        DatumType::F64 => Dtype::F64,
        DatumType::I8 => Dtype::I8,
        DatumType::I16 => Dtype::I16,
        DatumType::I32 => Dtype::I32,
        DatumType::I64 | DatumType::TDim => Dtype::I64,
        DatumType::U8 => Dtype::U8,
        DatumType::U16 => Dtype::U16,
        DatumType::U32 => Dtype::U32,
        DatumType::U64 => Dtype::U64,
        DatumType::Bool => Dtype::Bool,
        _ => return None,
    })
}

impl Signature {
    /// Checks a call's inputs against the declared ones: names (none missing,
    /// none extra), dtypes, ranks, fixed dimensions, one size per symbol across
    /// all inputs, element count = product of the shape, and the total number
    /// of elements against `tensor_elements_max`, as well as each tensor's
    /// sizes with its zeros counted as ones (an empty tensor of shape
    /// `[0, 2^62]` would otherwise hand the model a size of 2^62). Returns the tensors in the
    /// model's input order.
    pub fn check_inputs(
        &self,
        mut given: BTreeMap<String, Tensor>,
        tensor_elements_max: u64,
    ) -> Result<Vec<Tensor>, InputError> {
        let expected_names = || self.inputs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
        if let Some(name) = given.keys().find(|name| !self.inputs.iter().any(|s| &s.name == *name)) {
            return Err(InputError::Unknown { name: name.clone(), expected: expected_names() });
        }
        let total: u64 = given.values().map(|t| t.len() as u64).sum();
        if total > tensor_elements_max {
            return Err(InputError::TooManyElements { given: total, limit: tensor_elements_max });
        }
        for (name, tensor) in &given {
            let extent = tensor.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul((d as u64).max(1)));
            if extent.is_none_or(|extent| extent > tensor_elements_max) {
                return Err(InputError::ShapeTooLarge {
                    name: name.clone(),
                    shape: tensor.shape.clone(),
                    limit: tensor_elements_max,
                });
            }
        }
        let mut symbols: HashMap<&str, (usize, &str)> = HashMap::new();
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for spec in &self.inputs {
            let tensor = given
                .remove(&spec.name)
                .ok_or_else(|| InputError::Missing { name: spec.name.clone(), expected: expected_names() })?;
            check_one(spec, &tensor, &mut symbols)?;
            ordered.push(tensor);
        }
        Ok(ordered)
    }
}

fn check_one<'a>(
    spec: &'a TensorSpec,
    tensor: &Tensor,
    symbols: &mut HashMap<&'a str, (usize, &'a str)>,
) -> Result<(), InputError> {
    let name = || spec.name.clone();
    if tensor.dtype() != spec.dtype {
        return Err(InputError::Dtype { name: name(), given: tensor.dtype(), expected: spec.dtype });
    }
    let product = tensor.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if product != Some(tensor.len()) {
        return Err(InputError::ElementCount { name: name(), shape: tensor.shape.clone(), given: tensor.len() });
    }
    if tensor.shape.len() != spec.shape.len() {
        return Err(InputError::Rank {
            name: name(),
            given: tensor.shape.len(),
            expected: spec.shape.len(),
            spec: spec.to_string(),
        });
    }
    for (axis, (dim, &size)) in spec.shape.iter().zip(&tensor.shape).enumerate() {
        let mismatch = |expected: String| InputError::Dimension {
            name: name(),
            axis,
            given: size,
            expected,
            spec: spec.to_string(),
        };
        match dim {
            Dim::Fixed(fixed) if *fixed as usize != size => return Err(mismatch(fixed.to_string())),
            Dim::Fixed(_) => {}
            // "?" is how some exporters (paddle2onnx) write an unknown
            // size: it names nothing, so binds nothing.
            Dim::Symbol(symbol) if !symbol.chars().any(char::is_alphanumeric) => {}
            Dim::Symbol(symbol) => match symbols.get(symbol.as_str()) {
                Some(&(bound, bound_by)) if bound != size => {
                    return Err(mismatch(format!("{bound} ({symbol} = {bound} from input '{bound_by}')")));
                }
                Some(_) => {}
                None => {
                    symbols.insert(symbol, (size, &spec.name));
                }
            },
        }
    }
    Ok(())
}
