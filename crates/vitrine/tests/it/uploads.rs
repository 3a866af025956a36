use serde_json::json;

use crate::support::{TestServer, fixture};

#[tokio::test]
async fn uploads_record_versions_signatures_and_content_addressed_blobs() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let first = api.model_with_version(&alice, "alice", "linear", "linear").await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["size_bytes"], fixture("linear.onnx").len());
    assert_eq!(first["inputs"], json!([{"name": "x", "dtype": "f32", "shape": ["N", 4]}]));
    assert_eq!(first["outputs"], json!([{"name": "y", "dtype": "f32", "shape": ["N", 1]}]));
    let sha = first["blob_sha256"].as_str().unwrap();
    assert_eq!(sha, domain::Sha256::digest(&fixture("linear.onnx")).to_hex());

    // The same file again: a new version, the same single blob.
    let second = api.upload("/v1/models/alice/linear/versions", Some(&alice), fixture("linear.onnx")).await;
    assert_eq!((second.ok(201)["version"].as_i64(), second.body["blob_sha256"].as_str()), (Some(2), Some(sha)));
    // And under another model.
    api.model_with_version(&alice, "alice", "linear-copy", "linear").await;
    assert_eq!(server.blob_files(), 1);

    let third = api.upload("/v1/models/alice/linear/versions", Some(&alice), fixture("mlp.onnx")).await;
    assert_eq!(third.ok(201)["version"], 3);
    let versions = api.get("/v1/models/alice/linear/versions", None).await;
    let numbers: Vec<i64> =
        versions.ok(200)["items"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(api.get("/v1/models/alice/linear", None).await.ok(200)["latest_version"], 3);
    assert_eq!(server.blob_files(), 2);

    let download = api.send(api.request(reqwest::Method::GET, &format!("/v1/blobs/{sha}"), None)).await;
    assert_eq!(download.status, 200);
    let bytes = reqwest::get(format!("{}/v1/blobs/{sha}", server.url)).await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), fixture("linear.onnx").as_slice());
    api.get(&format!("/v1/blobs/{}", "0".repeat(64)), None).await.error(404, "not_found");
    api.get("/v1/blobs/not-a-digest", None).await.error(404, "not_found");
}

