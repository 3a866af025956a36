//! A model's life after its upload: owners unlist and delete models and
//! yank versions; the operator takes models down and restores them; every
//! account's models share a storage quota.

use serde_json::{Value, json};

use crate::ledger::linear_call;
use crate::support::{Api, TestServer, fixture};

async fn listed_names(api: &Api, query: &str, key: Option<&str>) -> Vec<String> {
    let page = api.get(&format!("/v1/models?limit=100{query}"), key).await;
    page.ok(200)["items"].as_array().unwrap().iter().map(|m| format!("{}/{}", m["owner"], m["name"])).collect()
}

fn named(owner: &str, name: &str) -> String {
    format!("{}/{}", json!(owner), json!(name))
}

async fn delete(api: &Api, path: &str, key: &str) -> crate::support::Answer {
    api.send(api.request(reqwest::Method::DELETE, path, Some(key))).await
}

#[tokio::test]
async fn an_unlisted_model_is_in_no_listing_but_answers_by_its_name() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "quiet", "linear").await;
    let patched = api.patch("/v1/models/alice/quiet", Some(&alice), json!({"listed": false})).await;
    assert_eq!(patched.ok(200)["listed"], false);

    let quiet = named("alice", "quiet");
    for key in [None, Some(bob.as_str())] {
        assert!(!listed_names(&api, "", key).await.contains(&quiet), "listed for {key:?}");
        assert!(!listed_names(&api, "&q=quiet", key).await.contains(&quiet), "found by search for {key:?}");
        assert!(!listed_names(&api, "&sort=popular", key).await.contains(&quiet), "ranked for {key:?}");
    }
    // Its owner still sees it among their own.
    assert!(listed_names(&api, "&owner=alice", Some(&alice)).await.contains(&quiet));
    // By its name it is there, and it answers calls.
    assert_eq!(api.get("/v1/models/alice/quiet", None).await.ok(200)["listed"], false);
    api.post("/v1/models/alice/quiet/infer", Some(&bob), linear_call()).await.ok(200);

    api.patch("/v1/models/alice/quiet", Some(&alice), json!({"listed": true})).await.ok(200);
    assert!(listed_names(&api, "", None).await.contains(&quiet));
}

#[tokio::test]
async fn a_yanked_version_is_gone_and_latest_skips_it() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "m", "linear").await;
    api.upload("/v1/models/alice/m/versions", Some(&alice), fixture("linear.onnx")).await.ok(201);
    assert_eq!(api.get("/v1/models/alice/m", None).await.ok(200)["latest_version"], 2);

    let yank = json!({"yanked": true, "reason": "wrong weights"});
    api.patch("/v1/models/alice/m/versions/2", Some(&bob), yank.clone()).await.error(403, "forbidden");
    let yanked = api.patch("/v1/models/alice/m/versions/2", Some(&alice), yank).await;
    assert_eq!(yanked.ok(200)["yank"]["reason"], "wrong weights");
    assert_eq!(api.get("/v1/models/alice/m/versions/2", None).await.ok(200)["yank"]["reason"], "wrong weights");
    assert_eq!(api.get("/v1/models/alice/m", None).await.ok(200)["latest_version"], 1);

    // The latest is now version 1; version 2 is gone, with the reason.
    let answer = api.post("/v1/models/alice/m/infer", Some(&bob), linear_call()).await;
    assert_eq!(answer.ok(200)["version"], 1);
    let message = api.post("/v1/models/alice/m/versions/2/infer", Some(&bob), linear_call()).await.error(410, "gone");
    assert!(message.contains("yanked") && message.contains("wrong weights"), "{message}");

    // With every version yanked the model has no latest, and says why.
    api.patch("/v1/models/alice/m/versions/1", Some(&alice), json!({"yanked": true})).await.ok(200);
    assert_eq!(api.get("/v1/models/alice/m", None).await.ok(200)["latest_version"], Value::Null);
    let message = api.post("/v1/models/alice/m/infer", Some(&bob), linear_call()).await.error(410, "gone");
    assert!(message.contains("every version"), "{message}");
    // A reason goes with a yank only; a version that does not exist is 404.
    let unyank_with_reason = json!({"yanked": false, "reason": "x"});
    api.patch("/v1/models/alice/m/versions/1", Some(&alice), unyank_with_reason).await.error(422, "invalid_request");
    api.patch("/v1/models/alice/m/versions/9", Some(&alice), json!({"yanked": true})).await.error(404, "not_found");

    // Put back, it answers again, and yanked calls were not counted as errors.
    let back = api.patch("/v1/models/alice/m/versions/2", Some(&alice), json!({"yanked": false})).await;
    assert_eq!(back.ok(200)["yank"], Value::Null);
    let answer = api.post("/v1/models/alice/m/infer", Some(&bob), linear_call()).await;
    assert_eq!(answer.ok(200)["version"], 2);
    let stats = api.get("/v1/stats/models/alice/m?bucket=hour", None).await;
    let errors: u64 = stats.ok(200)["series"].as_array().unwrap().iter().map(|p| p["errors"].as_u64().unwrap()).sum();
    assert_eq!(errors, 0);
}

