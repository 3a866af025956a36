//! The binary tensor body: inputs and outputs as a safetensors file
//! (<https://github.com/huggingface/safetensors>), so large arrays travel as
//! their little-endian bytes instead of JSON numbers, and every float comes
//! back bit for bit.
//!
//! The format: an unsigned 64-bit little-endian length N, then N bytes of a
//! JSON header `{"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets":
//! [begin, end]}, …, "__metadata__": {"<key>": "<string>", …}}`, then the
//! data, each tensor's bytes row-major at its offsets (relative to the end
//! of the header). A request's tensors must cover the data exactly, without
//! overlap or gap. An answer's `__metadata__` carries what the JSON answer
//! has beside its outputs: `model`, `version`, `price`, `latency_ms` and
//! `receipt` (the receipt's JSON; absent for free calls).

use std::collections::BTreeMap;

use domain::Dtype;
use runtime::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The media type of a binary tensor body, in `Content-Type` and `Accept`.
pub const MEDIA_TYPE: &str = "application/octet-stream";
/// The largest header a request may have: names and shapes, not data.
const HEADER_BYTES_MAX: u64 = 1 << 20;
const METADATA_KEY: &str = "__metadata__";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn safetensors_dtype(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::I8 => "I8",
        Dtype::I16 => "I16",
        Dtype::I32 => "I32",
        Dtype::I64 => "I64",
        Dtype::U8 => "U8",
        Dtype::U16 => "U16",
        Dtype::U32 => "U32",
        Dtype::U64 => "U64",
        Dtype::Bool => "BOOL",
        Dtype::F16 => "F16",
        Dtype::Bf16 => "BF16",
    }
}

fn parse_dtype(text: &str) -> Option<Dtype> {
    Dtype::ALL.into_iter().find(|&dtype| safetensors_dtype(dtype) == text)
}

fn invalid(message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_input(format!("the binary tensor body (safetensors): {message}"))
}

/// Reads a request's inputs. Every refusal is 422 `invalid_input` naming
/// what is wrong; nothing here trusts a length or offset it has not checked.
pub fn decode(body: &[u8]) -> Result<BTreeMap<String, Tensor>, ApiError> {
    let Some((length, rest)) = body.split_first_chunk::<8>() else {
        return Err(invalid("it is shorter than its 8-byte header length"));
    };
    let length = u64::from_le_bytes(*length);
    if length > HEADER_BYTES_MAX || length > rest.len() as u64 {
        return Err(invalid(format!("its header length {length} is past the body's end or {HEADER_BYTES_MAX} bytes")));
    }
    let (header, data) = rest.split_at(length as usize);
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| invalid(format!("its header is not a JSON object ({e})")))?;
    header.remove(METADATA_KEY);
    let mut spans = Vec::with_capacity(header.len());
    let mut tensors = BTreeMap::new();
    for (name, entry) in header {
        let entry: Entry = serde_json::from_value(entry).map_err(|e| invalid(format!("tensor '{name}': {e}")))?;
        let dtype = parse_dtype(&entry.dtype).ok_or_else(|| {
            let known: Vec<&str> = Dtype::ALL.into_iter().map(safetensors_dtype).collect();
            invalid(format!("tensor '{name}' has dtype {}; the dtypes are {}", entry.dtype, known.join(", ")))
        })?;
        let [begin, end] = entry.data_offsets;
        if begin > end || end > data.len() as u64 {
            return Err(invalid(format!("tensor '{name}' has offsets [{begin}, {end}] outside the data")));
        }
        let bytes = &data[begin as usize..end as usize];
        let tensor =
            Tensor::from_le(dtype, entry.shape, bytes).map_err(|e| invalid(format!("tensor '{name}': {e}")))?;
        spans.push((begin, end, name.clone()));
        tensors.insert(name, tensor);
    }
    // The tensors tile the data: no byte read twice, none left over.
    spans.sort();
    let mut covered = 0;
    for (begin, end, name) in &spans {
        if *begin != covered {
            return Err(invalid(format!(
                "tensor '{name}' starts at {begin}, not where the one before ends ({covered})"
            )));
        }
        covered = *end;
    }
    if covered != data.len() as u64 {
        return Err(invalid(format!("{} bytes of data follow the last tensor", data.len() as u64 - covered)));
    }
    Ok(tensors)
}

