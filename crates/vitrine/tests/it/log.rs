//! The transparency log: receipts, checkpoints, proofs, the auditor, and
//! tampering caught.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tlog::{Checkpoint, NoteVerifier};

use crate::support::{Api, BINARY, TestServer};

struct Market {
    server: TestServer,
    api: Api,
    alice: String,
    bob: String,
}

/// alice sells `alice/linear` at 1001 (and a private `alice/secret` at 500); bob has 100 000.
async fn market() -> Market {
    let server = TestServer::start_with(&[("checkpoint_interval_ms", "100")]);
    let api = server.api();
    let op = server.operator_key.clone();
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    for (name, price, visibility) in [("linear", "1001", "public"), ("secret", "500", "private")] {
        api.post("/v1/models", Some(&alice), json!({"name": name, "task": "regression", "visibility": visibility}))
            .await
            .ok(201);
        let path = format!("/v1/models/alice/{name}/versions");
        api.upload(&path, Some(&alice), crate::support::fixture("linear.onnx")).await.ok(201);
        api.patch(&format!("/v1/models/alice/{name}"), Some(&alice), json!({"price_per_inference": price}))
            .await
            .ok(200);
    }
    let deposit = json!({"account": "bob", "amount": "100000", "reference": "bank-1"});
    api.post("/v1/admin/deposits", Some(&op), deposit).await.ok(201);
    // bob's calls to the public model are public; his calls to the private one
    // cannot happen (he cannot see it), so alice calls her own.
    let deposit = json!({"account": "alice", "amount": "100000", "reference": "bank-2"});
    api.post("/v1/admin/deposits", Some(&op), deposit).await.ok(201);
    Market { server, api, alice, bob }
}

fn call() -> Value {
    json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}})
}

async fn paid_call(api: &Api, key: &str, model: &str, app: Option<&str>) -> Value {
    let mut request =
        api.request(reqwest::Method::POST, &format!("/v1/models/alice/{model}/infer"), Some(key)).json(&call());
    if let Some(app) = app {
        request = request.header("X-App", app);
    }
    api.send(request).await.ok(200).clone()
}

pub(crate) async fn verified_checkpoint(api: &Api) -> Checkpoint {
    let key = api.get("/v1/log/key", None).await.ok(200).clone();
    let verifier = NoteVerifier::from_vkey(key["vkey"].as_str().unwrap()).unwrap();
    let note = reqwest::get(format!("{}/v1/log/checkpoint", api.url)).await.unwrap().text().await.unwrap();
    Checkpoint::parse(verifier.verify_note(&note).unwrap()).unwrap()
}

pub(crate) fn hashes(value: &Value) -> Vec<tlog::Hash> {
    value.as_array().unwrap().iter().map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap()).collect()
}

