//! Calls paid with x402 on a chain (anvil, `VITRINE_TEST_ANVIL`; a token of
//! its own per test), by callers without an account: the 402 and its terms,
//! the paid retry, its split in the ledger and its receipt; payments built
//! to cheat, and faults (the payer's tokens moved away mid-call, the chain's
//! node gone, a crash between settlement and the ledger write).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chain::x402::{PaymentPayload, PaymentRequired, PaymentRequirements, SettlementResponse, sign_payment};
use chain::{Address, PrivateKeySigner, Token, U256, test_token};
use serde_json::{Value, json};

use crate::chain::{anvil, chain_setting, market_key};
use crate::ledger::{linear_call, priced_model, units};
use crate::support::{Api, TestServer};

/// The price of the tests' model: 0.002 OPG in minor units (9 decimals).
const PRICE: u64 = 2_000_000;
/// The same in the token's units (18 decimals).
fn price_in_token() -> U256 {
    U256::from(PRICE) * U256::from(10u64.pow(9))
}

/// A market on its own token, a creator with a priced model, and a payer
/// holding `payer_tokens` token units (and ether, for its own transfers).
struct Market {
    server: TestServer,
    api: Api,
    rpc: String,
    token: Token,
    market: Address,
    payer: PrivateKeySigner,
    payer_key: String,
    alice: String,
    _keys: tempfile::TempDir,
}

async fn market(payer_tokens: U256, extra: &[(&str, &str)]) -> Option<Market> {
    market_through(payer_tokens, extra, None).await
}

/// `market`, its server reaching the chain through `proxy` if given.
async fn market_through(payer_tokens: U256, extra: &[(&str, &str)], proxy: Option<&str>) -> Option<Market> {
    let rpc = anvil()?;
    let deployer = test_token::funded_key(&rpc).await.unwrap();
    let address = test_token::deploy(&rpc, &deployer, "OpenGradient", "2", 18).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, market) = market_key(keys.path());
    // The market pays the gas of its settlements.
    test_token::fund(&rpc, market).await.unwrap();
    let payer_key = test_token::funded_key(&rpc).await.unwrap();
    let payer: PrivateKeySigner = payer_key.parse().unwrap();
    if payer_tokens > U256::ZERO {
        test_token::mint(&rpc, &deployer, address, payer.address(), payer_tokens).await.unwrap();
    }
    let setting = chain_setting(proxy.unwrap_or(&rpc), &address.to_string(), &key_file);
    let mut settings = vec![("chain", setting.as_str())];
    settings.extend_from_slice(extra);
    let server = TestServer::start_with(&settings);
    let api = server.api();
    let alice = api.signup("alice").await;
    priced_model(&api, &alice, "alice", "linear", PRICE).await;
    let token = Token { address, name: "OpenGradient".into(), version: "2".into(), decimals: 18 };
    Some(Market { server, api, rpc, token, market, payer, payer_key, alice, _keys: keys })
}

impl Market {
    /// A keyless call of `model`, with `payment` if any: its status, body
    /// and headers.
    async fn call(&self, model: &str, payment: Option<&PaymentPayload>) -> (u16, Value, reqwest::header::HeaderMap) {
        self.call_with(model, payment.map(chain::x402::encode_header), linear_call()).await
    }

