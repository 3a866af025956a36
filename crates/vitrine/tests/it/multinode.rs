//! Several `vitrine serve` nodes on one PostgreSQL database: one market, one
//! ledger, one log. Runs where PostgreSQL is reachable
//! (`VITRINE_TEST_POSTGRES`, by default `postgres://postgres@127.0.0.1:5432/test`),
//! and must under `CI`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use store::postgres::TestDatabase as Database;

use crate::ledger::{deposit, linear_call, priced_model, units};
use crate::support::{Api, BINARY, TestServer};

/// Three nodes on one database and one blob folder.
fn start_nodes(database: &Database, blobs: &std::path::Path) -> Vec<TestServer> {
    ["a", "b", "c"]
        .into_iter()
        .map(|node| {
            TestServer::start_with(&[
                ("database_url", database.url.as_str()),
                ("node_id", node),
                ("blob_dir", blobs.to_str().expect("a UTF-8 path")),
                ("inference_threads", "1"),
                ("checkpoint_interval_ms", "200"),
                ("calls_per_key_concurrent_max", "0"),
                // Grants last 12 s (used for 5 of them): a dead node's come back soon.
                ("hold_expiry_ms", "12000"),
                ("inference_timeout_ms", "2000"),
            ])
        })
        .collect()
}

fn paid_call(api: &Api, key: &str, idempotency_key: Option<&str>) -> reqwest::RequestBuilder {
    let request = api.request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(key)).json(&linear_call());
    match idempotency_key {
        Some(idempotency_key) => request.header("Idempotency-Key", idempotency_key),
        None => request,
    }
}

/// The size in a node's checkpoint (its second line).
async fn checkpoint_size(api: &Api) -> u64 {
    let note = api.text("/v1/log/checkpoint").await;
    note.lines().nth(1).and_then(|line| line.parse().ok()).unwrap_or_else(|| panic!("a checkpoint: {note}"))
}

