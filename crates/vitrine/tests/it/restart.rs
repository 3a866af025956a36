use runtime::synthetic::Seeded;
use serde_json::{Value, json};

use crate::log::{hashes, verified_checkpoint};
use crate::support::{Api, TestServer, fixture};

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

/// Paid calls under load, the server killed with SIGKILL at a random moment,
/// restarted, again and again (`SERVER_CRASH_LOOP_KILLS` times, 3 by default;
/// `scripts/server-crash-loop` runs it long). After every restart: the ledger
/// balances and holds nothing, every call is charged exactly once whether or
/// not its answer reached the client (each carries an Idempotency-Key and is
/// retried), every acknowledged receipt is in the log, and the new checkpoint
/// is consistent with the one before the kill.
#[tokio::test]
async fn sigkill_mid_load_loses_no_charge_and_repeats_none() {
    const PRICE: i128 = 10;
    const DEPOSIT: i128 = 1_000_000_000_000;
    let kills: u64 = std::env::var("SERVER_CRASH_LOOP_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("crash loop: {kills} kills, seed {seed}");
    let mut random = Seeded::new(seed);
    let mut server = TestServer::start_with(&[("inference_threads", "2")]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": PRICE.to_string()})).await.ok(200);
    let body = json!({"account": "bob", "amount": DEPOSIT.to_string(), "reference": "bank-1"});
    api.post("/v1/admin/deposits", Some(&op), body).await.ok(201);

    let call_body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
    let call = move |api: &Api, key: String| {
        let request = api
            .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob))
            .header("Idempotency-Key", key)
            .json(&call_body);
        async move { request.send().await }
    };
    let balance = |api: Api| {
        let op = op.clone();
        async move {
            let view = api.get("/v1/admin/accounts/bob", Some(&op)).await;
            let number = |f: &str| view.body[f].as_str().unwrap().parse::<i128>().unwrap();
            (number("balance"), number("held"))
        }
    };
    let mut calls_charged: i128 = 0;
    let mut checkpoint = verified_checkpoint(&server.api()).await;
    for round in 0..kills {
        let api = server.api();
        // Eight clients call in a loop until the server dies under them.
        let mut clients = vec![];
        for client in 0..8 {
            let api = api.clone();
            let call = call.clone();
            clients.push(tokio::spawn(async move {
                let mut answered = vec![];
                let mut unanswered = vec![];
                for n in 0.. {
                    let key = format!("k-{round}-{client}-{n}");
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
        let delay_ms = 150 + random.next_u64() % 650;
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        server = server.kill_and_restart();
        let api = server.api();
        let mut answered = vec![];
        let mut unanswered = vec![];
        for client in clients {
            let (a, u) = client.await.unwrap();
            answered.extend(a);
            unanswered.extend(u);
        }
        assert!(!answered.is_empty(), "round {round}: the load ran before the kill");

        let ledger = api.get("/v1/admin/ledger", Some(&op)).await.ok(200).clone();
        assert_eq!(ledger["debits_total"], ledger["credits_total"], "round {round}");
        assert_eq!(ledger["held_total"], "0", "round {round}: every hold of a killed call is released at start");
        assert_eq!(ledger["circulating"], DEPOSIT.to_string(), "round {round}");
        let (after_kill, held) = balance(api.clone()).await;
        assert_eq!(held, 0);
        let charged = (DEPOSIT - after_kill) / PRICE - calls_charged;
        assert!(
            answered.len() as i128 <= charged && charged <= (answered.len() + unanswered.len()) as i128,
            "round {round}: {} answered, {} unanswered, {charged} charged",
            answered.len(),
            unanswered.len()
        );
        // The log after the restart extends the one before the kill.
        let now = verified_checkpoint(&api).await;
        let proof = api
            .get(&format!("/v1/log/proof/consistency?from={}&to={}", checkpoint.size, now.size), None)
            .await
            .ok(200)
            .clone();
        assert!(
            tlog::verify_consistency(checkpoint.size, now.size, &checkpoint.root, &now.root, &hashes(&proof["hashes"])),
            "round {round}: checkpoint {} is not consistent with {}",
            now.size,
            checkpoint.size
        );
        // Every answered call is in the ledger and the log already: its
        // retry replays the answer and pays nothing.
        for (key, first) in &answered {
            let receipt = &serde_json::from_str::<Value>(first).unwrap()["receipt"];
            let index = receipt["log_index"].as_u64().unwrap();
            assert!(index < now.size, "{key}: receipt {index} past the checkpoint of size {}", now.size);
            let entry = api.get(&format!("/v1/log/entries?start={index}&end={}", index + 1), None).await;
            assert_eq!(entry.ok(200)["items"][0]["leaf_hash"], receipt["leaf_hash"], "{key}");
            let retry = call(&api, key.clone()).await.unwrap();
            assert_eq!(retry.status(), 200);
            assert_eq!(&retry.text().await.unwrap(), first, "{key}");
        }
        assert_eq!(balance(api.clone()).await.0, after_kill);
        // Every unanswered call is charged at most once: before the kill, or now.
        for key in &unanswered {
            assert_eq!(call(&api, key.clone()).await.unwrap().status(), 200, "{key}");
        }
        calls_charged += (answered.len() + unanswered.len()) as i128;
        assert_eq!(balance(api.clone()).await.0, DEPOSIT - calls_charged * PRICE, "round {round}");
        checkpoint = verified_checkpoint(&api).await;
    }
    eprintln!("crash loop: {kills} kills, {calls_charged} calls, each charged once");
}
