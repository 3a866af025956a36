//! The parsers of what strangers send, callable on their own: the fuzz
//! targets (`fuzz/`) drive them with arbitrary bytes.

use std::collections::BTreeMap;

use runtime::{Tensor, TensorData};

use crate::error::ApiError;

/// An inference request's JSON body, read as the inference route reads it:
/// its shape, then each tensor's data as its declared dtype.
pub fn infer_json(body: &[u8]) -> Result<BTreeMap<String, Tensor>, ApiError> {
    let request: crate::wire::InferRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let tensors = request.inputs.into_iter().map(|(name, tensor)| tensor.into_tensor(&name).map(|t| (name, t)));
    Ok(tensors.collect::<Result<_, _>>()?)
}

/// The binary tensor body, read as the inference route reads it.
pub fn tensor_body(body: &[u8]) -> Result<BTreeMap<String, Tensor>, ApiError> {
    crate::tensor_body::decode(body)
}

/// Writes a binary tensor body as an answer would, without metadata.
pub fn write_tensor_body<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a TensorData)>) -> Vec<u8> {
    crate::tensor_body::encode(tensors, &BTreeMap::new())
}

/// A log tile's path (after `/v1/log/tile/`), read as the tile route reads it.
pub fn tile_path(path: &str) -> Option<crate::routes::tiles::Tile> {
    crate::routes::tiles::Tile::parse(path)
}
