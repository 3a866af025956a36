//! Paying per inference: holds, the exact split, refusals that charge
//! nothing, idempotency, deposits and payouts, under concurrency and crashes.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::support::{Api, TestServer};

const X: &str = r#"{"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}}"#;

pub(crate) fn linear_call() -> Value {
    serde_json::from_str(X).unwrap()
}

/// Minor units of an account's field, as an integer.
pub(crate) async fn units(api: &Api, operator: &str, account: &str, field: &str) -> i128 {
    let view = api.get(&format!("/v1/admin/accounts/{account}"), Some(operator)).await;
    view.ok(200)[field].as_str().unwrap().parse().unwrap()
}

pub(crate) async fn deposit(api: &Api, operator: &str, account: &str, amount: u64, reference: &str) -> Value {
    let body = json!({"account": account, "amount": amount.to_string(), "reference": reference});
    api.post("/v1/admin/deposits", Some(operator), body).await.ok(201).clone()
}

/// Creates `creator/name` serving the linear fixture at `price` minor units.
pub(crate) async fn priced_model(api: &Api, key: &str, creator: &str, name: &str, price: u64) {
    api.model_with_version(key, creator, name, "linear").await;
    let patch = json!({"price_per_inference": price.to_string()});
    api.patch(&format!("/v1/models/{creator}/{name}"), Some(key), patch).await.ok(200);
}

async fn ledger(api: &Api, operator: &str) -> Value {
    api.get("/v1/admin/ledger", Some(operator)).await.ok(200).clone()
}

