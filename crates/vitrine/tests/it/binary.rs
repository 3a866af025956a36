//! The binary tensor body: inputs and outputs as safetensors files, read
//! and written here from the format's description alone, against a live
//! server; floats come back bit for bit, receipts name the body's digest.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{Api, TestServer, fixture};

const OCTETS: &str = "application/octet-stream";

/// (dtype, shape, little-endian bytes)
type Entry = (String, Vec<usize>, Vec<u8>);

/// A safetensors file: header length, JSON header, data. Entries are
/// written in reverse name order, so nothing may rely on the header's order.
fn safetensors(tensors: &BTreeMap<&str, Entry>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = vec![];
    for (name, (dtype, shape, bytes)) in tensors.iter().rev() {
        let begin = data.len();
        data.extend_from_slice(bytes);
        header.insert(name.to_string(), json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}));
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut body = (header.len() as u64).to_le_bytes().to_vec();
    body.extend_from_slice(&header);
    body.extend_from_slice(&data);
    body
}

/// Reads one back: its tensors and its metadata.
fn read_safetensors(body: &[u8]) -> (BTreeMap<String, Entry>, BTreeMap<String, String>) {
    let length = u64::from_le_bytes(body[..8].try_into().unwrap()) as usize;
    let header: BTreeMap<String, Value> = serde_json::from_slice(&body[8..8 + length]).unwrap();
    let data = &body[8 + length..];
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            metadata = serde_json::from_value(entry).unwrap();
            continue;
        }
        let offsets: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone()).unwrap();
        let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone()).unwrap();
        let dtype = entry["dtype"].as_str().unwrap().to_owned();
        tensors.insert(name, (dtype, shape, data[offsets[0]..offsets[1]].to_vec()));
    }
    (tensors, metadata)
}

