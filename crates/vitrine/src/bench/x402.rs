//! `vitrine bench x402 --rpc-url URL`: calls paid with x402 (each one a
//! payment signed by its caller, verified, settled on the chain and split in
//! the ledger) against calls paid from a prepaid balance with a key, in one
//! run on one server, on a private chain (anvil: `scripts/anvil`; the bench
//! deploys a token of its own and funds its keys with `anvil_setBalance`).
//! Also the gas of one settlement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::http::{BenchModel, Pace, Setup, http_phase, with_server};
use super::{Common, PhaseFigures};
use crate::client::Client;
use chain::x402::{PaymentRequired, PaymentRequirements};
use chain::{PrivateKeySigner, U256, test_token};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct X402Figures {
    pub(crate) cores: usize,
    pub(crate) clients: usize,
    /// Paid from a prepaid balance, with a key.
    pub(crate) key_paid: PhaseFigures,
    /// Paid per call with x402 (a settlement on the chain each).
    pub(crate) x402_paid: PhaseFigures,
    /// x402-paid calls/s over key-paid calls/s.
    pub(crate) x402_over_key: f64,
    /// Gas of one settlement (`transferWithAuthorization`).
    pub(crate) settlement_gas: u64,
}

pub(crate) async fn run(common: &Common, rpc_url: &str, data_dir: &std::path::Path) -> anyhow::Result<X402Figures> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let deployer = test_token::funded_key(rpc_url).await?;
    let token = test_token::deploy(rpc_url, &deployer, "OpenGradient", "2", 18).await?;
    std::fs::create_dir_all(data_dir)?;
    let key_file = data_dir.join("market.key");
    let market = test_token::new_key_file(&key_file)?;
    test_token::fund(rpc_url, market).await?;
    // One payer per client, each holding plenty.
    let mut payers = vec![];
    for _ in 0..common.clients {
        let payer = PrivateKeySigner::random();
        test_token::mint(rpc_url, &deployer, token, payer.address(), U256::from(10u8).pow(U256::from(30u8))).await?;
        payers.push(payer);
    }
    let mut chain = toml::Table::new();
    chain.insert("rpc_url".into(), rpc_url.into());
    chain.insert("network".into(), "eip155:31337".into());
    chain.insert("token".into(), token.to_string().into());
    chain.insert("key_file".into(), key_file.display().to_string().into());
    chain.insert("confirmations".into(), 1.into());
    let settings = [("chain", toml::Value::Table(chain))];
    println!(
        "{cores} cores available, {} clients, {} s per phase, the tiny model at 1000 minor units",
        common.clients, common.seconds
    );
    with_server(&data_dir.join("server"), &settings, |server| async move {
        let setup = Setup::new(&server, &BenchModel::tiny()).await?;
        let pace = Pace { clients: common.clients, duration: Duration::from_secs(common.seconds), per_second: None };
        let key_paid = http_phase(std::slice::from_ref(&setup.caller), "paid", &setup.call, pace).await?;
        println!("paid with a key:   {}", key_paid.describe());

        let anonymous = Client::new(server.url.clone(), None)?;
        let terms = terms(&anonymous, &setup.call).await?;
        let token = chain::Token { address: token, name: "OpenGradient".into(), version: "2".into(), decimals: 18 };
        let (x402_paid, settlement) = x402_phase(&anonymous, &payers, &terms, &token, &setup.call, pace).await?;
        println!("paid with x402:    {}", x402_paid.describe());
        let settlement_gas = test_token::gas_used(rpc_url, settlement.parse()?).await?;
        let ratio = x402_paid.per_second / key_paid.per_second;
        println!("x402 / key = {ratio:.3}; one settlement used {settlement_gas} gas");
        Ok(X402Figures {
            cores,
            clients: common.clients,
            key_paid: key_paid.figures(),
            x402_paid: x402_paid.figures(),
            x402_over_key: ratio,
            settlement_gas,
        })
    })
    .await
}

/// The terms a keyless call of the paid model is answered with.
async fn terms(anonymous: &Client, call: &serde_json::Value) -> anyhow::Result<PaymentRequirements> {
    let response = anonymous.request(reqwest::Method::POST, "/v1/models/creator/paid/infer").json(call).send().await?;
    anyhow::ensure!(response.status() == 402, "a keyless call answered {}, not 402", response.status());
    let header = response.headers().get("payment-required").context("no PAYMENT-REQUIRED header")?;
    let required: PaymentRequired = chain::x402::decode_header(header.to_str()?)?;
    required.accepts.into_iter().next().context("no terms offered")
}

/// Each client pays each of its calls with a payment of its own payer:
/// signed, sent, settled. The phase, and one settlement's transaction.
async fn x402_phase(
    anonymous: &Client,
    payers: &[PrivateKeySigner],
    terms: &PaymentRequirements,
    token: &chain::Token,
    call: &serde_json::Value,
    pace: Pace,
) -> anyhow::Result<(super::http::Phase, String)> {
    let started = Instant::now();
    let deadline = started + pace.duration;
    let (terms, token, call) = (Arc::new(terms.clone()), Arc::new(token.clone()), Arc::new(call.clone()));
    let mut tasks = vec![];
    for payer in payers.iter().take(pace.clients) {
        let (anonymous, terms, token, call) = (anonymous.clone(), terms.clone(), token.clone(), call.clone());
        let payer = payer.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut settlement) = (vec![], String::new());
            while Instant::now() < deadline {
                let sent = Instant::now();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
                let payment = chain::x402::sign_payment(&payer, &terms, 31337, &token, now - 600, now + 120)?;
                let response = anonymous
                    .request(reqwest::Method::POST, "/v1/models/creator/paid/infer")
                    .header("PAYMENT-SIGNATURE", chain::x402::encode_header(&payment))
                    .json(&*call)
                    .send()
                    .await?;
                let status = response.status();
                let settled = response.headers().get("payment-response").map(|v| v.to_str().map(str::to_owned));
                anyhow::ensure!(status == 200, "an x402 call answered {status}: {}", response.text().await?);
                let settled: chain::x402::SettlementResponse =
                    chain::x402::decode_header(&settled.context("no PAYMENT-RESPONSE")??)?;
                settlement = settled.transaction;
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok((latencies, settlement))
        }));
    }
    let (mut latencies, mut settlement) = (vec![], String::new());
    for task in tasks {
        let (more, last) = task.await??;
        latencies.extend(more);
        settlement = last;
    }
    Ok((super::http::Phase::from_latencies(latencies, started.elapsed().as_secs_f64())?, settlement))
}
