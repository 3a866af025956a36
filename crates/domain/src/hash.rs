use std::fmt;
use std::str::FromStr;

use sha2::Digest;

/// A SHA-256 digest. Printed and parsed as 64 lowercase hex digits, the form
/// used in blob addresses and the API.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a SHA-256 digest is 64 lowercase hex digits")]
pub struct Sha256Error;

impl Sha256 {
    /// The digest of `bytes`.
    pub fn digest(bytes: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Sha256 {
        Sha256(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Sha256 {
    type Err = Sha256Error;

    /// Only lowercase is accepted, so that one digest has one spelling (blob
    /// paths and database keys compare as strings).
    fn from_str(text: &str) -> Result<Sha256, Sha256Error> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Sha256Error);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| Sha256Error)?;
        Ok(Sha256(bytes))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_round_trip() {
        let empty = Sha256::digest(b"");
        assert_eq!(empty.to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(empty.to_hex().parse::<Sha256>(), Ok(empty));
    }

    #[test]
    fn refuses_other_spellings() {
        let upper = Sha256::digest(b"x").to_hex().to_uppercase();
        for bad in ["", "00", &upper, &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert_eq!(bad.parse::<Sha256>(), Err(Sha256Error), "{bad}");
        }
    }
}