    async fn call_with(
        &self,
        model: &str,
        signature: Option<String>,
        body: Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request =
            self.api.request(reqwest::Method::POST, &format!("/v1/models/{model}/infer"), None).json(&body);
        if let Some(signature) = signature {
            request = request.header("PAYMENT-SIGNATURE", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, response.json().await.unwrap_or(Value::Null), headers)
    }

    /// The terms a keyless call of `model` is answered with.
    async fn terms(&self, model: &str) -> PaymentRequirements {
        let (status, body, headers) = self.call(model, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_required")), "{body}");
        decoded::<PaymentRequired>(&headers, "payment-required").accepts.remove(0)
    }

    /// A payment of `terms` by the payer, valid from ten minutes ago (as the
    /// official client signs: a chain whose clock lags still takes it) to
    /// two minutes ahead.
    fn pay(&self, terms: &PaymentRequirements) -> PaymentPayload {
        self.pay_as(&self.payer, terms, now() - 600, now() + 120)
    }

    fn pay_as(&self, key: &PrivateKeySigner, terms: &PaymentRequirements, after: u64, before: u64) -> PaymentPayload {
        sign_payment(key, terms, 31337, &self.token, after, before).unwrap()
    }

    async fn balance(&self, owner: Address) -> U256 {
        test_token::balance(&self.rpc, self.token.address, owner).await.unwrap()
    }

    async fn refused(&self, payment: &PaymentPayload, reason: &str) {
        let before = self.balance(self.payer.address()).await;
        let (status, body, headers) = self.call("alice/linear", Some(payment)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_invalid")), "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{reason}: {message}");
        // The terms come again, with the reason.
        let terms = decoded::<PaymentRequired>(&headers, "payment-required");
        assert!(terms.error.unwrap().contains(reason));
        assert_eq!(self.balance(self.payer.address()).await, before, "{reason}: nothing moved");
    }
}

fn alloy_hex(key: &PrivateKeySigner) -> String {
    key.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn decoded<T: for<'de> serde::Deserialize<'de>>(headers: &reqwest::header::HeaderMap, name: &str) -> T {
    let value = headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap();
    serde_json::from_slice(&BASE64.decode(value).unwrap()).unwrap()
}

#[tokio::test]
async fn a_caller_without_an_account_pays_a_call_with_x402_and_the_creator_is_paid() {
    let Some(m) = market(price_in_token() * U256::from(3u8), &[]).await else { return };
    let op = m.server.operator_key.clone();

    // No key, no payment: 402 with the terms.
    let (status, body, headers) = m.call("alice/linear", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_required")), "{body}");
    let exposed = headers["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.contains("PAYMENT-REQUIRED") && exposed.contains("PAYMENT-RESPONSE"));
    let required = decoded::<PaymentRequired>(&headers, "payment-required");
    assert_eq!(required.x402_version, 2);
    assert!(required.resource.url.ends_with("/v1/models/alice/linear/infer"), "{}", required.resource.url);
    let terms = &required.accepts[0];
    assert_eq!((terms.scheme.as_str(), terms.network.as_str()), ("exact", "eip155:31337"));
    assert_eq!(terms.amount, price_in_token().to_string());
    assert_eq!(terms.pay_to, format!("{:#x}", m.market));
    assert_eq!(terms.asset, format!("{:#x}", m.token.address));
    assert!(terms.max_timeout_seconds >= 60);
    assert_eq!((terms.extra["name"].as_str(), terms.extra["version"].as_str()), (Some("OpenGradient"), Some("2")));

    // Paid: answered, settled on the chain, split in the ledger.
    let payment = m.pay(terms);
    let (status, body, headers) = m.call("alice/linear", Some(&payment)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["price"], PRICE.to_string());
    let settled = decoded::<SettlementResponse>(&headers, "payment-response");
    assert!(settled.success);
    assert_eq!(settled.payer, format!("{:#x}", m.payer.address()));
    assert_eq!(settled.network, "eip155:31337");
    let receipt = &body["receipt"];
    assert_eq!(receipt["caller"], format!("eip155:31337:{:#x}", m.payer.address()));
    assert_eq!(receipt["settlement"], settled.transaction);
    assert_eq!(receipt["leaf_format"], 3);
    assert_eq!(m.balance(m.market).await, price_in_token());
    assert_eq!(m.balance(m.payer.address()).await, price_in_token() * U256::from(2u8));
    // 15 % to the node, 5 % to the treasury, the rest to the creator.
    assert_eq!(units(&m.api, &op, "alice", "balance").await, (PRICE * 80 / 100) as i128);
    assert_eq!(units(&m.api, &op, "node-local", "balance").await, (PRICE * 15 / 100) as i128);
    assert_eq!(units(&m.api, &op, "treasury", "balance").await, (PRICE * 5 / 100) as i128);
    // The market holds exactly what it owes.
    test_token::mine(&m.rpc, 2).await.unwrap();
    let reserves = m.api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(reserves["onchain_balance"], reserves["liabilities"]);
    assert_eq!(reserves["liabilities"], PRICE.to_string());
    // The receipt is in the log, the payer named in its leaf.
    let index = receipt["log_index"].as_u64().unwrap();
    let logged = m.api.get(&format!("/v1/receipts/{index}"), None).await.ok(200).clone();
    assert_eq!(logged["caller"], receipt["caller"]);
    assert_eq!(logged["settlement"], receipt["settlement"]);

    // The same payment again: refused, whichever model it is sent to.
    m.refused(&payment, "nonce").await;
    m.api.model_with_version(&m.alice, "alice", "other", "linear").await;
    let patch = json!({"price_per_inference": PRICE.to_string()});
    m.api.patch("/v1/models/alice/other", Some(&m.alice), patch).await.ok(200);
    let (status, body, _) = m.call("alice/other", Some(&payment)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_invalid")), "{body}");
    assert_eq!(m.balance(m.market).await, price_in_token());

    // A free model wants a key, paid or not.
    m.api.patch("/v1/models/alice/other", Some(&m.alice), json!({"price_per_inference": "0"})).await.ok(200);
    let (status, body, _) = m.call("alice/other", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");

    // A caller with a key pays from its balance as before, and no 402 terms.
    let bob = m.api.signup("bob").await;
    let (status, body) = {
        let answer = m.api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await;
        (answer.status, answer.body.clone())
    };
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("insufficient_balance")), "{body}");
}

#[tokio::test]
async fn payments_built_to_cheat_are_refused_and_move_nothing() {
    let Some(m) = market(price_in_token() * U256::from(2u8), &[]).await else { return };
    let terms = m.terms("alice/linear").await;

    // Signed by someone else in the payer's name.
    let thief = PrivateKeySigner::random();
    let mut forged = m.pay_as(&thief, &terms, now() - 600, now() + 120);
    forged.payload.authorization.from = format!("{:#x}", m.payer.address());
    m.refused(&forged, "is not 0x").await;

    // Paid to someone else.
    let elsewhere = PaymentRequirements { pay_to: format!("{:#x}", Address::repeat_byte(9)), ..terms.clone() };
    m.refused(&m.pay(&elsewhere), "payTo must be").await;

    // Less than the price: as accepted, or as authorized.
    let cheaper = PaymentRequirements { amount: (price_in_token() - U256::from(1u8)).to_string(), ..terms.clone() };
    m.refused(&m.pay(&cheaper), "the price is").await;
    let mut cheaper_authorization = m.pay(&cheaper);
    cheaper_authorization.accepted = terms.clone();
    m.refused(&cheaper_authorization, "the price is").await;

    // Expired, or not valid yet.
    m.refused(&m.pay_as(&m.payer, &terms, now() - 600, now() - 10), "expires at").await;
    m.refused(&m.pay_as(&m.payer, &terms, now() + 600, now() + 900), "valid only after").await;

    // Another token, another network.
    let other_token = PaymentRequirements { asset: format!("{:#x}", Address::repeat_byte(7)), ..terms.clone() };
    m.refused(&m.pay(&other_token), "asset").await;
    let other_network = PaymentRequirements { network: "eip155:8453".into(), ..terms.clone() };
    m.refused(&m.pay(&other_network), "this market takes exact on eip155:31337").await;

    // A payer without the tokens.
    let poor = PrivateKeySigner::random();
    m.refused(&m.pay_as(&poor, &terms, now() - 600, now() + 120), "token units, ").await;

    // Not a payment at all: 400.
    for garbage in ["not base64!", &BASE64.encode("{\"x402Version\": 2}"), &BASE64.encode("[]")] {
        let (status, body, _) = m.call_with("alice/linear", Some(garbage.to_owned()), linear_call()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{garbage}: {body}");
    }
    // With an Idempotency-Key: its payment is its idempotency.
    let response = m
        .api
        .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", None)
        .header("PAYMENT-SIGNATURE", chain::x402::encode_header(&m.pay(&terms)))
        .header("Idempotency-Key", "k1")
        .json(&linear_call())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    // Inputs that do not fit are refused before the payment is taken: it
    // stays good for a call that fits.
    let payment = m.pay(&terms);
    let bad = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 3], "data": [1, 2, 3]}}});
    let signature = chain::x402::encode_header(&payment);
    let (status, body, _) = m.call_with("alice/linear", Some(signature), bad).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_input")), "{body}");
    assert_eq!(m.balance(m.market).await, U256::ZERO);

    // After all that, an honest payment still goes through.
    let (status, body, _) = m.call("alice/linear", Some(&payment)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(m.balance(m.market).await, price_in_token());
}

#[tokio::test]
async fn tokens_moved_away_while_the_model_runs_settle_nothing() {
    let Some(m) = market(price_in_token(), &[]).await else { return };
    m.api.model_with_version(&m.alice, "alice", "slow", "slow").await;
    let patch = json!({"price_per_inference": PRICE.to_string()});
    m.api.patch("/v1/models/alice/slow", Some(&m.alice), patch).await.ok(200);
    let terms = m.terms("alice/slow").await;
    let payment = m.pay(&terms);
    let input = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.5]}}});
    let call = m.call_with("alice/slow", Some(chain::x402::encode_header(&payment)), input);
    let move_away = async {
        // Verified within a second; the slow model runs for several.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let elsewhere = Address::repeat_byte(5);
        test_token::transfer(&m.rpc, &m.payer_key, m.token.address, elsewhere, price_in_token()).await.unwrap();
    };
    let ((status, body, _), ()) = tokio::join!(call, move_away);
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_invalid")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nothing was paid"), "{body}");
    assert_eq!(m.balance(m.market).await, U256::ZERO);
    let op = m.server.operator_key.clone();
    assert_eq!(units(&m.api, &op, "alice", "balance").await, 0);
}

