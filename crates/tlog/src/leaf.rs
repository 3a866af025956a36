//! The receipt leaf: what the log records for every paid inference.
//!
//! One canonical binary encoding; all integers big-endian; a string is one
//! length byte then that many bytes of UTF-8 (so at most 255 bytes):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | format version, `0x01` |
//! | 1 | 8 | `created_at_ms`: Unix milliseconds, signed |
//! | 9 | 1 + m | `model`: `owner/name` |
//! | … | 4 | `version` |
//! | … | 32 | `blob_sha256`: the model file's SHA-256 |
//! | … | 32 | `caller`: the caller's pseudonym (see [`caller_pseudonym`]) |
//! | … | 1 + a | `app`: the `X-App` tag, empty if none |
//! | … | 1 + n | `node`: the serving node's account name |
//! | … | 8 × 4 | `price`, `creator_share`, `node_share`, `treasury_share`, minor units |
//! | … | 32 | `input_sha256`: SHA-256 of the inputs' JSON as the server read it, or of the binary tensor body (safetensors) as sent |
//! | … | 32 | `output_sha256`: SHA-256 of the outputs' JSON as the server writes it (for a binary answer too) |
//! | … | 32 | `idempotency_key_sha256`: SHA-256 of the Idempotency-Key, zeros if none |
//!
//! Nothing follows. A decoder refuses trailing bytes, another version, bad
//! UTF-8, and shares that do not sum to the price.

use domain::Sha256;
use hmac::{KeyInit, Mac};

pub const LEAF_FORMAT_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLeaf {
    pub created_at_ms: i64,
    pub model: String,
    pub version: u32,
    pub blob_sha256: Sha256,
    pub caller: Sha256,
    pub app: String,
    pub node: String,
    pub price: u64,
    pub creator_share: u64,
    pub node_share: u64,
    pub treasury_share: u64,
    pub input_sha256: Sha256,
    pub output_sha256: Sha256,
    pub idempotency_key_sha256: Option<Sha256>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("the leaf ends early")]
    Truncated,
    #[error("the leaf has {0} bytes after its last field")]
    TrailingBytes(usize),
    #[error("leaf format version {0} is not known")]
    UnknownVersion(u8),
    #[error("a text field is not UTF-8")]
    NotUtf8,
    #[error("the shares do not add up to the price")]
    SharesDoNotSum,
    #[error("a text field is longer than 255 bytes")]
    FieldTooLong,
}

impl ReceiptLeaf {
    pub fn encode(&self) -> Result<Vec<u8>, LeafError> {
        let mut out = Vec::with_capacity(256);
        out.push(LEAF_FORMAT_VERSION);
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        put_str(&mut out, &self.model)?;
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.blob_sha256.as_bytes());
        out.extend_from_slice(self.caller.as_bytes());
        put_str(&mut out, &self.app)?;
        put_str(&mut out, &self.node)?;
        for amount in [self.price, self.creator_share, self.node_share, self.treasury_share] {
            out.extend_from_slice(&amount.to_be_bytes());
        }
        out.extend_from_slice(self.input_sha256.as_bytes());
        out.extend_from_slice(self.output_sha256.as_bytes());
        out.extend_from_slice(self.idempotency_key_sha256.as_ref().map_or(&[0u8; 32], |h| h.as_bytes()));
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<ReceiptLeaf, LeafError> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.take::<1>()?[0];
        if version != LEAF_FORMAT_VERSION {
            return Err(LeafError::UnknownVersion(version));
        }
        let created_at_ms = i64::from_be_bytes(reader.take()?);
        let model = reader.string()?;
        let version = u32::from_be_bytes(reader.take()?);
        let blob_sha256 = Sha256::from_bytes(reader.take()?);
        let caller = Sha256::from_bytes(reader.take()?);
        let app = reader.string()?;
        let node = reader.string()?;
        let [price, creator_share, node_share, treasury_share] = [(); 4].map(|_| reader.take().map(u64::from_be_bytes));
        let (price, creator_share, node_share, treasury_share) = (price?, creator_share?, node_share?, treasury_share?);
        let input_sha256 = Sha256::from_bytes(reader.take()?);
        let output_sha256 = Sha256::from_bytes(reader.take()?);
        let key: [u8; 32] = reader.take()?;
        if reader.at != bytes.len() {
            return Err(LeafError::TrailingBytes(bytes.len() - reader.at));
        }
        let sum = creator_share as u128 + node_share as u128 + treasury_share as u128;
        if sum != price as u128 {
            return Err(LeafError::SharesDoNotSum);
        }
        Ok(ReceiptLeaf {
            created_at_ms,
            model,
            version,
            blob_sha256,
            caller,
            app,
            node,
            price,
            creator_share,
            node_share,
            treasury_share,
            input_sha256,
            output_sha256,
            idempotency_key_sha256: (key != [0; 32]).then(|| Sha256::from_bytes(key)),
        })
    }

    /// The creator: the `owner` of `owner/name`.
    pub fn creator(&self) -> &str {
        self.model.split_once('/').map_or(self.model.as_str(), |(owner, _)| owner)
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) -> Result<(), LeafError> {
    let length = u8::try_from(text.len()).map_err(|_| LeafError::FieldTooLong)?;
    out.push(length);
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], LeafError> {
        let slice = self.bytes.get(self.at..self.at + N).ok_or(LeafError::Truncated)?;
        self.at += N;
        Ok(slice.try_into().expect("length checked"))
    }

    fn string(&mut self) -> Result<String, LeafError> {
        let length = self.take::<1>()?[0] as usize;
        let slice = self.bytes.get(self.at..self.at + length).ok_or(LeafError::Truncated)?;
        self.at += length;
        String::from_utf8(slice.to_vec()).map_err(|_| LeafError::NotUtf8)
    }
}

