//! The authorization matrix as data: every route of the OpenAPI document,
//! tried by every role against a live server, with the status each must
//! get. A route missing from the table fails the test, so a new route comes
//! with its row.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::ledger::linear_call;
use crate::support::{Api, TestServer, fixture};

/// Who calls: nobody, a key that does not exist, the owner of the models
/// and payouts named, another account, the operator.
const ROLES: [&str; 5] = ["anonymous", "bad key", "owner", "other", "operator"];

/// What a request carries.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    /// A fixture model's bytes, as an upload.
    Model(&'static str),
    /// A fixture model's bytes, as the first piece of a resumable upload.
    Piece(&'static str),
}

/// (method, path as in the document, the path called, body, status per role).
type Row = (&'static str, &'static str, String, Option<Body>, [u16; 5]);

#[tokio::test]
async fn every_route_answers_every_role_as_the_matrix_says() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    api.model_with_version(&alice, "alice", "paid", "linear").await;
    api.patch("/v1/models/alice/paid", Some(&alice), json!({"price_per_inference": "1"})).await.ok(200);
    api.model_with_version(&alice, "alice", "secret", "linear").await;
    api.patch("/v1/models/alice/secret", Some(&alice), json!({"visibility": "private"})).await.ok(200);
    api.model_with_version(&alice, "alice", "held", "linear").await;
    api.model_with_version(&alice, "alice", "doomed", "linear").await;
    api.model_with_version(&alice, "alice", "disputed", "linear").await;
    let operator_name = api.get("/v1/account", Some(&op)).await.ok(200)["name"].as_str().unwrap().to_owned();
    for account in ["alice", "bob", operator_name.as_str()] {
        let body = json!({"account": account, "amount": "1000000", "reference": format!("matrix-{account}")});
        api.post("/v1/admin/deposits", Some(&op), body).await.ok(201);
    }
    // A paid call (receipt 0), and two of alice's payouts for the operator to resolve.
    api.post("/v1/models/alice/paid/infer", Some(&bob), linear_call()).await.ok(200);
    let payout = |_: u8| api.post("/v1/payouts", Some(&alice), json!({"amount": "10"}));
    let first = payout(1).await.ok(201)["id"].clone();
    let second = payout(2).await.ok(201)["id"].clone();
    let versions = api.get("/v1/models/alice/linear/versions", None).await;
    let blob = versions.ok(200)["items"][0]["blob_sha256"].as_str().unwrap().to_owned();

    // Two resumable uploads of alice's: one to finish, one to give up.
    let linear_size = fixture("linear.onnx").len();
    let start = || api.post("/v1/models/alice/linear/uploads", Some(&alice), json!({"size_bytes": linear_size}));
    let upload = format!("/v1/models/alice/linear/uploads/{}", start().await.ok(201)["id"].as_str().unwrap());
    let given_up = format!("/v1/models/alice/linear/uploads/{}", start().await.ok(201)["id"].as_str().unwrap());
    let linear_sha256 = domain::Sha256::digest(&fixture("linear.onnx")).to_hex();
    let owner_writes = [401, 401, 200, 403, 403];

    let model = |name: &str| Some(Body::Json(json!({"name": name, "task": "other"})));
    let json = |value: Value| Some(Body::Json(value));
    let ok = [200; 5];
    let public = ok;
    // Public reads whose answer depends on who asks (private models): a key
    // that is sent must be valid, never silently read as nobody's.
    let public_for_anyone_valid = [200, 401, 200, 200, 200];
    // A private model is seen by its owner alone; to the others, and to the
    // operator, it does not exist.
    let owner_only = [404, 401, 200, 404, 404];
    let private = [401, 401, 200, 200, 200];
    let admin = [401, 401, 403, 403, 200];
    let rows: Vec<Row> = vec![
        ("GET", "/metrics", "/metrics".into(), None, public),
        ("GET", "/v1/health", "/v1/health".into(), None, public),
        // Public, and this market has no chain: the same 404 for anyone
        // (`chain.rs` has a market with one).
        ("GET", "/v1/chain/reserves", "/v1/chain/reserves".into(), None, [404; 5]),
        // An account's routes of a market with a chain: a caller is checked first.
        (
            "POST",
            "/v1/account/topup",
            "/v1/account/topup".into(),
            json(json!({"amount": "1"})),
            [401, 401, 404, 404, 404],
        ),
        (
            "GET",
            "/v1/account/addresses/challenge",
            "/v1/account/addresses/challenge".into(),
            None,
            [401, 401, 404, 404, 404],
        ),
        ("GET", "/v1/account/addresses", "/v1/account/addresses".into(), None, [401, 401, 404, 404, 404]),
        (
            "POST",
            "/v1/account/addresses",
            "/v1/account/addresses".into(),
            json(json!({"address": "0x00", "signature": "0x00"})),
            [401, 401, 404, 404, 404],
        ),
        // Automatic payouts need a chain: a key is checked first, then 404.
        ("GET", "/v1/payouts/automatic", "/v1/payouts/automatic".into(), None, [401, 401, 404, 404, 404]),
        (
            "PUT",
            "/v1/payouts/automatic",
            "/v1/payouts/automatic".into(),
            json(json!({"address": "0x00", "threshold": "5"})),
            [401, 401, 404, 404, 404],
        ),
        ("DELETE", "/v1/payouts/automatic", "/v1/payouts/automatic".into(), None, [401, 401, 404, 404, 404]),
        ("GET", "/v1/account", "/v1/account".into(), None, private),
        ("GET", "/v1/account/earnings", "/v1/account/earnings".into(), None, private),
        ("GET", "/v1/account/pseudonym", "/v1/account/pseudonym".into(), None, private),
        ("GET", "/v1/account/spending", "/v1/account/spending".into(), None, private),
        ("GET", "/v1/account/transfers", "/v1/account/transfers".into(), None, private),
        // Signing up ignores any key: the first takes the name, the rest find it taken.
        ("POST", "/v1/accounts", "/v1/accounts".into(), json(json!({"name": "newcomer"})), [201, 409, 409, 409, 409]),
        ("GET", "/v1/admin/accounts/{name}", "/v1/admin/accounts/bob".into(), None, admin),
        (
            "POST",
            "/v1/admin/deposits",
            "/v1/admin/deposits".into(),
            json(json!({"account": "bob", "amount": "1", "reference": "matrix-row"})),
            [401, 401, 403, 403, 201],
        ),
        ("GET", "/v1/admin/ledger", "/v1/admin/ledger".into(), None, admin),
        ("GET", "/v1/admin/payouts", "/v1/admin/payouts".into(), None, admin),
        (
            "POST",
            "/v1/admin/payouts/{id}/complete",
            format!("/v1/admin/payouts/{first}/complete"),
            json(json!({"reference": "wire 1"})),
            admin,
        ),
        (
            "POST",
            "/v1/admin/payouts/{id}/reject",
            format!("/v1/admin/payouts/{second}/reject"),
            json(json!({"reference": "no"})),
            admin,
        ),
        ("GET", "/v1/admin/quarantines", "/v1/admin/quarantines".into(), None, admin),
        (
            "POST",
            "/v1/admin/models/{owner}/{name}/takedown",
            "/v1/admin/models/alice/disputed/takedown".into(),
            json(json!({"reason": "a row of the matrix"})),
            admin,
        ),
        (
            "DELETE",
            "/v1/admin/models/{owner}/{name}/takedown",
            "/v1/admin/models/alice/disputed/takedown".into(),
            None,
            admin,
        ),
        ("GET", "/v1/blobs/{sha256}", format!("/v1/blobs/{blob}"), None, public_for_anyone_valid),
        // Only development servers (`serve --dev`) have a faucet; a caller is checked first.
        ("POST", "/v1/dev/faucet", "/v1/dev/faucet".into(), json(json!({"amount": "1"})), [401, 401, 404, 404, 404]),
        // Anchors need a chain: public, and 404 without one.
        ("GET", "/v1/log/anchors", "/v1/log/anchors".into(), None, [404, 404, 404, 404, 404]),
        ("GET", "/v1/log/checkpoint", "/v1/log/checkpoint".into(), None, public),
        ("GET", "/v1/log/checkpoints", "/v1/log/checkpoints".into(), None, public),
        ("GET", "/v1/log/entries", "/v1/log/entries?start=0&end=1".into(), None, public),
        ("GET", "/v1/log/key", "/v1/log/key".into(), None, public),
        ("GET", "/v1/log/proof/consistency", "/v1/log/proof/consistency?from=1&to=1".into(), None, public),
        ("GET", "/v1/log/proof/inclusion", "/v1/log/proof/inclusion?index=0&size=1".into(), None, public),
        ("GET", "/v1/models", "/v1/models".into(), None, public_for_anyone_valid),
        ("POST", "/v1/models", "/v1/models".into(), model("fresh"), [401, 401, 201, 201, 201]),
        ("GET", "/v1/models/{owner}/{name}", "/v1/models/alice/linear".into(), None, public_for_anyone_valid),
        ("GET", "/v1/models/{owner}/{name}", "/v1/models/alice/secret".into(), None, owner_only),
        (
            "PATCH",
            "/v1/models/{owner}/{name}",
            "/v1/models/alice/linear".into(),
            json(json!({"description": "a row of the matrix"})),
            [401, 401, 200, 403, 403],
        ),
        (
            "POST",
            "/v1/models/{owner}/{name}/infer",
            "/v1/models/alice/linear/infer".into(),
            json(linear_call()),
            private,
        ),
        (
            "POST",
            "/v1/models/{owner}/{name}/infer",
            "/v1/models/alice/secret/infer".into(),
            json(linear_call()),
            [401, 401, 200, 404, 404],
        ),
        (
            "GET",
            "/v1/models/{owner}/{name}/versions",
            "/v1/models/alice/linear/versions".into(),
            None,
            public_for_anyone_valid,
        ),
        (
            "POST",
            "/v1/models/{owner}/{name}/versions",
            "/v1/models/alice/linear/versions".into(),
            Some(Body::Model("linear.onnx")),
            [401, 401, 201, 403, 403],
        ),
        ("GET", "/v1/models/{owner}/{name}/versions", "/v1/models/alice/secret/versions".into(), None, owner_only),
        (
            "GET",
            "/v1/models/{owner}/{name}/versions/{version}",
            "/v1/models/alice/linear/versions/1".into(),
            None,
            public_for_anyone_valid,
        ),
        (
            "GET",
            "/v1/models/{owner}/{name}/versions/{version}",
            "/v1/models/alice/secret/versions/1".into(),
            None,
            owner_only,
        ),
        (
            "PATCH",
            "/v1/models/{owner}/{name}/versions/{version}",
            "/v1/models/alice/linear/versions/1".into(),
            json(json!({"yanked": false})),
            [401, 401, 200, 403, 403],
        ),
        (
            "POST",
            "/v1/models/{owner}/{name}/versions/{version}/infer",
            "/v1/models/alice/linear/versions/1/infer".into(),
            json(linear_call()),
            private,
        ),
        (
            "POST",
            "/v1/models/{owner}/{name}/versions/{version}/quarantine",
            "/v1/models/alice/held/versions/1/quarantine".into(),
            json(json!({"reason": "a row of the matrix"})),
            admin,
        ),
        (
            "DELETE",
            "/v1/models/{owner}/{name}/versions/{version}/quarantine",
            "/v1/models/alice/held/versions/1/quarantine".into(),
            None,
            admin,
        ),
        (
            "POST",
            "/v1/models/{owner}/{name}/uploads",
            "/v1/models/alice/linear/uploads".into(),
            json(json!({"size_bytes": 10})),
            [401, 401, 201, 403, 403],
        ),
        ("GET", "/v1/models/{owner}/{name}/uploads/{id}", upload.clone(), None, owner_writes),
        (
            "PATCH",
            "/v1/models/{owner}/{name}/uploads/{id}",
            upload.clone(),
            Some(Body::Piece("linear.onnx")),
            owner_writes,
        ),
        (
            "POST",
            "/v1/models/{owner}/{name}/uploads/{id}/commit",
            format!("{upload}/commit"),
            json(json!({"sha256": linear_sha256})),
            [401, 401, 201, 403, 403],
        ),
        ("DELETE", "/v1/models/{owner}/{name}/uploads/{id}", given_up, None, [401, 401, 204, 403, 403]),
        ("GET", "/v1/payouts", "/v1/payouts".into(), None, private),
        ("POST", "/v1/payouts", "/v1/payouts".into(), json(json!({"amount": "1"})), [401, 401, 201, 201, 201]),
        ("GET", "/v1/receipts/{index}", "/v1/receipts/0".into(), None, public),
        ("GET", "/v1/stats/creators/{name}", "/v1/stats/creators/alice".into(), None, public),
        ("GET", "/v1/stats/market", "/v1/stats/market".into(), None, public),
        ("GET", "/v1/stats/market/series", "/v1/stats/market/series".into(), None, public),
        (
            "GET",
            "/v1/stats/models/{owner}/{name}",
            "/v1/stats/models/alice/linear".into(),
            None,
            public_for_anyone_valid,
        ),
        ("GET", "/v1/stats/models/{owner}/{name}", "/v1/stats/models/alice/secret".into(), None, owner_only),
        (
            "GET",
            "/v1/stats/models/{owner}/{name}/demand",
            "/v1/stats/models/alice/linear/demand".into(),
            None,
            public_for_anyone_valid,
        ),
        ("GET", "/v1/stats/tasks", "/v1/stats/tasks".into(), None, public),
        ("GET", "/v1/stats/trending", "/v1/stats/trending".into(), None, public),
        // Last: once its owner deleted it, the model is gone for the rest.
        ("DELETE", "/v1/models/{owner}/{name}", "/v1/models/alice/doomed".into(), None, [401, 401, 200, 410, 410]),
    ];

    // Every route of the document has a row.
    let document = api.get("/v1/openapi.json", None).await.ok(200).clone();
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, operations)| {
            operations.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let covered: BTreeSet<(String, String)> =
        rows.iter().map(|(method, path, ..)| (method.to_string(), path.to_string())).collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(missing.is_empty(), "routes without a row in the matrix: {missing:?}");

    let keys = [
        None,
        Some("vk_thisKeyDoesNotExistAtAll0000000000000000"),
        Some(alice.as_str()),
        Some(bob.as_str()),
        Some(op.as_str()),
    ];
    let mut wrong = vec![];
    for (method, documented_path, path, body, expected) in &rows {
        let responses = &document["paths"][documented_path][method.to_lowercase()]["responses"];
        for (role, (key, want)) in ROLES.iter().zip(keys.iter().zip(expected)) {
            let got = call(&api, method, path, body.as_ref(), *key).await;
            if got.0 != *want {
                wrong.push(format!("{method} {path} as {role}: {} (expected {want}) {}", got.0, got.1));
            }
            if responses.get(got.0.to_string()).is_none() {
                wrong.push(format!("{method} {path} as {role}: {} is not in the OpenAPI document", got.0));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers differ from the matrix:\n{}",
        wrong.len(),
        rows.len() * 5,
        wrong.join("\n")
    );
}

async fn call(api: &Api, method: &str, path: &str, body: Option<&Body>, key: Option<&str>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let request = api.request(method, path, key);
    let request = match body {
        None => request,
        Some(Body::Json(value)) => request.json(value),
        Some(Body::Model(name)) => request.header("content-type", "application/octet-stream").body(fixture(name)),
        Some(Body::Piece(name)) => request
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "0")
            .body(fixture(name)),
    };
    let answer = api.send(request).await;
    (answer.status, answer.body["error"]["code"].as_str().unwrap_or_default().to_owned())
}
