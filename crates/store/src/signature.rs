//! The stored form of a version's input/output signature: a small JSON
//! document, `{"inputs": [spec], "outputs": [spec]}` with
//! spec = `{"name", "dtype", "shape": [int | "symbol"]}` (the API's form).

use domain::{Dim, TensorSpec};
use serde_json::{Value, json};

use crate::StoreError;

pub(crate) fn encode(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> String {
    json!({"inputs": inputs.iter().map(spec_json).collect::<Vec<_>>(), "outputs": outputs.iter().map(spec_json).collect::<Vec<_>>()})
        .to_string()
}

pub(crate) fn decode(text: &str) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("bad signature {text:?}"));
    let value: Value = serde_json::from_str(text).map_err(|_| corrupt())?;
    let list = |key: &str| -> Result<Vec<TensorSpec>, StoreError> {
        value[key].as_array().ok_or_else(corrupt)?.iter().map(|s| spec_from_json(s).ok_or_else(corrupt)).collect()
    };
    Ok((list("inputs")?, list("outputs")?))
}

fn spec_json(spec: &TensorSpec) -> Value {
    let shape: Vec<Value> = spec
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => json!(n),
            Dim::Symbol(s) => json!(s),
        })
        .collect();
    json!({"name": spec.name, "dtype": spec.dtype.as_str(), "shape": shape})
}

fn spec_from_json(value: &Value) -> Option<TensorSpec> {
    let shape = value["shape"]
        .as_array()?
        .iter()
        .map(|d| match d {
            Value::Number(n) => n.as_u64().map(Dim::Fixed),
            Value::String(s) => Some(Dim::Symbol(s.clone())),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(TensorSpec { name: value["name"].as_str()?.to_owned(), dtype: value["dtype"].as_str()?.parse().ok()?, shape })
}