#[tokio::test]
async fn each_paid_call_is_split_exactly_between_creator_node_and_treasury() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    // 1001 units: node 15% = 150.15 → 150, treasury 5% = 50.05 → 50, creator the rest, 801.
    priced_model(&api, &alice, "alice", "linear", 1001).await;
    deposit(&api, &op, "bob", 10_000, "bank-1").await;
    for _ in 0..3 {
        let answer = api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await;
        assert_eq!(answer.ok(200)["price"], "1001");
    }
    assert_eq!(units(&api, &op, "bob", "balance").await, 10_000 - 3 * 1001);
    assert_eq!(units(&api, &op, "bob", "held").await, 0);
    assert_eq!(units(&api, &op, "alice", "balance").await, 3 * 801);
    assert_eq!(units(&api, &op, "alice", "earned_total").await, 3 * 801);
    assert_eq!(units(&api, &op, "node-local", "balance").await, 3 * 150);
    assert_eq!(units(&api, &op, "treasury", "balance").await, 3 * 50);
    let alice_view = api.get("/v1/account", Some(&alice)).await;
    assert_eq!(alice_view.ok(200)["earned_total"], (3 * 801).to_string());

    let transfers = api.get("/v1/account/transfers?limit=4", Some(&bob)).await.ok(200).clone();
    let kinds: Vec<&str> = transfers["items"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 4);
    assert!(kinds.iter().all(|k| k.starts_with("inference_")), "{kinds:?}");
    let first = &transfers["items"][0];
    assert_eq!(first["debit_account"], "bob");
    assert_eq!(first["reference"], "alice/linear@1");
    // Paging walks all 10 transfers (1 deposit + 9 shares), newest first, each once.
    let mut ids = vec![];
    let mut path = "/v1/account/transfers?limit=4".to_owned();
    loop {
        let page = api.get(&path, Some(&bob)).await.ok(200).clone();
        ids.extend(page["items"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()));
        match page["next_page_token"].as_str() {
            Some(token) => path = format!("/v1/account/transfers?limit=4&page_token={token}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 10);
    assert!(ids.windows(2).all(|w| w[0] > w[1]));

    let totals = ledger(&api, &op).await;
    assert_eq!(totals["debits_total"], totals["credits_total"]);
    assert_eq!(totals["circulating"], "10000");
}

#[tokio::test]
async fn more_concurrent_calls_than_the_balance_covers_charge_exactly_the_affordable_ones() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    priced_model(&api, &alice, "alice", "linear", 997).await;
    let callers = ["c1", "c2", "c3", "c4"];
    let mut keys = HashMap::new();
    for (i, caller) in callers.iter().enumerate() {
        keys.insert(*caller, api.signup(caller).await);
        // Enough for 5, 6, 7 and 8 calls, plus change that pays for nothing.
        deposit(&api, &op, caller, 997 * (5 + i as u64) + 500, &format!("d-{caller}")).await;
    }
    let mut calls = vec![];
    for caller in callers {
        for _ in 0..15 {
            let (api, key) = (api.clone(), keys[caller].clone());
            calls.push(tokio::spawn(async move {
                let answer = api.post("/v1/models/alice/linear/infer", Some(&key), linear_call()).await;
                (caller, answer)
            }));
        }
    }
    let mut succeeded: HashMap<&str, i128> = HashMap::new();
    for call in calls {
        let (caller, answer) = call.await.unwrap();
        match answer.status {
            200 => *succeeded.entry(caller).or_default() += 1,
            _ => {
                let message = answer.error(402, "insufficient_balance");
                assert!(message.contains("997"), "{message}");
            }
        }
    }
    for (i, caller) in callers.iter().enumerate() {
        assert_eq!(succeeded[caller], 5 + i as i128, "{caller}");
        assert_eq!(units(&api, &op, caller, "balance").await, 500);
        assert_eq!(units(&api, &op, caller, "held").await, 0);
    }
    let calls: i128 = succeeded.values().sum();
    let shares = alice_shares(997);
    assert_eq!(units(&api, &op, "alice", "balance").await, calls * shares.0);
    assert_eq!(units(&api, &op, "node-local", "balance").await, calls * shares.1);
    assert_eq!(units(&api, &op, "treasury", "balance").await, calls * shares.2);
    // One durable write per call: the sequencer took one item for each (a
    // charge with its receipt and usage event, or a refusal's usage event;
    // no hold, no release), and one per deposit.
    let sequencer = &ledger(&api, &op).await["sequencer"];
    assert_eq!(sequencer["items"], 60 + 4, "{sequencer}");
}

#[tokio::test]
async fn a_running_call_holds_its_price_until_it_is_charged_or_fails() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let create = json!({"name": "slow", "task": "other", "price_per_inference": "1000"});
    api.post("/v1/models", Some(&alice), create).await.ok(201);
    api.upload("/v1/models/alice/slow/versions", Some(&alice), crate::support::fixture("slow.onnx")).await.ok(201);
    let bob = api.signup("bob").await;
    deposit(&api, &op, "bob", 1500, "d-bob").await;
    let slow_call = || {
        let (api, bob) = (api.clone(), bob.clone());
        tokio::spawn(async move {
            let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.001]}}});
            api.post("/v1/models/alice/slow/infer", Some(&bob), body).await
        })
    };
    let first = slow_call();
    // While it runs, its price is held, and a second call does not fit.
    let mut held = 0;
    for _ in 0..100 {
        held = units(&api, &op, "bob", "held").await;
        if held > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(held, 1000);
    let message = slow_call().await.unwrap().error(402, "insufficient_balance");
    assert!(message.contains("0.0000005 OPG"), "in the token people read: {message}");
    first.await.unwrap().ok(200);
    assert_eq!((units(&api, &op, "bob", "balance").await, units(&api, &op, "bob", "held").await), (500, 0));
}

/// (creator, node, treasury) of a price under the default 80/15/5 split.
fn alice_shares(price: i128) -> (i128, i128, i128) {
    let node = price * 1500 / 10_000;
    let treasury = price * 500 / 10_000;
    (price - node - treasury, node, treasury)
}

