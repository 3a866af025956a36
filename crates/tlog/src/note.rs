//! C2SP checkpoints (`tlog-checkpoint`) signed as C2SP `signed-note`s with
//! Ed25519, and the keys that sign them and receipts.
//!
//! A checkpoint's body is three lines: the log's origin, the tree size in
//! decimal, the root hash in base64. A signed note is the body, a blank line,
//! then `— <key name> base64(key ID || signature)` where the key ID is
//! `SHA-256(name || 0x0A || 0x01 || public key)[:4]`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::Digest;

use crate::Hash;

/// Ed25519's signature type byte in C2SP signed notes.
const ED25519_TYPE: u8 = 0x01;
/// Notes longer than this are refused before parsing.
const NOTE_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is malformed: {0}")]
    Malformed(&'static str),
    #[error("the note carries no signature by {0}")]
    NotSigned(String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
    #[error("the key is malformed: {0}")]
    BadKey(&'static str),
}

/// A tree head: the log's origin, its size and its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root))
    }

    /// Parses a body (extension lines after the root are allowed and ignored).
    pub fn parse(body: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or(NoteError::Malformed("no origin line"))?;
        let size = lines.next().and_then(|s| s.parse::<u64>().ok()).ok_or(NoteError::Malformed("no tree size line"))?;
        let root = lines
            .next()
            .and_then(|r| BASE64.decode(r).ok())
            .and_then(|r| <Hash>::try_from(r.as_slice()).ok())
            .ok_or(NoteError::Malformed("no root hash line"))?;
        if !body.ends_with('\n') {
            return Err(NoteError::Malformed("the body does not end in a newline"));
        }
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }
}

/// A named Ed25519 key that signs notes (checkpoints) and receipts.
#[derive(Clone)]
pub struct NoteKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteKey({})", self.name)
    }
}

/// A named public key that checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    key: VerifyingKey,
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    typed_key_id(name, ED25519_TYPE, public)
}

/// `SHA-256(name || 0x0A || type || public key)[:4]`: the key ID of signed
/// notes (type 0x01) and cosignatures (type 0x04).
pub(crate) fn typed_key_id(name: &str, kind: u8, public: &VerifyingKey) -> [u8; 4] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', kind]);
    hasher.update(public.as_bytes());
    hasher.finalize()[..4].try_into().expect("4 bytes")
}

/// Parses a verifier key `<name>+<key ID hex>+<base64(type || key)>` of
/// this type, its key ID checked.
pub(crate) fn parse_vkey(vkey: &str, kind: u8, wrong_type: &'static str) -> Result<(String, VerifyingKey), NoteError> {
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::BadKey("a verifier key is name+id+key"));
    };
    let key = BASE64.decode(key).map_err(|_| NoteError::BadKey("the key is not base64"))?;
    if key.first() != Some(&kind) {
        return Err(NoteError::BadKey(wrong_type));
    }
    let verifier = NoteVerifier::new(name, &key[1..])?;
    if hex::encode(typed_key_id(name, kind, &verifier.key)) != id {
        return Err(NoteError::BadKey("the key ID does not match the key"));
    }
    Ok((verifier.name, verifier.key))
}

