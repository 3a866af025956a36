use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{REFERENCE_FIXTURES, TestServer, assert_tensor_close, fixture};

fn expected(name: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("{name}.expected.json"))).unwrap()
}

fn linear_input(shape: Value, data: Value) -> Value {
    json!({"inputs": {"x": {"dtype": "f32", "shape": shape, "data": data}}})
}

#[tokio::test]
async fn every_fixture_matches_the_independent_reference() {
    fixtures_match_the_reference(TestServer::start(), crate::support::engine_under_test()).await;
}

/// The same models on ONNX Runtime: the same answers, and each version says
/// which engine validated it.
#[tokio::test]
async fn every_fixture_matches_the_independent_reference_on_onnxruntime_too() {
    let Some(library) = crate::isolation::onnxruntime_library() else { return };
    let server = TestServer::start_with(&[("engine", "onnxruntime"), ("onnxruntime_library", &library)]);
    fixtures_match_the_reference(server, "onnxruntime").await;
}

async fn fixtures_match_the_reference(server: TestServer, engine: &str) {
    let api = server.api();
    // The server says what runs its models, and which release.
    let health = api.get("/v1/health", None).await.ok(200).clone();
    assert_eq!(health["engine"]["name"], engine);
    let release = health["engine"]["version"].as_str().unwrap_or_default();
    assert!(release.split('.').count() == 3 && release.split('.').all(|n| n.parse::<u32>().is_ok()), "{health}");
    let alice = api.signup("alice").await;
    for name in REFERENCE_FIXTURES {
        let model = name.replace('_', "-");
        let version = api.model_with_version(&alice, "alice", &model, name).await;
        assert_eq!(version["engine"], engine, "{name}");
        let reference = expected(name);
        let answer = api
            .post(&format!("/v1/models/alice/{model}/infer"), Some(&alice), json!({"inputs": reference["inputs"]}))
            .await;
        let body = answer.ok(200);
        assert_eq!(body["version"], 1);
        assert_eq!(body["receipt"], Value::Null, "free models have no receipt");
        assert!(body["latency_ms"].as_f64().unwrap() >= 0.0);
        let outputs = reference["outputs"].as_object().unwrap();
        assert_eq!(body["outputs"].as_object().unwrap().len(), outputs.len(), "{name}");
        for (output, tensor) in outputs {
            assert_tensor_close(&body["outputs"][output], tensor, &format!("{name}.{output}"));
        }
    }
}

#[tokio::test]
async fn one_plan_serves_every_batch_size_and_versions_can_be_chosen() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "m", "linear").await;
    api.upload("/v1/models/alice/m/versions", Some(&alice), fixture("mlp.onnx")).await.ok(201);
    for batch in [1usize, 7, 64] {
        let data: Vec<f32> = (0..batch * 4).map(|i| i as f32 / 10.0).collect();
        let answer = api
            .post("/v1/models/alice/m/versions/1/infer", Some(&alice), linear_input(json!([batch, 4]), json!(data)))
            .await;
        assert_eq!(answer.ok(200)["outputs"]["y"]["shape"], json!([batch, 1]));
    }
    // The latest version is the MLP, which takes 8 features.
    let eight = linear_input(json!([1, 8]), json!([0, 0, 0, 0, 0, 0, 0, 1]));
    let answer = api.post("/v1/models/alice/m/infer", Some(&alice), eight).await;
    assert_eq!(
        (answer.ok(200)["version"].as_i64(), answer.body["outputs"]["probabilities"]["shape"].clone()),
        (Some(2), json!([1, 3]))
    );
    let four = linear_input(json!([1, 4]), json!([1, 2, 3, 4]));
    api.post("/v1/models/alice/m/versions/3/infer", Some(&alice), four.clone()).await.error(404, "not_found");
    api.post("/v1/models/alice/m/versions/x/infer", Some(&alice), four).await.error(404, "not_found");
}

