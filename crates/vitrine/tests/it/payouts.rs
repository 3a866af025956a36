//! Payouts on the chain: to proven addresses only, sent by the market as
//! token transfers through a durable state machine (requested → signed →
//! broadcast → mined → final), complete only once final; automatic payouts
//! above a threshold; a payout the market's reserves cannot pay waits and
//! can be refused. On a private anvil that mines only when told: a SIGKILL
//! between broadcast and mining (and the chain's pool forgetting the
//! transaction) sends the very same transaction again, and a payout that
//! waits is re-sent with a higher fee and the same nonce, paid once.

use std::process::Command;

use chain::{Address, PrivateKeySigner, U256, test_token};
use serde_json::{Value, json};

use crate::chain::{PrivateAnvil, anvil, chain_setting, market_key};
use crate::ledger::{deposit, units};
use crate::support::{Api, BINARY, TestServer, signal};

/// Whole tokens in token units (18 decimals).
fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u8).pow(U256::from(18u8))
}

/// Whole tokens in ledger minor units (9 decimals).
const TOKEN: u64 = 1_000_000_000;

/// A market on its own token holding `reserves` tokens, its creator alice
/// with `balance` tokens in the ledger and a wallet she has proven.
struct Market {
    server: TestServer,
    api: Api,
    rpc: String,
    token: Address,
    market: Address,
    alice: String,
    wallet: PrivateKeySigner,
    keys: tempfile::TempDir,
}

async fn market(rpc: &str, reserves: u64, balance: u64, extra: &str) -> Market {
    let deployer = test_token::funded_key(rpc).await.unwrap();
    let token = test_token::deploy(rpc, &deployer, "OpenGradient", "2", 18).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, market) = market_key(keys.path());
    test_token::fund(rpc, market).await.unwrap();
    test_token::mint(rpc, &deployer, token, market, tokens(reserves)).await.unwrap();
    test_token::mine(rpc, 2).await.unwrap();
    let setting = chain_setting(rpc, &token.to_string(), &key_file);
    let setting = format!("{}{extra}}}", setting.trim_end_matches('}'));
    let server = TestServer::start_with(&[("chain", &setting)]);
    let api = server.api();
    let alice = api.signup("alice").await;
    deposit(&api, &server.operator_key, "alice", balance * TOKEN, "wire").await;
    let wallet = PrivateKeySigner::random();
    let message =
        api.get("/v1/account/addresses/challenge", Some(&alice)).await.ok(200)["message"].as_str().unwrap().to_owned();
    let signature = chain::deposits::sign_message(&wallet, &message).unwrap();
    let body = json!({"address": format!("{:#x}", wallet.address()), "signature": signature});
    api.post("/v1/account/addresses", Some(&alice), body).await.ok(201);
    Market { server, api, rpc: rpc.to_owned(), token, market, alice, wallet, keys }
}

impl Market {
    fn address(&self) -> String {
        format!("{:#x}", self.wallet.address())
    }

    async fn request(&self, amount: u64, address: &str) -> crate::support::Answer {
        let body = json!({"amount": (amount * TOKEN).to_string(), "address": address});
        self.api.post("/v1/payouts", Some(&self.alice), body).await
    }

