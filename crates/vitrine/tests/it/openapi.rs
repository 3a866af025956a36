use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::TestServer;

/// The routes of `shared/API.md` this server implements so far: the document
/// must list each of them (and may list more).
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("get", "/v1/account"),
    ("post", "/v1/models"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{owner}/{name}"),
    ("patch", "/v1/models/{owner}/{name}"),
    ("post", "/v1/models/{owner}/{name}/versions"),
    ("get", "/v1/models/{owner}/{name}/versions"),
    ("get", "/v1/blobs/{sha256}"),
    ("post", "/v1/models/{owner}/{name}/infer"),
    ("post", "/v1/models/{owner}/{name}/versions/{version}/infer"),
    ("get", "/v1/account/transfers"),
    ("post", "/v1/admin/deposits"),
    ("get", "/v1/log/checkpoint"),
    ("get", "/v1/log/key"),
    ("get", "/v1/log/entries"),
    ("get", "/v1/log/proof/inclusion"),
    ("get", "/v1/log/proof/consistency"),
    ("get", "/v1/receipts/{index}"),
];

/// Every operation in the OpenAPI document is called on a live server, and
/// must answer with a status the document lists for it.
/// Routes of a market with a chain (`tests/it/chain.rs` runs them on one).
const NEED_A_CHAIN: &[&str] = &[
    "/v1/chain/reserves",
    "/v1/account/topup",
    "/v1/account/addresses/challenge",
    "/v1/account/addresses",
    "/v1/payouts/automatic",
    "/v1/log/anchors",
];

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let server = TestServer::start_with(&[("dev", "true")]);
    let api = server.api();
    let operator = server.operator_key.clone();
    let document = api.get("/v1/openapi.json", None).await.ok(200).clone();
    let alice = api.signup("alice").await;
    let version = api.model_with_version(&alice, "alice", "linear", "linear").await;
    let sha = version["blob_sha256"].as_str().unwrap().to_owned();
    // Deleting gets a model of its own: the rest still use alice/linear.
    api.model_with_version(&alice, "alice", "doomed", "linear").await;
    let deposit = json!({"account": "alice", "amount": "1000", "reference": "setup"});
    api.post("/v1/admin/deposits", Some(&operator), deposit).await.ok(201);
    // One paid call, so that the log has a leaf.
    let bob = api.signup("bob").await;
    let deposit = json!({"account": "bob", "amount": "1000", "reference": "setup-bob"});
    api.post("/v1/admin/deposits", Some(&operator), deposit).await.ok(201);
    api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": "10"})).await.ok(200);
    let paid = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
    api.post("/v1/models/alice/linear/infer", Some(&bob), paid).await.ok(200);
    let payouts: Vec<i64> =
        futures_util::future::join_all((0..2).map(|_| api.post("/v1/payouts", Some(&alice), json!({"amount": "10"}))))
            .await
            .iter()
            .map(|a| a.ok(201)["id"].as_i64().unwrap())
            .collect();

    let mut operations = BTreeSet::new();
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations.insert((method.clone(), path.clone()));
            if path.contains("/uploads") {
                // A resumable upload's routes go in their order, below.
                continue;
            }
            let concrete = path
                .replace("/v1/admin/accounts/{name}", "/v1/admin/accounts/alice")
                .replace("/v1/stats/creators/{name}", "/v1/stats/creators/alice")
                .replace("{owner}", "alice")
                .replace(
                    "{name}",
                    match (method.as_str(), path.as_str()) {
                        ("post", "/v1/models/{owner}/{name}") => "x",
                        ("delete", "/v1/models/{owner}/{name}") => "doomed",
                        (_, "/v1/admin/models/{owner}/{name}/takedown") => "doomed",
                        _ => "linear",
                    },
                )
                .replace("{version}", "1")
                .replace("{sha256}", &sha)
                .replace("{id}", &payouts[usize::from(path.ends_with("/reject"))].to_string())
                .replace("{index}", "0");
            // Query parameters the log routes require.
            let concrete = match path.as_str() {
                "/v1/log/entries" => format!("{concrete}?start=0&end=1"),
                "/v1/log/proof/inclusion" => format!("{concrete}?index=0&size=1"),
                "/v1/log/proof/consistency" => format!("{concrete}?from=0&to=1"),
                _ => concrete,
            };
            let for_operator = path.starts_with("/v1/admin/") || path.ends_with("/quarantine");
            let key = if for_operator { &operator } else { &alice };
            if method == "delete" && (path.ends_with("/quarantine") || path.ends_with("/takedown")) {
                // Lifting needs a quarantine to lift, restoring a take-down.
                let body = json!({"reason": "for the lift"});
                api.post(&concrete, Some(&operator), body).await.ok(200);
            }
            let mut request = api.request(method.to_uppercase().parse().unwrap(), &concrete, Some(key));
            request = match (method.as_str(), path.as_str()) {
                ("post", "/v1/accounts") => request.json(&json!({"name": "carol"})),
                ("post", "/v1/admin/deposits") => {
                    request.json(&json!({"account": "alice", "amount": "5", "reference": "again"}))
                }
                ("post", "/v1/dev/faucet") | ("post", "/v1/payouts") | ("post", "/v1/account/topup") => {
                    request.json(&json!({"amount": "3"}))
                }
                ("post", "/v1/account/addresses") => request.json(&json!({"address": "0x00", "signature": "0x00"})),
                ("put", "/v1/payouts/automatic") => request.json(&json!({"address": "0x00", "threshold": "5"})),
                ("post", p) if p.starts_with("/v1/admin/payouts/") => request.json(&json!({"reference": "bank-1"})),
                ("post", p) if p.ends_with("/quarantine") || p.ends_with("/takedown") => {
                    request.json(&json!({"reason": "taken down"}))
                }
                ("patch", p) if p.ends_with("/{version}") => request.json(&json!({"yanked": false})),
                ("post", "/v1/models") => request.json(&json!({"name": "fresh", "task": "other"})),
                ("patch", _) => request.json(&json!({"description": "patched"})),
                ("post", p) if p.ends_with("/versions") => request
                    .header("content-type", "application/octet-stream")
                    .body(crate::support::fixture("linear.onnx")),
                ("post", p) if p.ends_with("/infer") => {
                    request.json(&json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}}))
                }
                _ => request,
            };
            let answer = api.send(request).await;
            let documented: Vec<String> = operation["responses"].as_object().unwrap().keys().cloned().collect();
            assert!(
                documented.contains(&answer.status.to_string()),
                "{method} {path} answered {} ({}), the document lists {documented:?}",
                answer.status,
                answer.body
            );
            if NEED_A_CHAIN.contains(&path.as_str()) {
                // This market has none: the documented 404, everywhere.
                assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
                continue;
            }
            assert!(answer.status < 300, "{method} {path} should succeed here: {}", answer.body);
            if answer.status >= 400 {
                assert!(answer.body["error"]["code"].is_string());
            }
        }
    }
    // A resumable upload, route by route: start, where it stands, a piece,
    // commit; and one given up.
    let documented = |method: &str, path: &str, status: u16| {
        let responses = &document["paths"][path][method]["responses"];
        assert!(responses.get(status.to_string()).is_some(), "{method} {path} answered {status}, not documented");
    };
    let model = crate::support::fixture("linear.onnx");
    let uploads = "/v1/models/{owner}/{name}/uploads";
    let one = format!("{uploads}/{{id}}");
    let start = || api.post("/v1/models/alice/linear/uploads", Some(&alice), json!({"size_bytes": model.len()}));
    let started = start().await;
    documented("post", uploads, started.status);
    let session = format!("/v1/models/alice/linear/uploads/{}", started.ok(201)["id"].as_str().unwrap());
    let stands = api.get(&session, Some(&alice)).await;
    documented("get", &one, stands.status);
    stands.ok(200);
    let piece = api
        .request(reqwest::Method::PATCH, &session, Some(&alice))
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(model.clone());
    let piece = api.send(piece).await;
    documented("patch", &one, piece.status);
    piece.ok(200);
    let sha256 = domain::Sha256::digest(&model).to_hex();
    let committed = api.post(&format!("{session}/commit"), Some(&alice), json!({"sha256": sha256})).await;
    documented("post", &format!("{one}/commit"), committed.status);
    committed.ok(201);
    let abandoned = start().await.ok(201)["id"].as_str().unwrap().to_owned();
    let deleted = api.delete(&format!("/v1/models/alice/linear/uploads/{abandoned}"), Some(&alice)).await;
    documented("delete", &one, deleted.status);
    assert_eq!(deleted.status, 204);

    for (method, path) in CONTRACT_ROUTES {
        assert!(operations.contains(&(method.to_string(), path.to_string())), "the document lacks {method} {path}");
    }
    // Error bodies are documented too.
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    assert!(matches!(document["openapi"], Value::String(_)));
}