fn f32_entry(shape: Vec<usize>, values: &[f32]) -> Entry {
    ("F32".into(), shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// A JSON tensor's data as f32 (the API writes f32 values exactly as f64).
fn json_f32s(data: &Value) -> Vec<f32> {
    data.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

async fn binary_call(api: &Api, path: &str, key: &str, body: Vec<u8>, accept: Option<&str>) -> reqwest::Response {
    let mut request = api.request(reqwest::Method::POST, path, Some(key)).header("content-type", OCTETS).body(body);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn inputs_and_outputs_travel_as_safetensors_bit_for_bit_with_their_receipt() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "pair", "two_inputs").await;
    api.patch("/v1/models/alice/pair", Some(&alice), json!({"price_per_inference": "1000"})).await.ok(200);
    api.post("/v1/admin/deposits", Some(&op), json!({"account": "bob", "amount": "100000", "reference": "d"})).await;
    let reference: Value = serde_json::from_slice(&fixture("two_inputs.expected.json")).unwrap();
    let path = "/v1/models/alice/pair/infer";

    let by_json = api.post(path, Some(&bob), json!({"inputs": reference["inputs"]})).await;
    let by_json = by_json.ok(200).clone();
    let expected = json_f32s(&by_json["outputs"]["out"]["data"]);
    let inputs: BTreeMap<&str, Entry> = ["a", "b"]
        .into_iter()
        .map(|name| (name, f32_entry(vec![2, 3], &json_f32s(&reference["inputs"][name]["data"]))))
        .collect();
    let body = safetensors(&inputs);

    // Binary in, binary out.
    let answer = binary_call(&api, path, &bob, body.clone(), Some(OCTETS)).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], OCTETS);
    let (outputs, metadata) = read_safetensors(&answer.bytes().await.unwrap());
    let (dtype, shape, bytes) = &outputs["out"];
    assert_eq!((dtype.as_str(), shape.clone()), ("F32", vec![2, 3]));
    assert_eq!(
        f32s(bytes).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        (metadata["model"].as_str(), metadata["version"].as_str(), metadata["price"].as_str()),
        ("alice/pair", "1", "1000")
    );
    let receipt: Value = serde_json::from_str(&metadata["receipt"]).unwrap();
    // The receipt's digests are of the tensors, not of the bytes they
    // travelled in: the JSON call's, and what the caller recomputes from its
    // own arrays by the documented canonical form. The receipt is the log's.
    assert_eq!(receipt["input_sha256"], by_json["receipt"]["input_sha256"]);
    assert_eq!(receipt["output_sha256"], by_json["receipt"]["output_sha256"]);
    let a = json_f32s(&reference["inputs"]["a"]["data"]);
    let b = json_f32s(&reference["inputs"]["b"]["data"]);
    assert_eq!(receipt["input_sha256"], crate::support::canonical_f32s(&[("a", &[2, 3], &a), ("b", &[2, 3], &b)]));
    let maximum = json_f32s(&by_json["outputs"]["maximum"]["data"]);
    let outputs = crate::support::canonical_f32s(&[("maximum", &[2, 3], &maximum), ("out", &[2, 3], &expected)]);
    assert_eq!(receipt["output_sha256"], outputs);
    assert_eq!(receipt["leaf_format"], 2);
    let logged = api.get(&format!("/v1/receipts/{}", receipt["log_index"]), None).await;
    assert_eq!(logged.ok(200)["leaf"], receipt["leaf"]);

    // Binary in, JSON out; JSON in, binary out: the same numbers.
    let answer = binary_call(&api, path, &bob, body.clone(), None).await;
    let json_out: Value = answer.json().await.unwrap();
    assert_eq!(json_f32s(&json_out["outputs"]["out"]["data"]), expected);
    let answer = api
        .request(reqwest::Method::POST, path, Some(&bob))
        .header("accept", "application/json;q=0.5, application/octet-stream")
        .json(&json!({"inputs": reference["inputs"]}))
        .send()
        .await
        .unwrap();
    let (outputs, _) = read_safetensors(&answer.bytes().await.unwrap());
    assert_eq!(f32s(&outputs["out"].2), expected);

    // An Idempotency-Key's retry is replayed in binary too, charged once.
    let balance = |api: Api, key: String| async move {
        api.get("/v1/account", Some(&key)).await.ok(200)["balance"].as_str().unwrap().parse::<u64>().unwrap()
    };
    let before = balance(api.clone(), bob.clone()).await;
    let mut receipts = vec![];
    for _ in 0..2 {
        let request = api
            .request(reqwest::Method::POST, path, Some(&bob))
            .header("content-type", OCTETS)
            .header("accept", OCTETS)
            .header("idempotency-key", "binary-1")
            .body(body.clone());
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let (outputs, metadata) = read_safetensors(&answer.bytes().await.unwrap());
        assert_eq!(f32s(&outputs["out"].2), expected);
        receipts.push(serde_json::from_str::<Value>(&metadata["receipt"]).unwrap());
    }
    assert_eq!(receipts[0], receipts[1]);
    assert_eq!(balance(api.clone(), bob.clone()).await, before - 1000);
    // The same key with other inputs is another request.
    let mut other = inputs.clone();
    other.insert("a", f32_entry(vec![2, 3], &[0.0; 6]));
    let request = api
        .request(reqwest::Method::POST, path, Some(&bob))
        .header("content-type", OCTETS)
        .header("idempotency-key", "binary-1")
        .body(safetensors(&other));
    let message = api.send(request).await.error(422, "invalid_request");
    assert!(message.contains("different request"), "{message}");
}

#[tokio::test]
async fn non_finite_values_and_wrong_bodies_in_binary() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    let path = "/v1/models/alice/linear/infer";

    let nan = BTreeMap::from([("x", f32_entry(vec![1, 4], &[f32::NAN, 1.0, 2.0, 3.0]))]);
    let answer = binary_call(&api, path, &alice, safetensors(&nan), Some(OCTETS)).await;
    let (outputs, metadata) = read_safetensors(&answer.bytes().await.unwrap());
    assert!(f32s(&outputs["y"].2)[0].is_nan());
    assert!(!metadata.contains_key("receipt"), "a free call has no receipt");

    let refuse = |body: Vec<u8>| {
        let api = api.clone();
        let alice = alice.clone();
        async move {
            let request =
                api.request(reqwest::Method::POST, path, Some(&alice)).header("content-type", OCTETS).body(body);
            api.send(request).await.error(422, "invalid_input")
        }
    };
    // Not safetensors at all; a length past the end; the model's wrong dtype.
    assert!(refuse(b"{\"inputs\": {}}".to_vec()).await.contains("safetensors"));
    let mut truncated = safetensors(&nan);
    truncated.pop();
    assert!(refuse(truncated).await.contains("outside the data"));
    let ints = BTreeMap::from([("x", ("I64".to_owned(), vec![1, 4], vec![0u8; 32]))]);
    assert!(refuse(safetensors(&ints)).await.contains("dtype"));
}