/// `<name>+<key ID hex>+<base64(type || key)>`.
pub(crate) fn format_vkey(name: &str, kind: u8, public: &VerifyingKey) -> String {
    let mut key = vec![kind];
    key.extend_from_slice(public.as_bytes());
    format!("{name}+{}+{}", hex::encode(typed_key_id(name, kind, public)), BASE64.encode(key))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

impl NoteKey {
    /// A key from its 32-byte seed (kept secret, in the data directory).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteKey, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey("a key name has no spaces and no '+'"));
        }
        Ok(NoteKey { name: name.to_owned(), key: SigningKey::from_bytes(seed) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Signs `text` (which must end in a newline) as a C2SP signed note.
    pub fn sign_note(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let signature = self.key.sign(text.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{text}\n\u{2014} {} {}\n", self.name, BASE64.encode(blob))
    }

    /// A bare Ed25519 signature, for receipts.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl NoteVerifier {
    pub fn new(name: &str, public_key: &[u8]) -> Result<NoteVerifier, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey("a key name has no spaces and no '+'"));
        }
        let bytes: [u8; 32] = public_key.try_into().map_err(|_| NoteError::BadKey("an Ed25519 key has 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| NoteError::BadKey("not an Ed25519 point"))?;
        Ok(NoteVerifier { name: name.to_owned(), key })
    }

    /// Parses a verifier key string: `<name>+<key ID hex>+<base64(0x01 || key)>`.
    pub fn from_vkey(vkey: &str) -> Result<NoteVerifier, NoteError> {
        let (name, key) = parse_vkey(vkey, ED25519_TYPE, "only Ed25519 keys are supported")?;
        Ok(NoteVerifier { name, key })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// `<name>+<key ID hex>+<base64(0x01 || key)>`.
    pub fn vkey(&self) -> String {
        format_vkey(&self.name, ED25519_TYPE, &self.key)
    }

    /// Checks a signed note and returns its text. Signatures by other keys
    /// are ignored; one by this key must be present and valid.
    pub fn verify_note<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if note.len() > NOTE_BYTES_MAX {
            return Err(NoteError::Malformed("the note is too long"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed("the note has control characters"));
        }
        let split = note.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        let wanted_id = key_id(&self.name, &self.key);
        for line in signatures.lines() {
            let rest =
                line.strip_prefix("\u{2014} ").ok_or(NoteError::Malformed("a signature line starts with '— '"))?;
            let (name, blob) =
                rest.split_once(' ').ok_or(NoteError::Malformed("a signature line has a name and a signature"))?;
            let blob = BASE64.decode(blob).map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            if name != self.name || blob.len() < 4 || blob[..4] != wanted_id {
                continue;
            }
            let signature =
                Signature::from_slice(&blob[4..]).map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            return match self.key.verify(text.as_bytes(), &signature) {
                Ok(()) => Ok(text),
                Err(_) => Err(NoteError::BadSignature(self.name.clone())),
            };
        }
        Err(NoteError::NotSigned(self.name.clone()))
    }

    /// Checks a bare Ed25519 signature (a receipt's).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        Signature::from_slice(signature).is_ok_and(|s| self.key.verify(message, &s).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_sign_and_verify() {
        let key = NoteKey::from_seed("example.com/log", &[3; 32]).unwrap();
        let checkpoint = Checkpoint { origin: "example.com/log".into(), size: 8, root: [5; 32] };
        let note = key.sign_note(&checkpoint.body());
        let verifier = NoteVerifier::from_vkey(&key.verifier().vkey()).unwrap();
        let text = verifier.verify_note(&note).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap(), checkpoint);
        assert!(note.contains("\n\n\u{2014} example.com/log "));

        let tampered = note.replace("\n8\n", "\n9\n");
        assert_eq!(verifier.verify_note(&tampered), Err(NoteError::BadSignature("example.com/log".into())));
        let other = NoteKey::from_seed("example.com/log", &[4; 32]).unwrap().verifier();
        assert_eq!(other.verify_note(&note), Err(NoteError::NotSigned("example.com/log".into())));
        assert!(NoteKey::from_seed("has space", &[0; 32]).is_err());
        assert!(NoteVerifier::from_vkey("example.com/log+00000000+AQ==").is_err());
    }

    #[test]
    fn receipts_sign_and_verify() {
        let key = NoteKey::from_seed("node-local", &[1; 32]).unwrap();
        let signature = key.sign(b"leaf");
        assert!(key.verifier().verify(b"leaf", &signature));
        assert!(!key.verifier().verify(b"leaf!", &signature));
        assert!(!key.verifier().verify(b"leaf", &signature[..63]));
    }
}
