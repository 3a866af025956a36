//! A market on a chain (anvil from `scripts/anvil`, `VITRINE_TEST_ANVIL`;
//! a token of its own per test): its settings checked at start, and proof
//! of reserves through the API and `vitrine audit --reserves`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use chain::{Address, U256, test_token};
use serde_json::{Value, json};

use crate::support::{BINARY, TestServer};

/// The node, or `None` (the test is skipped) when none is given but under CI.
pub(crate) fn anvil() -> Option<String> {
    match std::env::var("VITRINE_TEST_ANVIL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI runs the chain tests: set VITRINE_TEST_ANVIL (scripts/anvil)")
        }
        _ => None,
    }
}

/// A fresh market key in `dir` (mode 0600); its address.
pub(crate) fn market_key(dir: &Path) -> (std::path::PathBuf, Address) {
    let path = dir.join("market.key");
    let address = test_token::new_key_file(&path).unwrap();
    (path, address)
}

pub(crate) fn chain_setting(url: &str, token: &str, key_file: &Path) -> String {
    format!(
        "{{rpc_url = \"{url}\", network = \"eip155:31337\", token = \"{token}\", key_file = \"{}\", confirmations = 2}}",
        key_file.display()
    )
}

/// A private anvil (`anvil --port 0`), stopped when dropped: it mines only
/// when told once `manual_mining` is called.
pub(crate) struct PrivateAnvil {
    child: Child,
    pub(crate) url: String,
}

impl PrivateAnvil {
    /// Started from the binary `scripts/anvil` installed, when the shared
    /// one is given (`VITRINE_TEST_ANVIL`).
    pub(crate) fn start() -> Option<PrivateAnvil> {
        anvil()?;
        let binary = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
        );
        let mut child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", "0", "--chain-id", "31337"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} (scripts/anvil installs it): {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines.next().expect("anvil said where it listens").unwrap();
            if let Some(at) = line.strip_prefix("Listening on ") {
                break format!("http://{}", at.trim());
            }
        };
        // Its output is drained, so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some(PrivateAnvil { child, url })
    }

    pub(crate) async fn manual_mining(&self) {
        let client = reqwest::Client::new();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "evm_setAutomine", "params": [false]});
        let answer: Value = client.post(&self.url).json(&body).send().await.unwrap().json().await.unwrap();
        assert!(answer.get("error").is_none(), "{answer}");
    }
}

impl Drop for PrivateAnvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u8).pow(U256::from(18u8))
}

#[tokio::test]
async fn the_reserves_show_what_the_market_holds_against_what_it_owes() {
    let Some(url) = anvil() else { return };
    let payer = test_token::funded_key(&url).await.unwrap();
    let token = test_token::deploy(&url, &payer, "OpenGradient", "2", 18).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, address) = market_key(keys.path());
    test_token::mint(&url, &payer, token, address, tokens(5)).await.unwrap();
    test_token::mine(&url, 2).await.unwrap();
    let setting = chain_setting(&url, &token.to_string(), &key_file);
    let server = TestServer::start_with(&[("chain", &setting)]);
    let api = server.api();

    let reserves = api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(reserves["network"], "eip155:31337");
    assert_eq!(reserves["address"], address.to_string());
    assert_eq!(reserves["token"], token.to_string());
    assert_eq!(
        (reserves["onchain_balance"].as_str(), reserves["liabilities"].as_str()),
        (Some("5000000000"), Some("0"))
    );
    let block = reserves["block"].as_u64().unwrap();

    // The ledger owes what it credits: 3 tokens deposited.
    let alice = api.signup("alice").await;
    let body = json!({"account": "alice", "amount": "3000000000", "reference": "wire-1"});
    api.post("/v1/admin/deposits", Some(&server.operator_key), body).await.ok(201);
    let reserves = api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(reserves["liabilities"], "3000000000");
    assert!(reserves["block"].as_u64().unwrap() >= block);
    assert!(!alice.is_empty());

    // Anyone can check, against their own node.
    let audit = |extra: &[&str]| {
        Command::new(BINARY)
            .args(["audit", "--reserves", "--server", &server.url])
            .args(extra)
            .env("VITRINE_CLIENT_CONFIG", keys.path().join("client.toml"))
            .output()
            .unwrap()
    };
    let output = audit(&["--rpc-url", &url]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("owed by the ledger: 3 OPG") && stdout.contains("2 OPG to spare"), "{stdout}");

    // Owing more than it holds fails the audit, naming the shortfall.
    let body = json!({"account": "alice", "amount": "4000000000", "reference": "wire-2"});
    api.post("/v1/admin/deposits", Some(&server.operator_key), body).await.ok(201);
    let output = audit(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("owes 2 OPG more than it holds"), "{stderr}");
}