#[tokio::test]
async fn a_deleted_model_is_gone_but_its_history_stays() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "paid", "mlp").await;
    api.patch("/v1/models/alice/paid", Some(&alice), json!({"price_per_inference": "100"})).await.ok(200);
    api.model_with_version(&alice, "alice", "twin", "linear").await;
    api.model_with_version(&alice, "alice", "other", "linear").await;
    let deposit = json!({"account": "bob", "amount": "1000", "reference": "d"});
    api.post("/v1/admin/deposits", Some(&op), deposit).await.ok(201);
    let input = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 8], "data": vec![1.0; 8]}}});
    let paid = api.post("/v1/models/alice/paid/infer", Some(&bob), input).await;
    let log_index = paid.ok(200)["receipt"]["log_index"].as_u64().unwrap();
    let blob = api.get("/v1/models/alice/paid/versions/1", None).await.ok(200)["blob_sha256"].clone();
    let storage_before = api.get("/v1/account", Some(&alice)).await.ok(200)["storage_bytes"].as_u64().unwrap();
    let files_before = server.blob_files();

    api.send(api.request(reqwest::Method::DELETE, "/v1/models/alice/paid", Some(&bob))).await.error(403, "forbidden");
    let deleted = delete(&api, "/v1/models/alice/paid", &alice).await;
    let deleted = deleted.ok(200).clone();
    assert_eq!(deleted["model"], "alice/paid");
    let mlp_bytes = fixture("mlp.onnx").len() as u64;
    assert_eq!(deleted["storage_bytes"].as_u64().unwrap(), storage_before - mlp_bytes);

    // Gone for everyone, its owner included: page, versions, calls, changes, file.
    for key in [None, Some(bob.as_str()), Some(alice.as_str()), Some(op.as_str())] {
        let message = api.get("/v1/models/alice/paid", key).await.error(410, "gone");
        assert!(message.contains("deleted"), "{message}");
        api.get("/v1/models/alice/paid/versions", key).await.error(410, "gone");
        assert!(!listed_names(&api, "", key).await.contains(&named("alice", "paid")));
    }
    api.post("/v1/models/alice/paid/infer", Some(&bob), linear_call()).await.error(410, "gone");
    api.patch("/v1/models/alice/paid", Some(&alice), json!({"description": "back?"})).await.error(410, "gone");
    let upload = api.upload("/v1/models/alice/paid/versions", Some(&alice), fixture("mlp.onnx")).await;
    upload.error(410, "gone");
    delete(&api, "/v1/models/alice/paid", &alice).await.error(410, "gone");
    api.get(&format!("/v1/blobs/{}", blob.as_str().unwrap()), None).await.error(404, "not_found");
    assert_eq!(server.blob_files(), files_before - 1, "the file no model uses any more is removed");
    // Its dashboard page says so, with the same status.
    let page = reqwest::get(format!("{}/models/alice/paid", api.url)).await.unwrap();
    assert_eq!(page.status(), 410);
    let html = page.text().await.unwrap();
    assert!(html.contains("No longer here") && html.contains("deleted by its owner"), "{html}");
    // The name is not given out again.
    let again = api.post("/v1/models", Some(&alice), json!({"name": "paid", "task": "other"})).await;
    assert!(again.error(409, "conflict").contains("deleted"));

    // History stays: the receipt, the creator's earnings, the market's calls.
    let receipt = api.get(&format!("/v1/receipts/{log_index}"), None).await;
    assert_eq!(receipt.ok(200)["model"], "alice/paid");
    let earnings = api.get("/v1/account/earnings?group_by=model", Some(&alice)).await;
    assert_eq!(earnings.ok(200)["total"], "80");

    // A file two models share stays while one of them does.
    delete(&api, "/v1/models/alice/twin", &alice).await.ok(200);
    assert_eq!(server.blob_files(), files_before - 1);
    api.post("/v1/models/alice/other/infer", Some(&bob), linear_call()).await.ok(200);
    delete(&api, "/v1/models/alice/other", &alice).await.ok(200);
    assert_eq!(server.blob_files(), files_before - 2);
    assert_eq!(api.get("/v1/account", Some(&alice)).await.ok(200)["storage_bytes"], 0);
}

