//! Witnessing (C2SP tlog-witness, tlog-cosignature): two markets witness
//! each other; a log that shows another history is refused by the witness
//! and caught by the audit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tlog::{AddCheckpoint, Checkpoint, CosignatureVerifier, NoteKey};

use crate::support::{Api, BINARY, TestServer, fixture};

/// A `vitrine witness` process, killed when dropped.
struct WitnessProcess {
    url: String,
    vkey: String,
    child: Child,
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_witness(dir: &Path, name: &str, log_vkey: &str) -> WitnessProcess {
    let mut child = Command::new(BINARY)
        .args(["witness", "--listen", "127.0.0.1:0", "--name", name, "--log", log_vkey, "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vitrine witness");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut vkey = String::new();
    let url = loop {
        let line = lines.next().expect("the witness exited before listening").expect("read stdout");
        if let Some(key) = line.strip_prefix("witness key: ") {
            vkey = key.to_owned();
        }
        if let Some(url) = line.strip_prefix("vitrine witness listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    assert_eq!(std::fs::read_to_string(dir.join("witness.vkey")).unwrap().trim(), vkey);
    WitnessProcess { url, vkey, child }
}

/// A market whose log key is made from `seed` (so its witness can be told
/// the key before the market starts), submitting to `witness`.
fn start_market(dir: &Path, origin: &str, seed: u8, witness: &WitnessProcess) -> TestServer {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("log.key"), hex::encode([seed; 32])).unwrap();
    let witnesses = format!("[{{url = \"{}\", vkey = \"{}\"}}]", witness.url, witness.vkey);
    TestServer::on_data_dir_with(
        data,
        &[("log_origin", origin), ("checkpoint_interval_ms", "100"), ("witnesses", &witnesses)],
    )
}

fn log_key(origin: &str, seed: u8) -> NoteKey {
    NoteKey::from_seed(origin, &[seed; 32]).unwrap()
}

/// One free call: one leaf.
async fn one_call(api: &Api, model: &str) {
    let key = api.signup(&format!("{model}-caller")).await;
    api.post("/v1/models", Some(&key), json!({"name": model, "task": "regression"})).await.ok(201);
    let path = format!("/v1/models/{model}-caller/{model}");
    api.upload(&format!("{path}/versions"), Some(&key), fixture("linear.onnx")).await.ok(201);
    let body = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 4], "data": [1, 2, 3, 4]}}});
    api.post(&format!("{path}/infer"), Some(&key), body).await.ok(200);
}