#[tokio::test]
async fn a_market_without_a_chain_says_so() {
    let server = TestServer::start();
    let message = server.api().get("/v1/chain/reserves", None).await.error(404, "not_found");
    assert!(message.contains("no chain"), "{message}");
}

#[tokio::test]
async fn a_market_whose_chain_setting_is_wrong_does_not_start() {
    let Some(url) = anvil() else { return };
    let payer = test_token::funded_key(&url).await.unwrap();
    let token = test_token::deploy(&url, &payer, "OpenGradient", "2", 18).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, _) = market_key(dir.path());
    let serve = |setting: String| {
        let output = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--set", &format!("chain={setting}")])
            .env("ORT_DISABLE_TELEMETRY", "1")
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let wrong_network = chain_setting(&url, &token.to_string(), &key_file).replace("eip155:31337", "eip155:8453");
    assert!(serve(wrong_network).contains("chain 31337, not 8453"));
    let not_a_token = chain_setting(&url, &Address::repeat_byte(7).to_string(), &key_file);
    assert!(serve(not_a_token).contains("does not answer as an ERC-20"));
    let setting = chain_setting(&url, &token.to_string(), &key_file);
    let ftp = format!("{}, facilitator_url = \"ftp://x402.example\"}}", setting.trim_end_matches('}'));
    assert!(serve(ftp).contains("chain.facilitator_url \"ftp://x402.example\": not an http(s) URL"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    let stderr = serve(chain_setting(&url, &token.to_string(), &key_file));
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(key.trim().trim_start_matches("0x")), "the key is never shown");
}

#[tokio::test]
async fn the_log_is_anchored_on_the_chain_and_anyone_can_check_the_anchors() {
    // A chain of its own: the test reorganises it.
    let Some(private) = PrivateAnvil::start() else { return };
    let url = private.url.clone();
    let payer = test_token::funded_key(&url).await.unwrap();
    let token = test_token::deploy(&url, &payer, "OpenGradient", "2", 18).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, market) = market_key(keys.path());
    test_token::fund(&url, market).await.unwrap();
    let setting = chain_setting(&url, &token.to_string(), &key_file);
    let setting = format!("{}, anchor_interval_seconds = 1}}", setting.trim_end_matches('}'));
    let server = TestServer::start_with(&[("chain", &setting), ("checkpoint_interval_ms", "200")]);
    let api = server.api();
    let alice = api.signup("alice").await;
    api.model_with_version(&alice, "alice", "linear", "linear").await;
    for _ in 0..3 {
        api.post("/v1/models/alice/linear/infer", Some(&alice), crate::ledger::linear_call()).await.ok(200);
    }
    // Anchored within a round or two of the checkpoint.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let anchor = loop {
        let list = api.get("/v1/log/anchors", None).await.ok(200).clone();
        if let Some(anchor) = list["items"].as_array().unwrap().iter().find(|a| a["size"] == 3) {
            assert_eq!(list["address"], format!("{market:#x}"));
            break anchor.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no anchor of 3 leaves: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let transaction = anchor["transaction"].as_str().unwrap().to_owned();
    eprintln!("gas per anchor: {}", test_token::gas_used(&url, transaction.parse().unwrap()).await.unwrap());
    // On the chain, as anyone's node shows it: the checkpoint's body.
    let seen = chain::anchors::transaction_at(&url, transaction.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((seen.from, seen.to), (market, Some(market)));
    let data = String::from_utf8(seen.input.to_vec()).unwrap();
    let checkpoint = api.get("/v1/log/checkpoint", None).await.ok(200).clone();
    let note = checkpoint["note"].as_str().unwrap_or_default().to_owned();
    assert!(data.starts_with("vitrine-anchor/1\nvitrine.local/log\n3\n"), "{data}");
    assert!(note.is_empty() || note.starts_with(data.trim_start_matches("vitrine-anchor/1\n")), "{data} vs {note}");

    let audit = || {
        Command::new(BINARY)
            .args(["audit", "--anchors", "--rpc-url", &url, "--server", &server.url])
            .env("VITRINE_CLIENT_CONFIG", keys.path().join("client.toml"))
            .output()
            .unwrap()
    };
    let output = audit();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&transaction) && stdout.contains("audit passed"), "{stdout}");

    // An anchor reorganised away is no anchor: the audit names it.
    let head =
        chain::anchors::transaction_at(&url, transaction.parse().unwrap()).await.unwrap().unwrap().block.unwrap();
    let now = {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
        let answer: Value = reqwest::Client::new().post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        u64::from_str_radix(answer["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    test_token::reorg(&url, now - head + 1).await.unwrap();
    let output = audit();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("mismatch: anchor of 3 leaves"), "{stderr}");
}