#[tokio::test]
async fn refused_and_failed_calls_charge_nothing() {
    let server = TestServer::start_with(&[("inference_timeout_ms", "300")]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "embed", "embedding").await;
    api.patch("/v1/models/alice/embed", Some(&alice), json!({"price_per_inference": "100"})).await.ok(200);
    api.model_with_version(&alice, "alice", "slow", "slow").await;
    api.patch("/v1/models/alice/slow", Some(&alice), json!({"price_per_inference": "100"})).await.ok(200);
    // No tokens: refused before the model runs.
    let ids = json!({"inputs": {"ids": {"dtype": "i64", "shape": [1, 1], "data": [3]}}});
    let message =
        api.post("/v1/models/alice/embed/infer", Some(&bob), ids.clone()).await.error(402, "insufficient_balance");
    assert!(message.contains("0.0000001 OPG are needed"), "{message}");
    deposit(&api, &op, "bob", 1000, "bank-1").await;
    // Refused inputs, a runtime failure after the hold, a timeout after the hold.
    let bad = json!({"inputs": {"ids": {"dtype": "f32", "shape": [1, 1], "data": [3]}}});
    api.post("/v1/models/alice/embed/infer", Some(&bob), bad).await.error(422, "invalid_input");
    let out_of_range = json!({"inputs": {"ids": {"dtype": "i64", "shape": [1, 1], "data": [99]}}});
    api.post("/v1/models/alice/embed/infer", Some(&bob), out_of_range).await.error(422, "invalid_input");
    let slow = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [1]}}});
    api.post("/v1/models/alice/slow/infer", Some(&bob), slow).await.error(504, "inference_timeout");
    assert_eq!(units(&api, &op, "bob", "balance").await, 1000);
    assert_eq!(units(&api, &op, "bob", "held").await, 0);
    assert_eq!(units(&api, &op, "alice", "balance").await, 0);
    // And the one good call is charged.
    assert_eq!(api.post("/v1/models/alice/embed/infer", Some(&bob), ids).await.ok(200)["price"], "100");
    assert_eq!(units(&api, &op, "bob", "balance").await, 900);
}

#[tokio::test]
async fn free_models_move_no_money_and_prices_apply_to_later_calls() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    assert_eq!(api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200)["price"], "0");
    let totals = ledger(&api, &op).await;
    assert_eq!(
        (totals["debits_total"].as_str(), totals["held_total"].as_str()),
        (Some("0"), Some("0")),
        "a free call touches no money"
    );
    deposit(&api, &op, "bob", 1000, "bank-1").await;
    api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": "40"})).await.ok(200);
    assert_eq!(api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200)["price"], "40");
    api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": "60"})).await.ok(200);
    assert_eq!(api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200)["price"], "60");
    assert_eq!(units(&api, &op, "bob", "balance").await, 900);
    // The creator calling their own model pays only the node and treasury shares.
    deposit(&api, &op, "alice", 1000, "bank-2").await;
    let own = api.post("/v1/models/alice/linear/infer", Some(&alice), linear_call()).await;
    assert_eq!(own.ok(200)["price"], "12", "15% + 5% of 60");
}

#[tokio::test]
async fn an_idempotency_key_charges_once_and_returns_the_first_answer() {
    let server = TestServer::start_with(&[("inference_threads", "2")]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "linear", 100).await;
    deposit(&api, &op, "bob", 1000, "bank-1").await;
    let call = |key: &str, body: Value| {
        api.request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob))
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let first = api.send(call("order-1", linear_call())).await.ok(200).clone();
    let again = api.send(call("order-1", linear_call())).await.ok(200).clone();
    assert_eq!(first, again, "the retry gets the first answer, latency included");
    assert_eq!(units(&api, &op, "bob", "balance").await, 900);
    let other = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [9, 9, 9, 9]}}});
    api.send(call("order-1", other.clone())).await.error(422, "invalid_request");
    api.send(call("order-2", other)).await.ok(200);
    assert_eq!(units(&api, &op, "bob", "balance").await, 800);
    // Keys are per caller: alice may use "order-1" too.
    deposit(&api, &op, "alice", 1000, "bank-2").await;
    let alice_call = api
        .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&alice))
        .header("Idempotency-Key", "order-1")
        .json(&linear_call());
    api.send(alice_call).await.ok(200);
    // A failed call frees its key: the retry runs (and is charged) once.
    let broken = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 3], "data": [1, 2, 3]}}});
    api.send(call("order-3", broken)).await.error(422, "invalid_input");
    api.send(call("order-3", linear_call())).await.ok(200);
    assert_eq!(units(&api, &op, "bob", "balance").await, 700);
    let bad_key = api
        .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob))
        .header("Idempotency-Key", "")
        .json(&linear_call());
    api.send(bad_key).await.error(400, "invalid_request");
    // The version yanked (or quarantined) since: a retry of a finished call
    // still gets its answer (it was paid for; a 410 would tell a client that
    // lost the answer that its paid call failed), and a new call is refused.
    // (The latest route names no version once all are yanked: 410.)
    let yank = json!({"yanked": true, "reason": "wrong weights"});
    api.patch("/v1/models/alice/linear/versions/1", Some(&alice), yank).await.ok(200);
    let retry = api
        .request(reqwest::Method::POST, "/v1/models/alice/linear/versions/1/infer", Some(&bob))
        .header("Idempotency-Key", "order-1")
        .json(&linear_call());
    assert_eq!(api.send(retry).await.ok(200), &first);
    api.send(call("order-1", linear_call())).await.error(410, "gone");
    assert_eq!(units(&api, &op, "bob", "balance").await, 700);
}