#[tokio::test]
async fn paid_calls_return_signed_receipts_included_in_signed_checkpoints() {
    let Market { server: _server, api, alice, bob } = market().await;
    let key = api.get("/v1/log/key", None).await.ok(200).clone();
    let node_key = BASE64.decode(key["node_keys"]["node-local"].as_str().unwrap()).unwrap();
    let node = NoteVerifier::new("node-local", &node_key).unwrap();

    let mut receipts = vec![];
    for app in [Some("shop"), None, Some("shop")] {
        let answer = paid_call(&api, &bob, "linear", app).await;
        receipts.push(answer["receipt"].clone());
    }
    for (index, receipt) in receipts.iter().enumerate() {
        assert_eq!(receipt["log_index"], index);
        assert_eq!(receipt["model"], "alice/linear");
        assert_eq!((receipt["price"].as_str(), receipt["creator_share"].as_str()), (Some("1001"), Some("801")));
        assert_eq!((receipt["node_share"].as_str(), receipt["treasury_share"].as_str()), (Some("150"), Some("50")));
        assert_eq!(receipt["node"], "node-local");
        let leaf = BASE64.decode(receipt["leaf"].as_str().unwrap()).unwrap();
        assert_eq!(receipt["leaf_hash"], hex::encode(tlog::leaf_hash(&leaf)));
        assert!(node.verify(&leaf, &BASE64.decode(receipt["signature"].as_str().unwrap()).unwrap()));
        for field in ["version", "blob_sha256", "caller", "input_sha256", "output_sha256", "created_at"] {
            assert!(!receipt[field].is_null(), "{field}");
        }
    }
    assert_eq!((receipts[0]["app"].as_str(), receipts[1]["app"].as_str()), (Some("shop"), Some("")));
    assert_eq!(receipts[0]["caller"], receipts[2]["caller"], "one caller, one pseudonym");
    let pseudonym = api.get("/v1/account/pseudonym", Some(&bob)).await.ok(200).clone();
    assert_eq!(receipts[0]["caller"], pseudonym["pseudonym"]);
    let secret: [u8; 32] = hex::decode(pseudonym["secret"].as_str().unwrap()).unwrap().try_into().unwrap();
    assert_eq!(tlog::caller_pseudonym(&secret).to_hex(), receipts[0]["caller"].as_str().unwrap());

    // A receipt by index comes with a proof against a signed checkpoint.
    let fetched = api.get("/v1/receipts/2", None).await.ok(200).clone();
    let checkpoint = verified_checkpoint(&api).await;
    assert_eq!(checkpoint.size, 3);
    let leaf_hash: tlog::Hash = hex::decode(fetched["leaf_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
    assert_eq!(fetched["inclusion"]["size"], 3);
    assert!(tlog::verify_inclusion(&leaf_hash, 2, 3, &hashes(&fetched["inclusion"]["hashes"]), &checkpoint.root));
    let mut without_proof = fetched.clone();
    without_proof.as_object_mut().unwrap().remove("inclusion");
    assert_eq!(without_proof, receipts[2]);

    // Entries and proofs agree with the checkpoint.
    let entries = api.get("/v1/log/entries?start=0&end=3", None).await.ok(200).clone();
    let mut tree = tlog::MemoryTree::new();
    for entry in entries["items"].as_array().unwrap() {
        tree.append(tlog::leaf_hash(&BASE64.decode(entry["leaf"].as_str().unwrap()).unwrap()));
    }
    assert_eq!(tree.root(), checkpoint.root);
    let first = tlog::root(&tree, 1).unwrap();
    let proof = api.get("/v1/log/proof/consistency?from=1&to=3", None).await.ok(200).clone();
    assert!(tlog::verify_consistency(1, 3, &first, &checkpoint.root, &hashes(&proof["hashes"])));
    let proof = api.get("/v1/log/proof/inclusion?index=1&size=3", None).await.ok(200).clone();
    assert!(tlog::verify_inclusion(
        &tlog::leaf_hash(&BASE64.decode(receipts[1]["leaf"].as_str().unwrap()).unwrap()),
        1,
        3,
        &hashes(&proof["hashes"]),
        &checkpoint.root
    ));

    // A private model's name stays out of the public log.
    let own = paid_call(&api, &alice, "secret", None).await;
    let label = own["receipt"]["model"].as_str().unwrap().to_owned();
    assert!(label.starts_with("alice/~") && !label.contains("secret"), "{label}");
    // Keyed by the server: no dictionary of names finds it; the owner is shown it.
    let unkeyed = format!("alice/~{}", &domain::Sha256::digest(b"secret").to_hex()[..16]);
    assert_ne!(label, unkeyed);
    let own_view = api.get("/v1/models/alice/secret", Some(&alice)).await.ok(200).clone();
    assert_eq!(own_view["log_label"], label.as_str());
    let listed = api.get("/v1/models?owner=alice", Some(&alice)).await.ok(200).clone();
    assert!(listed["items"].as_array().unwrap().iter().any(|m| m["log_label"] == label.as_str()));
    let public_view = api.get("/v1/models/alice/linear", Some(&alice)).await.ok(200).clone();
    assert!(public_view.get("log_label").is_none(), "public models are named as they are: {public_view}");
    assert_eq!(own["receipt"]["creator_share"], "0", "a creator calling their own model pays no creator share");

    // Free calls have no receipt, but a leaf all the same, of price 0.
    api.patch("/v1/models/alice/linear", Some(&alice), json!({"price_per_inference": "0"})).await.ok(200);
    assert_eq!(paid_call(&api, &bob, "linear", None).await["receipt"], Value::Null);
    assert_eq!(api.get("/v1/receipts/4", None).await.ok(200)["price"], "0");
    api.get("/v1/receipts/5", None).await.error(404, "not_found");

    for bad in [
        "/v1/log/entries?start=2&end=1",
        "/v1/log/entries?start=0&end=99",
        "/v1/log/proof/inclusion?index=4&size=4",
        "/v1/log/proof/inclusion?index=0&size=9",
        "/v1/log/proof/consistency?from=3&to=1",
        "/v1/log/entries?start=x&end=1",
    ] {
        api.get(bad, None).await.error(400, "invalid_request");
    }
    let bad_app = api
        .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob))
        .header("X-App", "no spaces")
        .json(&call());
    api.send(bad_app).await.error(400, "invalid_request");
}

