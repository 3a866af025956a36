//! The chain crate against a real node: anvil from `scripts/anvil`
//! (`VITRINE_TEST_ANVIL`), a token of its own per test.

use std::path::Path;

use alloy::primitives::U256;
use chain::{Chain, ChainError, Settings, test_token};

/// The node, or `None` (the test is skipped) when none is given but under CI.
fn anvil() -> Option<String> {
    match std::env::var("VITRINE_TEST_ANVIL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI runs the chain tests: set VITRINE_TEST_ANVIL (scripts/anvil)")
        }
        _ => {
            eprintln!("no VITRINE_TEST_ANVIL: skipped");
            None
        }
    }
}

fn write_key(path: &Path, key: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn settings(url: &str, token: &str, key_file: &Path) -> Settings {
    Settings {
        rpc_url: url.to_owned(),
        network: "eip155:31337".into(),
        token: token.to_owned(),
        key_file: key_file.to_owned(),
        confirmations: 2,
        facilitator_url: None,
        max_timeout_seconds: 60,
        fee_bump_seconds: 120,
        anchor_interval_seconds: 0,
    }
}

#[tokio::test]
async fn a_market_reads_its_token_and_its_reserves_at_a_final_block() {
    let Some(url) = anvil() else { return };
    let payer = test_token::funded_key(&url).await.unwrap();
    let token = test_token::deploy(&url, &payer, "OpenGradient", "2", 18).await.unwrap();
    test_token::mine(&url, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("market.key");
    let key = alloy::signers::local::PrivateKeySigner::random();
    write_key(&key_file, &format!("0x{}", alloy::primitives::hex::encode(key.to_bytes())), 0o600);
    let chain = Chain::connect(&settings(&url, &token.to_string(), &key_file), 9).await.unwrap();
    assert_eq!(
        (chain.token().name.as_str(), chain.token().version.as_str(), chain.token().decimals),
        ("OpenGradient", "2", 18)
    );
    assert_eq!(chain.address(), key.address());
    assert_eq!(chain.reserves().await.unwrap().amount, U256::ZERO);
    // 5 tokens minted: counted once 2 blocks stand on the mint's.
    let five = U256::from(5u8) * U256::from(10u8).pow(U256::from(18u8));
    let minted_at = test_token::mint(&url, &payer, token, chain.address(), five).await.unwrap();
    // Not counted at a block below the mint's, however many blocks other
    // tests add meanwhile.
    let seen = chain.reserves().await.unwrap();
    let expected = if seen.block < minted_at { U256::ZERO } else { five };
    assert_eq!(seen.amount, expected, "at block {}, minted at {minted_at}", seen.block);
    test_token::mine(&url, 2).await.unwrap();
    let reserves = chain.reserves().await.unwrap();
    assert_eq!(reserves.amount, five);
    assert_eq!(chain.units().to_ledger(reserves.amount).unwrap(), (5_000_000_000, U256::ZERO));
    let audited = chain::balance_of(&url, &token.to_string(), &chain.address().to_string(), reserves.block).await;
    assert_eq!(audited.unwrap(), (five, 18), "anyone can read the same balance at the same block");
}

/// An address nobody holds the key of.
fn key_of_nobody() -> alloy::primitives::Address {
    alloy::primitives::Address::repeat_byte(0x11)
}

#[tokio::test]
async fn wrong_settings_are_refused_with_their_reason() {
    let Some(url) = anvil() else { return };
    let payer = test_token::funded_key(&url).await.unwrap();
    let token = test_token::deploy(&url, &payer, "Token", "1", 6).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("market.key");
    let key = format!("0x{}", "ab".repeat(32));
    write_key(&key_file, &key, 0o600);
    let good = settings(&url, &token.to_string(), &key_file);
    assert_eq!(Chain::connect(&good, 9).await.unwrap().token().decimals, 6);

    let wrong_chain = Settings { network: "eip155:8453".into(), ..good.clone() };
    assert!(matches!(
        Chain::connect(&wrong_chain, 9).await,
        Err(ChainError::WrongChain { expected: 8453, found: 31337 })
    ));
    let not_a_token = Settings { token: format!("{}", key_of_nobody()), ..good.clone() };
    assert!(matches!(Chain::connect(&not_a_token, 9).await, Err(ChainError::NotAToken { .. })));
    let gone = Settings { rpc_url: "http://127.0.0.1:9".into(), ..good.clone() };
    assert!(matches!(Chain::connect(&gone, 9).await, Err(ChainError::Rpc { .. })));
    write_key(&key_file, &key, 0o644);
    let error = Chain::connect(&good, 9).await.unwrap_err().to_string();
    assert!(error.contains("chmod 600") && !error.contains(&key[2..]), "{error}");
    write_key(&key_file, "0x1234", 0o600);
    let error = Chain::connect(&good, 9).await.unwrap_err().to_string();
    assert!(error.contains("not 64"), "{error}");
}
