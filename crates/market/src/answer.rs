//! A call's answer as the API gives it: its outputs in JSON (non-finite
//! floats as strings), what it cost, and its receipt.

use std::collections::BTreeMap;

use runtime::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::error::CallError;
use crate::receipt::Receipt;

/// The answer of a call. Its outputs are kept as their JSON text, written
/// once: a call's answer and its replays (an Idempotency-Key's) carry the
/// same bytes, and an answer read back for a replay is not parsed again
/// but for its other fields.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InferResponse {
    /// `owner/name`.
    pub model: String,
    /// Keyed by output name.
    #[schema(value_type = BTreeMap<String, TensorOut<'static>>)]
    pub outputs: Box<RawValue>,
    pub version: i64,
    /// Minor units charged to the caller ("0" for free models; a creator
    /// calling their own model pays only the node and treasury shares).
    pub price: String,
    /// Whole microseconds ([`latency_ms`]), so that it reads back exactly.
    pub latency_ms: f64,
    /// The signed receipt of a paid call; `null` for free models.
    pub receipt: Option<Receipt>,
}

/// What [`crate::Market::call`] gives: the answer; for a call that ran
/// here and now, its outputs as tensors too (a replay's are read back from
/// their JSON); where its leaf is in the log (free calls have no receipt to
/// say it).
#[derive(Debug)]
pub struct Answer {
    pub response: InferResponse,
    pub tensors: Option<Vec<(String, Tensor)>>,
    pub log_index: Option<u64>,
    /// A call paid on the chain: its settlement (`PAYMENT-RESPONSE`).
    pub settlement: Option<chain::x402::SettlementResponse>,
}

/// A call's latency in milliseconds, to the microsecond: a number of at
/// most 16 digits divided by 1,000, which JSON writes and reads back as the
/// same `f64` (a kept answer's replay is the first answer byte for byte).
pub fn latency_ms(elapsed: std::time::Duration) -> f64 {
    elapsed.as_micros().min(1 << 53) as f64 / 1e3
}

impl InferResponse {
    /// The JSON of outputs a model gave.
    pub fn outputs_json(outputs: &[(String, Tensor)]) -> Result<Box<RawValue>, CallError> {
        let by_name: BTreeMap<&str, TensorOut<'_>> =
            outputs.iter().map(|(name, tensor)| (name.as_str(), TensorOut::from(tensor))).collect();
        serde_json::value::to_raw_value(&by_name).map_err(CallError::internal)
    }
}

/// A tensor in a response. Non-finite floats have no JSON number form and
/// are written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TensorOut<'a> {
    pub dtype: &'static str,
    pub shape: &'a [usize],
    #[serde(serialize_with = "serialize_data")]
    #[schema(value_type = Vec<serde_json::Value>)]
    pub data: &'a TensorData,
}

impl<'a> From<&'a Tensor> for TensorOut<'a> {
    fn from(tensor: &'a Tensor) -> TensorOut<'a> {
        TensorOut { dtype: tensor.dtype().as_str(), shape: &tensor.shape, data: &tensor.data }
    }
}

fn serialize_data<S: serde::Serializer>(data: &TensorData, serializer: S) -> Result<S::Ok, S::Error> {
    match data {
        TensorData::F32(v) => serializer.collect_seq(v.iter().map(|&x| JsonFloat(f64::from(x)))),
        TensorData::F64(v) => serializer.collect_seq(v.iter().map(|&x| JsonFloat(x))),
        TensorData::I8(v) => v.serialize(serializer),
        TensorData::I16(v) => v.serialize(serializer),
        TensorData::I32(v) => v.serialize(serializer),
        TensorData::I64(v) => v.serialize(serializer),
        TensorData::U8(v) => v.serialize(serializer),
        TensorData::U16(v) => v.serialize(serializer),
        TensorData::U32(v) => v.serialize(serializer),
        TensorData::U64(v) => v.serialize(serializer),
        TensorData::Bool(v) => v.serialize(serializer),
        TensorData::F16(v) => serializer.collect_seq(v.iter().map(|&x| JsonFloat(x.to_f64()))),
        TensorData::Bf16(v) => serializer.collect_seq(v.iter().map(|&x| JsonFloat(x.to_f64()))),
    }
}

/// A float as the API writes it: a JSON number, or for the values JSON has
/// no number for, the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JsonFloat(pub f64);

impl Serialize for JsonFloat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            x if x.is_finite() => serializer.serialize_f64(x),
            x if x.is_nan() => serializer.serialize_str("NaN"),
            x if x > 0.0 => serializer.serialize_str("Infinity"),
            _ => serializer.serialize_str("-Infinity"),
        }
    }
}

impl<'de> Deserialize<'de> for JsonFloat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<JsonFloat, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = JsonFloat;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or \"NaN\", \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E>(self, x: f64) -> Result<JsonFloat, E> {
                Ok(JsonFloat(x))
            }
            fn visit_i64<E>(self, x: i64) -> Result<JsonFloat, E> {
                Ok(JsonFloat(x as f64))
            }
            fn visit_u64<E>(self, x: u64) -> Result<JsonFloat, E> {
                Ok(JsonFloat(x as f64))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<JsonFloat, E> {
                match text {
                    "NaN" => Ok(JsonFloat(f64::NAN)),
                    "Infinity" => Ok(JsonFloat(f64::INFINITY)),
                    "-Infinity" => Ok(JsonFloat(f64::NEG_INFINITY)),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// An answer kept for replays and read back is written again byte
        /// for byte as it was first (its receipt aside): a replay is the
        /// first answer, whatever its floats.
        #[test]
        fn a_kept_answer_is_written_again_byte_for_byte(
            values in proptest::collection::vec(any::<f32>(), 0..20),
            wide in proptest::collection::vec(any::<f64>(), 0..5),
            micros in prop_oneof![0u64..1_000_000_000, 0u64..(1 << 53)],
            name in "[a-z/\"\\\\ é]{0,12}",
        ) {
            let outputs = vec![
                ("y".to_owned(), Tensor { shape: vec![values.len()], data: TensorData::F32(values) }),
                (name.clone(), Tensor { shape: vec![wide.len()], data: TensorData::F64(wide) }),
            ];
            let first = InferResponse {
                model: format!("{name}/m"),
                outputs: InferResponse::outputs_json(&outputs).unwrap(),
                version: 3,
                price: "1500".into(),
                latency_ms: latency_ms(std::time::Duration::from_micros(micros)),
                receipt: None,
            };
            let kept = serde_json::to_string(&first).unwrap();
            let read: InferResponse = serde_json::from_str(&kept).unwrap();
            prop_assert_eq!(serde_json::to_string(&read).unwrap(), kept);
        }
    }
}
