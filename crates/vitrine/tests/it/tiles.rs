//! The log as C2SP tlog-tiles, read by a client written from the
//! specifications alone (c2sp.org/tlog-tiles, c2sp.org/tlog-checkpoint,
//! RFC 6962's Merkle tree hash): nothing here uses Vitrine's own log code.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use crate::ledger::{deposit, linear_call, priced_model};
use crate::support::{Api, TestServer};

type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    parts.iter().for_each(|part| hasher.update(part));
    hasher.finalize().into()
}

/// RFC 6962 §2.1: MTH of a list of leaf hashes.
fn tree_hash(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            // The largest power of two smaller than n.
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            sha256(&[&[1], &tree_hash(&leaves[..k]), &tree_hash(&leaves[k..])])
        }
    }
}

/// A tile's index as the specification spells it: groups of three digits,
/// all but the last prefixed with `x`.
fn index_path(index: u64) -> String {
    let mut groups = vec![format!("{:03}", index % 1000)];
    let mut rest = index / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// `tile/<L>/<N>[.p/<W>]` for the `width` first hashes.
fn tile_path(level: u32, index: u64, width: usize) -> String {
    let partial = if width == 256 { String::new() } else { format!(".p/{width}") };
    format!("/v1/log/tile/{level}/{}{partial}", index_path(index))
}

async fn fetch(api: &Api, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let response = api.request(reqwest::Method::GET, path, None).send().await.expect("an answer");
    let status = response.status().as_u16();
    let cache = response.headers().get("cache-control").map(|value| value.to_str().expect("text").to_owned());
    (status, cache, response.bytes().await.expect("a body").to_vec())
}

fn hashes(bytes: &[u8]) -> Vec<Hash> {
    assert_eq!(bytes.len() % 32, 0);
    bytes.chunks(32).map(|chunk| chunk.try_into().expect("32 bytes")).collect()
}

#[tokio::test]
async fn a_client_from_the_specification_rebuilds_the_signed_root_from_tiles() {
    let server = TestServer::start_with(&[
        ("checkpoint_interval_ms", "100"),
        ("inference_threads", "2"),
        ("calls_per_key_concurrent_max", "0"),
        // 300 connections at once, all from this address.
        ("connections_per_address_max", "0"),
    ]);
    let (api, op) = (server.api(), server.operator_key.clone());
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    priced_model(&api, &alice, "alice", "linear", 10).await;
    deposit(&api, &op, "bob", 1_000_000, "bank-1").await;
    // 300 calls: one full level-0 tile, one partial, and one complete
    // 256-leaf subtree at level 1.
    let calls = futures_util::future::join_all((0..300).map(|_| {
        let request =
            api.request(reqwest::Method::POST, "/v1/models/alice/linear/infer", Some(&bob)).json(&linear_call());
        api.send(request)
    }))
    .await;
    calls.iter().for_each(|answer| {
        answer.ok(200);
    });
    let (size, root) = loop {
        let note = api.text("/v1/log/checkpoint").await;
        let lines: Vec<&str> = note.lines().collect();
        let size: u64 = lines[1].parse().expect("a size");
        if size == 300 {
            let root: Hash = BASE64.decode(lines[2]).expect("base64").try_into().expect("32 bytes");
            break (size, root);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    // Level 0: the leaf hashes, a full tile then a partial one.
    let (status, cache, full) = fetch(&api, &tile_path(0, 0, 256)).await;
    assert_eq!(status, 200);
    assert_eq!(cache.as_deref(), Some("public, max-age=31536000, immutable"));
    let (status, cache, partial) = fetch(&api, &tile_path(0, 1, 44)).await;
    assert_eq!(status, 200);
    assert_ne!(cache.as_deref(), Some("public, max-age=31536000, immutable"), "a partial tile is not forever");
    let leaves: Vec<Hash> = hashes(&full).into_iter().chain(hashes(&partial)).collect();
    assert_eq!(leaves.len() as u64, size);
    assert_eq!(tree_hash(&leaves), root, "the tiles give the signed root");

    // The entry bundles hold the leaves those hashes are of.
    let (_, _, first) = fetch(&api, "/v1/log/tile/entries/000").await;
    let (_, _, second) = fetch(&api, "/v1/log/tile/entries/001.p/44").await;
    let mut entries = vec![];
    for bundle in [first, second] {
        let mut rest = &bundle[..];
        while !rest.is_empty() {
            let length = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            entries.push(rest[2..2 + length].to_vec());
            rest = &rest[2 + length..];
        }
    }
    assert_eq!(entries.len(), 300);
    for (entry, leaf) in entries.iter().zip(&leaves) {
        assert_eq!(&sha256(&[&[0], entry]), leaf, "an entry hashes to its leaf");
    }

    // Level 1 holds the roots of 256-leaf subtrees: one is complete.
    let (status, _, upper) = fetch(&api, &tile_path(1, 0, 1)).await;
    assert_eq!(status, 200);
    assert_eq!(hashes(&upper), [tree_hash(&leaves[..256])]);
    // A client that reads the upper tile instead of 256 leaf hashes gets
    // the same root.
    let right = tree_hash(&leaves[256..]);
    assert_eq!(sha256(&[&[1], &hashes(&upper)[0], &right]), root);

    // Past the signed tree, or not a tile: refused.
    for (path, status) in [
        (tile_path(1, 0, 256), 404),
        (tile_path(0, 1, 45), 404),
        (tile_path(0, 1, 256), 404),
        (tile_path(2, 0, 1), 404),
        ("/v1/log/tile/entries/002.p/1".into(), 404),
        ("/v1/log/tile/0/0".into(), 400),
        ("/v1/log/tile/0/000.p/256".into(), 400),
        ("/v1/log/tile/entries/x000/001".into(), 400),
        ("/v1/log/tile/99/000".into(), 400),
    ] {
        let answer = api.get(&path, None).await;
        let code = if status == 404 { "not_found" } else { "invalid_request" };
        answer.error(status, code);
    }
}