/// Waits until every node serves a checkpoint of at least `size` leaves; the
/// time it took.
async fn checkpoints_reach(apis: &[Api], size: u64) -> Duration {
    let start = Instant::now();
    loop {
        let mut reached = true;
        for api in apis {
            reached &= checkpoint_size(api).await >= size;
        }
        if reached {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no checkpoint of {size} leaves after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls that reached a model, on all nodes together.
async fn model_runs(apis: &[Api]) -> u64 {
    let mut runs = 0;
    for api in apis {
        runs += api.metric("vitrine_model_runs_total").await;
    }
    runs
}

/// Waits until no token is held (every grant spent, returned or expired);
/// the time it took.
async fn holds_drain(api: &Api, op: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let ledger = api.get("/v1/admin/ledger", Some(op)).await.ok(200).clone();
        if ledger["held_total"] == "0" {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still held after {within:?}: {ledger}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `vitrine audit` against `node`, keeping its state (the pinned log
/// key, the last verified checkpoint) in `folder`; asserts it passes.
/// Minor units as the CLI shows them: tokens, with the symbol.
fn opg(minor_units: i128) -> String {
    let amount = domain::Amount::from_minor_units(minor_units as u64).expect("an amount");
    format!("{} OPG", amount.to_decimal_string(domain::DEFAULT_DECIMALS))
}

fn run_audit(node: &TestServer, folder: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(BINARY)
        .env_remove("VITRINE_KEY")
        .env("VITRINE_URL", &node.url)
        .env("VITRINE_CLIENT_CONFIG", folder.join("client.toml"))
        .arg("audit")
        .args(args)
        .arg("--state")
        .arg(folder.join("state.json"))
        .output()
        .expect("run the audit");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    text
}

#[tokio::test]
async fn three_nodes_serve_one_market_with_one_ledger_and_one_log() {
    let Some(database) = Database::create("three_nodes").await else { return };
    let blobs = tempfile::tempdir().expect("a blob folder");
    let mut nodes = start_nodes(&database, blobs.path());
    let apis: Vec<Api> = nodes.iter().map(TestServer::api).collect();
    let op = nodes[0].operator_key.clone();
    assert!(!op.is_empty() && nodes[1].operator_key.is_empty(), "the first node created the market");

    // Accounts, models and money made on one node are every node's.
    let alice = apis[0].signup("alice").await;
    let bob = apis[1].signup("bob").await;
    let carol = apis[2].signup("carol").await;
    priced_model(&apis[1], &alice, "alice", "linear", 100).await;
    deposit(&apis[2], &op, "bob", 100_000, "bank-1").await;
    deposit(&apis[0], &op, "carol", 1_000, "bank-2").await;

    // Calls spread over the nodes at once: every one paid, each by its node.
    let calls = futures_util::future::join_all((0..60).map(|i| {
        let api = &apis[i % 3];
        let bob = bob.clone();
        async move { api.send(paid_call(api, &bob, None)).await }
    }))
    .await;
    let mut served: HashMap<String, i128> = HashMap::new();
    for answer in &calls {
        let receipt = &answer.ok(200)["receipt"];
        *served.entry(receipt["node"].as_str().expect("a node").to_owned()).or_default() += 1;
    }
    assert_eq!(served.len(), 3, "{served:?}");
    assert_eq!(units(&apis[0], &op, "bob", "balance").await, 100_000 - 60 * 100);

    // Carol can pay for ten calls: spread over three nodes, she pays for ten,
    // and the nodes run her model ten times: a node spends from a grant on
    // her balance, and a call no grant covers is refused before it runs.
    let runs_before = model_runs(&apis).await;
    let tries = futures_util::future::join_all((0..30).map(|i| {
        let api = &apis[i % 3];
        let carol = carol.clone();
        async move { api.send(paid_call(api, &carol, None)).await }
    }))
    .await;
    let paid = tries.iter().filter(|answer| answer.status == 200).count() as i128;
    for answer in tries.iter().filter(|answer| answer.status != 200) {
        answer.error(402, "insufficient_balance");
    }
    assert_eq!(paid, 10, "carol had 1,000 and paid for {paid} calls of 100");
    assert_eq!(model_runs(&apis).await - runs_before, 10, "a call she could not pay for ran");
    assert_eq!(units(&apis[1], &op, "carol", "balance").await, 1_000 - 100 * paid);
    for answer in tries.iter().filter(|answer| answer.status == 200) {
        let node = answer.body["receipt"]["node"].as_str().expect("a node").to_owned();
        *served.entry(node).or_default() += 1;
    }

    // A retry on another node replays the first answer and pays nothing more.
    let first = apis[0].send(paid_call(&apis[0], &bob, Some("retry-1"))).await.ok(200).clone();
    let again = apis[2].send(paid_call(&apis[2], &bob, Some("retry-1"))).await.ok(200).clone();
    assert_eq!(first, again);
    *served.entry(first["receipt"]["node"].as_str().expect("a node").to_owned()).or_default() += 1;
    assert_eq!(units(&apis[2], &op, "bob", "balance").await, 100_000 - 61 * 100);

    // Node shares are exact (15% of 100 per call served), and the ledger balances.
    for (node, count) in &served {
        assert_eq!(units(&apis[0], &op, node, "balance").await, 15 * count, "{node}");
    }
    for api in &apis {
        let ledger = api.get("/v1/admin/ledger", Some(&op)).await.ok(200).clone();
        assert_eq!(ledger["debits_total"], ledger["credits_total"]);
        assert_eq!(ledger["circulating"], "101000");
    }

    // One log: every node serves the same checkpoint, and the audit of any
    // node verifies it, every leaf and alice's earnings. Every call is a
    // leaf: bob's 61, and carol's 30 tries, paid or refused.
    checkpoints_reach(&apis, 61 + 30).await;
    let notes: Vec<String> =
        futures_util::future::join_all(apis.iter().map(|api| api.text("/v1/log/checkpoint"))).await;
    assert!(notes.iter().all(|note| note == &notes[0]), "{notes:?}");
    let audit = tempfile::tempdir().expect("a folder");
    let text = run_audit(&nodes[2], audit.path(), &["--creator", "alice", "--key", &alice]);
    let earned = 80 * (61 + paid);
    assert_eq!(units(&apis[1], &op, "alice", "balance").await, earned);
    assert!(text.contains(&opg(earned)), "{text}");
    // Idle grants go back to their callers.
    holds_drain(&apis[0], &op, Duration::from_secs(10)).await;

    for node in &mut nodes {
        assert!(node.terminate().success());
    }
    database.drop().await;
}

/// A market set up through the first of its nodes: alice's `linear` model
/// at 100 a call, and bob with `funds` to spend.
struct Market {
    apis: Vec<Api>,
    op: String,
    alice: String,
    bob: String,
}

async fn linear_market(nodes: &[TestServer], funds: u64) -> Market {
    let apis: Vec<Api> = nodes.iter().map(TestServer::api).collect();
    let op = nodes[0].operator_key.clone();
    let alice = apis[0].signup("alice").await;
    let bob = apis[0].signup("bob").await;
    priced_model(&apis[0], &alice, "alice", "linear", 100).await;
    deposit(&apis[0], &op, "bob", funds, "bank-1").await;
    Market { apis, op, alice, bob }
}

#[tokio::test]
async fn a_node_killed_mid_load_loses_no_receipt_and_another_signs_within_seconds() {
    let Some(database) = Database::create("killed_node").await else { return };
    let blobs = tempfile::tempdir().expect("a blob folder");
    let nodes = start_nodes(&database, blobs.path());
    let Market { apis, op, alice: _, bob } = linear_market(&nodes, 1_000_000).await;
    // Node a serves one call first, so that it holds a grant on bob's balance when it dies.
    apis[1].send(paid_call(&apis[1], &bob, None)).await.ok(200);
    apis[0].send(paid_call(&apis[0], &bob, None)).await.ok(200);
    assert_eq!(apis[0].metric("vitrine_grants").await, 1);
    checkpoints_reach(&apis, 2).await;
    // An auditor pins the log's key and checkpoint, from node c.
    let audit = tempfile::tempdir().expect("a folder");
    run_audit(&nodes[2], audit.path(), &[]);

    // Load on every node; node a (the first started, the signer) is killed
    // in the middle of it.
    let victim = nodes[0].pid();
    let load = futures_util::future::join_all((0..90).map(|i| {
        let api = &apis[i % 3];
        let bob = bob.clone();
        async move {
            if i == 45 {
                crate::support::signal(victim, "KILL");
            }
            api.try_send(paid_call(api, &bob, None)).await
        }
    }));
    let answers = load.await;
    let receipts: Vec<u64> = answers
        .iter()
        .flatten()
        .filter(|answer| answer.status == 200)
        .map(|answer| answer.body["receipt"]["log_index"].as_u64().expect("a receipt"))
        .collect();
    // Every call to the surviving nodes was served.
    for (i, answer) in answers.iter().enumerate() {
        if i % 3 != 0 {
            answer.as_ref().expect("a surviving node answers").ok(200);
        }
    }
    // After the kill: more calls, and a checkpoint covering them signed by
    // another node within 15 s.
    let survivors = &apis[1..];
    let mut last = 0;
    for i in 0..10 {
        let api = &survivors[i % 2];
        last = api.send(paid_call(api, &bob, None)).await.ok(200)["receipt"]["log_index"].as_u64().expect("a receipt");
    }
    let waited = checkpoints_reach(survivors, last + 1).await;
    assert!(waited < Duration::from_secs(15), "a checkpoint covering the later calls took {waited:?}");
    // No receipt given out is lost: each is in the log, charged once.
    for index in receipts {
        survivors[0].get(&format!("/v1/receipts/{index}"), None).await.ok(200);
    }
    let paid = units(&apis[1], &op, "bob", "balance").await;
    let size = checkpoint_size(&survivors[0]).await as i128;
    assert_eq!(paid, 1_000_000 - 100 * size, "every leaf in the log was paid for once");
    let ledger: Value = survivors[1].get("/v1/admin/ledger", Some(&op)).await.ok(200).clone();
    assert_eq!(ledger["debits_total"], ledger["credits_total"]);
    // The new signer signs with the market's key, consistently with the
    // checkpoints the auditor saw before.
    run_audit(&nodes[2], audit.path(), &[]);
    // The dead node's grant on bob's balance went back long before it
    // would have expired (12 s): a survivor voided it once the node was gone.
    holds_drain(&survivors[0], &op, Duration::from_secs(5)).await;
    drop(nodes);
    database.drop().await;
}

/// Waits until every node counts `count` nodes alive (each counts once a second).
async fn nodes_alive(apis: &[Api], count: u64) {
    let start = Instant::now();
    for api in apis {
        while api.metric("vitrine_nodes_alive").await != count {
            assert!(start.elapsed() < Duration::from_secs(5), "{} does not count {count} nodes alive", api.url);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Calls of `caller` through `apis` in turn, `at_once` at a time: the
/// status of each answer, in order.
async fn calls_through(apis: &[Api], caller: &str, calls: usize, at_once: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(calls);
    for wave in (0..calls).collect::<Vec<_>>().chunks(at_once) {
        let answers = futures_util::future::join_all(wave.iter().map(|&i| {
            let api = &apis[i % apis.len()];
            async move { api.send(paid_call(api, caller, None)).await }
        }))
        .await;
        statuses.extend(answers.iter().map(|answer| answer.status));
    }
    statuses
}

#[tokio::test]
async fn a_caller_who_can_pay_is_served_by_every_node_before_and_after_one_dies() {
    let Some(database) = Database::create("grants_shared").await else { return };
    let blobs = tempfile::tempdir().expect("a blob folder");
    let nodes = start_nodes(&database, blobs.path());
    // Bob can pay for 200 calls of 100; a node's grant would be 100 calls'
    // worth if it took what it asks for.
    let Market { apis, op, alice: _, bob } = linear_market(&nodes, 200 * 100).await;
    nodes_alive(&apis, 3).await;
    // 60 calls spread over the three nodes: every one served.
    let statuses = calls_through(&apis, &bob, 60, 12).await;
    assert!(statuses.iter().all(|&status| status == 200), "{statuses:?}");
    assert!(apis[0].metric("vitrine_grants").await >= 1, "node a holds a grant on bob's balance");

    // Node a dies holding its grant; its money is bob's again on the others.
    crate::support::signal(nodes[0].pid(), "KILL");
    let survivors = &apis[1..];
    let left = units(&apis[1], &op, "bob", "balance").await;
    assert_eq!(left, 140 * 100);
    // Every call bob can pay for is served by the survivors, down to his
    // last token, though each node's grants hold part of his balance...
    let statuses = calls_through(survivors, &bob, 140, 10).await;
    let served = statuses.iter().filter(|&&status| status == 200).count();
    assert_eq!(served, 140, "{statuses:?}");
    // ... and only then is a call refused, on any node: he cannot pay.
    for api in survivors {
        api.send(paid_call(api, &bob, None)).await.error(402, "insufficient_balance");
    }
    assert_eq!(units(&apis[1], &op, "bob", "balance").await, 0);
    nodes_alive(survivors, 2).await;
    drop(nodes);
    database.drop().await;
}

#[tokio::test]
async fn a_single_node_market_moves_to_postgres_and_its_audit_still_passes() {
    let Some(database) = Database::create("migrate").await else { return };
    let mut single = TestServer::start_with(&[("inference_threads", "1"), ("checkpoint_interval_ms", "200")]);
    let (api, op) = (single.api(), single.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "linear", 100).await;
    deposit(&api, &op, "bob", 10_000, "bank-1").await;
    let mut answers = vec![];
    for i in 0..5 {
        answers.push(api.send(paid_call(&api, &bob, Some(&format!("key-{i}")))).await.ok(200).clone());
    }
    checkpoints_reach(std::slice::from_ref(&api), 5).await;
    let audit = tempfile::tempdir().expect("a folder");
    run_audit(&single, audit.path(), &["--creator", "alice", "--key", &alice]);
    assert!(single.terminate().success());

    let output = std::process::Command::new(BINARY)
        .args(["migrate", "--from"])
        .arg(&single.data_dir)
        .args(["--to", &database.url])
        .output()
        .expect("run vitrine migrate");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("log_leaves") && text.contains("transfers"), "{text}");
    // Twice: the database has a market now.
    let again = std::process::Command::new(BINARY)
        .args(["migrate", "--from"])
        .arg(&single.data_dir)
        .args(["--to", &database.url])
        .output()
        .expect("run vitrine migrate");
    assert!(!again.status.success());

    let blobs = single.data_dir.join("blobs");
    let moved = TestServer::on_data_dir_with(
        single.data_dir.clone(),
        &[
            ("database_url", database.url.as_str()),
            ("blob_dir", blobs.to_str().expect("a UTF-8 path")),
            ("inference_threads", "1"),
            ("checkpoint_interval_ms", "200"),
        ],
    );
    let api = moved.api();
    assert_eq!(units(&api, &op, "bob", "balance").await, 10_000 - 500);
    // A retry replays its first answer; a new call goes on the same log.
    assert_eq!(api.send(paid_call(&api, &bob, Some("key-3"))).await.ok(200), &answers[3]);
    let next = api.send(paid_call(&api, &bob, None)).await.ok(200).clone();
    assert_eq!(next["receipt"]["log_index"], 5);
    checkpoints_reach(std::slice::from_ref(&api), 6).await;
    // The auditor's pinned key and checkpoint still hold: same log, same key.
    let text = run_audit(&moved, audit.path(), &["--creator", "alice", "--key", &alice]);
    assert!(text.contains(&opg(80 * 6)), "{text}");
    drop(moved);
    database.drop().await;
}

/// Nodes that share no folder find every model in an S3-compatible store:
/// uploaded through one node, run and downloaded through another.
#[tokio::test]
async fn nodes_with_folders_of_their_own_share_models_through_an_s3_store() {
    let Some(database) = Database::create("s3_nodes").await else { return };
    let Some(bucket) = store::TestBucket::create("nodes").await else { return database.drop().await };
    let nodes: Vec<TestServer> = ["a", "b"]
        .into_iter()
        .map(|node| {
            let settings = [
                ("database_url", database.url.as_str()),
                ("node_id", node),
                ("blob_url", bucket.url.as_str()),
                ("inference_threads", "1"),
            ];
            TestServer::start_with_env(&settings, &bucket.env())
        })
        .collect();
    let Market { apis, op: _, alice: _, bob } = linear_market(&nodes, 1_000).await;
    let cached = |node: &TestServer| {
        let blobs = node.data_dir.join("blobs");
        std::fs::read_dir(&blobs).map_or(0, |dirs| {
            dirs.flatten()
                .filter(|d| d.file_name() != "tmp")
                .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
                .sum::<usize>()
        })
    };
    assert_eq!((cached(&nodes[0]), cached(&nodes[1])), (1, 0));

    // Node b runs the model it never received: fetched from the store, then cached.
    let answer = apis[1].send(paid_call(&apis[1], &bob, None)).await;
    assert_eq!(answer.ok(200)["receipt"]["node"], "node-b");
    assert_eq!(cached(&nodes[1]), 1);
    let versions = apis[1].get("/v1/models/alice/linear/versions", None).await.ok(200).clone();
    let digest = versions["items"][0]["blob_sha256"].as_str().expect("a digest").to_owned();
    let file = apis[1].http.get(format!("{}/v1/blobs/{digest}", apis[1].url)).send().await.expect("download");
    assert_eq!(file.status(), 200);
    let bytes = file.bytes().await.expect("the file");
    assert_eq!(domain::Sha256::digest(&bytes).to_hex(), digest);
    drop(nodes);
    database.drop().await;
}

/// A TCP forwarder to `target` that the test can cut: every connection
/// through it closed and none accepted after (a store that stops
/// answering, without stopping the store other tests share).
struct Forwarder {
    url: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Forwarder {
    async fn start(target: &str) -> Forwarder {
        let address = target.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let spawned = tasks.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let address = address.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&address).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                spawned.lock().expect("the tasks").push(connection.abort_handle());
            }
        });
        tasks.lock().expect("the tasks").push(accepting.abort_handle());
        Forwarder { url, tasks }
    }

    fn cut(&self) {
        self.tasks.lock().expect("the tasks").drain(..).for_each(|task| task.abort());
    }
}

/// A node whose S3-compatible store stops answering says so (503
/// `unavailable`, with `Retry-After`), and charges, records and keeps
/// nothing: for a call whose model it must fetch, for a download, and for
/// an upload (which answered 500 `internal` before); another node, still
/// reaching the store, serves on. (Two threads: nodes start blocking one,
/// the forwarder runs on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_s3_store_stops_answering_says_so_and_charges_nothing() {
    let Some(database) = Database::create("s3_outage").await else { return };
    let Some(bucket) = store::TestBucket::create("outage").await else { return database.drop().await };
    let forwarder = Forwarder::start(&bucket.endpoint).await;
    let through = |env: Vec<(String, String)>| -> Vec<(String, String)> {
        env.into_iter()
            .map(|(name, value)| match name.as_str() {
                "AWS_ENDPOINT_URL" => (name, forwarder.url.clone()),
                _ => (name, value),
            })
            .collect()
    };
    let settings =
        |node| [("database_url", database.url.as_str()), ("node_id", node), ("blob_url", bucket.url.as_str())];
    let nodes = [
        TestServer::start_with_env(&settings("a"), &bucket.env()),
        TestServer::start_with_env(&settings("b"), &through(bucket.env())),
    ];
    let Market { apis, op, alice, bob } = linear_market(&nodes, 100_000).await;
    let versions = apis[0].get("/v1/models/alice/linear/versions", None).await.ok(200).clone();
    let digest = versions["items"][0]["blob_sha256"].as_str().expect("a digest").to_owned();

    forwarder.cut();
    // A call on node b, which never had the model's file; an upload there.
    apis[1].send(paid_call(&apis[1], &bob, None)).await.error(503, "unavailable");
    let upload =
        apis[1].upload("/v1/models/alice/linear/versions", Some(&alice), crate::support::fixture("linear.onnx"));
    upload.await.error(503, "unavailable");
    let download = apis[1].http.get(format!("{}/v1/blobs/{digest}", apis[1].url)).send().await.expect("an answer");
    assert_eq!(download.status(), 503);
    assert_eq!(download.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));

    // Nothing was charged or kept (node b's grant on the balance stays
    // held for its next calls); node a serves on.
    assert_eq!(units(&apis[0], &op, "bob", "balance").await, 100_000);
    let versions = apis[0].get("/v1/models/alice/linear/versions", None).await.ok(200).clone();
    assert_eq!(versions["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(apis[0].send(paid_call(&apis[0], &bob, None)).await.ok(200)["receipt"]["node"], "node-a");
    assert_eq!(units(&apis[0], &op, "bob", "balance").await, 100_000 - 100);
    drop(nodes);
    database.drop().await;
}

/// Runs `vitrine serve` with `settings` on a fresh data folder, expecting
/// it to refuse to start: what it said.
fn serve_refused(settings: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("a data folder");
    let mut command = std::process::Command::new(BINARY);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path());
    for (key, value) in settings {
        command.arg("--set").arg(format!("{key}={value}"));
    }
    for (name, _) in std::env::vars() {
        if name.starts_with("VITRINE_") || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("run vitrine serve");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "it started: {said}");
    said
}

#[tokio::test]
async fn a_node_that_would_not_find_the_markets_models_or_shares_a_name_refuses_to_start() {
    let Some(database) = Database::create("refused_nodes").await else { return };
    let blobs = tempfile::tempdir().expect("a blob folder");
    let shared = blobs.path().to_str().expect("a UTF-8 path");
    let first =
        TestServer::start_with(&[("database_url", database.url.as_str()), ("node_id", "a"), ("blob_dir", shared)]);
    // A node with a blob folder of its own: models uploaded through node a
    // would be missing there.
    let said = serve_refused(&[("database_url", database.url.as_str()), ("node_id", "b")]);
    assert!(said.contains("is not the one the other nodes of this market use") && said.contains("blob_dir"), "{said}");
    // A second node named "a": the two would take each other's grants.
    let said = serve_refused(&[("database_url", database.url.as_str()), ("node_id", "a"), ("blob_dir", shared)]);
    assert!(said.contains("another node named \"a\" is alive on this market"), "{said}");
    // Once node a is gone, its name is free again: it starts again at once.
    crate::support::signal(first.pid(), "KILL");
    let again = TestServer::on_data_dir_with(
        first.data_dir.clone(),
        &[("database_url", database.url.as_str()), ("node_id", "a"), ("blob_dir", shared)],
    );
    again.api().get("/v1/health", None).await.ok(200);
    drop((again, first));
    database.drop().await;
}