/// Kept answers fill the disk for a whole window, and a stranger chooses
/// their size and number: an answer past `idempotency_answer_bytes_max`, or
/// past its key's `idempotency_answer_bytes_per_key`, is not kept, and its
/// call's retry is refused (409), never run or charged again.
#[tokio::test]
async fn answers_too_large_to_keep_are_charged_once_and_their_retries_refused() {
    for (setting, value) in [("idempotency_answer_bytes_max", "100"), ("idempotency_answer_bytes_per_key", "1000")] {
        let server = TestServer::start_with(&[("inference_threads", "1"), (setting, value)]);
        let (api, op) = (server.api(), server.operator_key.clone());
        let alice = api.signup("alice").await;
        let bob = api.signup("bob").await;
        priced_model(&api, &alice, "alice", "linear", 100).await;
        deposit(&api, &op, "bob", 10_000, "bank-1").await;
        let call = |key: String| {
            api.request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob))
                .header("Idempotency-Key", key)
                .json(&linear_call())
        };
        let (mut replayed, mut refused) = (0, 0);
        for i in 0..10 {
            let key = format!("order-{i}");
            let first = api.send(call(key.clone())).await.ok(200).clone();
            let retry = api.send(call(key)).await;
            if retry.status == 200 {
                assert_eq!(retry.body, first, "{setting}: a kept answer replays byte for byte");
                replayed += 1;
                continue;
            }
            let message = retry.error(409, "conflict");
            assert!(message.contains(setting) && message.contains("new key"), "{message}");
            let index = first["receipt"]["log_index"].as_u64().unwrap();
            assert!(message.contains(&format!("log entry {index}")), "{message}");
            refused += 1;
        }
        assert_eq!(units(&api, &op, "bob", "balance").await, 10_000 - 10 * 100, "{setting}: each call charged once");
        match setting {
            // Every answer is longer than 100 bytes.
            "idempotency_answer_bytes_max" => assert_eq!((replayed, refused), (0, 10)),
            // A thousand bytes keep a few answers (their JSON without the
            // receipt, over a hundred bytes each), then none.
            _ => assert!((1..=9).contains(&replayed) && replayed + refused == 10, "{replayed} {refused}"),
        }
    }
}

