//! The log's leaf: what the log records for every inference call, paid,
//! free or failed.
//!
//! One canonical binary encoding; all integers big-endian; a string is one
//! length byte then that many bytes of UTF-8 (so at most 255 bytes).
//! Format 2, written since every call is logged:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | format version, `0x02` |
//! | 1 | 8 | `created_at_ms`: Unix milliseconds, signed |
//! | 9 | 1 + m | `model`: `owner/name` (a private model: `owner/~` and a keyed label) |
//! | … | 4 | `version` |
//! | … | 32 | `blob_sha256`: the model file's SHA-256 |
//! | … | 32 | `caller`: the caller's pseudonym (see [`caller_pseudonym`]) |
//! | … | 1 + a | `app`: the `X-App` tag, empty if none |
//! | … | 1 + n | `node`: the serving node's account name |
//! | … | 1 + t | `task`: the model's task when it was called |
//! | … | 8 × 4 | `price`, `creator_share`, `node_share`, `treasury_share`, minor units (all 0 for a free or failed call) |
//! | … | 32 | `input_sha256`: [`tensors_sha256`] of the inputs, zeros if the call failed before they were read |
//! | … | 32 | `output_sha256`: [`tensors_sha256`] of the outputs, zeros for a failed call |
//! | … | 32 | `idempotency_key_sha256`: SHA-256 of the Idempotency-Key, zeros if none |
//! | … | 1 + e | `error`: the error code of a failed call (`inference_timeout`, …), empty if it succeeded |
//!
//! Format 3, written for a call paid on the chain (x402): format 2's fields,
//! then
//!
//! | … | 1 + p | `payer`: the payer, CAIP-10 (`eip155:8453:0x…`), never empty |
//! | … | 1 + s | `settlement`: the settlement's transaction hash, `0x` and hex |
//!
//! Its `caller` is the SHA-256 of `payer` (the payer is public: it paid on
//! the chain).
//!
//! Format 1 (paid calls only, before every call was logged) stays valid and
//! decodes: the same fields without `task` and `error`, and its digests were
//! SHA-256 of the inputs' JSON as the server re-serialised it (or of the
//! binary tensor body as sent) and of the outputs' JSON as written.
//!
//! Nothing follows the last field. A decoder refuses trailing bytes, another
//! version, bad UTF-8, shares that do not sum to the price, and a failed
//! call that was charged.

use domain::Sha256;
use hmac::{KeyInit, Mac};

/// The format this server writes.
pub const LEAF_FORMAT_VERSION: u8 = 2;
/// The format of a leaf of a call paid on the chain.
pub const LEAF_FORMAT_PAID_ON_CHAIN: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLeaf {
    /// 1, 2 or 3: a leaf encodes back to the format it was read in.
    pub format: u8,
    pub created_at_ms: i64,
    pub model: String,
    pub version: u32,
    pub blob_sha256: Sha256,
    pub caller: Sha256,
    pub app: String,
    pub node: String,
    /// Empty in format 1.
    pub task: String,
    pub price: u64,
    pub creator_share: u64,
    pub node_share: u64,
    pub treasury_share: u64,
    pub input_sha256: Sha256,
    pub output_sha256: Sha256,
    pub idempotency_key_sha256: Option<Sha256>,
    /// The failed call's error code; empty if it succeeded (always in format 1).
    pub error: String,
    /// Format 3: who paid on the chain (CAIP-10) and the settlement's
    /// transaction; empty in formats 1 and 2.
    pub payer: String,
    pub settlement: String,
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
    #[error("a failed call was charged")]
    FailedButCharged,
    #[error("format 1 has no task or error")]
    NotInFormat1,
    #[error("only format 3 names a payer and a settlement, and it always does")]
    PayerOnlyInFormat3,
}