#[tokio::test]
async fn a_call_that_fails_once_its_payment_is_taken_settles_nothing() {
    let Some(m) = market(price_in_token(), &[("inference_timeout_ms", "300")]).await else { return };
    m.api.model_with_version(&m.alice, "alice", "slow", "slow").await;
    let patch = json!({"price_per_inference": PRICE.to_string()});
    m.api.patch("/v1/models/alice/slow", Some(&m.alice), patch).await.ok(200);
    let payment = m.pay(&m.terms("alice/slow").await);
    let input = json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 1], "data": [0.5]}}});
    let (status, body, headers) =
        m.call_with("alice/slow", Some(chain::x402::encode_header(&payment)), input.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("inference_timeout")), "{body}");
    assert!(headers.get("payment-response").is_none());
    assert_eq!(m.balance(m.market).await, U256::ZERO);
    assert_eq!(m.balance(m.payer.address()).await, price_in_token());
    // Its authorization was taken for that call: a retry signs a new one.
    let (status, body, _) = m.call_with("alice/slow", Some(chain::x402::encode_header(&payment)), input).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_invalid")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("presented before"), "{body}");
}

#[tokio::test]
async fn a_crash_between_settlement_and_the_ledger_credits_the_payment_once_after_restart() {
    let Some(m) = market(price_in_token() * U256::from(2u8), &[]).await else { return };
    let terms = m.terms("alice/linear").await;
    let op = m.server.operator_key.clone();
    let Market { server, rpc, token, market, payer, _keys, .. } = m;
    // The same market, started again to abort once a settlement is mined.
    let mut crashing = server.restart_with_env(&[("VITRINE_CRASH_AFTER_SETTLEMENT".into(), "1".into())]);
    let payment = sign_payment(&payer, &terms, 31337, &token, now() - 600, now() + 300).unwrap();
    let signature = chain::x402::encode_header(&payment);
    let call = |api: Api| {
        let signature = signature.clone();
        async move {
            api.request(reqwest::Method::POST, "/v1/models/alice/linear/infer", None)
                .header("PAYMENT-SIGNATURE", signature)
                .json(&linear_call())
                .send()
                .await
        }
    };
    let response = call(crashing.api()).await;
    assert!(response.is_err(), "the server answered: {:?}", response.map(|r| r.status()));
    assert!(!crashing.terminate_wait().success());
    // Paid on the chain, not yet in the ledger.
    assert_eq!(test_token::balance(&rpc, token.address, market).await.unwrap(), price_in_token());

    // Started again: the settlement is found and credited, once.
    let restarted = crashing.restart_stopped();
    let api = restarted.api();
    assert_eq!(units(&api, &op, "alice", "balance").await, (PRICE * 80 / 100) as i128);
    let restarted = restarted.restart();
    let api = restarted.api();
    assert_eq!(units(&api, &op, "alice", "balance").await, (PRICE * 80 / 100) as i128);
    test_token::mine(&rpc, 2).await.unwrap();
    let reserves = api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(reserves["onchain_balance"], reserves["liabilities"]);
    assert_eq!(reserves["liabilities"], PRICE.to_string());
    // The payment is spent.
    let response = call(api.clone()).await.unwrap();
    assert_eq!(response.status().as_u16(), 402);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payment_invalid", "{body}");
}