/// A key is claimed in memory while its call runs and written only with its
/// answer, in the batch of the charge: so two servers on one database (one
/// data directory here) must still charge a key once, when a retry reaches
/// the other server and when both get the key at the same moment.
#[tokio::test]
async fn an_idempotency_key_is_charged_once_across_servers_sharing_a_database() {
    let first = TestServer::start_with(&[("inference_threads", "2")]);
    let (api, op) = (first.api(), first.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "linear", 100).await;
    deposit(&api, &op, "bob", 100_000, "bank-1").await;
    let second = TestServer::on_data_dir(first.data_dir.clone());
    let apis = [first.api(), second.api()];
    let call = |api: &Api, key: &str| {
        api.request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob))
            .header("Idempotency-Key", key)
            .json(&linear_call())
    };
    // A retry on the other server replays the first answer, receipt included.
    let answer = apis[0].send(call(&apis[0], "retry")).await.ok(200).clone();
    let replay = apis[1].send(call(&apis[1], "retry")).await.ok(200).clone();
    assert_eq!(answer, replay);
    assert_eq!(units(&api, &op, "bob", "balance").await, 100_000 - 100);
    // Both servers at once, for many keys: whichever answers first, every
    // answer of a key is the same, and each key is paid for once.
    let keys: Vec<String> = (0..24).map(|i| format!("both-{i}")).collect();
    let answers = futures_util::future::join_all(
        keys.iter().flat_map(|key| apis.iter().map(move |api| async move { (key, api.send(call(api, key)).await) })),
    )
    .await;
    let mut first_answers: HashMap<&String, Value> = HashMap::new();
    for (key, answer) in answers {
        if answer.status == 409 {
            continue; // the key's call was still running on the same server
        }
        let body = answer.ok(200).clone();
        assert_eq!(first_answers.entry(key).or_insert_with(|| body.clone()), &body, "{key}");
    }
    assert_eq!(first_answers.len(), keys.len(), "every key was answered by one server or both");
    assert_eq!(units(&api, &op, "bob", "balance").await, 100_000 - 100 * (1 + keys.len() as i128));
    let receipts: std::collections::HashSet<u64> =
        first_answers.values().map(|body| body["receipt"]["log_index"].as_u64().expect("a receipt")).collect();
    assert_eq!(receipts.len(), keys.len(), "one receipt per key");
}

#[tokio::test]
async fn an_idempotency_key_stands_for_the_model_version_app_and_inputs_not_their_spelling() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    let call = |key: &str, app: Option<&str>, body: &str| {
        let request = api
            .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&alice))
            .header("Idempotency-Key", key)
            .header("content-type", "application/json")
            .body(body.to_owned());
        match app {
            Some(app) => request.header("X-App", app),
            None => request,
        }
    };
    let body = r#"{"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}}"#;
    // A free call keeps its answer too: the retry replays it.
    let first = api.send(call("free-1", None, body)).await.ok(200).clone();
    assert_eq!(api.send(call("free-1", None, body)).await.ok(200), &first);
    // The same request spelled otherwise (key order, whitespace) is the same request.
    let respelled = r#"{"inputs":{"x":{"data":[1,2,3,4],"shape":[1,4],"dtype":"f32"}}}"#;
    assert_eq!(api.send(call("free-1", None, respelled)).await.ok(200), &first);
    // Another app is another request.
    api.send(call("free-1", Some("other-app"), body)).await.error(422, "invalid_request");
    // Only the first call ran: one usage event.
    let series = api.get("/v1/stats/models/alice/linear?bucket=hour", None).await.ok(200).clone();
    assert_eq!(series["total"]["calls"], 1, "{series}");
}

#[tokio::test]
async fn a_retry_while_the_first_call_runs_gets_409() {
    let server = TestServer::start_with(&[
        ("inference_threads", "2"),
        ("inference_timeout_ms", "60000"),
        ("hold_expiry_ms", "120000"),
    ]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "slow", "slow").await;
    api.patch("/v1/models/alice/slow", Some(&alice), json!({"price_per_inference": "100"})).await.ok(200);
    deposit(&api, &op, "bob", 1000, "bank-1").await;
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.5]}}});
    let call = {
        let body = body.clone();
        let bob = bob.clone();
        move |api: Api| {
            let request = api
                .request(reqwest::Method::POST, "/v1/models/alice/slow/infer", Some(&bob))
                .header("Idempotency-Key", "k")
                .json(&body);
            async move { api.send(request).await }
        }
    };
    let first = tokio::spawn(call(api.clone()));
    // The slow model runs for over a second; retry while it is running.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    call(api.clone()).await.error(409, "conflict");
    let first = first.await.unwrap();
    first.ok(200);
    assert_eq!(call(api.clone()).await.ok(200), first.ok(200));
    assert_eq!(units(&api, &op, "bob", "balance").await, 900);
}

