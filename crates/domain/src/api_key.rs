use std::fmt;

use subtle::ConstantTimeEq;

use crate::Sha256;

/// Every key starts with this, so a leaked key is recognisable (secret
/// scanners, logs) and a key pasted in the wrong place is caught early.
pub const API_KEY_PREFIX: &str = "vtr_";

/// The public part that finds the key's row; not secret.
const KEY_ID_LENGTH: usize = 12;
/// 32 base62 characters: about 190 bits of randomness.
const SECRET_LENGTH: usize = 32;
/// Catches typos and truncation before any database look-up.
const CHECKSUM_LENGTH: usize = 6;
const KEY_LENGTH: usize = API_KEY_PREFIX.len() + KEY_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// An API key: `vtr_` + key id (12) + secret (32) + checksum (6), all base62.
///
/// The server stores only the key id and [`ApiKey::hash`]; the key itself is
/// shown once, when it is made. `Debug` never prints the secret.
#[derive(Clone)]
pub struct ApiKey(String);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeyError {
    #[error("an API key starts with '{API_KEY_PREFIX}' and has {KEY_LENGTH} characters")]
    Malformed,
    #[error("the API key's checksum does not match: it was mistyped or cut short")]
    BadChecksum,
}

impl ApiKey {
    /// A new random key. Panics only if the operating system has no random
    /// source, in which case no key can be made safely at all.
    pub fn generate() -> ApiKey {
        let mut body = String::with_capacity(KEY_LENGTH);
        body.push_str(API_KEY_PREFIX);
        body.push_str(&random_base62(KEY_ID_LENGTH + SECRET_LENGTH));
        let checksum = checksum(&body);
        body.push_str(&checksum);
        ApiKey(body)
    }

    /// Checks the form and the checksum; whether the key exists is the store's
    /// question.
    pub fn parse(text: &str) -> Result<ApiKey, ApiKeyError> {
        let well_formed = text.len() == KEY_LENGTH
            && text.starts_with(API_KEY_PREFIX)
            && text[API_KEY_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric());
        if !well_formed {
            return Err(ApiKeyError::Malformed);
        }
        let (body, given) = text.split_at(KEY_LENGTH - CHECKSUM_LENGTH);
        if checksum(body) != given {
            return Err(ApiKeyError::BadChecksum);
        }
        Ok(ApiKey(text.to_owned()))
    }

    /// The non-secret identifier that indexes the key's row.
    pub fn key_id(&self) -> &str {
        &self.0[API_KEY_PREFIX.len()..API_KEY_PREFIX.len() + KEY_ID_LENGTH]
    }

    /// What the server stores instead of the key.
    pub fn hash(&self) -> Sha256 {
        Sha256::digest(self.0.as_bytes())
    }

    /// Compares this key with a stored hash in constant time, so response
    /// timing reveals nothing about how much of a guess was right.
    pub fn matches(&self, stored_hash: &Sha256) -> bool {
        self.hash().as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }

    /// The whole key, to show once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({API_KEY_PREFIX}{}…)", self.key_id())
    }
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut value = u32::from_be_bytes(digest.as_bytes()[..4].try_into().expect("4 bytes")) as u64;
    let mut out = [0u8; CHECKSUM_LENGTH];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

fn random_base62(length: usize) -> String {
    let mut out = String::with_capacity(length);
    let mut buffer = [0u8; 64];
    while out.len() < length {
        getrandom::fill(&mut buffer).expect("the operating system's random source failed");
        // Rejection sampling: bytes 248..=255 would bias the first 8 characters.
        for &byte in buffer.iter().filter(|&&b| b < 248) {
            if out.len() == length {
                break;
            }
            out.push(BASE62[(byte % 62) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_their_hash() {
        let key = ApiKey::generate();
        assert!(key.expose().starts_with(API_KEY_PREFIX));
        assert_eq!(key.expose().len(), KEY_LENGTH);
        let parsed = ApiKey::parse(key.expose()).unwrap();
        assert!(parsed.matches(&key.hash()));
        assert!(!ApiKey::generate().matches(&key.hash()));
        assert!(!format!("{key:?}").contains(&key.expose()[20..]));
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let key = ApiKey::generate();
        let text = key.expose();
        for position in API_KEY_PREFIX.len()..text.len() {
            let mut bytes = text.as_bytes().to_vec();
            bytes[position] = if bytes[position] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(ApiKey::parse(&changed).is_err(), "change at {position} not caught");
        }
        assert_eq!(ApiKey::parse(&text[..text.len() - 1]).unwrap_err(), ApiKeyError::Malformed);
        assert_eq!(ApiKey::parse("sk_live_abc").unwrap_err(), ApiKeyError::Malformed);
    }
}