/// Half-precision exports (f16 on both engines, bf16 on ONNX Runtime) are
/// called in their own dtype, in JSON and in binary, and answer in it: the
/// values the reference computed, each exactly a value of the dtype.
#[tokio::test]
async fn half_precision_exports_are_called_and_answer_in_their_own_dtype() {
    let library = crate::isolation::onnxruntime_library();
    let mut engines = vec![vec![("engine", "tract")]];
    if let Some(library) = library.as_deref() {
        engines.push(vec![("engine", "onnxruntime"), ("onnxruntime_library", library)]);
    }
    for settings in engines {
        let engine = settings[0].1;
        let server = TestServer::start_with(&settings);
        let api = server.api();
        let alice = api.signup("alice").await;
        let version = api.model_with_version(&alice, "alice", "half", "half_linear").await;
        assert_eq!(
            (version["inputs"][0]["dtype"].as_str(), version["outputs"][0]["dtype"].as_str()),
            (Some("f16"), Some("f16"))
        );
        check_half(&api, &alice, "half", "half_linear", "F16", engine, |x| half::f16::from_f64(x).to_f64()).await;

        api.post("/v1/models", Some(&alice), json!({"name": "brain", "task": "other"})).await.ok(201);
        let upload = api.upload("/v1/models/alice/brain/versions", Some(&alice), fixture("bf16_linear.onnx")).await;
        if engine == "tract" {
            // tract has no bf16: the model is refused at upload, saying why.
            let message = upload.error(422, "invalid_model");
            assert!(message.contains("input 'x' is bf16") && message.contains("(tract)"), "{message}");
            continue;
        }
        assert_eq!(upload.ok(201)["inputs"][0]["dtype"], "bf16");
        check_half(&api, &alice, "brain", "bf16_linear", "BF16", engine, |x| half::bf16::from_f64(x).to_f64()).await;
    }
}

/// Calls `model` with its fixture's inputs in JSON and in binary: outputs
/// in the fixture's dtype, within one step of the dtype of the reference,
/// and the binary answer bit for bit the JSON one.
async fn check_half(
    api: &Api,
    key: &str,
    model: &str,
    fixture_name: &str,
    safetensors_dtype: &str,
    engine: &str,
    round: fn(f64) -> f64,
) {
    let reference: Value = serde_json::from_slice(&fixture(&format!("{fixture_name}.expected.json"))).unwrap();
    let path = format!("/v1/models/alice/{model}/infer");
    let what = format!("{fixture_name} on {engine}");
    let answer = api.post(&path, Some(key), json!({"inputs": reference["inputs"]})).await;
    let y = answer.ok(200)["outputs"]["y"].clone();
    let wanted = &reference["outputs"]["y"];
    assert_eq!((&y["dtype"], &y["shape"]), (&wanted["dtype"], &wanted["shape"]), "{what}");
    let values: Vec<f64> = y["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (index, (a, e)) in values.iter().zip(wanted["data"].as_array().unwrap()).enumerate() {
        let e = e.as_f64().unwrap();
        assert_eq!(round(*a), *a, "{what}[{index}]: {a} is not a value of the dtype");
        // One step of the dtype: 2^-10 (f16) or 2^-7 (bf16) of the value.
        let step = if safetensors_dtype == "F16" { 1.0 / 1024.0 } else { 1.0 / 128.0 };
        assert!((a - e).abs() <= 2.0 * step * e.abs().max(1.0), "{what}[{index}]: {a} vs reference {e}");
    }

    // The same inputs in binary (their 2-byte elements), the answer in binary.
    let x = &reference["inputs"]["x"];
    let shape: Vec<usize> = serde_json::from_value(x["shape"].clone()).unwrap();
    let bits = |v: f64| -> [u8; 2] {
        if safetensors_dtype == "F16" {
            half::f16::from_f64(v).to_le_bytes()
        } else {
            half::bf16::from_f64(v).to_le_bytes()
        }
    };
    let bytes = x["data"].as_array().unwrap().iter().flat_map(|v| bits(v.as_f64().unwrap())).collect();
    let body = safetensors(&BTreeMap::from([("x", (safetensors_dtype.to_owned(), shape, bytes))]));
    let answer = binary_call(api, &path, key, body, Some(OCTETS)).await;
    assert_eq!(answer.status(), 200, "{what}");
    let (outputs, _) = read_safetensors(&answer.bytes().await.unwrap());
    let (dtype, shape, bytes) = &outputs["y"];
    assert_eq!(
        (dtype.as_str(), serde_json::to_value(shape).unwrap()),
        (safetensors_dtype, y["shape"].clone()),
        "{what}"
    );
    let from_json: Vec<u8> = values.iter().flat_map(|&v| bits(v)).collect();
    assert_eq!(bytes, &from_json, "{what}: the binary answer is the JSON one");
}
