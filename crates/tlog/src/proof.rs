//! C2SP `tlog-proof` (<https://c2sp.org/tlog-proof>): an offline-verifiable
//! proof that an entry is in a log, as text: the line
//! `c2sp.org/tlog-proof@v1`, an optional `extra <base64>` line, `index <N>`,
//! the inclusion proof's hashes (base64, one per line, from the leaf's
//! sibling up), an empty line, and the checkpoint's signed note verbatim.
//!
//! Vitrine's receipts put the entry itself in `extra` (unauthenticated, as
//! the specification says: it is trusted only once its hash is proven in
//! the signed tree): a big-endian `u16` length, the canonical leaf, then the
//! serving node's 64-byte Ed25519 signature of it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Hash;

const HEADER: &str = "c2sp.org/tlog-proof@v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub hashes: Vec<Hash>,
    /// The checkpoint's signed note, verbatim.
    pub checkpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a c2sp.org/tlog-proof@v1 proof: {0}")]
pub struct ProofError(&'static str);

impl TlogProof {
    pub fn encode(&self) -> String {
        let mut text = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            text.push_str(&format!("extra {}\n", BASE64.encode(extra)));
        }
        text.push_str(&format!("index {}\n", self.index));
        for hash in &self.hashes {
            text.push_str(&BASE64.encode(hash));
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.checkpoint);
        text
    }

    /// Parses a proof, strictly: every line in its place, canonical numbers
    /// and base64, 32-byte hashes.
    pub fn parse(text: &str) -> Result<TlogProof, ProofError> {
        let (head, checkpoint) = text.split_once("\n\n").ok_or(ProofError("no empty line before the checkpoint"))?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(HEADER) {
            return Err(ProofError("the first line is not c2sp.org/tlog-proof@v1"));
        }
        let extra = match lines.peek().and_then(|line| line.strip_prefix("extra ")) {
            Some(encoded) => {
                lines.next();
                Some(BASE64.decode(encoded).map_err(|_| ProofError("the extra line is not base64"))?)
            }
            None => None,
        };
        let index = lines
            .next()
            .and_then(|line| line.strip_prefix("index "))
            .filter(|n| *n == "0" || !n.starts_with('0'))
            .and_then(|n| n.bytes().all(|b| b.is_ascii_digit()).then(|| n.parse().ok()).flatten())
            .ok_or(ProofError("no index line"))?;
        let hashes = lines
            .map(|line| {
                let bytes = BASE64.decode(line).map_err(|_| ProofError("a proof line is not base64"))?;
                Hash::try_from(bytes.as_slice()).map_err(|_| ProofError("a proof hash is not 32 bytes"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if checkpoint.is_empty() {
            return Err(ProofError("no checkpoint"));
        }
        Ok(TlogProof { extra, index, hashes, checkpoint: checkpoint.to_owned() })
    }
}

/// A receipt's `extra`: the leaf and the node's signature of it.
pub fn receipt_extra(leaf: &[u8], signature: &[u8]) -> Option<Vec<u8>> {
    let length = u16::try_from(leaf.len()).ok()?;
    let mut extra = Vec::with_capacity(2 + leaf.len() + signature.len());
    extra.extend_from_slice(&length.to_be_bytes());
    extra.extend_from_slice(leaf);
    extra.extend_from_slice(signature);
    Some(extra)
}

/// The leaf and the node's signature out of a receipt's `extra`.
pub fn split_receipt_extra(extra: &[u8]) -> Result<(&[u8], &[u8]), ProofError> {
    let length = extra.get(..2).ok_or(ProofError("the extra data is too short"))?;
    let length = u16::from_be_bytes([length[0], length[1]]) as usize;
    let rest = &extra[2..];
    if rest.len() != length + 64 {
        return Err(ProofError("the extra data is not a leaf and a 64-byte signature"));
    }
    Ok(rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TlogProof {
        TlogProof {
            extra: receipt_extra(b"a leaf", &[7; 64]),
            index: 73_894,
            hashes: vec![[1; 32], [2; 32]],
            checkpoint: "example.com/log\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n\u{2014} example.com/log AAAA\n"
                .into(),
        }
    }

    #[test]
    fn a_proof_round_trips_and_reads_as_the_specification_writes_it() {
        let proof = sample();
        let text = proof.encode();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra AAZhIGxlYWYH"), "{text}");
        assert!(text.contains("\nindex 73894\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"), "{text}");
        assert!(text.ends_with(&format!("\n\n{}", proof.checkpoint)));
        assert_eq!(TlogProof::parse(&text), Ok(proof.clone()));
        let (leaf, signature) = split_receipt_extra(proof.extra.as_deref().expect("extra")).expect("split");
        assert_eq!((leaf, signature), (&b"a leaf"[..], &[7u8; 64][..]));
        let bare = TlogProof { extra: None, hashes: vec![], index: 0, ..proof };
        assert_eq!(TlogProof::parse(&bare.encode()), Ok(bare));
    }

    #[test]
    fn a_malformed_proof_is_refused() {
        let text = sample().encode();
        for bad in [
            text.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
            text.replacen("index 73894", "index 073894", 1),
            text.replacen("index 73894", "index -1", 1),
            text.replacen("index 73894", "index", 1),
            text.replacen("extra ", "extra !", 1),
            text.replacen("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AQEB", 1),
            text.replacen("\n\nexample.com", "\nexample.com", 1),
            text.split("\n\n").next().expect("head").to_owned() + "\n\n",
        ] {
            assert!(TlogProof::parse(&bad).is_err(), "{bad}");
        }
        assert!(split_receipt_extra(&[0, 5, 1, 2]).is_err());
    }
}