/// Writes an answer: the outputs (name, shape, elements), then `metadata`.
pub fn encode<'a>(
    outputs: impl IntoIterator<Item = (&'a str, &'a [usize], &'a TensorData)>,
    metadata: &BTreeMap<&str, String>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = vec![];
    for (name, shape, elements) in outputs {
        let begin = data.len() as u64;
        elements.write_le(&mut data);
        let entry = Entry {
            dtype: safetensors_dtype(elements.dtype()).to_owned(),
            shape: shape.to_vec(),
            data_offsets: [begin, data.len() as u64],
        };
        header.insert(name.to_owned(), serde_json::to_value(entry).expect("an entry is JSON"));
    }
    header.insert(METADATA_KEY.to_owned(), serde_json::to_value(metadata).expect("strings are JSON"));
    let mut header = serde_json::to_vec(&header).expect("a map of JSON values is JSON");
    // Padded with spaces so the data starts 8-byte aligned, as safetensors
    // writers do (readers may then view it in place).
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut body = Vec::with_capacity(8 + header.len() + data.len());
    body.extend_from_slice(&(header.len() as u64).to_le_bytes());
    body.extend_from_slice(&header);
    body.extend_from_slice(&data);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            ("a".into(), Tensor { shape: vec![2, 2], data: TensorData::F32(vec![1.5, f32::NAN, -0.0, f32::INFINITY]) }),
            ("b".into(), Tensor { shape: vec![3], data: TensorData::Bool(vec![true, false, true]) }),
            ("c".into(), Tensor { shape: vec![], data: TensorData::I64(vec![i64::MIN]) }),
            ("d".into(), Tensor { shape: vec![0, 4], data: TensorData::U16(vec![]) }),
            ("e".into(), Tensor { shape: vec![2], data: TensorData::F16(vec![half::f16::NAN, half::f16::MIN]) }),
            ("f".into(), Tensor { shape: vec![1], data: TensorData::Bf16(vec![half::bf16::from_f32(-3.5)]) }),
        ]
    }

    #[test]
    fn what_is_written_reads_back_bit_for_bit() {
        let tensors = sample();
        let metadata = BTreeMap::from([("version", "3".to_owned())]);
        let body = encode(tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), &t.data)), &metadata);
        let header_length = u64::from_le_bytes(body[..8].try_into().unwrap());
        assert_eq!(header_length % 8, 0);
        let read = decode(&body).unwrap();
        assert_eq!(read.len(), tensors.len());
        for (name, tensor) in &tensors {
            let (mut expected, mut got) = (vec![], vec![]);
            tensor.write_le(&mut expected);
            read[name].write_le(&mut got);
            assert_eq!((&read[name].shape, read[name].dtype(), got), (&tensor.shape, tensor.dtype(), expected));
        }
    }

    #[test]
    fn every_malformed_body_is_refused_with_a_reason() {
        let tensors = sample();
        let good = encode(tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), &t.data)), &BTreeMap::new());
        let header = |json: &str, data: &[u8]| {
            let mut body = (json.len() as u64).to_le_bytes().to_vec();
            body.extend_from_slice(json.as_bytes());
            body.extend_from_slice(data);
            body
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 2, 3], "shorter"),
            (u64::MAX.to_le_bytes().to_vec(), "header length"),
            (good[..good.len() - 1].to_vec(), "outside the data"),
            (header("[]", &[]), "JSON object"),
            (header(r#"{"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}"#, &[0]), "dtype F8_E4M3"),
            (header(r#"{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, &[0; 4]), "does not fit"),
            (header(r#"{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 9]}}"#, &[0]), "outside"),
            (header(r#"{"x": {"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}}"#, &[0]), "outside"),
            (header(r#"{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}"#, &[0, 0]), "follow"),
            (
                header(
                    r#"{"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}, "y": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}"#,
                    &[0, 0],
                ),
                "starts at",
            ),
            (header(r#"{"x": {"dtype": "BOOL", "shape": [1], "data_offsets": [0, 1]}}"#, &[7]), "bool"),
            (header(r#"{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "extra": 1}}"#, &[0]), "extra"),
            (
                header(
                    r#"{"x": {"dtype": "U8", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 1]}}"#,
                    &[0],
                ),
                "does not fit",
            ),
        ];
        for (body, expected) in cases {
            let error = decode(&body).expect_err(expected);
            assert_eq!(error.code, "invalid_input");
            assert!(error.message.contains(expected), "{expected}: {}", error.message);
        }
    }
}