/// The market's checkpoint once it covers `size` leaves and carries a
/// valid cosignature by `witness`.
async fn cosigned_checkpoint(api: &Api, witness: &CosignatureVerifier, size: u64) -> String {
    let started = Instant::now();
    loop {
        let note = reqwest::get(format!("{}/v1/log/checkpoint", api.url)).await.unwrap().text().await.unwrap();
        let body = note.split("\n\n").next().unwrap();
        let covered = Checkpoint::parse(&format!("{body}\n")).unwrap().size >= size;
        if covered && witness.verify(&note).is_ok() {
            return note;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no cosigned checkpoint of {size} leaves: {note}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn audit(url: &str, state: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(BINARY)
        .env_remove("VITRINE_KEY")
        .env("VITRINE_CLIENT_CONFIG", state.with_file_name("client.toml"))
        .args(["audit", "--server", url, "--state", state.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

async fn add_checkpoint(witness: &WitnessProcess, request: &AddCheckpoint) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/add-checkpoint", witness.url))
        .body(request.encode())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let media = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, media, response.text().await.unwrap())
}

#[tokio::test]
async fn two_markets_witness_each_other_and_a_rewritten_history_is_refused_and_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (a_origin, b_origin) = ("market-a.test/log", "market-b.test/log");
    let (a_key, b_key) = (log_key(a_origin, 1), log_key(b_origin, 2));
    // Each operator runs a witness of the other's market.
    let witness_of_b = start_witness(&dir.path().join("wa"), "market-a.test/witness", &b_key.verifier().vkey());
    let witness_of_a = start_witness(&dir.path().join("wb"), "market-b.test/witness", &a_key.verifier().vkey());
    let market_a = start_market(&dir.path().join("a"), a_origin, 1, &witness_of_a);
    let market_b = start_market(&dir.path().join("b"), b_origin, 2, &witness_of_b);
    let (api_a, api_b) = (market_a.api(), market_b.api());
    let by_wb = CosignatureVerifier::from_vkey(&witness_of_a.vkey).unwrap();
    let by_wa = CosignatureVerifier::from_vkey(&witness_of_b.vkey).unwrap();
    assert_eq!(api_a.get("/v1/log/key", None).await.ok(200)["witnesses"], json!([witness_of_a.vkey]));

    // Each market's checkpoints carry the other's cosignature, beside its own signature.
    one_call(&api_a, "ma").await;
    one_call(&api_b, "mb").await;
    one_call(&api_b, "mc").await;
    let note_a = cosigned_checkpoint(&api_a, &by_wb, 1).await;
    let note_b = cosigned_checkpoint(&api_b, &by_wa, 2).await;
    assert!(a_key.verifier().verify_note(&note_a).is_ok() && b_key.verifier().verify_note(&note_b).is_ok());
    assert!(by_wa.verify(&note_a).is_err(), "market A is not witnessed by its own operator's witness");
    // The dashboard's log page says who cosigned, and what each leaf was.
    let page = api_a.text("/log").await;
    assert!(page.contains("market-b.test/witness</code>: cosigned this checkpoint at"), "{page}");
    assert!(page.contains("<td>free</td>"), "{page}");
    let seen: Value = reqwest::get(format!("{}/logs", witness_of_a.url)).await.unwrap().json().await.unwrap();
    assert_eq!(seen["logs"][0]["origin"], a_origin);
    assert_eq!(seen["logs"][0]["size"], 1);

    // The audit requires the cosignatures it is told to.
    let state = dir.path().join("audit").join("state.json");
    let (ok, text) = audit(&market_a.url, &state, &["--witness", &witness_of_a.vkey]);
    assert!(ok, "{text}");
    assert!(text.contains("cosigned by witness market-b.test/witness"), "{text}");
    let (ok, text) = audit(&market_a.url, &dir.path().join("other.json"), &["--witness", &witness_of_b.vkey]);
    assert!(!ok && text.contains("not cosigned by witness market-a.test/witness"), "{text}");
    // A receipt saved as a tlog-proof carries the cosigned checkpoint: checked offline.
    let receipt = Command::new(BINARY).args(["receipt", "get", "0", "--server", &market_a.url]).output().unwrap();
    assert!(receipt.status.success(), "{}", String::from_utf8_lossy(&receipt.stderr));
    let proof = dir.path().join("r.tlog-proof");
    std::fs::write(&proof, &receipt.stdout).unwrap();
    let verify = |witness: &str| {
        let log = a_key.verifier().vkey();
        let args = ["receipt", "verify", proof.to_str().unwrap(), "--log-key", &log, "--witness", witness];
        Command::new(BINARY).args(args).output().unwrap()
    };
    let offline = verify(&witness_of_a.vkey);
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    assert!(String::from_utf8_lossy(&offline.stdout).contains("cosigned by witness market-b.test/witness"));
    let offline = verify(&witness_of_b.vkey);
    assert!(!offline.status.success() && String::from_utf8_lossy(&offline.stderr).contains("not cosigned"));

    // Market A's key signs another history of the same size: the witness refuses it.
    let honest = Checkpoint::parse(&format!("{}\n", note_a.split("\n\n").next().unwrap())).unwrap();
    let fork = Checkpoint { root: [7; 32], ..honest.clone() };
    let fork_note = a_key.sign_note(&fork.body());
    let (status, media, body) =
        add_checkpoint(&witness_of_a, &AddCheckpoint { old: 1, proof: vec![], note: fork_note.clone() }).await;
    assert_eq!((status, media.as_str(), body.as_str()), (409, "text/x.tlog.size", "1\n"));
    // A larger tree that does not extend the one it cosigned: 422.
    let grown = Checkpoint { size: 4, root: [8; 32], ..honest.clone() };
    let request = AddCheckpoint { old: 1, proof: vec![[9; 32], [9; 32]], note: a_key.sign_note(&grown.body()) };
    assert_eq!(add_checkpoint(&witness_of_a, &request).await.0, 422);
    // A stale old size: 409 with the size it has; another key: 403; another log: 404.
    let stale = AddCheckpoint { old: 0, proof: vec![], note: a_key.sign_note(&grown.body()) };
    assert_eq!(add_checkpoint(&witness_of_a, &stale).await.2, "1\n");
    let forged = AddCheckpoint { old: 1, proof: vec![], note: log_key(a_origin, 9).sign_note(&fork.body()) };
    assert_eq!(add_checkpoint(&witness_of_a, &forged).await.0, 403);
    let elsewhere = Checkpoint { origin: "elsewhere.test/log".into(), ..fork.clone() };
    let elsewhere =
        AddCheckpoint { old: 0, proof: vec![], note: log_key("elsewhere.test/log", 1).sign_note(&elsewhere.body()) };
    assert_eq!(add_checkpoint(&witness_of_a, &elsewhere).await.0, 404);
    // None of it moved what the witness has seen.
    let seen: Value = reqwest::get(format!("{}/logs", witness_of_a.url)).await.unwrap().json().await.unwrap();
    assert_eq!(seen["logs"][0]["size"], 1);
    assert_eq!(
        api_a.get("/v1/log/checkpoint", None).await.status,
        200,
        "the honest market goes on being served and cosigned"
    );

    // A log serving that other history (here, a server in front of market
    // A's key) is caught: it lacks the witness's cosignature (the honest
    // one, copied, does not verify on it), and an auditor that remembers
    // the honest checkpoint sees history rewritten.
    let key_view = api_a.get("/v1/log/key", None).await.ok(200).clone();
    let cosignature = note_a.lines().find(|line| line.starts_with("\u{2014} market-b.test/witness ")).unwrap();
    let served_fork = format!("{fork_note}{cosignature}\n");
    let app = axum::Router::new()
        .route("/v1/log/key", axum::routing::get(move || async move { axum::Json(key_view) }))
        .route("/v1/log/checkpoint", axum::routing::get(move || async move { served_fork }))
        .route(
            "/v1/log/proof/consistency",
            axum::routing::get(|| async { axum::Json(json!({"from": 1, "to": 1, "hashes": []})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (ok, text) = tokio::task::spawn_blocking({
        let (fake, path, vkey) = (fake.clone(), dir.path().join("fresh.json"), witness_of_a.vkey.clone());
        move || audit(&fake, &path, &["--witness", &vkey])
    })
    .await
    .unwrap();
    assert!(!ok && text.contains("not cosigned by witness market-b.test/witness"), "{text}");
    let (ok, text) = tokio::task::spawn_blocking(move || audit(&fake, &state, &[])).await.unwrap();
    assert!(!ok && text.contains("history was rewritten"), "{text}");
}

#[tokio::test]
async fn a_market_whose_witness_is_gone_publishes_its_checkpoints_without_the_cosignature() {
    let dir = tempfile::tempdir().unwrap();
    let gone = WitnessProcess {
        // Nothing listens on port 1; the process stands in for a dead witness.
        url: "http://127.0.0.1:1".into(),
        vkey: tlog::Cosigner::from_seed("gone.test/witness", &[5; 32]).unwrap().verifier().vkey(),
        child: Command::new("sleep").arg("60").spawn().unwrap(),
    };
    let market = start_market(dir.path(), "market-c.test/log", 3, &gone);
    let api = market.api();
    one_call(&api, "mc").await;
    let started = Instant::now();
    let note = loop {
        let note = api.text("/v1/log/checkpoint").await;
        if note.starts_with("market-c.test/log\n1\n") {
            break note;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no checkpoint of the call: {note}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(log_key("market-c.test/log", 3).verifier().verify_note(&note).is_ok());
    let gone = CosignatureVerifier::from_vkey(&gone.vkey).unwrap();
    assert!(gone.verify(&note).is_err(), "{note}");
}