#[tokio::test]
async fn the_operator_takes_a_model_down_and_restores_it() {
    let server = TestServer::start();
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "m", "linear").await;
    let blob = api.get("/v1/models/alice/m/versions/1", None).await.ok(200)["blob_sha256"].clone();
    let blob_path = format!("/v1/blobs/{}", blob.as_str().unwrap());

    let takedown = json!({"reason": "infringes a licence"});
    api.post("/v1/admin/models/alice/m/takedown", Some(&alice), takedown.clone()).await.error(403, "forbidden");
    api.post("/v1/admin/models/alice/m/takedown", Some(&op), json!({"reason": " "}))
        .await
        .error(422, "invalid_request");
    let down = api.post("/v1/admin/models/alice/m/takedown", Some(&op), takedown).await;
    assert_eq!(down.ok(200)["takedown"]["reason"], "infringes a licence");

    // Gone for everyone else, with the reason; its owner and the operator see it.
    for key in [None, Some(bob.as_str())] {
        let message = api.get("/v1/models/alice/m", key).await.error(410, "gone");
        assert!(message.contains("infringes a licence"), "{message}");
        api.get(&blob_path, key).await.error(404, "not_found");
        assert!(!listed_names(&api, "", key).await.contains(&named("alice", "m")));
    }
    for key in [&alice, &op] {
        let seen = api.get("/v1/models/alice/m", Some(key)).await;
        assert_eq!(seen.ok(200)["takedown"]["reason"], "infringes a licence");
    }
    assert!(listed_names(&api, "&owner=alice", Some(&alice)).await.contains(&named("alice", "m")));
    // No calls, its owner's included, and no new versions.
    for key in [&bob, &alice] {
        api.post("/v1/models/alice/m/infer", Some(key), linear_call()).await.error(410, "gone");
    }
    let upload = api.upload("/v1/models/alice/m/versions", Some(&alice), fixture("linear.onnx")).await;
    upload.error(410, "gone");

    let restored = api.send(api.request(reqwest::Method::DELETE, "/v1/admin/models/alice/m/takedown", Some(&op))).await;
    assert_eq!(restored.ok(200)["takedown"], Value::Null);
    api.post("/v1/models/alice/m/infer", Some(&bob), linear_call()).await.ok(200);
    api.get(&blob_path, None).await.ok(200);
    assert!(listed_names(&api, "", None).await.contains(&named("alice", "m")));
    let again = api.send(api.request(reqwest::Method::DELETE, "/v1/admin/models/alice/m/takedown", Some(&op))).await;
    again.error(404, "not_found");
}

#[tokio::test]
async fn uploads_past_the_storage_quota_are_refused() {
    let (linear, mlp) = (fixture("linear.onnx").len(), fixture("mlp.onnx").len());
    let quota = (linear + mlp - 1).to_string();
    let server = TestServer::start_with(&[("account_storage_bytes_max", &quota)]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.model_with_version(&alice, "alice", "a", "linear").await;
    // The same file again takes no more room.
    api.model_with_version(&alice, "alice", "b", "linear").await;
    let account = api.get("/v1/account", Some(&alice)).await;
    assert_eq!(account.ok(200)["storage_bytes"].as_u64(), Some(linear as u64));
    assert_eq!(account.ok(200)["storage_bytes_max"].as_u64(), Some(linear as u64 + mlp as u64 - 1));

    let files = server.blob_files();
    let refused = api.upload("/v1/models/alice/a/versions", Some(&alice), fixture("mlp.onnx")).await;
    let message = refused.error(413, "storage_quota_exceeded");
    assert!(message.contains("account_storage_bytes_max"), "{message}");
    assert_eq!(server.blob_files(), files, "a refused upload leaves no file behind");
    // Another account has its own quota.
    api.model_with_version(&bob, "bob", "c", "mlp").await;

    // Deleting frees room once no model of hers uses the file.
    delete(&api, "/v1/models/alice/a", &alice).await.ok(200);
    let refused = api.upload("/v1/models/alice/b/versions", Some(&alice), fixture("mlp.onnx")).await;
    refused.error(413, "storage_quota_exceeded");
    delete(&api, "/v1/models/alice/b", &alice).await.ok(200);
    api.model_with_version(&alice, "alice", "d", "mlp").await;
}
