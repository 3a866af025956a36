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
    // Operators tract lacks (ONNX Runtime has them: a model, there).
    if crate::support::engine_under_test() == "tract" {
        let message = api.upload(path, Some(&alice), fixture("unsupported_op.onnx")).await.error(422, "invalid_model");
        assert!(message.contains("SequenceConstruct") && message.contains("ConcatFromSequence"), "{message}");
    }
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
    // (It starts as a model does: garbage would be refused from its first bytes.)
    let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..50).map(|_| Ok(vec![0x08; 10_000])).collect();
    chunks.insert(0, Ok(vec![0x08, 0x08]));
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

/// The server process's resident memory, in bytes (workers not counted).
fn server_resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next().and_then(|number| number.parse::<u64>().ok()));
    kib.unwrap_or(0) * 1024
}

/// A body of `bytes` pseudo-random bytes made as it is sent, and a count of
/// the bytes it made so far.
fn garbage_body(bytes: u64, seed: u64) -> (reqwest::Body, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::Ordering;
    let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = made.clone();
    let mut state = seed | 1;
    let pieces = futures_util::stream::iter((0..bytes.div_ceil(1 << 16)).map(move |_| {
        let piece: Vec<u8> = (0..1 << 16)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(piece)
    }));
    (reqwest::Body::wrap_stream(pieces), made)
}

/// Several uploads of hundreds of megabytes at once, valid and garbage: the
/// server streams them to disk and to the workers, its memory barely moves,
/// and the garbage is refused from its first bytes.
#[tokio::test]
async fn uploads_stream_through_the_server_and_garbage_is_refused_from_its_first_bytes() {
    const MIB: u64 = 1 << 20;
    let server = TestServer::start_with(&[("uploads_per_address_concurrent_max", "0")]);
    let api = server.api();
    // Two valid models of about 270 MB (their weights differ), and three
    // strangers' garbage of 300 MB each.
    let models: Vec<Vec<u8>> = (0..2).map(|seed| runtime::synthetic::mlp(&[64, 8192, 8192], seed).bytes).collect();
    assert!(models.iter().all(|model| model.len() as u64 > 256 * MIB));
    let mut keys = Vec::new();
    for owner in ["alice", "bob", "carol", "dave", "erin"] {
        let key = api.signup(owner).await;
        api.post("/v1/models", Some(&key), json!({"name": "m", "task": "other"})).await.ok(201);
        keys.push(key);
    }
    let idle = server_resident_bytes(server.pid());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, pid) = (stop.clone(), server.pid());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(server_resident_bytes(pid));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak
        })
    };

    let valid: Vec<_> = models
        .into_iter()
        .zip(["alice", "bob"])
        .zip(keys.clone())
        .map(|((model, owner), key)| {
            let api = api.clone();
            tokio::spawn(async move { api.upload(&format!("/v1/models/{owner}/m/versions"), Some(&key), model).await })
        })
        .collect();
    let garbage: Vec<_> = ["carol", "dave", "erin"]
        .into_iter()
        .zip(keys[2..].to_vec())
        .enumerate()
        .map(|(seed, (owner, key))| {
            let api = api.clone();
            tokio::spawn(async move {
                let (body, made) = garbage_body(300 * MIB, seed as u64 + 7);
                let started = std::time::Instant::now();
                let request = api
                    .request(reqwest::Method::POST, &format!("/v1/models/{owner}/m/versions"), Some(&key))
                    .header("content-type", "application/octet-stream")
                    .header("content-length", (300 * MIB).to_string())
                    .body(body);
                let answer = api.try_send(request).await;
                (answer, started.elapsed(), made.load(std::sync::atomic::Ordering::Relaxed))
            })
        })
        .collect();
    for task in garbage {
        let (answer, took, sent) = task.await.unwrap();
        // Refused with its reason, long before it was all sent (the client
        // may see the connection closed under it instead).
        if let Some(answer) = answer {
            let message = answer.error(422, "invalid_model");
            assert!(message.contains("not an ONNX model"), "{message}");
        }
        assert!(sent < 64 * MIB, "{} MiB of garbage went out before the refusal", sent / MIB);
        eprintln!("garbage refused after {took:?}, {} KiB sent", sent >> 10);
    }
    for task in valid {
        assert_eq!(task.await.unwrap().ok(201)["version"], 1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!("server memory: idle {} MiB, peak {} MiB", idle / MIB, peak / MIB);
    assert!(peak < idle + 256 * MIB, "the server grew from {} MiB to {} MiB", idle / MIB, peak / MIB);
    // What was uploaded runs.
    let call = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 64], "data": vec![0.5; 64]}}});
    let answer = api.post("/v1/models/alice/m/infer", Some(&keys[0]), call).await;
    assert_eq!(answer.ok(200)["outputs"]["y"]["shape"], json!([1, 8192]));
    assert_eq!(std::fs::read_dir(server.data_dir.join("blobs/tmp")).unwrap().count(), 0);
}

/// Sends `length` as a piece's Content-Length over a raw connection but
/// only `bytes`, then hangs up: a piece that breaks off on its way.
async fn piece_cut_short(url: &str, path: &str, key: &str, offset: u64, length: usize, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let address = url.trim_start_matches("http://");
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nUpload-Offset: {offset}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {length}\r\n\r\n"
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    connection.write_all(bytes).await.unwrap();
    connection.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(connection);
}