#[tokio::test]
async fn inputs_that_do_not_fit_the_model_are_refused_before_running() {
    let server = TestServer::start_with(&[("tensor_elements_max", "100")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.model_with_version(&alice, "alice", "pair", "two_inputs").await;
    api.model_with_version(&alice, "alice", "embed", "embedding").await;
    let linear = "/v1/models/alice/linear/infer";
    let ok = |shape: Value, data: Value| linear_input(shape, data);

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            linear,
            json!({"inputs": {"z": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}}),
            "unknown input 'z'",
        ),
        (linear, json!({"inputs": {}}), "missing input 'x'"),
        (linear, json!({"inputs": {"x": {"dtype": "i64", "shape": [1, 4], "data": [1, 2, 3, 4]}}}), "dtype i64"),
        (linear, json!({"inputs": {"x": {"dtype": "f8", "shape": [1, 4], "data": [1, 2, 3, 4]}}}), "unknown dtype"),
        (linear, json!({"inputs": {"x": {"dtype": "f16", "shape": [1, 4], "data": [1, 2, 3, 4]}}}), "dtype f16"),
        (linear, ok(json!([4]), json!([1, 2, 3, 4])), "1 dimensions"),
        (linear, ok(json!([1, 5]), json!([1, 2, 3, 4, 5])), "dimension 1"),
        (linear, ok(json!([2, 4]), json!([1, 2, 3, 4])), "product"),
        (linear, ok(json!([1, 4]), json!("1,2,3,4")), "not a flat array"),
        (linear, ok(json!([1, 4]), json!([[1, 2], [3, 4]])), "not a flat array"),
        (linear, ok(json!([1, 4]), json!([1, 2, 3, null])), "not a flat array"),
        (
            "/v1/models/alice/pair/infer",
            json!({"inputs": {
                "a": {"dtype": "f32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
                "b": {"dtype": "f32", "shape": [1, 3], "data": [1, 2, 3]}}}),
            "N = 2 from input 'a'",
        ),
        (
            "/v1/models/alice/embed/infer",
            json!({"inputs": {"ids": {"dtype": "i64", "shape": [1, 2], "data": [1, 2.5]}}}),
            "i64",
        ),
        (
            "/v1/models/alice/embed/infer",
            json!({"inputs": {"ids": {"dtype": "i64", "shape": [1, 1], "data": [99]}}}),
            "could not run",
        ),
    ];
    for (path, body, needle) in cases {
        let message = api.post(path, Some(&alice), body.clone()).await.error(422, "invalid_input");
        assert!(message.contains(needle), "{body} -> {message} (wanted '{needle}')");
    }
    let too_many = ok(json!([26, 4]), json!(vec![0.5; 104]));
    let message = api.post(linear, Some(&alice), too_many).await.error(413, "payload_too_large");
    assert!(message.contains("tensor_elements_max"), "{message}");
    api.post(linear, None, ok(json!([1, 4]), json!([1, 2, 3, 4]))).await.error(401, "unauthorized");
    let raw = api
        .request(reqwest::Method::POST, linear, Some(&alice))
        .header("content-type", "application/json")
        .body("{\"inputs\":");
    api.send(raw).await.error(400, "invalid_request");
    api.post(linear, Some(&alice), json!({"input": {}})).await.error(422, "invalid_request");

    api.post("/v1/models", Some(&alice), json!({"name": "empty", "task": "other"})).await.ok(201);
    let message = api
        .post("/v1/models/alice/empty/infer", Some(&alice), ok(json!([1, 4]), json!([1, 2, 3, 4])))
        .await
        .error(404, "not_found");
    assert!(message.contains("no versions"), "{message}");
    api.post("/v1/models/alice/nothing/infer", Some(&alice), ok(json!([1, 4]), json!([1, 2, 3, 4])))
        .await
        .error(404, "not_found");
    // After all that, the model still answers.
    api.post(linear, Some(&alice), ok(json!([1, 4]), json!([1, 2, 3, 4]))).await.ok(200);
}

#[tokio::test]
async fn an_inference_past_its_time_limit_gets_504_while_others_are_served() {
    let server = TestServer::start_with(&[("inference_timeout_ms", "300"), ("inference_threads", "2")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "slow", "slow").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;

    let started = Instant::now();
    let slow = api.post(
        "/v1/models/alice/slow/infer",
        Some(&alice),
        json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.5]}}}),
    );
    let message = slow.await.error(504, "inference_timeout");
    assert!(message.contains("inference_timeout_ms = 300"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "the 504 came only after {:?}", started.elapsed());
    // The slow computation's worker was stopped at the deadline; the models still serve.
    let fast =
        api.post("/v1/models/alice/linear/infer", Some(&alice), linear_input(json!([1, 4]), json!([1, 2, 3, 4])));
    fast.await.ok(200);
    api.get("/v1/health", None).await.ok(200);
}