#[tokio::test]
async fn every_call_is_logged_free_and_failed_ones_too_with_digests_the_caller_recomputes() {
    let Market { server: _server, api, alice, bob } = market().await;
    api.post("/v1/models", Some(&alice), json!({"name": "free", "task": "regression"})).await.ok(201);
    api.upload("/v1/models/alice/free/versions", Some(&alice), crate::support::fixture("linear.onnx")).await.ok(201);

    // A free call: no receipt (as the API says), but a leaf, whose index
    // the answer's header gives.
    let request = api.request(reqwest::Method::POST, "/v1/models/alice/free/infer", Some(&bob)).json(&call());
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-vitrine-log-index"], "0");
    let free: Value = answer.json().await.unwrap();
    assert!(free["receipt"].is_null());
    // A failed call (inputs of the wrong shape): logged with its error code.
    let bad = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 3], "data": [1, 2, 3]}}});
    let failed = api.post("/v1/models/alice/linear/infer", Some(&bob), bad).await;
    failed.error(422, "invalid_input");
    // A paid one.
    let paid = paid_call(&api, &bob, "linear", None).await;
    assert_eq!(paid["receipt"]["log_index"], 2);
    let bob_balance = api.get("/v1/account", Some(&bob)).await.ok(200)["balance"].clone();
    assert_eq!(bob_balance, "98999", "only the paid call cost anything");

    let leaves: Vec<tlog::ReceiptLeaf> = api.get("/v1/log/entries?start=0&end=3", None).await.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| tlog::ReceiptLeaf::decode(&BASE64.decode(e["leaf"].as_str().unwrap()).unwrap()).unwrap())
        .collect();
    assert_eq!(leaves.len(), 3);
    let x = crate::support::canonical_f32s(&[("x", &[1, 4], &[1.0, 2.0, 3.0, 4.0])]);
    let outputs = |answer: &Value| {
        let (name, tensor) = answer["outputs"].as_object().unwrap().iter().next().unwrap();
        let shape: Vec<u64> = tensor["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        let data: Vec<f32> = tensor["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        crate::support::canonical_f32s(&[(name, &shape, &data)])
    };
    let (free_leaf, failed_leaf, paid_leaf) = (&leaves[0], &leaves[1], &leaves[2]);
    assert_eq!((free_leaf.format, free_leaf.model.as_str(), free_leaf.task.as_str()), (2, "alice/free", "regression"));
    assert_eq!((free_leaf.price, free_leaf.creator_share, free_leaf.error.as_str()), (0, 0, ""));
    assert_eq!((free_leaf.input_sha256.to_hex(), free_leaf.output_sha256.to_hex()), (x.clone(), outputs(&free)));
    assert_eq!(
        (failed_leaf.model.as_str(), failed_leaf.price, failed_leaf.error.as_str()),
        ("alice/linear", 0, "invalid_input")
    );
    assert_eq!(failed_leaf.input_sha256.to_hex(), crate::support::canonical_f32s(&[("x", &[1, 3], &[1.0, 2.0, 3.0])]));
    assert_eq!(failed_leaf.output_sha256.as_bytes(), &[0; 32]);
    assert_eq!((paid_leaf.price, paid_leaf.error.as_str()), (1001, ""));
    assert_eq!((paid_leaf.input_sha256.to_hex(), paid_leaf.output_sha256.to_hex()), (x, outputs(&paid)));
    assert_eq!(paid["receipt"]["input_sha256"], paid_leaf.input_sha256.to_hex());
    // Any leaf is a receipt by index, a failed one naming its error.
    let receipt = api.get("/v1/receipts/1", None).await.ok(200).clone();
    assert_eq!((receipt["error"].as_str(), receipt["price"].as_str()), (Some("invalid_input"), Some("0")));
    assert!(api.get("/v1/receipts/0", None).await.ok(200)["error"].is_null());
    let page = api.text("/log").await;
    for outcome in ["free", "failed: invalid_input", "paid"] {
        assert!(page.contains(&format!("<td>{outcome}</td>")), "{outcome}: {page}");
    }
}