#[tokio::test]
async fn an_account_tops_up_its_balance_with_x402_credited_once_final() {
    let Some(m) = market(price_in_token() * U256::from(10u8), &[]).await else { return };
    let op = m.server.operator_key.clone();
    let bob = m.api.signup("bob").await;
    let top_up = |payment: Option<&PaymentPayload>, amount: &str| {
        let mut request =
            m.api.request(reqwest::Method::POST, "/v1/account/topup", Some(&bob)).json(&json!({"amount": amount}));
        if let Some(payment) = payment {
            request = request.header("PAYMENT-SIGNATURE", chain::x402::encode_header(payment));
        }
        async move {
            let response = request.send().await.unwrap();
            let (status, headers) = (response.status().as_u16(), response.headers().clone());
            (status, response.json::<Value>().await.unwrap_or(Value::Null), headers)
        }
    };
    let amount = PRICE * 5;

    // The terms for the amount, in token units.
    let (status, body, headers) = top_up(None, &amount.to_string()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_required")), "{body}");
    let terms = decoded::<PaymentRequired>(&headers, "payment-required").accepts.remove(0);
    assert_eq!(terms.amount, (price_in_token() * U256::from(5u8)).to_string());
    assert_eq!(top_up(None, "0").await.0, 422);

    // Paid: settled, then credited once two blocks stand on it (the test mines them).
    let payment = m.pay(&terms);
    let mining = keep_mining(&m.rpc);
    let (status, body, headers) = top_up(Some(&payment), &amount.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let settled = decoded::<SettlementResponse>(&headers, "payment-response");
    assert_eq!(body["transaction"], settled.transaction);
    assert_eq!(
        (body["transfer"]["kind"].as_str(), body["transfer"]["amount"].as_str()),
        (Some("deposit"), Some("10000000"))
    );
    assert_eq!(units(&m.api, &op, "bob", "balance").await, amount as i128);
    assert_eq!(m.balance(m.market).await, price_in_token() * U256::from(5u8));

    // Once: the same payment again is refused.
    let (status, body, _) = top_up(Some(&payment), &amount.to_string()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_invalid")), "{body}");
    // A payment of other terms is refused too.
    let (status, body, _) = top_up(Some(&m.pay(&terms)), &(amount * 2).to_string()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_invalid")), "{body}");
    assert_eq!(units(&m.api, &op, "bob", "balance").await, amount as i128);

    // The balance pays calls with no gas each.
    let answer = m.api.post("/v1/models/alice/linear/infer", Some(&bob), linear_call()).await;
    assert_eq!(answer.ok(200)["price"], PRICE.to_string());
    assert_eq!(units(&m.api, &op, "bob", "balance").await, (amount - PRICE) as i128);
    mining.abort();
    test_token::mine(&m.rpc, 2).await.unwrap();
    let reserves = m.api.get("/v1/chain/reserves", None).await.ok(200).clone();
    assert_eq!(reserves["onchain_balance"], reserves["liabilities"]);

    // From the command line, with the wallet's key in a file.
    let wallet = m._keys.path().join("wallet.key");
    std::fs::write(&wallet, format!("{}\n", m.payer_key)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wallet, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mining = keep_mining(&m.rpc);
    let output = tokio::process::Command::new(crate::support::BINARY)
        .args(["topup", "0.004", "--wallet-key-file"])
        .arg(&wallet)
        .args(["--url", &m.server.url, "--key", &bob])
        .env("VITRINE_CLIENT_CONFIG", m._keys.path().join("client.toml"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("topped up 0.004 OPG (transaction 0x"), "{stdout}");
    assert_eq!(units(&m.api, &op, "bob", "balance").await, (amount - PRICE + 4_000_000) as i128);
    mining.abort();
}

async fn prove(api: &Api, key: &str, address: &str, signature: &str) -> crate::support::Answer {
    api.post("/v1/account/addresses", Some(key), json!({"address": address, "signature": signature})).await
}

/// Mines a block every 250 ms for 5 s (a top-up waits for finality).
fn keep_mining(rpc: &str) -> tokio::task::JoinHandle<()> {
    let rpc = rpc.to_owned();
    tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            test_token::mine(&rpc, 1).await.unwrap();
        }
    })
}

/// Waits (up to 15 s) until `check` holds, reading every 200 ms.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "waited 15 s for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn transfers_from_a_proven_address_are_deposits_credited_once_final() {
    let Some(m) = market(price_in_token() * U256::from(100u8), &[]).await else { return };
    let op = m.server.operator_key.clone();
    let bob = m.api.signup("bob").await;
    let payer = format!("{:#x}", m.payer.address());

    // Bob proves he holds the payer's address: the challenge, signed.
    let challenge = m.api.get("/v1/account/addresses/challenge", Some(&bob)).await.ok(200).clone();
    let message = challenge["message"].as_str().unwrap().to_owned();
    assert!(message.contains("account bob") && message.contains("eip155:31337"), "{message}");
    let signature = chain::deposits::sign_message(&m.payer, &message).unwrap();
    // Someone else's signature, a signature of another text, a non-address: refused.
    let other = PrivateKeySigner::random();
    let by_other = chain::deposits::sign_message(&other, &message).unwrap();
    assert!(prove(&m.api, &bob, &payer, &by_other).await.error(422, "invalid_request").contains("not"));
    let of_other_text = chain::deposits::sign_message(&m.payer, "something else").unwrap();
    prove(&m.api, &bob, &payer, &of_other_text).await.error(422, "invalid_request");
    prove(&m.api, &bob, "0x12", &signature).await.error(422, "invalid_request");
    let proven = prove(&m.api, &bob, &payer, &signature).await.ok(201).clone();
    assert_eq!(proven["address"], payer);
    // Once proven, it is bob's: alice cannot claim it, even signing her own challenge with its key.
    let alice_message = m.api.get("/v1/account/addresses/challenge", Some(&m.alice)).await.ok(200)["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice_signature = chain::deposits::sign_message(&m.payer, &alice_message).unwrap();
    prove(&m.api, &m.alice, &payer, &alice_signature).await.error(409, "conflict");
    // Bob's own signature again is the same proof.
    assert_eq!(prove(&m.api, &bob, &payer, &signature).await.ok(201)["address"], payer);
    let listed = m.api.get("/v1/account/addresses", Some(&bob)).await.ok(200).clone();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    // From the command line, with a wallet's key in a file.
    let wallet = PrivateKeySigner::random();
    let wallet_file = m._keys.path().join("cli-wallet.key");
    std::fs::write(&wallet_file, format!("0x{}\n", alloy_hex(&wallet))).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wallet_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::support::BINARY)
            .args(args)
            .args(["--url", &m.server.url, "--key", &bob])
            .env("VITRINE_CLIENT_CONFIG", m._keys.path().join("client.toml"))
            .output()
            .unwrap()
    };
    let output = cli(&["address", "prove", "--wallet-key-file", wallet_file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("proved {:#x} on eip155:31337", wallet.address())), "{stdout}");
    let stdout = String::from_utf8(cli(&["address", "list"]).stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    // The market reads from where it stood when it started; a transfer counts once final.
    let balance = || async { units(&m.api, &op, "bob", "balance").await };
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let (_, gas) =
        test_token::transfer(&m.rpc, &m.payer_key, m.token.address, m.market, price_in_token() * U256::from(3u8))
            .await
            .unwrap();
    eprintln!("gas per deposit (a plain transfer to the market): {gas}");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(balance().await, 0, "not final yet");
    test_token::mine(&m.rpc, 2).await.unwrap();
    eventually("the deposit", || async { balance().await == (PRICE * 3) as i128 }).await;

    // A transfer reorganised away before it was final is never credited.
    test_token::transfer(&m.rpc, &m.payer_key, m.token.address, m.market, price_in_token()).await.unwrap();
    test_token::reorg(&m.rpc, 1).await.unwrap();
    // From an address nobody proved: the market's, not a deposit.
    let stranger = test_token::funded_key(&m.rpc).await.unwrap();
    let stranger_address = stranger.parse::<PrivateKeySigner>().unwrap().address();
    let deployer = test_token::funded_key(&m.rpc).await.unwrap();
    test_token::mint(&m.rpc, &deployer, m.token.address, stranger_address, price_in_token()).await.unwrap();
    test_token::transfer(&m.rpc, &stranger, m.token.address, m.market, price_in_token()).await.unwrap();
    // An x402 top-up by the proven address: credited as the top-up, never again as a deposit.
    let terms = {
        let response = m
            .api
            .request(reqwest::Method::POST, "/v1/account/topup", Some(&bob))
            .json(&json!({"amount": PRICE.to_string()}))
            .send()
            .await
            .unwrap();
        decoded::<PaymentRequired>(response.headers(), "payment-required").accepts.remove(0)
    };
    let mining = tokio::spawn({
        let rpc = m.rpc.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                test_token::mine(&rpc, 1).await.unwrap();
            }
        }
    });
    let response = m
        .api
        .request(reqwest::Method::POST, "/v1/account/topup", Some(&bob))
        .header("PAYMENT-SIGNATURE", chain::x402::encode_header(&m.pay(&terms)))
        .json(&json!({"amount": PRICE.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{}", response.text().await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5_000)).await;
    mining.abort();
    assert_eq!(balance().await, (PRICE * 4) as i128, "the deposit and the top-up, each once");

    // A restart reads nothing twice.
    let server = m.server.restart();
    let api = server.api();
    test_token::mine(&m.rpc, 3).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(4_500)).await;
    assert_eq!(units(&api, &op, "bob", "balance").await, (PRICE * 4) as i128);
    // The market holds more than it owes: the stranger's transfer.
    let reserves = api.get("/v1/chain/reserves", None).await.ok(200).clone();
    let (held, owed) = (reserves["onchain_balance"].as_str().unwrap(), reserves["liabilities"].as_str().unwrap());
    assert_eq!((held.parse::<u64>().unwrap(), owed.parse::<u64>().unwrap()), (PRICE * 5, PRICE * 4));
}

/// A TCP proxy to the chain's node that can be cut: its connections
/// dropped and new ones refused, until it is restored.
struct Proxy {
    url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn to(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (accepting, cuts) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue;
                }
                let (target, mut cuts) = (target.clone(), cuts.subscribe());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy { url, open, cut }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|cuts| *cuts += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

// Several threads: the proxy serves the server while the test waits for it
// to start (which blocks its thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_node_gone_mid_call_answers_503_before_the_model_runs_and_nothing_moves() {
    let Some(rpc) = anvil() else { return };
    let proxy = Proxy::to(&rpc).await;
    let Some(m) = market_through(price_in_token(), &[], Some(&proxy.url)).await else { return };
    let payment = m.pay(&m.terms("alice/linear").await);
    let runs = m.api.metric("vitrine_model_runs_total").await;
    proxy.cut();
    let (status, body, _) = m.call("alice/linear", Some(&payment)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nothing ran"), "{body}");
    assert_eq!(m.api.metric("vitrine_model_runs_total").await, runs, "the model did not run");
    assert_eq!(m.balance(m.market).await, U256::ZERO);
    // Back: the same payment was never taken, and pays now.
    proxy.restore();
    let (status, body, _) = m.call("alice/linear", Some(&payment)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(m.balance(m.market).await, price_in_token());
}

#[tokio::test]
async fn without_a_chain_a_keyless_call_is_refused_as_before() {
    let server = TestServer::start();
    let api = server.api();
    let alice = api.signup("alice").await;
    priced_model(&api, &alice, "alice", "linear", PRICE).await;
    let answer = api.post("/v1/models/alice/linear/infer", None, linear_call()).await;
    answer.error(401, "unauthorized");
    let response = api
        .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", None)
        .header("PAYMENT-SIGNATURE", "e30=")
        .json(&linear_call())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let answer = api.post("/v1/account/topup", Some(&alice), json!({"amount": "1000"})).await;
    answer.error(404, "not_found");
}

#[tokio::test]
async fn a_facilitator_that_does_not_answer_is_503_before_the_model_runs_and_nothing_moves() {
    let Some(rpc) = anvil() else { return };
    let deployer = test_token::funded_key(&rpc).await.unwrap();
    let address = test_token::deploy(&rpc, &deployer, "OpenGradient", "2", 18).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, market) = market_key(keys.path());
    let payer: PrivateKeySigner = test_token::funded_key(&rpc).await.unwrap().parse().unwrap();
    test_token::mint(&rpc, &deployer, address, payer.address(), price_in_token()).await.unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let setting = chain_setting(&rpc, &address.to_string(), &key_file);
    let setting = format!("{}, facilitator_url = \"http://{closed}\"}}", setting.trim_end_matches('}'));
    let server = TestServer::start_with(&[("chain", &setting)]);
    let api = server.api();
    let alice = api.signup("alice").await;
    priced_model(&api, &alice, "alice", "linear", PRICE).await;
    let token = Token { address, name: "OpenGradient".into(), version: "2".into(), decimals: 18 };
    let m =
        Market { server, api, rpc, token, market, payer: payer.clone(), payer_key: String::new(), alice, _keys: keys };
    let terms = m.terms("alice/linear").await;
    let payment = m.pay(&terms);
    let runs = m.api.metric("vitrine_model_runs_total").await;
    let (status, body, _) = m.call("alice/linear", Some(&payment)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert_eq!(m.api.metric("vitrine_model_runs_total").await, runs, "the model did not run");
    assert_eq!(m.balance(m.payer.address()).await, price_in_token(), "nothing moved");
    assert_eq!(m.balance(m.market).await, U256::ZERO);
}

/// The crash loop on a market paid on its chain: callers without accounts
/// pay every call with x402 while the server is killed (SIGKILL) at random;
/// after each restart the ledger owes exactly what the market holds on the
/// chain (never more: nothing credited without its tokens, nothing paid
/// and lost), every answered call was paid once, and no authorization paid
/// twice. `SERVER_CRASH_LOOP_KILLS` kills (3 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_x402_load_never_owes_more_than_the_reserves() {
    let kills: u64 = std::env::var("SERVER_CRASH_LOOP_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let Some(m) = market(price_in_token() * U256::from(100_000u32), &[]).await else { return };
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("x402 crash loop: {kills} kills, seed {seed}");
    let mut random = runtime::synthetic::Seeded::new(seed);
    let terms = m.terms("alice/linear").await;
    let op = m.server.operator_key.clone();
    let Market { server, rpc, token, market, payer, _keys, .. } = m;
    let mut server = server;
    let mut answered_total = 0u64;
    for round in 0..kills {
        let api = server.api();
        let mut clients = vec![];
        for _ in 0..4 {
            let (api, payer, terms, token) = (api.clone(), payer.clone(), terms.clone(), token.clone());
            clients.push(tokio::spawn(async move {
                let mut answered = 0u64;
                loop {
                    let payment = sign_payment(&payer, &terms, 31337, &token, now() - 600, now() + 300).unwrap();
                    let request = api
                        .request(reqwest::Method::POST, "/v1/models/alice/linear/infer", None)
                        .header("PAYMENT-SIGNATURE", chain::x402::encode_header(&payment))
                        .json(&linear_call());
                    match request.send().await {
                        Ok(response) if response.status() == 200 => match response.text().await {
                            Ok(_) => answered += 1,
                            Err(_) => break,
                        },
                        // 503 while the chain's node or the server is busy: tried again.
                        Ok(response) if response.status() == 503 => {}
                        Ok(response) => {
                            let status = response.status();
                            panic!("HTTP {status}: {}", response.text().await.unwrap_or_default())
                        }
                        Err(_) => break,
                    }
                }
                answered
            }));
        }
        let delay_ms = 300 + random.next_u64() % 900;
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        server = server.kill_and_restart();
        let mut answered = 0;
        for client in clients {
            answered += client.await.unwrap();
        }
        assert!(answered > 0, "round {round}: the load ran before the kill");
        answered_total += answered;

        // Settled before the kill and not yet written: credited at the start.
        let api = server.api();
        let held = test_token::balance(&rpc, token.address, market).await.unwrap();
        let (onchain, rest) = chain::Units { ledger_decimals: 9, token_decimals: 18 }.to_ledger(held).unwrap();
        assert_eq!(rest, U256::ZERO);
        let ledger = api.get("/v1/admin/ledger", Some(&op)).await.ok(200).clone();
        let circulating: u64 = ledger["circulating"].as_str().unwrap().parse().unwrap();
        assert_eq!(circulating, onchain, "round {round}: the ledger owes exactly what the market holds");
        assert_eq!(ledger["debits_total"], ledger["credits_total"], "round {round}");
        let calls_paid = onchain / PRICE;
        assert!(answered_total <= calls_paid, "round {round}: {answered_total} answered, {calls_paid} paid");
        // And at a final block, as anyone can check.
        test_token::mine(&rpc, 2).await.unwrap();
        let reserves = api.get("/v1/chain/reserves", None).await.ok(200).clone();
        let owed: u64 = reserves["liabilities"].as_str().unwrap().parse().unwrap();
        let held: u64 = reserves["onchain_balance"].as_str().unwrap().parse().unwrap();
        assert!(owed <= held, "round {round}: the ledger owes {owed}, the market holds {held}");
        eprintln!("round {round}: {answered} answered, {calls_paid} paid in all, reserves {held} ≥ owed {owed}");
    }
}