#[tokio::test]
async fn deposits_are_for_the_operator_and_idempotent_by_reference() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let first = deposit(&api, &op, "alice", 500, "wire-9").await;
    assert_eq!((first["kind"].as_str(), first["debit_account"].as_str()), (Some("deposit"), Some("issuer")));
    // The same deposit again is found, not repeated.
    assert_eq!(deposit(&api, &op, "alice", 500, "wire-9").await["id"], first["id"]);
    assert_eq!(units(&api, &op, "alice", "balance").await, 500);
    let conflicting = json!({"account": "alice", "amount": "501", "reference": "wire-9"});
    api.post("/v1/admin/deposits", Some(&op), conflicting).await.error(409, "conflict");
    let body = json!({"account": "alice", "amount": "5", "reference": "x"});
    api.post("/v1/admin/deposits", Some(&alice), body.clone()).await.error(403, "forbidden");
    api.post("/v1/admin/deposits", None, body).await.error(401, "unauthorized");
    for (amount, reference) in [("0", "r"), ("-5", "r"), ("1.5", "r"), ("5", ""), ("99999999999999999999", "r")] {
        let body = json!({"account": "alice", "amount": amount, "reference": reference});
        api.post("/v1/admin/deposits", Some(&op), body).await.error(422, "invalid_request");
    }
    let body = json!({"account": "nobody", "amount": "5", "reference": "r"});
    api.post("/v1/admin/deposits", Some(&op), body).await.error(404, "not_found");
    let body = json!({"account": "treasury", "amount": "5", "reference": "r"});
    api.post("/v1/admin/deposits", Some(&op), body).await.error(422, "invalid_request");
    // The faucet exists only on development servers.
    api.post("/v1/dev/faucet", Some(&alice), json!({"amount": "5"})).await.error(404, "not_found");
}

#[tokio::test]
async fn the_faucet_gives_test_tokens_on_a_development_server() {
    let server = TestServer::start_with(&[("dev", "true"), ("faucet_amount_max", "1000")]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    assert_eq!(api.post("/v1/dev/faucet", Some(&alice), json!({"amount": "1000"})).await.ok(201)["kind"], "faucet");
    api.post("/v1/dev/faucet", Some(&alice), json!({"amount": "1001"})).await.error(422, "invalid_request");
    assert_eq!(units(&api, &op, "alice", "balance").await, 1000);
}

#[tokio::test]
async fn payouts_move_tokens_out_only_when_completed() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    deposit(&api, &op, "alice", 1000, "bank-1").await;
    api.post("/v1/payouts", Some(&alice), json!({"amount": "1001"})).await.error(402, "insufficient_balance");
    let first = api.post("/v1/payouts", Some(&alice), json!({"amount": "300"})).await.ok(201).clone();
    let second = api.post("/v1/payouts", Some(&alice), json!({"amount": "200"})).await.ok(201).clone();
    assert_eq!(first["state"], "requested");
    assert_eq!(units(&api, &op, "alice", "balance").await, 500);
    assert_eq!(units(&api, &op, "payouts", "balance").await, 500);
    let complete = |id: &Value| format!("/v1/admin/payouts/{id}/complete");
    api.post(&complete(&first["id"]), Some(&alice), json!({"reference": "x"})).await.error(403, "forbidden");
    api.post(&complete(&first["id"]), Some(&op), json!({"reference": ""})).await.error(422, "invalid_request");
    let done = api.post(&complete(&first["id"]), Some(&op), json!({"reference": "bank-out-1"})).await.ok(200).clone();
    assert_eq!((done["state"].as_str(), done["reference"].as_str()), (Some("completed"), Some("bank-out-1")));
    api.post(&complete(&first["id"]), Some(&op), json!({"reference": "twice"})).await.error(409, "conflict");
    let reject = format!("/v1/admin/payouts/{}/reject", second["id"]);
    assert_eq!(api.post(&reject, Some(&op), json!({"reference": "wrong iban"})).await.ok(200)["state"], "rejected");
    api.post(&reject, Some(&op), json!({"reference": "again"})).await.error(409, "conflict");
    api.post("/v1/admin/payouts/999/complete", Some(&op), json!({"reference": "x"})).await.error(404, "not_found");
    assert_eq!(units(&api, &op, "alice", "balance").await, 700);
    assert_eq!(units(&api, &op, "payouts", "balance").await, 0);
    let totals = ledger(&api, &op).await;
    assert_eq!((totals["circulating"].as_str(), totals["paid_out_total"].as_str()), (Some("700"), Some("300")));
    let mine = api.get("/v1/payouts", Some(&alice)).await.ok(200).clone();
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    let requested = api.get("/v1/admin/payouts?state=requested", Some(&op)).await.ok(200).clone();
    assert_eq!(requested["items"], json!([]));
}