fn vitrine(server: &TestServer, state: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(BINARY)
        .env_remove("VITRINE_KEY")
        .env("VITRINE_URL", &server.url)
        .env("VITRINE_CLIENT_CONFIG", state.with_file_name("client.toml"))
        .arg("audit")
        .args(["--state", state.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

async fn database(server: &TestServer) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", server.data_dir.join("vitrine.db").display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

/// Rewrites leaf 2 behind the server's back: its price lowered by one, the
/// shares kept consistent so that it still decodes. Returns the original.
async fn lower_the_price_of_leaf_2(db: &sqlx::SqlitePool) -> Vec<u8> {
    let (leaf,): (Vec<u8>,) = sqlx::query_as("SELECT leaf FROM log_leaves WHERE idx = 2").fetch_one(db).await.unwrap();
    let mut decoded = tlog::ReceiptLeaf::decode(&leaf).unwrap();
    decoded.price -= 1;
    decoded.creator_share -= 1;
    sqlx::query("UPDATE log_leaves SET leaf = ? WHERE idx = 2")
        .bind(decoded.encode().unwrap())
        .execute(db)
        .await
        .unwrap();
    leaf
}

#[tokio::test]
async fn the_audit_passes_on_an_honest_log_and_names_every_tampering() {
    let Market { server, api, alice, bob } = market().await;
    for app in ["shop", "shop", "lab"] {
        paid_call(&api, &bob, "linear", Some(app)).await;
    }
    paid_call(&api, &alice, "secret", None).await;
    api.get("/v1/receipts/3", None).await.ok(200);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("audit.json");

    let (ok, out) = vitrine(&server, &state, &["--creator", "alice", "--key", &alice]);
    assert!(ok, "{out}");
    assert!(out.contains("alice/linear") && out.contains("2403") && out.contains("audit passed"), "{out}");
    let (ok, out) = vitrine(&server, &state, &["--caller", &bob]);
    assert!(ok, "{out}");
    assert!(out.contains("3003"), "3 calls of 1001: {out}");
    // Without alice's key, only the log's figures.
    let (ok, out) = vitrine(&server, &state, &["--creator", "alice"]);
    assert!(ok && out.contains("showing the log's figures only"), "{out}");

    let db = database(&server).await;
    // An amount changed in the ledger behind the server's back.
    sqlx::query("UPDATE transfers SET amount = amount + 1 WHERE kind = 'inference_creator' AND log_index = 1")
        .execute(&db)
        .await
        .unwrap();
    let (ok, out) = vitrine(&server, &state, &["--creator", "alice", "--key", &alice]);
    assert!(!ok && out.contains("leaf 1") && out.contains("802"), "{out}");
    sqlx::query("UPDATE transfers SET amount = amount - 1 WHERE kind = 'inference_creator' AND log_index = 1")
        .execute(&db)
        .await
        .unwrap();
    assert!(vitrine(&server, &state, &["--creator", "alice", "--key", &alice]).0);

    // A leaf altered: the price lowered, shares kept consistent, so it still decodes.
    let leaf = lower_the_price_of_leaf_2(&db).await;
    let (ok, out) = vitrine(&server, &state, &["--creator", "alice", "--key", &alice]);
    assert!(!ok && out.contains("leaf 2"), "{out}");
    sqlx::query("UPDATE log_leaves SET leaf = ? WHERE idx = 2").bind(&leaf).execute(&db).await.unwrap();
    assert!(vitrine(&server, &state, &[]).0);

    // A leaf removed.
    let (removed, signature): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT leaf, signature FROM log_leaves WHERE idx = 3").fetch_one(&db).await.unwrap();
    sqlx::query("DELETE FROM log_leaves WHERE idx = 3").execute(&db).await.unwrap();
    let (ok, out) = vitrine(&server, &state, &[]);
    assert!(!ok && out.contains("leaves"), "{out}");
    sqlx::query("INSERT INTO log_leaves (idx, leaf, signature, created_at) VALUES (3, ?, ?, 0)")
        .bind(&removed)
        .bind(&signature)
        .execute(&db)
        .await
        .unwrap();
    assert!(vitrine(&server, &state, &[]).0);

    // A key swapped by the server is refused against the pinned one.
    let other = tlog::NoteKey::from_seed("vitrine.local/log", &[1; 32]).unwrap().verifier().vkey();
    let (ok, out) = vitrine(&server, &state, &["--log-key", &other]);
    assert!(!ok && out.contains("log key changed"), "{out}");
}

#[tokio::test]
async fn checkpoints_stay_consistent_across_restarts_and_a_rewritten_log_is_never_signed() {
    let Market { server, api, alice: _, bob } = market().await;
    for _ in 0..3 {
        paid_call(&api, &bob, "linear", None).await;
    }
    api.get("/v1/receipts/2", None).await.ok(200);
    let before = verified_checkpoint(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("audit.json");
    assert!(vitrine(&server, &state, &[]).0);

    // Killed without warning, restarted: the next checkpoint extends the last one.
    let server = server.kill_and_restart();
    let api = server.api();
    for _ in 0..2 {
        paid_call(&api, &bob, "linear", None).await;
    }
    api.get("/v1/receipts/4", None).await.ok(200);
    let after = verified_checkpoint(&api).await;
    assert_eq!((before.size, after.size), (3, 5));
    let proof = api.get("/v1/log/proof/consistency?from=3&to=5", None).await.ok(200).clone();
    assert!(tlog::verify_consistency(3, 5, &before.root, &after.root, &hashes(&proof["hashes"])));
    let (ok, out) = vitrine(&server, &state, &[]);
    assert!(ok && out.contains("consistent with the checkpoint of 3 leaves"), "{out}");

    // History rewritten under a stopped server: it keeps serving, appends,
    // but refuses to sign a checkpoint that contradicts the one it signed.
    let mut server = server;
    assert!(server.terminate().success());
    let db = database(&server).await;
    // The hash of leaves 0..4, which every later root is built on.
    sqlx::query("UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 0").execute(&db).await.unwrap();
    db.close().await;
    let server = server.restart_stopped();
    let api = server.api();
    paid_call(&api, &bob, "linear", None).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(verified_checkpoint(&api).await.size, 5, "no checkpoint over the rewritten log");
    // What was signed still stands: the audit of the last honest checkpoint passes.
    assert!(vitrine(&server, &state, &[]).0);
}

#[tokio::test]
async fn a_saved_receipt_verifies_and_a_doctored_one_does_not() {
    let Market { server, api, alice: _, bob } = market().await;
    let answer = paid_call(&api, &bob, "linear", Some("shop")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answer.json");
    let run = |path: &Path| {
        Command::new(BINARY)
            .env("VITRINE_URL", &server.url)
            .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
            .args(["receipt", "verify", path.to_str().unwrap()])
            .output()
            .unwrap()
    };
    std::fs::write(&file, serde_json::to_string(&answer).unwrap()).unwrap();
    let output = run(&file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("in the checkpoint of 1 leaves"), "{stdout}");
    // The price in the market's token, as people read it.
    assert!(stdout.contains(" OPG (creator ") && stdout.contains(" OPG, treasury "), "{stdout}");

    let mut doctored = answer.clone();
    doctored["receipt"]["price"] = json!("1");
    std::fs::write(&file, serde_json::to_string(&doctored).unwrap()).unwrap();
    assert!(!run(&file).status.success());
    let mut forged = answer["receipt"].clone();
    let mut leaf = tlog::ReceiptLeaf::decode(&BASE64.decode(forged["leaf"].as_str().unwrap()).unwrap()).unwrap();
    leaf.app = "other".into();
    let bytes = leaf.encode().unwrap();
    forged["leaf"] = json!(BASE64.encode(&bytes));
    forged["leaf_hash"] = json!(hex::encode(tlog::leaf_hash(&bytes)));
    forged["app"] = json!("other");
    std::fs::write(&file, serde_json::to_string(&forged).unwrap()).unwrap();
    let output = run(&file);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_receipt_as_a_tlog_proof_verifies_offline_and_one_flipped_byte_fails() {
    let Market { mut server, api, bob, .. } = market().await;
    for _ in 0..3 {
        paid_call(&api, &bob, "linear", Some("shop")).await;
    }
    let vkey = api.get("/v1/log/key", None).await.ok(200)["vkey"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url.clone();
    let cli = |args: &[&str]| {
        let output = Command::new(BINARY)
            .env_remove("VITRINE_KEY")
            .env("VITRINE_URL", &url)
            .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
            .args(args)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), text)
    };
    let (ok, proof, text) = cli(&["receipt", "get", "1"]);
    assert!(ok && proof.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");
    assert!(proof.contains("\nindex 1\n"), "{proof}");
    let file = dir.path().join("r.tlog-proof");
    std::fs::write(&file, &proof).unwrap();

    // No server from here on: the check is offline.
    assert!(server.terminate().success());
    let (ok, _, text) = cli(&["receipt", "verify", file.to_str().unwrap(), "--log-key", &vkey]);
    assert!(ok && text.contains("checked offline") && text.contains("log index 1"), "{text}");
    // Without a key to check against, it says what it needs.
    let (ok, _, text) = cli(&["receipt", "verify", file.to_str().unwrap()]);
    assert!(!ok && text.contains("--log-key"), "{text}");
    // One byte flipped anywhere that matters (the leaf, a proof hash, the
    // checkpoint's root, its signature): refused.
    let lines: Vec<&str> = proof.split('\n').collect();
    let mut flipped_somewhere = 0;
    for (n, line) in lines.iter().enumerate() {
        // The base64 of each line: extra data, hashes, the root, signatures.
        let payload = match line.strip_prefix("extra ") {
            Some(extra) => extra,
            None if line.starts_with('\u{2014}') => line.rsplit(' ').next().unwrap(),
            None => line,
        };
        if payload.len() < 16 || payload.contains('.') || payload.starts_with("c2sp") {
            continue;
        }
        let at = line.len() - payload.len() + payload.len() / 2;
        let mut bytes = line.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let mut tampered = lines.clone();
        let changed = String::from_utf8(bytes).unwrap();
        tampered[n] = &changed;
        std::fs::write(&file, tampered.join("\n")).unwrap();
        let (ok, _, text) = cli(&["receipt", "verify", file.to_str().unwrap(), "--log-key", &vkey]);
        assert!(!ok, "a byte flipped in line {n} ({line}) went unnoticed: {text}");
        flipped_somewhere += 1;
    }
    assert!(flipped_somewhere >= 5, "the leaf, the proof's hashes, the root and the signature");
    // Another log's key: refused.
    std::fs::write(&file, &proof).unwrap();
    let other = tlog::NoteKey::from_seed("vitrine.local/log", &[9; 32]).unwrap().verifier().vkey();
    let (ok, _, text) = cli(&["receipt", "verify", file.to_str().unwrap(), "--log-key", &other]);
    assert!(!ok, "{text}");
}

#[tokio::test]
async fn the_audit_follows_the_log_and_stops_at_the_first_inconsistency() {
    let Market { server, api, bob, .. } = market().await;
    for _ in 0..3 {
        paid_call(&api, &bob, "linear", None).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut follower = Command::new(BINARY)
        .env_remove("VITRINE_KEY")
        .env("VITRINE_URL", &server.url)
        .env("VITRINE_CLIENT_CONFIG", dir.path().join("client.toml"))
        .args(["audit", "--follow", "1", "--state", dir.path().join("state.json").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let wait_for = |text: &str| loop {
        let line = seen.recv_timeout(std::time::Duration::from_secs(20)).expect("the follower goes on");
        if line.contains(text) {
            break;
        }
    };
    wait_for("audit passed");
    // The log grows: the follower checks each new checkpoint against the last.
    for _ in 0..2 {
        paid_call(&api, &bob, "linear", None).await;
    }
    wait_for("checkpoint: 5 leaves");
    wait_for("audit passed");
    // A leaf rewritten behind the server's back: the next round stops.
    lower_the_price_of_leaf_2(&database(&server).await).await;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the follower missed the rewritten leaf");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success() && stderr.contains("leaf 2"), "{stderr}");
}
