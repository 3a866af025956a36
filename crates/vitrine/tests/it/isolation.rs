//! Untrusted models run in worker processes: hostile models (the corpus in
//! fixtures/models/hostile, written by fixtures/hostile.py) are refused or
//! answered with a stable error while ordinary paid calls go on; deadlines
//! free their slot; a killed worker charges nothing; repeated crashes
//! quarantine a version until the operator lifts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{success, vitrine};
use crate::support::{Api, TestServer, fixture_path, signal};

const MIB: u64 = 1024 * 1024;

fn linear_call() -> Value {
    json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}})
}

/// Minutes of one core (40 products of 2048 x 2048 matrices): it never ends
/// before a test's deadline, however fast the machine.
fn endless_model() -> Vec<u8> {
    std::fs::read(fixture_path("hostile/matmul_chain.onnx")).unwrap()
}

fn slow_call() -> Value {
    json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.5]}}})
}

async fn deposit(api: &Api, operator: &str, account: &str, amount: u64) {
    let body = json!({"account": account, "amount": amount.to_string(), "reference": format!("d-{account}-{amount}")});
    api.post("/v1/admin/deposits", Some(operator), body).await.ok(201);
}

async fn priced_model(api: &Api, key: &str, owner: &str, name: &str, bytes: Vec<u8>, price: u64) {
    let body = json!({"name": name, "task": "other", "price_per_inference": price.to_string()});
    api.post("/v1/models", Some(key), body).await.ok(201);
    api.upload(&format!("/v1/models/{owner}/{name}/versions"), Some(key), bytes).await.ok(201);
}

async fn balance(api: &Api, key: &str) -> (i128, i128) {
    let account = api.get("/v1/account", Some(key)).await.ok(200).clone();
    let units = |field: &str| account[field].as_str().unwrap().parse::<i128>().unwrap();
    (units("balance"), units("held"))
}

/// The server's model workers: its children started as `vitrine worker`.
fn worker_pids(server_pid: u32) -> Vec<u32> {
    children_started_as(server_pid, b"worker\0")
}