impl ReceiptLeaf {
    pub fn encode(&self) -> Result<Vec<u8>, LeafError> {
        let second = match self.format {
            1 if self.task.is_empty() && self.error.is_empty() => false,
            1 => return Err(LeafError::NotInFormat1),
            2 | 3 => true,
            other => return Err(LeafError::UnknownVersion(other)),
        };
        let paid_on_chain = self.format == LEAF_FORMAT_PAID_ON_CHAIN;
        let names_any = !self.payer.is_empty() || !self.settlement.is_empty();
        let names_both = !self.payer.is_empty() && !self.settlement.is_empty();
        if names_any != paid_on_chain || names_any != names_both {
            return Err(LeafError::PayerOnlyInFormat3);
        }
        if !self.error.is_empty() && self.price != 0 {
            return Err(LeafError::FailedButCharged);
        }
        let mut out = Vec::with_capacity(256);
        out.push(self.format);
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        put_str(&mut out, &self.model)?;
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.blob_sha256.as_bytes());
        out.extend_from_slice(self.caller.as_bytes());
        put_str(&mut out, &self.app)?;
        put_str(&mut out, &self.node)?;
        if second {
            put_str(&mut out, &self.task)?;
        }
        for amount in [self.price, self.creator_share, self.node_share, self.treasury_share] {
            out.extend_from_slice(&amount.to_be_bytes());
        }
        out.extend_from_slice(self.input_sha256.as_bytes());
        out.extend_from_slice(self.output_sha256.as_bytes());
        out.extend_from_slice(self.idempotency_key_sha256.as_ref().map_or(&[0u8; 32], |h| h.as_bytes()));
        if second {
            put_str(&mut out, &self.error)?;
        }
        if paid_on_chain {
            put_str(&mut out, &self.payer)?;
            put_str(&mut out, &self.settlement)?;
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<ReceiptLeaf, LeafError> {
        let mut reader = Reader { bytes, at: 0 };
        let format = reader.take::<1>()?[0];
        if !matches!(format, 1..=3) {
            return Err(LeafError::UnknownVersion(format));
        }
        let created_at_ms = i64::from_be_bytes(reader.take()?);
        let model = reader.string()?;
        let version = u32::from_be_bytes(reader.take()?);
        let blob_sha256 = Sha256::from_bytes(reader.take()?);
        let caller = Sha256::from_bytes(reader.take()?);
        let app = reader.string()?;
        let node = reader.string()?;
        let task = if format >= 2 { reader.string()? } else { String::new() };
        let [price, creator_share, node_share, treasury_share] = [(); 4].map(|_| reader.take().map(u64::from_be_bytes));
        let (price, creator_share, node_share, treasury_share) = (price?, creator_share?, node_share?, treasury_share?);
        let input_sha256 = Sha256::from_bytes(reader.take()?);
        let output_sha256 = Sha256::from_bytes(reader.take()?);
        let key: [u8; 32] = reader.take()?;
        let error = if format >= 2 { reader.string()? } else { String::new() };
        let (payer, settlement) = if format == LEAF_FORMAT_PAID_ON_CHAIN {
            let payer = reader.string()?;
            let settlement = reader.string()?;
            if payer.is_empty() || settlement.is_empty() {
                return Err(LeafError::PayerOnlyInFormat3);
            }
            (payer, settlement)
        } else {
            (String::new(), String::new())
        };
        if reader.at != bytes.len() {
            return Err(LeafError::TrailingBytes(bytes.len() - reader.at));
        }
        let sum = creator_share as u128 + node_share as u128 + treasury_share as u128;
        if sum != price as u128 {
            return Err(LeafError::SharesDoNotSum);
        }
        if !error.is_empty() && price != 0 {
            return Err(LeafError::FailedButCharged);
        }
        Ok(ReceiptLeaf {
            format,
            created_at_ms,
            model,
            version,
            blob_sha256,
            caller,
            app,
            node,
            task,
            price,
            creator_share,
            node_share,
            treasury_share,
            input_sha256,
            output_sha256,
            idempotency_key_sha256: (key != [0; 32]).then(|| Sha256::from_bytes(key)),
            error,
            payer,
            settlement,
        })
    }

    /// The creator: the `owner` of `owner/name`.
    pub fn creator(&self) -> &str {
        self.model.split_once('/').map_or(self.model.as_str(), |(owner, _)| owner)
    }

    /// A call to a private model (its name is a keyed label, `owner/~…`).
    pub fn is_private(&self) -> bool {
        self.model.split_once('/').is_some_and(|(_, name)| name.starts_with('~'))
    }

    /// The call succeeded (whether it paid or not).
    pub fn succeeded(&self) -> bool {
        self.error.is_empty()
    }
}

/// One tensor as [`tensors_sha256`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct TensorBytes<'a> {
    pub name: &'a str,
    /// As the API spells it: `f32`, `i64`, `bool`, …
    pub dtype: &'a str,
    pub shape: &'a [u64],
    /// The elements, row-major, each little-endian (a bool is one byte, 0 or 1).
    pub data_le: &'a [u8],
}