#[tokio::test]
async fn non_finite_floats_are_the_strings_nan_and_infinity_both_ways() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    let linear = "/v1/models/alice/linear/infer";
    let y = |answer: &Value| answer["outputs"]["y"]["data"].clone();

    let nan = api.post(linear, Some(&alice), linear_input(json!([1, 4]), json!(["NaN", 1, 2, 3]))).await;
    assert_eq!(y(nan.ok(200)), json!(["NaN"]));
    // One infinite input and zeros: the output is infinite, of the weight's sign.
    let infinite =
        api.post(linear, Some(&alice), linear_input(json!([2, 4]), json!(["Infinity", 0, 0, 0, "-Infinity", 0, 0, 0])));
    let data = y(infinite.await.ok(200));
    let signs: Vec<&str> = data.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(signs == ["Infinity", "-Infinity"] || signs == ["-Infinity", "Infinity"], "{data}");
    // Finite values stay numbers beside them.
    let mixed = api.post(linear, Some(&alice), linear_input(json!([2, 4]), json!(["NaN", 0, 0, 0, 1, 2, 3, 4]))).await;
    let data = y(mixed.ok(200));
    assert_eq!(data[0], "NaN");
    assert!(data[1].is_f64(), "{data}");
    // Only those three spellings, and only for floats.
    for wrong in [json!(["nan", 1, 2, 3]), json!(["inf", 1, 2, 3]), json!(["1.5", 1, 2, 3])] {
        let answer = api.post(linear, Some(&alice), linear_input(json!([1, 4]), wrong)).await;
        answer.error(422, "invalid_input");
    }
    api.model_with_version(&alice, "alice", "embedding", "embedding").await;
    let ids = json!({"inputs": {"ids": {"dtype": "i64", "shape": [1, 1], "data": ["NaN"]}}});
    api.post("/v1/models/alice/embedding/infer", Some(&alice), ids).await.error(422, "invalid_input");
}

/// A node that cannot read a model's file (its nodes do not share their
/// model files, or the file was removed behind its back) says so with 503
/// `unavailable`, charging nothing, never 500.
#[tokio::test]
async fn a_model_whose_file_this_node_cannot_read_is_unavailable_not_an_internal_error() {
    let first = TestServer::start_with(&[("inference_threads", "1")]);
    let api = first.api();
    let alice = api.signup("alice").await;
    let version = api.model_with_version(&alice, "alice", "linear", "linear").await;
    let digest = version["blob_sha256"].as_str().unwrap().to_owned();
    let path = first.data_dir.join("blobs").join(&digest[..2]).join(&digest);
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // A second server on the same database, whose workers hold no model yet.
    let second = TestServer::on_data_dir_with(first.data_dir.clone(), &[("inference_threads", "1")]);
    let call = linear_input(json!([1, 4]), json!([1, 2, 3, 4]));
    let message =
        second.api().post("/v1/models/alice/linear/infer", Some(&alice), call).await.error(503, "unavailable");
    assert!(message.contains("cannot read the model's file") && message.contains("blob_dir"), "{message}");
}