/// The server's live children whose command line ends with `ending`.
fn children_started_as(server_pid: u32, ending: &[u8]) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, fields)) = stat.rsplit_once(')') else { continue };
        let parent = fields.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        let state = fields.split_whitespace().next();
        let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if parent == Some(server_pid) && state != Some("Z") && command.ends_with(ending) {
            pids.push(pid);
        }
    }
    pids
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`) in bytes.
fn memory_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).and_then(|v| v.split_whitespace().next());
    kib.and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
}

fn resident_bytes(pid: u32) -> u64 {
    memory_field(pid, "VmRSS")
}

/// Samples the resident memory of the server and its workers together
/// every 20 ms until stopped; returns the largest total seen.
fn sample_memory(server_pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            let total =
                resident_bytes(server_pid) + worker_pids(server_pid).into_iter().map(resident_bytes).sum::<u64>();
            peak = peak.max(total);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// A tensor of the corpus: `fill` stands for `data` of one repeated value.
fn corpus_tensor(tensor: &Value) -> Value {
    let Some(fill) = tensor.get("fill") else { return tensor.clone() };
    let count: u64 = tensor["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product();
    json!({"dtype": tensor["dtype"], "shape": tensor["shape"], "data": vec![fill.clone(); count as usize]})
}

/// ONNX Runtime's library for the tests that run models on it
/// (`VITRINE_TEST_ONNXRUNTIME`, which `scripts/test` sets from
/// `scripts/onnxruntime`); `None` skips them, but not under `CI`.
pub(crate) fn onnxruntime_library() -> Option<String> {
    match std::env::var("VITRINE_TEST_ONNXRUNTIME") {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI runs models on ONNX Runtime too: set VITRINE_TEST_ONNXRUNTIME")
        }
        _ => None,
    }
}

#[tokio::test]
async fn hostile_models_are_refused_or_answered_and_ordinary_paid_calls_go_on() {
    hostile_corpus(&[]).await;
}

#[tokio::test]
async fn hostile_models_are_refused_or_answered_on_onnxruntime_too() {
    let Some(library) = onnxruntime_library() else { return };
    hostile_corpus(&[("engine", "onnxruntime"), ("onnxruntime_library", &library)]).await;
}

/// The corpus of `fixtures/hostile.py` against a server with `engine`'s
/// settings: each model refused at upload or answered with a stable error
/// (or its right outputs), ordinary paid calls served beside them, the
/// server and its workers within their memory bounds.
async fn hostile_corpus(engine: &[(&str, &str)]) {
    const WORKERS: u64 = 3;
    const WORKER_MEMORY: u64 = 1024 * MIB;
    let worker_memory = WORKER_MEMORY.to_string();
    let mut settings = vec![
        ("inference_threads", "3"),
        ("worker_memory_bytes_max", worker_memory.as_str()),
        // `matmul_chain` takes about 7 s of one core: it runs into this.
        ("inference_timeout_ms", "4000"),
        // `wide` takes minutes to load, `deep` about two seconds.
        ("model_load_timeout_ms", "8000"),
    ];
    settings.extend_from_slice(engine);
    let on_onnxruntime = !engine.is_empty() || crate::support::engine_under_test() == "onnxruntime";
    let server = TestServer::start_with(&settings);
    let api = server.api();
    let op = server.operator_key.clone();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "linear", crate::support::fixture("linear.onnx"), 7).await;
    deposit(&api, &op, "bob", 1_000_000).await;

    // Ordinary paid calls, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let memory = sample_memory(server.pid(), stop.clone());
    let succeeded = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (api, bob, stop, succeeded) = (api.clone(), bob.clone(), stop.clone(), succeeded.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await;
                match answer.status {
                    200 => succeeded.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures.push(answer.body.to_string());
                        0
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        }));
    }

    let corpus: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixture_path("hostile/corpus.json")).unwrap()).unwrap();
    assert!(corpus.len() >= 14, "the corpus lost models");
    for (index, entry) in corpus.iter().enumerate() {
        let name = entry["name"].as_str().unwrap();
        let model = format!("h{index}");
        api.post("/v1/models", Some(&alice), json!({"name": model, "task": "other"})).await.ok(201);
        let bytes = std::fs::read(fixture_path(&format!("hostile/{name}.onnx"))).unwrap();
        let uploaded = api.upload(&format!("/v1/models/alice/{model}/versions"), Some(&alice), bytes).await;
        // ONNX Runtime may judge a model otherwise: the corpus says so.
        let (call, expect) = match entry.get("onnxruntime") {
            Some(other) if on_onnxruntime => (&other["call"], &other["expect"]),
            _ => (&entry["inputs"], &entry["expect"]),
        };
        if expect == "refused" {
            let message = uploaded.error(422, "invalid_model");
            let mentions = match entry.get("onnxruntime") {
                Some(other) if on_onnxruntime => other.get("refusal_mentions"),
                _ if on_onnxruntime => None,
                _ => entry.get("refusal_mentions"),
            };
            if let Some(mentions) = mentions.and_then(Value::as_str) {
                assert!(message.contains(mentions), "{name}: {message}");
            }
        } else {
            uploaded.ok(201);
            let inputs: serde_json::Map<String, Value> = call
                .as_object()
                .unwrap()
                .iter()
                .map(|(input, tensor)| (input.clone(), corpus_tensor(tensor)))
                .collect();
            let answer =
                api.post(&format!("/v1/models/alice/{model}/infer"), Some(&bob), json!({"inputs": inputs})).await;
            match expect {
                Value::Array(codes) => {
                    let code = answer.body["error"]["code"].as_str().unwrap_or_default();
                    assert!(codes.iter().any(|c| c == code), "{name}: {} {}", answer.status, answer.body);
                }
                // Outputs, or (when a worker holds other models) one of these codes.
                _ if answer.status != 200 && expect.get("or").is_some() => {
                    let code = answer.body["error"]["code"].as_str().unwrap_or_default();
                    assert!(expect["or"].as_array().unwrap().iter().any(|c| c == code), "{name}: {}", answer.body);
                }
                _ => assert_eq!(answer.ok(200)["outputs"], expect["outputs"], "{name}"),
            }
        }
        // After each, the server answers, and so do ordinary models.
        api.get("/v1/health", None).await.ok(200);
        api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200);
    }

    stop.store(true, Ordering::Relaxed);
    for task in load {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "ordinary paid calls failed beside the hostile ones: {failures:?}");
    }
    let peak = memory.join().unwrap();
    eprintln!(
        "{} hostile models, {} ordinary paid calls beside them; server and workers peaked at {} MiB, the server alone at {} MiB",
        corpus.len(),
        succeeded.load(Ordering::Relaxed),
        peak / MIB,
        memory_field(server.pid(), "VmHWM") / MIB
    );
    // Each worker is bounded by the operating system; the server itself
    // never held a hostile tensor.
    let budget = WORKERS * WORKER_MEMORY + 512 * MIB;
    assert!(peak < budget, "server and workers peaked at {} MiB, above {} MiB", peak / MIB, budget / MIB);
    // Every ordinary call paid its price, and nothing else was charged.
    let paid = succeeded.load(Ordering::Relaxed) + corpus.len() as u64;
    assert!(paid > corpus.len() as u64, "the ordinary load made no calls");
    assert_eq!(balance(&api, &bob).await, (1_000_000 - 7 * paid as i128, 0));
}

#[tokio::test]
async fn a_timed_out_call_frees_its_slot_at_once_and_records_its_cpu_time() {
    // One worker: if the timed-out computation kept it, the next call would wait.
    let server = TestServer::start_with(&[("inference_threads", "1"), ("inference_timeout_ms", "1500")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    priced_model(&api, &alice, "alice", "slow", endless_model(), 0).await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.post("/v1/models/alice/linear/infer", Some(&alice), linear_call()).await.ok(200);

    let started = Instant::now();
    let answer = api.post("/v1/models/alice/slow/infer", Some(&alice), slow_call()).await;
    let message = answer.error(504, "inference_timeout");
    assert!(message.contains("inference_timeout_ms = 1500"), "{message}");
    let after = started.elapsed();
    assert!(after < Duration::from_millis(1500 + 1000), "the 504 came {after:?} after the call");
    // The slot is free: the only worker was stopped and another serves.
    api.post("/v1/models/alice/linear/infer", Some(&alice), linear_call()).await.ok(200);
    assert_eq!(worker_pids(server.pid()).len(), 1, "one worker, not a stopped one still running beside it");

    // The timed-out call is a failed usage event with the CPU time it burned.
    let events = usage_events(&server).await;
    let slow = events.iter().find(|(status, _)| status == "inference_timeout").expect("the timed-out call");
    assert!(slow.1 > 0, "no CPU time recorded for the timed-out call: {events:?}");
}

async fn usage_events(server: &TestServer) -> Vec<(String, i64)> {
    let url = format!("sqlite://{}?mode=ro", server.data_dir.join("vitrine.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, cpu_us FROM usage_events ORDER BY id").fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

/// A server with one worker; alice's `slow` model of these bytes at 100
/// and `linear` at 10; bob with 1000 to spend. Returns bob's key.
async fn one_worker_market(slow: Vec<u8>) -> (TestServer, Api, String) {
    let server = TestServer::start_with(&[("inference_threads", "1"), ("inference_timeout_ms", "30000")]);
    let api = server.api();
    let op = server.operator_key.clone();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "slow", slow, 100).await;
    priced_model(&api, &alice, "alice", "linear", crate::support::fixture("linear.onnx"), 10).await;
    deposit(&api, &op, "bob", 1000).await;
    (server, api, bob)
}

/// Bob's calls of `slow` with `body`, each started (its price held) before
/// the next.
async fn three_calls_in_order(
    api: &Api,
    bob: &str,
    body: Value,
) -> Vec<tokio::task::JoinHandle<crate::support::Answer>> {
    let mut calls = Vec::new();
    for held in [100, 200, 300] {
        let (caller, key, body) = (api.clone(), bob.to_owned(), body.clone());
        let call = async move { caller.post("/v1/models/alice/slow/infer", Some(&key), body).await };
        calls.push(tokio::spawn(call));
        let deadline = Instant::now() + Duration::from_secs(10);
        while balance(api, bob).await.1 != held {
            assert!(Instant::now() < deadline, "call {} never started", held / 100);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    calls
}

/// Waits until the first pipelined request: the third of
/// `three_calls_in_order`, written behind the second when it starts.
async fn third_written_behind_second(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.metric("vitrine_worker_requests_pipelined_total").await != 1 {
        assert!(Instant::now() < deadline, "the third call was never written behind the second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_call_charges_nothing_and_the_next_call_succeeds() {
    let (server, api, bob) = one_worker_market(endless_model()).await;

    let call = {
        let (api, bob) = (api.clone(), bob.clone());
        tokio::spawn(async move { api.post("/v1/models/alice/slow/infer", Some(&bob), slow_call()).await })
    };
    // While it runs, its price is held.
    let deadline = Instant::now() + Duration::from_secs(10);
    while balance(&api, &bob).await.1 != 100 {
        assert!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let workers = worker_pids(server.pid());
    assert_eq!(workers.len(), 1, "{workers:?}");
    signal(workers[0], "KILL");

    let message = call.await.unwrap().error(502, "model_crashed");
    assert!(message.contains("SIGKILL"), "{message}");
    assert_eq!(balance(&api, &bob).await, (1000, 0), "a crashed call charges nothing");
    // A new worker serves the next call.
    api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200);
    assert_eq!(balance(&api, &bob).await, (990, 0));
    let statuses: Vec<String> = usage_events(&server).await.into_iter().map(|(status, _)| status).collect();
    assert_eq!(statuses, ["model_crashed", "ok"], "the crash is a failed call in usage");
    let metrics = metrics(&api).await;
    assert!(metrics.contains("\nvitrine_worker_crashes_total 1\n"), "{metrics}");
    assert!(metrics.contains("\nvitrine_workers 1\n"), "{metrics}");
}

/// Waits until the server's one worker is a new one (not `old`), and returns it.
async fn new_worker(server: &TestServer, old: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let [worker] = worker_pids(server.pid())[..]
            && worker != old
        {
            return worker;
        }
        assert!(Instant::now() < deadline, "no new worker after {old} was killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_call_written_behind_one_whose_worker_dies_waits_again_and_runs_on_a_new_worker() {
    let (server, api, bob) = one_worker_market(endless_model()).await;

    // Three calls of the endless model, in order: the first runs on the one
    // worker, the other two wait their turn.
    let mut calls = three_calls_in_order(&api, &bob, slow_call()).await;
    let third = calls.pop().unwrap();
    let second = calls.pop().unwrap();
    let first = calls.pop().unwrap();
    assert_eq!(api.metric("vitrine_worker_requests_pipelined_total").await, 0, "nothing ran behind the first call");

    // Its worker killed, the first call fails; the second gets a new worker,
    // and the third is written into that worker's pipe behind it.
    let [one] = worker_pids(server.pid())[..] else { panic!("not one worker") };
    signal(one, "KILL");
    first.await.unwrap().error(502, "model_crashed");
    let two = new_worker(&server, one).await;
    third_written_behind_second(&api).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // That worker dies in the second call: the third never ran there, so it
    // is not failed with it; it waits again, and runs on the next worker.
    signal(two, "KILL");
    second.await.unwrap().error(502, "model_crashed");
    let three = new_worker(&server, two).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "the call written behind a dying one failed with it");
    assert_eq!(balance(&api, &bob).await, (1000, 100), "only the third call's price is still held");
    signal(three, "KILL");
    third.await.unwrap().error(502, "model_crashed");

    assert_eq!(balance(&api, &bob).await, (1000, 0), "crashed calls charge nothing");
    api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200);
    assert_eq!(balance(&api, &bob).await, (990, 0));
    assert_eq!(api.metric("vitrine_worker_crashes_total").await, 3);
    assert_eq!(api.metric("vitrine_worker_requests_pipelined_total").await, 1);
}

#[tokio::test]
async fn a_call_given_up_while_written_behind_another_leaves_the_worker_serving() {
    // Seconds of one core per call, and it ends.
    let (server, api, bob) = one_worker_market(crate::support::fixture("slow.onnx")).await;

    // Three calls in order: the first runs, the second waits for the worker,
    // and the third is written behind the second when the second starts.
    // (A small input: the model's products stay finite.)
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.001]}}});
    let mut calls = three_calls_in_order(&api, &bob, body).await;
    let [worker] = worker_pids(server.pid())[..] else { panic!("not one worker") };
    let starts = api.metric("vitrine_worker_starts_total").await;
    third_written_behind_second(&api).await;
    // Its caller hangs up: the call is given up while its request is in the
    // worker's pipe.
    let third = calls.pop().unwrap();
    third.abort();
    let _ = third.await;
    // The first call is done and charged; only the second's price is held.
    let deadline = Instant::now() + Duration::from_secs(10);
    while balance(&api, &bob).await != (900, 100) {
        assert!(Instant::now() < deadline, "the call given up still holds its price");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!calls[1].is_finished(), "the second call ended before the third was given up");
    for call in calls {
        call.await.unwrap().ok(200);
    }
    // The worker answers the given-up call to nobody, then serves on: it was
    // neither killed nor replaced.
    api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200);
    assert_eq!(worker_pids(server.pid()), [worker], "the worker was replaced");
    assert_eq!(api.metric("vitrine_worker_starts_total").await, starts);
    assert_eq!(api.metric("vitrine_worker_crashes_total").await, 0);
    assert_eq!(api.metric("vitrine_worker_timeouts_total").await, 0);
    assert_eq!(balance(&api, &bob).await, (1000 - 2 * 100 - 10, 0), "the call given up is not charged");
}

async fn metrics(api: &Api) -> String {
    reqwest::get(format!("{}/metrics", api.url)).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_version_that_keeps_exhausting_its_memory_is_quarantined_until_the_operator_lifts_it() {
    let server = TestServer::start_with(&[
        ("inference_threads", "2"),
        ("worker_memory_bytes_max", &(512 * MIB).to_string()),
        ("quarantine_strikes", "3"),
    ]);
    let api = server.api();
    let op = server.operator_key.clone();
    let alice = api.signup("alice").await;
    let bytes = std::fs::read(fixture_path("hostile/pad_at_call.onnx")).unwrap();
    priced_model(&api, &alice, "alice", "pad", bytes, 5).await;
    // Three callers, each of whose calls exhausts the worker's memory.
    let mut callers = vec![];
    for name in ["bob", "carol", "dave"] {
        callers.push(api.signup(name).await);
        deposit(&api, &op, name, 1000).await;
    }
    let bob = callers[0].clone();
    let call = |key: &String| {
        let (api, key) = (api.clone(), key.clone());
        async move { api.post("/v1/models/alice/pad/infer", Some(&key), slow_call()).await }
    };

    for key in &callers {
        let message = call(key).await.error(422, "model_out_of_memory");
        assert!(message.contains(&format!("worker_memory_bytes_max = {}", 512 * MIB)), "{message}");
    }
    let message = call(&bob).await.error(503, "model_quarantined");
    assert!(message.contains("calls by 3 callers") && message.contains("ran out of memory 3 times"), "{message}");
    assert!(message.contains("against 0 successful calls"), "{message}");
    for key in &callers {
        assert_eq!(balance(&api, key).await, (1000, 0), "no failed or refused call was charged");
    }

    // The owner sees it on the version; the operator in the list.
    let versions = api.get("/v1/models/alice/pad/versions", Some(&alice)).await.ok(200).clone();
    assert!(versions["items"][0]["quarantine"]["reason"].as_str().unwrap().contains("out of memory"));
    let config = tempfile::NamedTempFile::new().unwrap();
    let listed = success(&vitrine(&server, config.path(), &["--key", &op, "quarantine", "list"]));
    assert!(listed.contains("alice/pad@1"), "{listed}");
    // Only the operator may lift it.
    let lift = "/v1/models/alice/pad/versions/1/quarantine";
    api.send(api.request(reqwest::Method::DELETE, lift, Some(&alice))).await.error(403, "forbidden");
    let lifted = success(&vitrine(&server, config.path(), &["--key", &op, "quarantine", "lift", "alice/pad", "1"]));
    assert!(lifted.contains("back in service"), "{lifted}");
    call(&bob).await.error(422, "model_out_of_memory");
    api.send(api.request(reqwest::Method::DELETE, lift, Some(&op))).await.error(404, "not_found");

    // The operator can also take a version down by hand, with a reason.
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    let body = json!({"reason": "reported as malware"});
    let down = api.post("/v1/models/alice/linear/versions/1/quarantine", Some(&op), body.clone()).await;
    assert_eq!(down.ok(200)["quarantine"]["reason"], "reported as malware");
    api.post("/v1/models/alice/linear/versions/1/quarantine", Some(&alice), body).await.error(403, "forbidden");
    let message =
        api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.error(503, "model_quarantined");
    assert!(message.contains("reported as malware"), "{message}");

    let metrics = metrics(&api).await;
    assert!(metrics.contains("\nvitrine_worker_out_of_memory_total 4\n"), "{metrics}");
}

#[tokio::test]
async fn strangers_failing_a_model_on_purpose_do_not_take_it_from_its_callers() {
    let server = TestServer::start_with(&[
        ("inference_threads", "2"),
        ("worker_memory_bytes_max", &(512 * MIB).to_string()),
        ("quarantine_strikes", "3"),
        ("tensor_elements_max", "1000"),
    ]);
    let api = server.api();
    let op = server.operator_key.clone();
    let alice = api.signup("alice").await;
    // A Range whose limit is the call's input: small limits are served,
    // 10^10 exhausts any worker's memory.
    let bytes = std::fs::read(fixture_path("hostile/range_from_input.onnx")).unwrap();
    priced_model(&api, &alice, "alice", "range", bytes, 5).await;
    let bob = api.signup("bob").await;
    deposit(&api, &op, "bob", 1000).await;
    let limit = |n: i64| json!({"inputs": {"limit": {"dtype": "i64", "shape": [], "data": [n]}}});
    let call = |key: String, n: i64| {
        let api = api.clone();
        async move { api.post("/v1/models/alice/range/infer", Some(&key), limit(n)).await }
    };

    // One stranger fails it as often as they like: only their calls fail.
    let mallory = api.signup("mallory").await;
    deposit(&api, &op, "mallory", 1000).await;
    for _ in 0..5 {
        call(mallory.clone(), 10_000_000_000).await.error(422, "model_out_of_memory");
    }
    for _ in 0..10 {
        assert_eq!(call(bob.clone(), 3).await.ok(200)["outputs"]["y"]["data"], json!([0, 1, 2]));
    }
    // Two more strangers make three callers, but the model served more calls
    // than it failed meanwhile: still in service.
    for name in ["mallory2", "mallory3"] {
        let key = api.signup(name).await;
        deposit(&api, &op, name, 1000).await;
        call(key.clone(), 10_000_000_000).await.error(422, "model_out_of_memory");
        call(key, 10_000_000_000).await.error(422, "model_out_of_memory");
    }
    call(bob.clone(), 3).await.ok(200);
    assert_eq!(balance(&api, &bob).await, (1000 - 11 * 5, 0));

    // An empty tensor whose other size is absurd never reaches a worker.
    let runs_before = metrics(&api).await;
    let vast = json!({"inputs": {"limit": {"dtype": "i64", "shape": [0, 1u64 << 62], "data": []}}});
    let message = api.post("/v1/models/alice/range/infer", Some(&mallory), vast).await.error(413, "payload_too_large");
    assert!(message.contains("tensor_elements_max = 1000") && message.contains("beside a zero"), "{message}");
    let runs_after = metrics(&api).await;
    let runs = |metrics: &str| metrics.lines().find(|l| l.starts_with("vitrine_model_runs_total ")).map(str::to_owned);
    assert_eq!(runs(&runs_before), runs(&runs_after), "no model ran");
}

/// Answers whose clients never read them are counted while they wait in the
/// server's memory, against the caller's key and in all, and dropped at
/// their write deadline: a stranger cannot pile them up.
#[tokio::test]
async fn answers_nobody_reads_are_bounded_and_dropped_at_their_deadline() {
    use tokio::io::AsyncWriteExt;

    let server = TestServer::start_with(&[
        ("inference_threads", "2"),
        ("unsent_answer_bytes_per_key_max", &(20 * MIB).to_string()),
        ("response_write_idle_timeout_ms", "1500"),
    ]);
    let api = server.api();
    let mallory = api.signup("mallory").await;
    let bob = api.signup("bob").await;
    // Free: the outer product of the caller's vector with itself; 2,000
    // elements in, four million out, about 50 MB of JSON: more than the
    // sockets' buffers on both sides hold.
    let bytes = std::fs::read(fixture_path("hostile/outer_product.onnx")).unwrap();
    priced_model(&api, &mallory, "mallory", "outer", bytes, 0).await;
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [2000], "data": vec![0.123_456_7f32; 2000]}}});
    let body = body.to_string();
    let request = format!(
        "POST /v1/models/mallory/outer/infer HTTP/1.1\r\nHost: vitrine\r\nAuthorization: Bearer {mallory}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let small = json!({"inputs": {"x": {"dtype": "f32", "shape": [2], "data": [1, 2]}}});
    let mut unread = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://")).await.unwrap();
    unread.write_all(request.as_bytes()).await.unwrap();
    // Until the answer is built and waits for its reader.
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.metric("vitrine_unsent_answer_bytes").await < 20 * MIB {
        assert!(Instant::now() < deadline, "the unread answer was never built");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message =
        api.post("/v1/models/mallory/outer/infer", Some(&mallory), small.clone()).await.error(429, "rate_limited");
    assert!(message.contains("unsent_answer_bytes_per_key_max"), "{message}");
    // Other keys are served meanwhile.
    let answer = api.post("/v1/models/mallory/outer/infer", Some(&bob), small.clone()).await;
    assert_eq!(answer.ok(200)["outputs"]["y"]["shape"], json!([2, 2]));

    // Nobody reads: past the write deadline the connection is closed and its
    // answer dropped, though the socket stays open on this side.
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.metric("vitrine_unsent_answer_bytes").await > 0 {
        assert!(Instant::now() < deadline, "an unread answer is still held");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.post("/v1/models/mallory/outer/infer", Some(&mallory), small).await.ok(200);
    drop(unread);
}

/// A call whose client goes away before its answer is still a leaf and a
/// usage event (error `client_closed`), charging nothing.
#[tokio::test]
async fn a_call_its_client_abandons_is_logged_and_charges_nothing() {
    let (server, api, bob) = one_worker_market(endless_model()).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    let sent = impatient
        .post(format!("{}/v1/models/alice/slow/infer", server.url))
        .bearer_auth(&bob)
        .json(&slow_call())
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up: {sent:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = usage_events(&server).await;
        if events.iter().any(|(status, _)| status == "client_closed") {
            break;
        }
        assert!(Instant::now() < deadline, "no record of the abandoned call: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(balance(&api, &bob).await, (1000, 0), "nothing charged, nothing held");
}

#[tokio::test]
async fn without_isolation_models_run_in_the_server_process() {
    let server = TestServer::start_with(&[("isolation", "none")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.post("/v1/models/alice/linear/infer", Some(&alice), linear_call()).await.ok(200);
    assert!(worker_pids(server.pid()).is_empty());
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}

/// Workers dying in a loop (aborting past their memory bound at upload,
/// killed at their deadline) leak nothing in the server: no file
/// descriptors, no zombie processes, no memory. `CRASH_LOOP_ITERATIONS`
/// makes it a soak (`scripts/crash-loop`).
#[tokio::test]
async fn workers_dying_in_a_loop_leak_nothing_in_the_server() {
    let iterations: usize = std::env::var("CRASH_LOOP_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let server = TestServer::start_with(&[
        ("inference_threads", "2"),
        ("worker_memory_bytes_max", &(512 * MIB).to_string()),
        ("inference_timeout_ms", "300"),
        ("quarantine_strikes", "0"),
    ]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "slow", "slow").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.post("/v1/models", Some(&alice), json!({"name": "hostile", "task": "other"})).await.ok(201);
    let pad_at_load = std::fs::read(fixture_path("hostile/pad_at_load.onnx")).unwrap();
    let warm = || api.post("/v1/models/alice/linear/infer", Some(&alice), linear_call());
    warm().await.ok(200);
    let (files_before, resident_before) = (open_files(server.pid()), resident_bytes(server.pid()));

    for _ in 0..iterations {
        // Aborts its worker on tract (SIGABRT after a failed allocation);
        // ONNX Runtime takes it (its call would run out of memory). Either
        // way its upload worker goes after it.
        let upload = api.upload("/v1/models/alice/hostile/versions", Some(&alice), pad_at_load.clone()).await;
        if crate::support::engine_under_test() == "tract" {
            upload.error(422, "invalid_model");
        } else {
            upload.ok(201);
        }
        // Killed at its deadline.
        api.post("/v1/models/alice/slow/infer", Some(&alice), slow_call()).await.error(504, "inference_timeout");
        warm().await.ok(200);
    }

    // Let the last replacement worker finish starting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let files_after = open_files(server.pid());
    // Room for the pipes of both slots' workers (3 each; one may have been
    // idle at the start) and a connection or two; a leak grows with the
    // iterations instead.
    assert!(files_after <= files_before + 8, "file descriptors grew from {files_before} to {files_after}");
    let metrics = metrics(&api).await;
    let started = metrics.lines().find_map(|l| l.strip_prefix("vitrine_worker_starts_total ")).unwrap();
    assert!(started.parse::<usize>().unwrap() >= 2 * iterations, "{metrics}");
    let workers = worker_pids(server.pid());
    assert!(workers.len() <= 2, "more workers than slots: {workers:?}");
    let zombies = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&server.pid().to_string().as_str())
        })
        .count();
    assert!(zombies <= 2, "{zombies} dead workers were never reaped");
    let resident_after = resident_bytes(server.pid());
    assert!(
        resident_after < resident_before + 64 * MIB,
        "the server grew from {} MiB to {} MiB",
        resident_before / MIB,
        resident_after / MIB
    );
}

/// One key cannot hold every worker: its calls at once and per minute are
/// bounded (429 with Retry-After) while other keys are served.
#[tokio::test]
async fn one_key_is_limited_in_calls_at_once_and_per_minute_while_others_go_on() {
    let server = TestServer::start_with(&[
        ("calls_per_key_concurrent_max", "1"),
        ("calls_per_key_per_minute_max", "6"),
        ("inference_timeout_ms", "1500"),
        ("inference_threads", "2"),
    ]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "slow", endless_model(), 0).await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    let linear = "/v1/models/alice/linear/infer";

    // At once: bob's second call waits for nobody, it is refused.
    let slow = {
        let (api, bob) = (api.clone(), bob.clone());
        tokio::spawn(async move { api.post("/v1/models/alice/slow/infer", Some(&bob), slow_call()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = reqwest::Client::new()
        .post(format!("{}{linear}", api.url))
        .bearer_auth(&bob)
        .json(&linear_call())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("calls_per_key_concurrent_max"), "{body}");
    // Another key is served meanwhile.
    api.post(linear, Some(&alice), linear_call()).await.ok(200);
    slow.await.unwrap().error(504, "inference_timeout");
    api.post(linear, Some(&bob), linear_call()).await.ok(200);

    // Per minute: bob has made 2 calls of 6 (the refused one took none).
    for _ in 0..4 {
        api.post(linear, Some(&bob), linear_call()).await.ok(200);
    }
    let message = api.post(linear, Some(&bob), linear_call()).await.error(429, "rate_limited");
    assert!(message.contains("calls_per_key_per_minute_max"), "{message}");
    // alice (2 uploads, 1 call) still has room.
    api.post(linear, Some(&alice), linear_call()).await.ok(200);
}

/// Waits until at least `count` calls wait for a worker.
async fn calls_waiting(api: &Api, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.metric("vitrine_calls_waiting").await < count {
        assert!(Instant::now() < deadline, "{count} calls never waited for a worker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_callers_many_slow_calls_take_turns_with_another_callers_call() {
    // Two workers; mallory keeps eight slow calls of her own free model
    // going, seconds of a core each.
    let server = TestServer::start_with(&[
        ("inference_threads", "2"),
        ("inference_timeout_ms", "120000"),
        ("hold_expiry_ms", "130000"),
    ]);
    let api = server.api();
    let mallory = api.signup("mallory").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &mallory, "mallory", "slow", crate::support::fixture("slow.onnx"), 0).await;
    priced_model(&api, &mallory, "mallory", "linear", crate::support::fixture("linear.onnx"), 0).await;
    let slow = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.001]}}});
    let finished = Arc::new(AtomicU64::new(0));
    let floods: Vec<_> = (0..8)
        .map(|_| {
            let (api, mallory, slow, finished) = (api.clone(), mallory.clone(), slow.clone(), finished.clone());
            tokio::spawn(async move {
                api.post("/v1/models/mallory/slow/infer", Some(&mallory), slow).await.ok(200);
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    // Two run, two more are written behind them (pipelined), four wait;
    // then bob calls.
    calls_waiting(&api, 4).await;
    api.post("/v1/models/mallory/linear/infer", Some(&bob), linear_call()).await.ok(200);
    // Bob holds no worker and mallory holds two: the first worker freed
    // after the calls already in the workers' pipes is his, ahead of her
    // four calls that came first. (First come, first served, he would have
    // waited for all eight.)
    let before_bob = finished.load(Ordering::SeqCst);
    assert!(before_bob <= 4, "{before_bob} of mallory's calls ran before bob's");
    // Mallory, alone again, gets every worker in turn.
    for flood in floods {
        flood.await.unwrap();
    }
    assert_eq!(api.metric("vitrine_calls_waiting").await, 0);
}

/// Processes the server started as upload workers (`vitrine worker --uploads`).
fn upload_workers(server_pid: u32) -> usize {
    children_started_as(server_pid, b"--uploads\0").len()
}

#[tokio::test]
async fn uploads_validate_in_workers_of_their_own_bounded_per_account_at_once_and_in_time() {
    // One worker for calls. `deep` takes seconds to load.
    let server = TestServer::start_with(&[("inference_threads", "1"), ("uploads_per_account_concurrent_max", "1")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "linear", crate::support::fixture("linear.onnx"), 0).await;
    for name in ["deep", "deep2"] {
        api.post("/v1/models", Some(&alice), json!({"name": name, "task": "other"})).await.ok(201);
    }
    let deep = std::fs::read(fixture_path("hostile/deep.onnx")).unwrap();
    let upload = {
        let (api, alice, deep) = (api.clone(), alice.clone(), deep.clone());
        tokio::spawn(async move { api.upload("/v1/models/alice/deep/versions", Some(&alice), deep).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while upload_workers(server.pid()) == 0 {
        assert!(Instant::now() < deadline, "no upload worker started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While it loads, a second upload of the same account is refused...
    let second = api.upload("/v1/models/alice/deep2/versions", Some(&alice), deep.clone()).await;
    let message = second.error(429, "rate_limited");
    assert!(message.contains("uploads_per_account_concurrent_max"), "{message}");
    // ... and calls go on, on the calls' one worker.
    for _ in 0..5 {
        api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await.ok(200);
    }
    assert!(!upload.is_finished(), "the upload ended before five calls beside it");
    assert_eq!(upload.await.unwrap().ok(201)["version"], 1);
    // Each upload has a fresh worker, gone once it answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while upload_workers(server.pid()) > 0 {
        assert!(Instant::now() < deadline, "the upload worker outlived its upload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.metric("vitrine_upload_workers").await, 0);
    api.upload("/v1/models/alice/deep2/versions", Some(&alice), crate::support::fixture("linear.onnx")).await.ok(201);

    // Worker time is counted against the uploader: past its hourly budget,
    // its uploads wait; another account's do not.
    let server = TestServer::start_with(&[("model_load_ms_per_account_per_hour", "100")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let carol = api.signup("carol").await;
    for (key, owner) in [(&alice, "alice"), (&carol, "carol")] {
        api.post("/v1/models", Some(key), json!({"name": "deep", "task": "other"})).await.ok(201);
        let path = format!("/v1/models/{owner}/deep/versions");
        api.upload(&path, Some(key), deep.clone()).await.ok(201);
    }
    let refused = api.upload("/v1/models/alice/deep/versions", Some(&alice), deep.clone()).await;
    let message = refused.error(429, "rate_limited");
    assert!(message.contains("model_load_ms_per_account_per_hour = 100 ms"), "{message}");
}

/// ONNX Runtime's Linux build starts a telemetry client with its
/// environment, whose thread later starts another to post to Microsoft's
/// collector: a confined worker is killed for it (SIGSYS), idle or mid-call.
/// With the client kept off, a worker on ONNX Runtime is one thread, and a
/// server running ONNX Runtime in its own process has it off too.
#[tokio::test]
async fn a_worker_on_onnxruntime_is_one_thread_and_sends_no_telemetry() {
    let Some(library) = onnxruntime_library() else { return };
    for isolation in ["process", "none"] {
        let settings = [("engine", "onnxruntime"), ("onnxruntime_library", &library), ("isolation", isolation)];
        let server = TestServer::start_with(&settings);
        let api = server.api();
        let alice = api.signup("alice").await;
        priced_model(&api, &alice, "alice", "linear", crate::support::fixture("linear.onnx"), 0).await;
        let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
        api.post("/v1/models/alice/linear/infer", Some(&alice), body).await.ok(200);
        let environment = |pid: u32| std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let telemetry_off = |pid: u32| environment(pid).split(|&b| b == 0).any(|v| v == b"ORT_DISABLE_TELEMETRY=1");
        if isolation == "none" {
            assert!(telemetry_off(server.pid()), "the server loads ONNX Runtime itself");
            continue;
        }
        let workers = worker_pids(server.pid());
        assert!(!workers.is_empty());
        for pid in workers {
            assert!(telemetry_off(pid), "worker {pid}");
            let threads = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
            assert_eq!(threads, 1, "worker {pid} runs {threads} threads");
        }
    }
}

/// ONNX Runtime's arena keeps the most a session's calls ever needed, and a
/// worker holds many sessions: their high-water marks would add up. Without
/// it, two models that each need 256 MiB for a moment take turns in one
/// worker of 640 MiB, again and again.
#[tokio::test]
async fn models_on_onnxruntime_take_turns_with_a_workers_memory() {
    let Some(library) = onnxruntime_library() else { return };
    let memory = (640 * MIB).to_string();
    let server = TestServer::start_with(&[
        ("engine", "onnxruntime"),
        ("onnxruntime_library", &library),
        ("inference_threads", "1"),
        ("worker_memory_bytes_max", &memory),
    ]);
    let api = server.api();
    let alice = api.signup("alice").await;
    for name in ["wide_a", "wide_b"] {
        priced_model(
            &api,
            &alice,
            "alice",
            &name.replace('_', "-"),
            crate::support::fixture(&format!("{name}.onnx")),
            0,
        )
        .await;
    }
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.5]}}});
    for round in 0..3 {
        for name in ["wide_a", "wide_b"] {
            let answer = api
                .post(&format!("/v1/models/alice/{}/infer", name.replace('_', "-")), Some(&alice), body.clone())
                .await;
            assert_eq!(answer.ok(200)["outputs"]["y"]["data"], json!([33554432.0]), "{name}, round {round}");
        }
    }
}