/// The digest of a call's inputs or outputs in format 2 leaves: SHA-256 over
/// a canonical binary form that a caller rebuilds from its own arrays, so
/// whatever way the tensors travelled (JSON, safetensors) the digest is the
/// same. All integers big-endian:
///
/// | bytes | field |
/// |---|---|
/// | 16 | `vitrine-tensors1` (ASCII) |
/// | 4 | the number of tensors |
///
/// then for each tensor, in ascending byte order of their names:
///
/// | bytes | field |
/// |---|---|
/// | 2 + n | name: its length, then its UTF-8 bytes |
/// | 1 + d | dtype: its length, then its name (`f32`, …) |
/// | 1 | rank |
/// | 8 × rank | the dimensions |
/// | 8 + b | data: its length in bytes, then the elements, row-major, little-endian |
pub fn tensors_sha256<'a>(tensors: impl IntoIterator<Item = TensorBytes<'a>>) -> Result<Sha256, LeafError> {
    use sha2::Digest;
    let mut tensors: Vec<TensorBytes<'a>> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"vitrine-tensors1");
    hasher.update(u32::try_from(tensors.len()).map_err(|_| LeafError::FieldTooLong)?.to_be_bytes());
    for tensor in tensors {
        hasher.update(u16::try_from(tensor.name.len()).map_err(|_| LeafError::FieldTooLong)?.to_be_bytes());
        hasher.update(tensor.name.as_bytes());
        hasher.update([u8::try_from(tensor.dtype.len()).map_err(|_| LeafError::FieldTooLong)?]);
        hasher.update(tensor.dtype.as_bytes());
        hasher.update([u8::try_from(tensor.shape.len()).map_err(|_| LeafError::FieldTooLong)?]);
        for dim in tensor.shape {
            hasher.update(dim.to_be_bytes());
        }
        hasher.update((tensor.data_le.len() as u64).to_be_bytes());
        hasher.update(tensor.data_le);
    }
    Ok(Sha256::from_bytes(hasher.finalize().into()))
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
            format: 2,
            created_at_ms: 1_764_100_000_000,
            model: "alice/linear".into(),
            version: 3,
            blob_sha256: Sha256::digest(b"model"),
            caller: caller_pseudonym(&caller_secret(&[7; 32], 42)),
            app: "shop".into(),
            node: "node-local".into(),
            task: "regression".into(),
            price: 1001,
            creator_share: 801,
            node_share: 150,
            treasury_share: 50,
            input_sha256: Sha256::digest(b"in"),
            output_sha256: Sha256::digest(b"out"),
            idempotency_key_sha256: None,
            error: String::new(),
            payer: String::new(),
            settlement: String::new(),
        }
    }

    fn paid_on_chain() -> ReceiptLeaf {
        ReceiptLeaf {
            format: 3,
            payer: "eip155:31337:0x70997970c51812dc3a010c7d01b50e0d17dc79c8".into(),
            settlement: format!("0x{}", "ab".repeat(32)),
            ..sample()
        }
    }

    #[test]
    fn only_format_3_names_a_payer_and_always_names_both() {
        let leaf = paid_on_chain();
        let bytes = leaf.encode().unwrap();
        assert_eq!(bytes[0], 3);
        assert_eq!(ReceiptLeaf::decode(&bytes), Ok(leaf.clone()));
        // Format 2's bytes are a prefix: the payer and the settlement follow.
        let second = ReceiptLeaf { format: 2, payer: String::new(), settlement: String::new(), ..leaf.clone() };
        let mut second_bytes = second.encode().unwrap();
        second_bytes[0] = 3;
        assert_eq!(&bytes[..second_bytes.len()], &second_bytes[..]);
        assert_eq!(ReceiptLeaf::decode(&second_bytes), Err(LeafError::Truncated));
        for wrong in [
            ReceiptLeaf { format: 2, ..leaf.clone() },
            ReceiptLeaf { payer: String::new(), ..leaf.clone() },
            ReceiptLeaf { settlement: String::new(), ..leaf.clone() },
            ReceiptLeaf { format: 2, settlement: String::new(), ..leaf.clone() },
        ] {
            assert_eq!(wrong.encode(), Err(LeafError::PayerOnlyInFormat3), "{wrong:?}");
        }
        // An empty payer written by hand is refused when read.
        let mut empty = second.encode().unwrap();
        empty[0] = 3;
        empty.extend_from_slice(&[0, 1, b'x']);
        assert_eq!(ReceiptLeaf::decode(&empty), Err(LeafError::PayerOnlyInFormat3));
    }

    fn format_1() -> ReceiptLeaf {
        ReceiptLeaf { format: 1, task: String::new(), ..sample() }
    }

    #[test]
    fn the_layout_is_as_documented() {
        let bytes = sample().encode().unwrap();
        // 1 + 8 + (1 + 12) + 4 + 32 + 32 + (1 + 4) + (1 + 10) + (1 + 10) + 32 + 32 + 32 + 32 + (1 + 0) = 246
        assert_eq!(bytes.len(), 246);
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[9..22], b"\x0calice/linear");
        assert_eq!(&bytes[95..106], b"\x0anode-local");
        assert_eq!(&bytes[106..117], b"\x0aregression");
        assert_eq!(bytes[bytes.len() - 1], 0, "an empty error code");
        let mut failed = sample();
        (failed.price, failed.creator_share, failed.node_share, failed.treasury_share) = (0, 0, 0, 0);
        failed.error = "inference_timeout".into();
        let failed_bytes = failed.encode().unwrap();
        assert_eq!(&failed_bytes[failed_bytes.len() - 18..], b"\x11inference_timeout");
        assert_eq!(ReceiptLeaf::decode(&failed_bytes), Ok(failed));

        let bytes = format_1().encode().unwrap();
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
        version[0] = 4;
        assert_eq!(ReceiptLeaf::decode(&version), Err(LeafError::UnknownVersion(4)));
        let mut charged_failure = sample();
        charged_failure.error = "model_crashed".into();
        assert_eq!(charged_failure.encode(), Err(LeafError::FailedButCharged));
        let mut bytes_of_charged_failure = sample().encode().unwrap();
        *bytes_of_charged_failure.last_mut().unwrap() = 1;
        bytes_of_charged_failure.push(b'x');
        assert_eq!(ReceiptLeaf::decode(&bytes_of_charged_failure), Err(LeafError::FailedButCharged));
        assert_eq!(ReceiptLeaf { error: "x".into(), price: 0, ..format_1() }.encode(), Err(LeafError::NotInFormat1));
        assert_eq!(ReceiptLeaf { task: "x".into(), ..format_1() }.encode(), Err(LeafError::NotInFormat1));
        let mut unbalanced = sample();
        unbalanced.price += 1;
        assert_eq!(ReceiptLeaf::decode(&unbalanced.encode().unwrap()), Err(LeafError::SharesDoNotSum));
        let mut long = sample();
        long.app = "x".repeat(256);
        assert_eq!(long.encode(), Err(LeafError::FieldTooLong));
    }

    #[test]
    fn format_1_leaves_still_decode_and_encode_back() {
        let bytes = format_1().encode().unwrap();
        let leaf = ReceiptLeaf::decode(&bytes).unwrap();
        assert_eq!(leaf, format_1());
        assert_eq!(leaf.encode().unwrap(), bytes);
        assert!(leaf.succeeded() && !leaf.is_private());
        assert!(ReceiptLeaf { model: "alice/~0123456789abcdef".into(), ..sample() }.is_private());
    }

    #[test]
    fn the_tensor_digest_is_the_documented_bytes() {
        let x: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mask = [1u8, 0, 1];
        // Given out of order: the digest sorts by name.
        let digest = tensors_sha256([
            TensorBytes { name: "x", dtype: "f32", shape: &[1, 2], data_le: &x },
            TensorBytes { name: "mask", dtype: "bool", shape: &[3], data_le: &mask },
        ])
        .unwrap();
        let mut expected = b"vitrine-tensors1".to_vec();
        expected.extend_from_slice(&2u32.to_be_bytes());
        expected.extend_from_slice(&[0, 4, b'm', b'a', b's', b'k', 4, b'b', b'o', b'o', b'l', 1]);
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&mask);
        expected.extend_from_slice(&[0, 1, b'x', 3, b'f', b'3', b'2', 2]);
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(&8u64.to_be_bytes());
        expected.extend_from_slice(&x);
        assert_eq!(digest, Sha256::digest(&expected));
        // A fixed vector, for clients written in other languages.
        assert_eq!(digest.to_hex(), FIXED_TENSOR_DIGEST);
        let other_shape = tensors_sha256([
            TensorBytes { name: "x", dtype: "f32", shape: &[2, 1], data_le: &x },
            TensorBytes { name: "mask", dtype: "bool", shape: &[3], data_le: &mask },
        ])
        .unwrap();
        assert_ne!(digest, other_shape);
    }

    #[test]
    fn pseudonyms_are_stable_and_distinct() {
        let key = [9u8; 32];
        assert_eq!(caller_pseudonym(&caller_secret(&key, 1)), caller_pseudonym(&caller_secret(&key, 1)));
        assert_ne!(caller_pseudonym(&caller_secret(&key, 1)), caller_pseudonym(&caller_secret(&key, 2)));
        assert_ne!(caller_pseudonym(&caller_secret(&key, 1)), caller_pseudonym(&caller_secret(&[8; 32], 1)));
    }

    const FIXED_TENSOR_DIGEST: &str = "9f3cf623d1f2d2621822d14ab3269f25b407bcc9270b239e5aa1f0331019afd8";

    proptest! {
        #[test]
        fn every_leaf_round_trips(
            created in any::<i64>(), version in any::<u32>(), app in "[a-z0-9._-]{0,64}",
            creator in 0u64..1 << 40, node in 0u64..1 << 40, treasury in 0u64..1 << 40, key in any::<Option<[u8; 32]>>(),
        ) {
            let leaf = ReceiptLeaf {
                format: 2, created_at_ms: created, version, app,
                price: creator + node + treasury, creator_share: creator, node_share: node, treasury_share: treasury,
                idempotency_key_sha256: key.filter(|k| *k != [0; 32]).map(Sha256::from_bytes),
                ..sample()
            };
            prop_assert_eq!(ReceiptLeaf::decode(&leaf.encode().unwrap()), Ok(leaf.clone()));
            let old = ReceiptLeaf { format: 1, task: String::new(), ..leaf.clone() };
            prop_assert_eq!(ReceiptLeaf::decode(&old.encode().unwrap()), Ok(old));
            let paid = ReceiptLeaf { format: 3, payer: paid_on_chain().payer, settlement: paid_on_chain().settlement, ..leaf };
            prop_assert_eq!(ReceiptLeaf::decode(&paid.encode().unwrap()), Ok(paid));
        }

        #[test]
        fn every_failed_call_round_trips(task in "[a-z-]{0,40}", error in "[a-z_]{1,40}", created in any::<i64>()) {
            let leaf = ReceiptLeaf {
                created_at_ms: created, task, error,
                price: 0, creator_share: 0, node_share: 0, treasury_share: 0,
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