/// A metric's value on `/metrics`.
async fn metric(api: &crate::support::Api, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", api.url)).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// With `batch_calls_max`, one caller's concurrent calls of a model run as
/// one batch in a worker, each answered with its own rows, charged and
/// logged as if alone; two callers' calls never share a batch (a model may
/// mix the rows of a batch); a call that fails in a batch fails alone.
#[tokio::test]
async fn one_callers_concurrent_calls_run_as_one_batch_each_answered_charged_and_logged_alone() {
    let server =
        TestServer::start_with(&[("batch_calls_max", "8"), ("batch_wait_us", "300000"), ("inference_threads", "1")]);
    let api = server.api();
    let op = server.operator_key.clone();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    let carol = api.signup("carol").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": "1000"})).await.ok(200);
    for (who, reference) in [("bob", "d1"), ("carol", "d2")] {
        let deposit = json!({"account": who, "amount": "100000", "reference": reference});
        api.post("/v1/admin/deposits", Some(&op), deposit).await.ok(201);
    }
    let path = "/v1/models/alice/linear/infer";
    let rows: Vec<Vec<f32>> = (0..6).map(|i| (0..4).map(|j| (i * 4 + j) as f32 / 7.0).collect()).collect();
    // Each alone, one after the other: the answers a batch must give.
    let mut alone = vec![];
    for row in &rows {
        let answer = api.post(path, Some(&bob), linear_input(json!([1, 4]), json!(row))).await;
        alone.push(answer.ok(200)["outputs"]["y"].clone());
    }
    assert_eq!(metric(&api, "vitrine_batches_total").await, 0, "a call alone is no batch");

    let batched = futures_util::future::join_all(
        rows.iter().map(|row| api.post(path, Some(&bob), linear_input(json!([1, 4]), json!(row)))),
    )
    .await;
    let mut log_indexes = std::collections::BTreeSet::new();
    for (answer, wanted) in batched.iter().zip(&alone) {
        let body = answer.ok(200);
        assert_tensor_close(&body["outputs"]["y"], wanted, "a batched call's own rows");
        assert_eq!(body["price"], "1000");
        log_indexes.insert(body["receipt"]["log_index"].as_u64().unwrap());
    }
    assert_eq!(log_indexes.len(), rows.len(), "each call has its receipt");
    assert!(metric(&api, "vitrine_batches_total").await >= 1);
    let batched_calls = metric(&api, "vitrine_batched_calls_total").await;
    assert!(batched_calls >= 2, "{batched_calls}");
    let balance = api.get("/v1/account", Some(&bob)).await.ok(200)["balance"].clone();
    assert_eq!(balance, json!((100_000 - 12 * 1000).to_string()), "each call charged once");

    // Two callers at once: each alone.
    let two = futures_util::future::join_all(
        [&bob, &carol].map(|key| api.post(path, Some(key), linear_input(json!([1, 4]), json!(rows[0])))),
    )
    .await;
    for answer in &two {
        assert_tensor_close(&answer.ok(200)["outputs"]["y"], &alone[0], "alone");
    }
    assert_eq!(metric(&api, "vitrine_batched_calls_total").await, batched_calls, "no batch across callers");

    // One call of a batch fails (an id outside the table): it fails alone.
    api.model_with_version(&alice, "alice", "embed", "embedding").await;
    let ids = |id: i64| json!({"inputs": {"ids": {"dtype": "i64", "shape": [1, 2], "data": [id, 1]}}});
    let calls = futures_util::future::join_all(
        [3, 99, 5].map(|id| api.post("/v1/models/alice/embed/infer", Some(&bob), ids(id))),
    )
    .await;
    calls[1].error(422, "invalid_input");
    for answer in [&calls[0], &calls[2]] {
        assert_eq!(answer.ok(200)["outputs"]["vectors"]["shape"], json!([1, 2, 4]));
    }
    let reference: Value = serde_json::from_slice(&fixture("embedding.expected.json")).unwrap();
    let table_row_3 = &reference["outputs"]["vectors"]["data"].as_array().unwrap()[8..12]; // ids[2] = 3
    assert_eq!(&calls[0].body["outputs"]["vectors"]["data"].as_array().unwrap()[..4], table_row_3);
}