/// While deposits, paid calls and payouts run at once, every reading of the
/// ledger sees exactly the recorded deposits minus completed payouts in
/// circulation, and debits equal to credits.
#[tokio::test]
async fn a_reader_never_sees_the_bank_out_of_balance() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    priced_model(&api, &alice, "alice", "linear", 37).await;
    let callers: Vec<String> = futures_util::future::join_all((0..4).map(|i| {
        let api = api.clone();
        async move { api.signup(&format!("caller-{i}")).await }
    }))
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let (api, op, stop) = (api.clone(), op.clone(), stop.clone());
        async move {
            let mut readings = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || readings < 5 {
                let view = ledger(&api, &op).await;
                let number = |f: &str| view[f].as_str().unwrap().parse::<i128>().unwrap();
                assert_eq!(number("debits_total"), number("credits_total"), "{view}");
                assert_eq!(number("circulating"), number("deposited_total") - number("paid_out_total"), "{view}");
                readings += 1;
            }
            readings
        }
    });
    let mut work = vec![];
    for (i, key) in callers.iter().enumerate() {
        let (api, op, key) = (api.clone(), op.clone(), key.clone());
        work.push(tokio::spawn(async move {
            for round in 0..10 {
                deposit(&api, &op, &format!("caller-{i}"), 100, &format!("d-{i}-{round}")).await;
                for _ in 0..2 {
                    api.post("/v1/models/alice/linear/infer", Some(&key), linear_call()).await.ok(200);
                }
            }
        }));
    }
    work.push(tokio::spawn({
        let (api, op, alice) = (api.clone(), op.clone(), alice.clone());
        async move {
            for _ in 0..10 {
                let answer = api.post("/v1/payouts", Some(&alice), json!({"amount": "20"})).await;
                if answer.status == 201 {
                    let path = format!("/v1/admin/payouts/{}/complete", answer.body["id"]);
                    api.post(&path, Some(&op), json!({"reference": "out"})).await.ok(200);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }));
    for task in work {
        task.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let readings = reader.await.unwrap();
    assert!(readings >= 5);
    let view = ledger(&api, &op).await;
    assert_eq!(view["deposited_total"], "4000");
    assert_eq!(view["held_total"], "0");
}

/// The largest amounts the API accepts can all be moved, and one unit more
/// than a running total can hold is refused: the market never holds a
/// number it cannot store or sum, and restarts.
#[tokio::test]
async fn amounts_at_the_limit_move_and_one_more_is_refused_not_a_brick() {
    const MAX: u64 = i64::MAX as u64;
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "linear", MAX).await;
    deposit(&api, &op, "bob", MAX, "all-of-it").await;
    // The issuer's lifetime deposits are at the limit: one more unit is refused.
    let one_more = json!({"account": "alice", "amount": "1", "reference": "one-more"});
    let message = api.post("/v1/admin/deposits", Some(&op), one_more).await.error(422, "amount_too_large");
    assert!(message.contains(&MAX.to_string()), "{message}");
    // The largest price, paid once: every share fits.
    let answer = api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await;
    assert_eq!(answer.ok(200)["price"], MAX.to_string());
    assert_eq!(units(&api, &op, "bob", "balance").await, 0);
    // Sums over accounts pass i64: the bank check, the views and the metrics still answer.
    let view = ledger(&api, &op).await;
    assert_eq!(view["debits_total"], view["credits_total"], "{view}");
    assert_eq!(view["debits_total"], (2 * MAX as u128).to_string(), "{view}");
    assert_eq!(view["circulating"], MAX.to_string(), "{view}");
    let metrics = reqwest::get(format!("{}/metrics", api.url)).await.unwrap();
    assert_eq!(metrics.status(), 200);
    // And the server starts again on it.
    let server = server.restart();
    let api = server.api();
    let creator_share = MAX as i128 - MAX as i128 * 1500 / 10_000 - MAX as i128 * 500 / 10_000;
    assert_eq!(units(&api, &op, "alice", "earned_total").await, creator_share);
}