/// [`patch_piece`] once the server's task that kept a broken piece has let
/// the session go: until then a piece is refused with 409 "retry when it is
/// done", as it should be.
async fn patch_piece_when_free(
    api: &crate::support::Api,
    path: &str,
    key: &str,
    offset: u64,
    bytes: &[u8],
) -> crate::support::Answer {
    for _ in 0..50 {
        let answer = patch_piece(api, path, key, offset, bytes).await;
        let busy = answer.status == 409 && answer.body["error"]["message"].as_str().is_some_and(|m| m.contains("now"));
        if !busy {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    patch_piece(api, path, key, offset, bytes).await
}

async fn patch_piece(
    api: &crate::support::Api,
    path: &str,
    key: &str,
    offset: u64,
    bytes: &[u8],
) -> crate::support::Answer {
    let request = api
        .request(reqwest::Method::PATCH, path, Some(key))
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(bytes.to_vec());
    api.send(request).await
}

#[tokio::test]
async fn an_upload_in_pieces_resumes_where_it_broke_off_and_becomes_a_version_once_its_digest_matches() {
    let server =
        TestServer::start_with(&[("upload_sessions_per_account_max", "2"), ("upload_session_idle_ms", "1500")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.post("/v1/models", Some(&alice), json!({"name": "m", "task": "other"})).await.ok(201);
    let model = runtime::synthetic::mlp(&[4, 64, 2], 5).bytes;
    let size = model.len() as u64;
    let start = |size: u64| api.post("/v1/models/alice/m/uploads", Some(&alice), json!({"size_bytes": size}));
    let session = start(size).await.ok(201).clone();
    assert_eq!((session["offset"].as_u64(), session["size_bytes"].as_u64()), (Some(0), Some(size)));
    let path = format!("/v1/models/alice/m/uploads/{}", session["id"].as_str().unwrap());

    // A first piece; then one sent from the wrong offset is refused, naming the right one.
    assert_eq!(patch_piece(&api, &path, &alice, 0, &model[..1000]).await.ok(200)["offset"], 1000);
    let message = patch_piece(&api, &path, &alice, 500, &model[500..1500]).await.error(409, "conflict");
    assert!(message.contains("Upload-Offset 1000"), "{message}");
    // A piece that breaks off on its way: what arrived is kept.
    piece_cut_short(&server.url, &path, &alice, 1000, model.len() - 1000, &model[1000..1700]).await;
    let resumed = api.get(&path, Some(&alice)).await.ok(200)["offset"].as_u64().unwrap();
    assert_eq!(resumed, 1700, "the bytes of the broken piece are kept");
    // Nobody else sees or writes it; it cannot grow past its size.
    api.get(&path, Some(&bob)).await.error(403, "forbidden");
    let over = [model[1700..].to_vec(), vec![0; 10]].concat();
    patch_piece_when_free(&api, &path, &alice, 1700, &over).await.error(413, "payload_too_large");
    // The rest, from where it stood.
    assert_eq!(patch_piece(&api, &path, &alice, 1700, &model[1700..]).await.ok(200)["offset"], size);

    // A digest it does not have is refused, and the session goes; the
    // right one makes the version.
    let commit = format!("{path}/commit");
    let wrong = domain::Sha256::digest(b"another file").to_hex();
    let sha256 = domain::Sha256::digest(&model).to_hex();
    let session = start(size).await.ok(201).clone();
    let other = format!("/v1/models/alice/m/uploads/{}", session["id"].as_str().unwrap());
    api.post(&format!("{other}/commit"), Some(&alice), json!({"sha256": sha256})).await.error(409, "conflict");
    api.delete(&other, Some(&alice)).await;
    let message = api.post(&commit, Some(&alice), json!({"sha256": wrong})).await.error(422, "invalid_request");
    assert!(message.contains(&sha256), "{message}");
    api.get(&path, Some(&alice)).await.error(404, "not_found");
    let session = start(size).await.ok(201).clone();
    let path = format!("/v1/models/alice/m/uploads/{}", session["id"].as_str().unwrap());
    patch_piece(&api, &path, &alice, 0, &model).await.ok(200);
    let version = api.post(&format!("{path}/commit"), Some(&alice), json!({"sha256": sha256})).await;
    assert_eq!(
        (version.ok(201)["version"].as_i64(), version.body["blob_sha256"].as_str()),
        (Some(1), Some(sha256.as_str()))
    );
    let call = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
    api.post("/v1/models/alice/m/infer", Some(&alice), call).await.ok(200);

    // Garbage is refused from its first piece, and its session goes.
    let session = start(1 << 20).await.ok(201).clone();
    let path = format!("/v1/models/alice/m/uploads/{}", session["id"].as_str().unwrap());
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let message = patch_piece(&api, &path, &alice, 0, &garbage).await.error(422, "invalid_model");
    assert!(message.contains("not an ONNX model"), "{message}");
    api.get(&path, Some(&alice)).await.error(404, "not_found");

    // Open sessions are bounded per account, and go once idle.
    start(size).await.ok(201);
    let idle = start(size).await.ok(201).clone();
    start(size).await.error(429, "rate_limited");
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let path = format!("/v1/models/alice/m/uploads/{}", idle["id"].as_str().unwrap());
    api.get(&path, Some(&alice)).await.error(404, "not_found");
    start(size).await.ok(201);
    // A session larger than a file may be is refused at its start.
    start(5 << 30).await.error(413, "payload_too_large");
}