    async fn payout(&self, id: i64) -> Value {
        let list = self.api.get("/v1/payouts", Some(&self.alice)).await.ok(200).clone();
        list["items"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap().clone()
    }

    async fn wallet_balance(&self) -> U256 {
        test_token::balance(&self.rpc, self.token, self.wallet.address()).await.unwrap()
    }

    async fn ledger(&self, field: &str) -> i128 {
        units(&self.api, &self.server.operator_key, "alice", field).await
    }

    /// Waits (up to 30 s) until payout `id` satisfies `check`; its view.
    async fn until(&self, id: i64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let payout = self.payout(id).await;
            if check(&payout) {
                return payout;
            }
            assert!(std::time::Instant::now() < deadline, "waited 30 s for {what}: {payout}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    fn cli(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(BINARY)
            .args(args)
            .args(["--url", &self.server.url, "--key", &self.alice])
            .env("VITRINE_CLIENT_CONFIG", self.keys.path().join("client.toml"))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }
}

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |payout: &Value| payout["state"] == state
}

#[tokio::test]
async fn payouts_go_on_chain_to_proven_addresses_and_complete_once_final() {
    let Some(rpc) = anvil() else { return };
    let m = market(&rpc, 10, 5, "").await;
    let op = m.server.operator_key.clone();

    // Only to a proven address, and on a market with a chain, always to one.
    let stranger = format!("{:#x}", PrivateKeySigner::random().address());
    let refused = m.request(1, &stranger).await.error(422, "address_not_proven");
    assert!(refused.contains("prove it first"), "{refused}");
    m.request(1, "0x12").await.error(422, "invalid_request");
    let body = json!({"amount": TOKEN.to_string()});
    m.api.post("/v1/payouts", Some(&m.alice), body).await.error(422, "invalid_request");
    assert_eq!(m.ledger("balance").await, (5 * TOKEN) as i128, "nothing moved");

    // Paid by a transfer, complete once final.
    let requested = m.request(2, &m.address()).await.ok(201).clone();
    assert_eq!((requested["state"].as_str(), requested["address"].as_str()), (Some("requested"), Some(&*m.address())));
    let id = requested["id"].as_i64().unwrap();
    assert_eq!(m.ledger("balance").await, (3 * TOKEN) as i128, "its tokens wait in the payouts account");
    let mined = m.until(id, "the payout mined", state_is("mined")).await;
    assert_eq!(m.wallet_balance().await, tokens(2));
    // The operator's hand does not complete a payout on the chain.
    let body = json!({"reference": "wire 7"});
    let refused = m.api.post(&format!("/v1/admin/payouts/{id}/complete"), Some(&op), body.clone()).await;
    assert!(refused.error(409, "conflict").contains("paid on the chain"));
    m.api.post(&format!("/v1/admin/payouts/{id}/reject"), Some(&op), body).await.error(409, "conflict");
    let transaction = mined["transaction"].as_str().unwrap().to_owned();
    assert_eq!(mined["transactions"], json!([transaction.clone()]));
    // Mined, not final: the reserves' block does not hold it yet, and the ledger still owes it.
    let reserves = m.api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(
        (reserves["onchain_balance"].as_str(), reserves["liabilities"].as_str()),
        (Some("10000000000"), Some("5000000000"))
    );
    test_token::mine(&m.rpc, 2).await.unwrap();
    let done = m.until(id, "the payout final", state_is("final")).await;
    assert_eq!(done["transaction"], transaction.as_str());
    assert!(done["resolved_at"].is_string() && done["block"].as_u64().is_some(), "{done}");
    assert!(done["reference"].as_str().unwrap().contains(&transaction), "{done}");
    let gas = test_token::gas_used(&m.rpc, transaction.parse().unwrap()).await.unwrap();
    eprintln!("gas per payout: {gas}");
    assert_eq!(m.ledger("balance").await, (3 * TOKEN) as i128);
    let ledger = m.api.get("/v1/admin/ledger", Some(&op)).await.ok(200).clone();
    assert_eq!(ledger["paid_out_total"], (2 * TOKEN).to_string());
    test_token::mine(&m.rpc, 1).await.unwrap();
    let reserves = m.api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(
        (reserves["onchain_balance"].as_str(), reserves["liabilities"].as_str()),
        (Some("8000000000"), Some("3000000000"))
    );
    // In the ledger's history, with its transaction.
    let transfers = m.api.get("/v1/account/transfers", Some(&m.alice)).await.ok(200).clone();
    assert!(transfers.to_string().contains(&m.address()), "{transfers}");
    // On the dashboard: the payout's transaction on the account page, the reserves on the log page.
    let panel = m.api.request(reqwest::Method::GET, "/account/panel", Some(&m.alice)).send().await.unwrap();
    let panel = panel.text().await.unwrap();
    assert!(panel.contains(&format!("data-transaction=\"{transaction}\"")), "{panel}");
    assert!(panel.contains("Paying and getting paid with a wallet") && panel.contains(&m.address()), "{panel}");
    let page = m.api.text("/log").await;
    assert!(page.contains("id=\"reserves\"") && page.contains("data-covered=\"true\""), "{page}");
    // From the command line, with its transaction.
    let (ok, listed) = m.cli(&["payout", "list"]);
    assert!(ok && listed.contains(&transaction) && listed.contains("final"), "{listed}");

    // A payout the market's reserves cannot pay waits, and the operator can refuse it.
    deposit(&m.api, &op, "alice", 20 * TOKEN, "unbacked").await;
    let big = m.request(20, &m.address()).await.ok(201)["id"].as_i64().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(m.payout(big).await["state"], "requested");
    let body = json!({"reference": "the market cannot pay it"});
    let rejected = m.api.post(&format!("/v1/admin/payouts/{big}/reject"), Some(&op), body).await.ok(200).clone();
    assert_eq!(rejected["state"], "failed");
    assert_eq!(m.ledger("balance").await, (23 * TOKEN) as i128, "its tokens went back");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(m.wallet_balance().await, tokens(2), "nothing more was sent");

    // Automatic payouts: once the balance reaches the threshold, all of it.
    let body = json!({"address": stranger, "threshold": TOKEN.to_string()});
    let request = m.api.request(reqwest::Method::PUT, "/v1/payouts/automatic", Some(&m.alice)).json(&body);
    m.api.send(request).await.error(422, "address_not_proven");
    let (ok, shown) = m.cli(&["payout", "auto"]);
    assert!(ok && shown.contains("no automatic payouts"), "{shown}");
    let (ok, text) = m.cli(&["payout", "auto", "--address", &m.address(), "--threshold", "30"]);
    assert!(ok && text.contains("30 OPG"), "{text}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let count = m.api.get("/v1/payouts", Some(&m.alice)).await.ok(200)["items"].as_array().unwrap().len();
    assert_eq!(count, 2, "23 tokens are below the threshold");
    // Back in the reserves' reach: 23 tokens owed, 8 held; 20 more arrive.
    test_token::mint(&m.rpc, &test_token::funded_key(&m.rpc).await.unwrap(), m.token, m.market, tokens(20))
        .await
        .unwrap();
    let (ok, text) = m.cli(&["payout", "auto", "--address", &m.address(), "--threshold", "7"]);
    assert!(ok, "{text}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let automatic = loop {
        let items = m.api.get("/v1/payouts", Some(&m.alice)).await.ok(200)["items"].as_array().unwrap().clone();
        if items.len() == 3 {
            break items[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "waited 30 s for the automatic payout: {items:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(automatic["amount"], (23 * TOKEN).to_string());
    let id = automatic["id"].as_i64().unwrap();
    m.until(id, "the automatic payout mined", state_is("mined")).await;
    test_token::mine(&m.rpc, 2).await.unwrap();
    m.until(id, "the automatic payout final", state_is("final")).await;
    assert_eq!(m.wallet_balance().await, tokens(25));
    assert_eq!(m.ledger("balance").await, 0);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let items = m.api.get("/v1/payouts", Some(&m.alice)).await.ok(200)["items"].as_array().unwrap().len();
    assert_eq!(items, 3, "an empty balance asks for nothing");
    let (ok, text) = m.cli(&["payout", "auto", "--off"]);
    assert!(ok, "{text}");
    let auto = m.api.get("/v1/payouts/automatic", Some(&m.alice)).await.ok(200).clone();
    assert_eq!(auto, json!({"address": null, "threshold": null}));
}

#[tokio::test]
async fn a_payout_killed_between_broadcast_and_mining_is_sent_again_bumped_and_paid_once() {
    let Some(anvil) = PrivateAnvil::start() else { return };
    let m = market(&anvil.url, 10, 5, ", fee_bump_seconds = 4").await;
    anvil.manual_mining().await;
    let id = m.request(2, &m.address()).await.ok(201)["id"].as_i64().unwrap();
    let sent = m.until(id, "the payout broadcast", state_is("broadcast")).await;
    let first = sent["transaction"].as_str().unwrap().to_owned();
    let nonce = sent["nonce"].as_u64().unwrap();
    let known = test_token::transaction(&anvil.url, first.parse().unwrap()).await.unwrap();
    assert_eq!(known, Some((nonce, None)), "pending in the chain's pool");

    // Killed between broadcast and mining, and the chain's pool forgets it.
    let Market { mut server, api, rpc, token, market, alice, wallet, keys } = m;
    signal(server.pid(), "KILL");
    server.terminate_wait();
    test_token::drop_pending(&anvil.url).await.unwrap();
    assert_eq!(test_token::transaction(&anvil.url, first.parse().unwrap()).await.unwrap(), None);
    let server = server.restart_stopped();
    let m = Market { api: server.api(), server, rpc, token, market, alice, wallet, keys };
    drop(api);
    // The same transaction, sent again (before any call is served).
    let known = test_token::transaction(&anvil.url, first.parse().unwrap()).await.unwrap();
    assert_eq!(known, Some((nonce, None)), "the stored transaction was sent again");
    assert_eq!(m.payout(id).await["transactions"], json!([first.clone()]));

    // Unmined past fee_bump_seconds: the same nonce, a higher fee.
    let bumped = m.until(id, "a fee bump", |p| p["transactions"].as_array().unwrap().len() >= 2).await;
    assert_eq!(bumped["nonce"].as_u64(), Some(nonce));
    assert_eq!(bumped["transactions"][0], first.as_str());
    let second = bumped["transactions"][1].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(test_token::transaction(&anvil.url, second.parse().unwrap()).await.unwrap(), Some((nonce, None)));
    assert_eq!(bumped["state"], "broadcast", "complete only once final");
    assert_eq!(m.wallet_balance().await, U256::ZERO);

    // Mined: one of them, once.
    test_token::mine(&anvil.url, 1).await.unwrap();
    let mined = m.until(id, "the payout mined", state_is("mined")).await;
    let paid_by = mined["transaction"].as_str().unwrap().to_owned();
    let hashes: Vec<String> =
        mined["transactions"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_owned()).collect();
    assert!(hashes.contains(&paid_by), "{mined}");
    test_token::mine(&anvil.url, 2).await.unwrap();
    m.until(id, "the payout final", state_is("final")).await;
    assert_eq!(m.wallet_balance().await, tokens(2), "paid once");
    assert_eq!(m.ledger("balance").await, (3 * TOKEN) as i128);
    // Exactly one transaction used the nonce: the next payout takes the next one.
    let next = m.request(1, &m.address()).await.ok(201)["id"].as_i64().unwrap();
    let sent = m.until(next, "the next payout broadcast", state_is("broadcast")).await;
    assert_eq!(sent["nonce"].as_u64(), Some(nonce + 1));
    test_token::mine(&anvil.url, 3).await.unwrap();
    m.until(next, "the next payout final", state_is("final")).await;
    assert_eq!(m.wallet_balance().await, tokens(3));
    let reserves = m.api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(
        (reserves["onchain_balance"].as_str(), reserves["liabilities"].as_str()),
        (Some("7000000000"), Some("2000000000"))
    );
}
