//! A market on a chain (anvil from `scripts/anvil`, `VITRINE_TEST_ANVIL`;
//! a token of its own per test): its settings checked at start, and proof
//! of reserves through the API and `vitrine audit --reserves`.

use std::path::Path;
use std::process::Command;

use chain::{Address, U256, test_token};
use serde_json::json;

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