/// A caller's pseudonym secret: HMAC-SHA256 keyed with the server's
/// pseudonym key, over the caller's account id (8 bytes, big-endian). The
/// server gives it to the caller alone.
pub fn caller_secret(server_key: &[u8; 32], account_id: i64) -> [u8; 32] {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(server_key).expect("HMAC takes any key length");
    mac.update(&account_id.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// A private model's name in the public log: `owner/~` and 16 hex digits of
/// `HMAC-SHA256(server key, "vitrine-model-v1\n" || owner/name)`. Keyed, so
/// no dictionary of likely names recovers it; the server shows it to the
/// model's owner, who alone maps it back.
pub fn private_model_label(server_key: &[u8; 32], owner: &str, name: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(server_key).expect("HMAC takes any key length");
    mac.update(format!("vitrine-model-v1\n{owner}/{name}").as_bytes());
    let digest: [u8; 32] = mac.finalize().into_bytes().into();
    format!("{owner}/~{}", &hex::encode(digest)[..16])
}

/// The pseudonym in the log: `SHA-256("vitrine-caller-v1" || secret)`. The
/// same caller always has the same pseudonym, so distinct callers can be
/// counted; nobody can tell who it is without the secret; and the caller can
/// prove a pseudonym is theirs by showing the secret.
pub fn caller_pseudonym(secret: &[u8; 32]) -> Sha256 {
    let mut bytes = b"vitrine-caller-v1".to_vec();
    bytes.extend_from_slice(secret);
    Sha256::digest(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ReceiptLeaf {
        ReceiptLeaf {
            created_at_ms: 1_764_100_000_000,
            model: "alice/linear".into(),
            version: 3,
            blob_sha256: Sha256::digest(b"model"),
            caller: caller_pseudonym(&caller_secret(&[7; 32], 42)),
            app: "shop".into(),
            node: "node-local".into(),
            price: 1001,
            creator_share: 801,
            node_share: 150,
            treasury_share: 50,
            input_sha256: Sha256::digest(b"in"),
            output_sha256: Sha256::digest(b"out"),
            idempotency_key_sha256: None,
        }
    }

    #[test]
    fn the_layout_is_as_documented() {
        let bytes = sample().encode().unwrap();
        // 1 + 8 + (1 + 12) + 4 + 32 + 32 + (1 + 4) + (1 + 10) + 32 + 32 + 32 + 32 = 234
        assert_eq!(bytes.len(), 234);
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..9], &1_764_100_000_000i64.to_be_bytes());
        assert_eq!(bytes[9], 12);
        assert_eq!(&bytes[10..22], b"alice/linear");
        assert_eq!(&bytes[22..26], &3u32.to_be_bytes());
        assert_eq!(&bytes[bytes.len() - 32..], &[0; 32]);
        assert_eq!(sample().creator(), "alice");
    }

    #[test]
    fn bad_leaves_are_refused() {
        let bytes = sample().encode().unwrap();
        assert_eq!(ReceiptLeaf::decode(&bytes[..bytes.len() - 1]), Err(LeafError::Truncated));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(ReceiptLeaf::decode(&longer), Err(LeafError::TrailingBytes(1)));
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(ReceiptLeaf::decode(&version), Err(LeafError::UnknownVersion(2)));
        let mut unbalanced = sample();
        unbalanced.price += 1;
        assert_eq!(ReceiptLeaf::decode(&unbalanced.encode().unwrap()), Err(LeafError::SharesDoNotSum));
        let mut long = sample();
        long.app = "x".repeat(256);
        assert_eq!(long.encode(), Err(LeafError::FieldTooLong));
    }

    #[test]
    fn pseudonyms_are_stable_and_distinct() {
        let key = [9u8; 32];
        assert_eq!(caller_pseudonym(&caller_secret(&key, 1)), caller_pseudonym(&caller_secret(&key, 1)));
        assert_ne!(caller_pseudonym(&caller_secret(&key, 1)), caller_pseudonym(&caller_secret(&key, 2)));
        assert_ne!(caller_pseudonym(&caller_secret(&key, 1)), caller_pseudonym(&caller_secret(&[8; 32], 1)));
    }

    proptest! {
        #[test]
        fn every_leaf_round_trips(
            created in any::<i64>(), version in any::<u32>(), app in "[a-z0-9._-]{0,64}",
            creator in 0u64..1 << 40, node in 0u64..1 << 40, treasury in 0u64..1 << 40, key in any::<Option<[u8; 32]>>(),
        ) {
            let leaf = ReceiptLeaf {
                created_at_ms: created, version, app,
                price: creator + node + treasury, creator_share: creator, node_share: node, treasury_share: treasury,
                idempotency_key_sha256: key.filter(|k| *k != [0; 32]).map(Sha256::from_bytes),
                ..sample()
            };
            prop_assert_eq!(ReceiptLeaf::decode(&leaf.encode().unwrap()), Ok(leaf));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ReceiptLeaf::decode(&bytes);
        }
    }
}
