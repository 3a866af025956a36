use serde_json::json;

use crate::support::{TestServer, fixture};

#[tokio::test]
async fn a_restart_keeps_accounts_models_versions_and_blobs() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let version = api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.post("/v1/models", Some(&alice), json!({"name": "hidden", "task": "other", "visibility": "private"}))
        .await
        .ok(201);
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
    let before = api.post("/v1/models/alice/linear/infer", Some(&alice), body.clone()).await.ok(200).clone();

    let server = server.restart();
    let api = server.api();
    assert_eq!(api.get("/v1/account", Some(&alice)).await.ok(200)["name"], "alice");
    let versions = api.get("/v1/models/alice/linear/versions", None).await.ok(200).clone();
    assert_eq!(versions["items"][0]["blob_sha256"], version["blob_sha256"]);
    assert_eq!(versions["items"][0]["inputs"], version["inputs"]);
    api.get("/v1/models/alice/hidden", None).await.error(404, "not_found");
    api.get("/v1/models/alice/hidden", Some(&alice)).await.ok(200);
    // The model cache starts cold: the model is loaded again from its blob.
    let after = api.post("/v1/models/alice/linear/infer", Some(&alice), body).await.ok(200).clone();
    assert_eq!(after["outputs"], before["outputs"]);
    let blob =
        reqwest::get(format!("{}/v1/blobs/{}", server.url, version["blob_sha256"].as_str().unwrap())).await.unwrap();
    assert_eq!(blob.bytes().await.unwrap().as_ref(), fixture("linear.onnx").as_slice());
    // Names stay taken.
    api.post("/v1/accounts", None, json!({"name": "alice"})).await.error(409, "conflict");
    api.post("/v1/models", Some(&alice), json!({"name": "linear", "task": "other"})).await.error(409, "conflict");
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let server = TestServer::start_with(&[
        ("inference_threads", "1"),
        ("inference_timeout_ms", "120000"),
        ("hold_expiry_ms", "180000"),
    ]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "slow", "slow").await;
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.5]}}});
    let in_flight = tokio::spawn({
        let api = api.clone();
        let alice = alice.clone();
        async move { api.post("/v1/models/alice/slow/infer", Some(&alice), body).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    crate::support::signal(server.pid(), "TERM");
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.ok(200)["outputs"]["y"]["shape"], json!([]));
    // Once it has drained, the server exits cleanly.
    let mut server = server;
    assert!(server.terminate_wait().success());
}
