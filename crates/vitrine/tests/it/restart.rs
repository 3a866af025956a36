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
    // The slow model runs for over a second; signal while it is running.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    crate::support::signal(server.pid(), "TERM");
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.ok(200)["outputs"]["y"]["shape"], json!([]));
    // Once it has drained, the server exits cleanly.
    let mut server = server;
    assert!(server.terminate_wait().success());
}

/// Paid calls under load, the server killed with SIGKILL mid-run, restarted:
/// the ledger balances, no hold survives, and every call is charged exactly
/// once, whether or not its answer reached the client (each call carries an
/// Idempotency-Key, and each is retried after the restart).
#[tokio::test]
async fn sigkill_mid_load_loses_no_charge_and_repeats_none() {
    const PRICE: i128 = 10;
    const DEPOSIT: i128 = 1_000_000;
    let server = TestServer::start_with(&[("inference_threads", "2")]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": PRICE.to_string()})).await.ok(200);
    let body = json!({"account": "bob", "amount": DEPOSIT.to_string(), "reference": "bank-1"});
    api.post("/v1/admin/deposits", Some(&op), body).await.ok(201);

    let call_body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
    let call = move |api: &crate::support::Api, key: String| {
        let request = api
            .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob))
            .header("Idempotency-Key", key)
            .json(&call_body);
        async move { request.send().await }
    };
    // Eight clients call in a loop until the server dies under them.
    let mut clients = vec![];
    for client in 0..8 {
        let api = api.clone();
        let call = call.clone();
        clients.push(tokio::spawn(async move {
            let mut answered = vec![];
            let mut unanswered = vec![];
            for n in 0.. {
                let key = format!("k-{client}-{n}");
                match call(&api, key.clone()).await {
                    Ok(response) if response.status() == 200 => match response.text().await {
                        Ok(body) => answered.push((key, body)),
                        Err(_) => {
                            unanswered.push(key);
                            break;
                        }
                    },
                    Ok(response) => panic!("{key}: HTTP {}", response.status()),
                    Err(_) => {
                        unanswered.push(key);
                        break;
                    }
                }
            }
            (answered, unanswered)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let server = server.kill_and_restart();
    let api = server.api();
    let mut answered = vec![];
    let mut unanswered = vec![];
    for client in clients {
        let (a, u) = client.await.unwrap();
        answered.extend(a);
        unanswered.extend(u);
    }
    assert!(answered.len() >= 8, "the load ran before the kill: {} answered", answered.len());

    let balance = |api: crate::support::Api| {
        let op = op.clone();
        async move {
            let view = api.get("/v1/admin/accounts/bob", Some(&op)).await;
            let number = |f: &str| view.body[f].as_str().unwrap().parse::<i128>().unwrap();
            (number("balance"), number("held"))
        }
    };
    let ledger = api.get("/v1/admin/ledger", Some(&op)).await.ok(200).clone();
    assert_eq!(ledger["debits_total"], ledger["credits_total"]);
    assert_eq!(ledger["held_total"], "0", "every hold of a killed call is released at start");
    assert_eq!(ledger["circulating"], DEPOSIT.to_string());
    let (after_kill, held) = balance(api.clone()).await;
    assert_eq!(held, 0);
    let charged = (DEPOSIT - after_kill) / PRICE;
    assert!(
        answered.len() as i128 <= charged && charged <= (answered.len() + unanswered.len()) as i128,
        "{} answered, {} unanswered, {charged} charged",
        answered.len(),
        unanswered.len()
    );
    // Every answered call is in the ledger already: its retry replays the answer and pays nothing.
    for (key, first) in &answered {
        let retry = call(&api, key.clone()).await.unwrap();
        assert_eq!(retry.status(), 200);
        assert_eq!(&retry.text().await.unwrap(), first, "{key}");
    }
    assert_eq!(balance(api.clone()).await.0, after_kill);
    // Every unanswered call is charged at most once: before the kill, or now.
    for key in &unanswered {
        assert_eq!(call(&api, key.clone()).await.unwrap().status(), 200, "{key}");
    }
    let total_calls = (answered.len() + unanswered.len()) as i128;
    assert_eq!(balance(api.clone()).await.0, DEPOSIT - total_calls * PRICE);
}