#[tokio::test]
async fn every_kind_of_bad_upload_is_refused_with_a_clear_error() {
    let server = TestServer::start_with(&[("upload_bytes_max", "4096"), ("model_nodes_max", "4")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.post("/v1/models", Some(&alice), json!({"name": "m", "task": "other"})).await.ok(201);
    let path = "/v1/models/alice/m/versions";

    let message = api.upload(path, Some(&alice), vec![]).await.error(422, "invalid_model");
    assert!(message.contains("empty"), "{message}");
    api.upload(path, Some(&alice), b"this is not an ONNX model at all".to_vec()).await.error(422, "invalid_model");
    let mlp = fixture("mlp.onnx");
    api.upload(path, Some(&alice), mlp[..mlp.len() / 2].to_vec()).await.error(422, "invalid_model");
    let message = api.upload(path, Some(&alice), vec![0x08; 5000]).await.error(413, "payload_too_large");
    assert!(message.contains("upload_bytes_max"), "{message}");
    let message = api.upload(path, Some(&alice), fixture("external_data.onnx")).await.error(422, "invalid_model");
    assert!(message.contains("external data"), "{message}");
    let message = api.upload(path, Some(&alice), fixture("unsupported_op.onnx")).await.error(422, "invalid_model");
    assert!(message.contains("SequenceConstruct") && message.contains("ConcatFromSequence"), "{message}");
    let message = api.upload(path, Some(&alice), fixture("conv.onnx")).await.error(422, "invalid_model");
    assert!(message.contains("model_nodes_max"), "{message}");

    let wrong_type = api
        .request(reqwest::Method::POST, path, Some(&alice))
        .header("content-type", "application/json")
        .body(fixture("linear.onnx"));
    api.send(wrong_type).await.error(400, "invalid_request");
    api.upload(path, Some(&bob), fixture("linear.onnx")).await.error(403, "forbidden");
    api.upload(path, None, fixture("linear.onnx")).await.error(401, "unauthorized");
    api.upload("/v1/models/alice/none/versions", Some(&alice), fixture("linear.onnx")).await.error(404, "not_found");

    // Nothing refused was kept, and the model still takes a good upload.
    assert_eq!(server.blob_files(), 0);
    assert_eq!(std::fs::read_dir(server.data_dir.join("blobs/tmp")).unwrap().count(), 0);
    assert_eq!(api.upload(path, Some(&alice), fixture("linear.onnx")).await.ok(201)["version"], 1);
}

#[tokio::test]
async fn a_streamed_upload_past_the_limit_is_cut_off() {
    let server = TestServer::start_with(&[("upload_bytes_max", "100000")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.post("/v1/models", Some(&alice), json!({"name": "m", "task": "other"})).await.ok(201);
    // No Content-Length: the limit must hold while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..50).map(|_| Ok(vec![0u8; 10_000])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let request = api
        .request(reqwest::Method::POST, "/v1/models/alice/m/versions", Some(&alice))
        .header("content-type", "application/octet-stream")
        .body(body);
    // The server answers 413 as soon as the limit is passed and stops
    // reading; the client may see that answer, or, still writing, a broken
    // pipe. Either way nothing is kept and the server goes on serving.
    match request.send().await {
        Ok(response) => {
            assert_eq!(response.status(), 413);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "payload_too_large");
        }
        Err(error) => assert!(error.is_request(), "{error:?}"),
    }
    assert_eq!(std::fs::read_dir(server.data_dir.join("blobs/tmp")).unwrap().count(), 0);
    assert_eq!(server.blob_files(), 0);
    // A fresh client: the cut-off connection is not reused.
    server.api().upload("/v1/models/alice/m/versions", Some(&alice), fixture("linear.onnx")).await.ok(201);
}

/// Real models by default: a model of about 68 MB (a sentence-embedding
/// model's size) loads with the default limits, and a model whose weights
/// are external data files is pushed as a folder, packed by the CLI.
#[tokio::test]
async fn real_sized_models_and_folders_with_external_data_load_by_default() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let big = runtime::synthetic::mlp(&[64, 4096, 4096], 3).bytes;
    assert!(big.len() > 64 << 20, "{} bytes", big.len());
    api.post("/v1/models", Some(&alice), json!({"name": "big", "task": "other"})).await.ok(201);
    let version = api.upload("/v1/models/alice/big/versions", Some(&alice), big).await;
    assert!(version.ok(201)["size_bytes"].as_u64().unwrap() > 64 << 20);
    let call = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 64], "data": vec![0.5; 64]}}});
    let answer = api.post("/v1/models/alice/big/infer", Some(&alice), call).await;
    assert_eq!(answer.ok(200)["outputs"]["y"]["shape"], json!([1, 4096]));

    // The same small model twice: one file, and a folder with external data.
    let single = runtime::synthetic::mlp(&[4, 32, 2], 8).bytes;
    let (onnx, data) = runtime::synthetic::with_external_data(&single, "weights/all.bin");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    std::fs::create_dir_all(folder.join("weights")).unwrap();
    std::fs::write(folder.join("model.onnx"), &onnx).unwrap();
    std::fs::write(folder.join("weights/all.bin"), &data).unwrap();
    let lone = dir.path().join("lone.onnx");
    std::fs::write(&lone, &onnx).unwrap();
    let config = dir.path().join("client.toml");
    let run = |args: &[&str]| crate::cli::vitrine(&server, &config, args);
    let key = crate::cli::success(&run(&["signup", "bob"]));
    assert!(key.contains("api key"));
    crate::cli::success(&run(&["model", "create", "split", "--task", "other"]));
    // The .onnx file alone is refused, saying how to push it.
    let alone = run(&["model", "push", "bob/split", lone.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&alone.stderr).contains("tar archive"), "{alone:?}");
    let pushed = crate::cli::success(&run(&["model", "push", "bob/split", folder.to_str().unwrap()]));
    assert!(pushed.contains("version 1"), "{pushed}");
    crate::cli::success(&run(&["model", "create", "whole", "--task", "other"]));
    let whole = dir.path().join("whole.onnx");
    std::fs::write(&whole, &single).unwrap();
    crate::cli::success(&run(&["model", "push", "bob/whole", whole.to_str().unwrap()]));
    let input = r#"x={"dtype":"f32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}"#;
    let outputs = |model: &str| {
        let answer: serde_json::Value =
            serde_json::from_str(&crate::cli::success(&run(&["--json", "infer", model, "-i", input]))).unwrap();
        answer["outputs"].clone()
    };
    assert_eq!(outputs("bob/split"), outputs("bob/whole"));
}
