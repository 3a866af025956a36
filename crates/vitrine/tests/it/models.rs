use serde_json::{Value, json};

use crate::support::TestServer;

#[tokio::test]
async fn create_show_and_update_a_model() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    let body = json!({
        "name": "linear", "description": "# Linear\nA regressor.", "task": "regression",
        "license": "Apache-2.0", "tags": ["demo", "tiny"], "visibility": "public", "price_per_inference": "2500000"
    });
    let created = api.post("/v1/models", Some(&alice), body).await;
    let model = created.ok(201);
    assert_eq!(model["owner"], "alice");
    assert_eq!(model["price_per_inference"], "2500000");
    assert_eq!(model["latest_version"], Value::Null);
    assert_eq!(model["tags"], json!(["demo", "tiny"]));
    for field in ["owner", "name", "description", "task", "license", "tags", "visibility", "created_at"] {
        assert!(model.get(field).is_some(), "{field}");
    }

    let shown = api.get("/v1/models/alice/linear", None).await;
    assert_eq!(shown.ok(200)["description"], "# Linear\nA regressor.");

    let patched =
        api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": "7", "tags": []})).await;
    let patched = patched.ok(200);
    assert_eq!((patched["price_per_inference"].as_str(), patched["tags"].clone()), (Some("7"), json!([])));
    assert_eq!(patched["task"], "regression");

    // Someone else may not change it; without a key nobody may.
    api.patch("/v1/models/alice/linear", Some(&bob), json!({"price_per_inference": "0"})).await.error(403, "forbidden");
    api.patch("/v1/models/alice/linear", None, json!({"price_per_inference": "0"})).await.error(401, "unauthorized");
    api.post("/v1/models", Some(&alice), json!({"name": "linear", "task": "other"})).await.error(409, "conflict");
    // The same name under another owner is another model.
    api.post("/v1/models", Some(&bob), json!({"name": "linear", "task": "other"})).await.ok(201);
}

#[tokio::test]
async fn model_fields_are_validated() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let cases = [
        json!({"name": "Bad Name", "task": "other"}),
        json!({"name": "../x", "task": "other"}),
        json!({"name": "ok", "task": "vision"}),
        json!({"name": "ok", "task": "other", "price_per_inference": "-1"}),
        json!({"name": "ok", "task": "other", "price_per_inference": "0.5"}),
        json!({"name": "ok", "task": "other", "price_per_inference": "99999999999999999999"}),
        json!({"name": "ok", "task": "other", "visibility": "secret"}),
        json!({"name": "ok", "task": "other", "tags": ["Not OK"]}),
        json!({"name": "ok", "task": "other", "description": "x".repeat(64 * 1024 + 1)}),
    ];
    for body in cases {
        let message = api.post("/v1/models", Some(&alice), body.clone()).await.error(422, "invalid_request");
        assert!(!message.is_empty(), "{body}");
    }
    api.post("/v1/models", Some(&alice), json!({"task": "other"})).await.error(422, "invalid_request");
    api.post("/v1/models", None, json!({"name": "ok", "task": "other"})).await.error(401, "unauthorized");
    api.post("/v1/models", Some(&alice), json!({"name": "ok", "task": "other"})).await.ok(201);
    api.patch("/v1/models/alice/ok", Some(&alice), json!({"task": "nope"})).await.error(422, "invalid_request");
    api.patch("/v1/models/alice/ok", Some(&alice), json!({"name": "renamed"})).await.error(422, "invalid_request");
    api.get("/v1/models/alice/missing", None).await.error(404, "not_found");
    api.get("/v1/models/nobody/ok", None).await.error(404, "not_found");
    api.get("/v1/models/NOT_VALID/ok", None).await.error(404, "not_found");
}

#[tokio::test]
async fn private_models_are_invisible_to_everyone_but_their_owner() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.post("/v1/models", Some(&alice), json!({"name": "secret", "task": "other", "visibility": "private"}))
        .await
        .ok(201);
    let version = api
        .upload("/v1/models/alice/secret/versions", Some(&alice), crate::support::fixture("linear.onnx"))
        .await
        .ok(201)
        .clone();
    let blob = format!("/v1/blobs/{}", version["blob_sha256"].as_str().unwrap());

    for key in [None, Some(bob.as_str())] {
        api.get("/v1/models/alice/secret", key).await.error(404, "not_found");
        api.get("/v1/models/alice/secret/versions", key).await.error(404, "not_found");
        api.get(&blob, key).await.error(404, "not_found");
        let listed = api.get("/v1/models?owner=alice", key).await;
        assert_eq!(listed.ok(200)["items"], json!([]));
    }
    let infer = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
    api.post("/v1/models/alice/secret/infer", Some(&bob), infer.clone()).await.error(404, "not_found");
    // Not 403: bob cannot tell the model exists.
    api.patch("/v1/models/alice/secret", Some(&bob), json!({"task": "other"})).await.error(404, "not_found");

    api.get("/v1/models/alice/secret", Some(&alice)).await.ok(200);
    api.get(&blob, Some(&alice)).await.ok(200);
    api.post("/v1/models/alice/secret/infer", Some(&alice), infer).await.ok(200);
    assert_eq!(api.get("/v1/models?owner=alice", Some(&alice)).await.ok(200)["items"][0]["name"], "secret");

    // Made public, everyone sees it.
    api.patch("/v1/models/alice/secret", Some(&alice), json!({"visibility": "public"})).await.ok(200);
    api.get("/v1/models/alice/secret", None).await.ok(200);
    api.get(&blob, None).await.ok(200);
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m["owner"].as_str().unwrap(), m["name"].as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn listing_filters_searches_and_pages() {
    let server = TestServer::start_with(&[("page_size_max", "3"), ("page_size_default", "3")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    for (key, name, task, description) in [
        (&alice, "delta", "regression", "predicts house prices"),
        (&alice, "alpha", "classification", "spam filter"),
        (&bob, "echo", "embedding", "sentence vectors"),
        (&bob, "bravo", "classification", "a PRICE classifier"),
        (&alice, "charlie", "other", ""),
    ] {
        api.post(
            "/v1/models",
            Some(key),
            json!({"name": name, "task": task, "description": description, "tags": ["t"]}),
        )
        .await
        .ok(201);
    }
    // A private model's name is nobody's search word.
    api.post("/v1/models", Some(&alice), json!({"name": "zulu", "task": "other", "visibility": "private"}))
        .await
        .ok(201);
    let all = api.get("/v1/models", None).await;
    assert_eq!(names(all.ok(200)), ["alice/charlie", "bob/bravo", "bob/echo"], "newest first, page_size_default = 3");

    // Walk every page by name.
    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/models?sort=name&limit=2&page_token={t}"),
            None => "/v1/models?sort=name&limit=2".to_owned(),
        };
        let page = api.get(&path, None).await.ok(200).clone();
        seen.extend(names(&page));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["alice/alpha", "bob/bravo", "alice/charlie", "alice/delta", "bob/echo"]);

    let by_task = api.get("/v1/models?task=classification", None).await;
    assert_eq!(names(by_task.ok(200)), ["bob/bravo", "alice/alpha"]);
    let by_owner = api.get("/v1/models?owner=bob&sort=name", None).await;
    assert_eq!(names(by_owner.ok(200)), ["bob/bravo", "bob/echo"]);
    let searched = api.get("/v1/models?q=price", None).await;
    assert_eq!(names(searched.ok(200)), ["bob/bravo", "alice/delta"], "case-insensitive, description included");
    assert!(searched.ok(200).get("corrected_query").is_none(), "a query that matches is not mended");
    // A typo is mended to the nearest word the catalogue has, and said so;
    // the task is searched too.
    let mended = api.get("/v1/models?q=brvo", None).await.ok(200).clone();
    assert_eq!((names(&mended), mended["corrected_query"].as_str()), (vec!["bob/bravo".to_owned()], Some("bravo")));
    let mended = api.get("/v1/models?q=Clasification&sort=name", None).await.ok(200).clone();
    assert_eq!(names(&mended), ["alice/alpha", "bob/bravo"]);
    assert_eq!(mended["corrected_query"], "classification");
    let private = api.get("/v1/models?q=zulo", None).await.ok(200).clone();
    assert_eq!((names(&private).len(), private.get("corrected_query")), (0, None), "no private name leaks");
    let nothing = api.get("/v1/models?q=weather", None).await.ok(200).clone();
    assert_eq!((names(&nothing).len(), nothing.get("corrected_query")), (0, None), "nothing made up");
    let nobody = api.get("/v1/models?owner=nobody", None).await;
    assert_eq!(names(nobody.ok(200)), Vec::<String>::new());

    for bad in [
        "limit=4",
        "limit=0",
        "sort=cost",
        "sort=price&window=7d",
        "task=vision",
        "page_token=zzz",
        "sort=name&page_token=r5",
        "limit=x",
    ] {
        let message = api.get(&format!("/v1/models?{bad}"), None).await.error(400, "invalid_request");
        assert!(!message.is_empty());
    }
    let message = api.get("/v1/models?limit=4", None).await.error(400, "invalid_request");
    assert!(message.contains("page_size_max"), "{message}");
}
