//! Witnessing: C2SP `tlog-cosignature` (Ed25519, v1) and the checks of the
//! C2SP `tlog-witness` protocol's `add-checkpoint`, as pure functions.
//!
//! A cosignature is a signed-note signature line
//! `— <witness name> base64(key ID || timestamp || signature)`: the key ID
//! is `SHA-256(name || 0x0A || 0x04 || public key)[:4]`, the timestamp a
//! big-endian `u64` of POSIX seconds, and the Ed25519 signature covers
//! `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint's body.
//! It states that, at that time, this was the largest tree the witness had
//! seen of the log, consistent with every earlier one it cosigned.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::note::NoteError;
use crate::{Checkpoint, Hash, NoteVerifier};

/// The cosignature (v1, Ed25519) type byte in key IDs and verifier keys.
const COSIGNATURE_TYPE: u8 = 0x04;
/// Consistency proof lines a request may carry (the protocol's bound).
const PROOF_LINES_MAX: usize = 63;

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    crate::note::typed_key_id(name, COSIGNATURE_TYPE, public)
}

fn signed_message(body: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

/// A witness's signing key.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({})", self.name)
    }
}

impl Cosigner {
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteError> {
        // The same rule as note keys: no spaces, no '+'.
        NoteVerifier::new(name, SigningKey::from_bytes(seed).verifying_key().as_bytes())?;
        Ok(Cosigner { name: name.to_owned(), key: SigningKey::from_bytes(seed) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// The cosignature line (newline-terminated) of a checkpoint body.
    pub fn cosign(&self, body: &str, timestamp: u64) -> String {
        let signature = self.key.sign(signed_message(body, timestamp).as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&signature.to_bytes());
        format!("\u{2014} {} {}\n", self.name, BASE64.encode(blob))
    }
}

/// A witness's public key, which checks its cosignatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    pub name: String,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses `<name>+<key ID hex>+<base64(0x04 || key)>`.
    pub fn from_vkey(vkey: &str) -> Result<CosignatureVerifier, NoteError> {
        let (name, key) =
            crate::note::parse_vkey(vkey, COSIGNATURE_TYPE, "a witness key has the cosignature type 0x04")?;
        Ok(CosignatureVerifier { name, key })
    }

    pub fn vkey(&self) -> String {
        crate::note::format_vkey(&self.name, COSIGNATURE_TYPE, &self.key)
    }

    /// Checks this witness's cosignature on a signed note (a checkpoint with
    /// its signature lines); returns its timestamp. Lines by other keys are
    /// ignored; one by this key must be present and valid.
    pub fn verify(&self, note: &str) -> Result<u64, NoteError> {
        let (body, signatures) = split_note(note)?;
        let wanted = key_id(&self.name, &self.key);
        for line in signatures.lines() {
            let Some((name, blob)) = line.strip_prefix("\u{2014} ").and_then(|rest| rest.split_once(' ')) else {
                continue;
            };
            let Ok(blob) = BASE64.decode(blob) else { continue };
            if name != self.name || blob.len() != 4 + 8 + 64 || blob[..4] != wanted {
                continue;
            }
            let timestamp = u64::from_be_bytes(blob[4..12].try_into().expect("8 bytes"));
            let signature =
                Signature::from_slice(&blob[12..]).map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            return match self.key.verify(signed_message(body, timestamp).as_bytes(), &signature) {
                Ok(()) if timestamp < 1 << 63 => Ok(timestamp),
                _ => Err(NoteError::BadSignature(self.name.clone())),
            };
        }
        Err(NoteError::NotSigned(self.name.clone()))
    }
}

/// A signed note's body (with its final newline) and its signature lines.
pub fn split_note(note: &str) -> Result<(&str, &str), NoteError> {
    let split = note.find("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    Ok((&note[..split + 1], &note[split + 2..]))
}

/// An `add-checkpoint` request: the size the log believes the witness has
/// seen, the consistency proof from it, and the signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old: u64,
    pub proof: Vec<Hash>,
    pub note: String,
}

impl AddCheckpoint {
    /// The request body: `old <size>`, one base64 hash per line, a blank
    /// line, the checkpoint.
    pub fn encode(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        for hash in &self.proof {
            out.push_str(&BASE64.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note);
        out
    }

    pub fn parse(body: &str) -> Result<AddCheckpoint, Refusal> {
        let bad = |why: &str| Refusal::BadRequest(why.to_owned());
        let (head, note) = body.split_once("\n\n").ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|line| line.strip_prefix("old "))
            .filter(|size| size == &"0" || !size.starts_with('0'))
            .and_then(|size| size.parse::<u64>().ok())
            .ok_or_else(|| bad("the first line is 'old <size>'"))?;
        let proof = lines
            .map(|line| BASE64.decode(line).ok().and_then(|h| Hash::try_from(h.as_slice()).ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| bad("a proof line is not a base64 hash"))?;
        if proof.len() > PROOF_LINES_MAX {
            return Err(bad("more than 63 proof lines"));
        }
        Ok(AddCheckpoint { old, proof, note: note.to_owned() })
    }
}

/// Why a witness refuses a checkpoint, with the protocol's status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: no signature by a key the witness trusts for the origin.
    #[error("the checkpoint is not signed by a key this witness trusts for its log")]
    NotSigned,
    /// 404.
    #[error("this witness does not witness log {0}")]
    UnknownLog(String),
    /// 409, with the size the witness has (its body): the old size is not
    /// the witness's, or a checkpoint of the witness's size has another root.
    #[error("the witness has seen {0} leaves of this log and not this checkpoint's history")]
    Conflict(u64),
    /// 422.
    #[error("the consistency proof does not verify")]
    Inconsistent,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::NotSigned => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict(_) => 409,
            Refusal::Inconsistent => 422,
        }
    }
}

/// The checks a witness makes before cosigning: `trusted` gives the log
/// keys it trusts for an origin, `latest` the size and root it last
/// cosigned for that origin. Returns the checkpoint to cosign and record.
pub fn check_add_checkpoint(
    request: &AddCheckpoint,
    trusted: impl Fn(&str) -> Option<Vec<NoteVerifier>>,
    latest: impl Fn(&str) -> Option<(u64, Hash)>,
) -> Result<Checkpoint, Refusal> {
    let (body, _) = split_note(&request.note).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let checkpoint = Checkpoint::parse(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let keys = trusted(&checkpoint.origin).ok_or_else(|| Refusal::UnknownLog(checkpoint.origin.clone()))?;
    if !keys.iter().any(|key| key.verify_note(&request.note).is_ok()) {
        return Err(Refusal::NotSigned);
    }
    if request.old > checkpoint.size {
        return Err(Refusal::BadRequest("the old size is larger than the checkpoint's".into()));
    }
    let (size, root) = latest(&checkpoint.origin).unwrap_or((0, crate::empty_root()));
    if request.old != size {
        return Err(Refusal::Conflict(size));
    }
    if size == checkpoint.size {
        return if root == checkpoint.root { Ok(checkpoint) } else { Err(Refusal::Conflict(size)) };
    }
    if size == 0 && !request.proof.is_empty() {
        return Err(Refusal::BadRequest("a proof from size 0 is empty".into()));
    }
    if size > 0 && !crate::verify_consistency(size, checkpoint.size, &root, &checkpoint.root, &request.proof) {
        return Err(Refusal::Inconsistent);
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MemoryTree;
    use crate::{NoteKey, consistency_proof};

    fn tree(leaves: u64) -> MemoryTree {
        let mut tree = MemoryTree::new();
        (0..leaves).for_each(|i| tree.append(crate::leaf_hash(&i.to_be_bytes())));
        tree
    }

    #[test]
    fn cosignatures_sign_and_verify_as_the_specification_says() {
        let witness = Cosigner::from_seed("witness.example/w1", &[9; 32]).unwrap();
        let log = NoteKey::from_seed("example.com/log", &[1; 32]).unwrap();
        let body = Checkpoint { origin: "example.com/log".into(), size: 5, root: [7; 32] }.body();
        let note = log.sign_note(&body);
        let line = witness.cosign(&body, 1_679_315_147);
        let cosigned = format!("{note}{line}");
        let verifier = CosignatureVerifier::from_vkey(&witness.verifier().vkey()).unwrap();
        assert_eq!(verifier.verify(&cosigned), Ok(1_679_315_147));
        // The log's own signature still verifies beside it.
        assert!(log.verifier().verify_note(&cosigned).is_ok());
        // The blob: key ID, big-endian timestamp, the signature over the
        // header, the time line and the body.
        let blob = BASE64.decode(line.trim_end().rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(blob.len(), 76);
        assert_eq!(&blob[4..12], &1_679_315_147u64.to_be_bytes());
        let message = format!("cosignature/v1\ntime 1679315147\n{body}");
        let key = VerifyingKey::from_bytes(&SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes()).unwrap();
        assert!(key.verify(message.as_bytes(), &Signature::from_slice(&blob[12..]).unwrap()).is_ok());
        // Another body, another key, none at all: refused.
        let other = format!("{}{line}", log.sign_note(&body.replace("\n5\n", "\n6\n")));
        assert!(matches!(verifier.verify(&other), Err(NoteError::BadSignature(_))));
        let stranger = Cosigner::from_seed("witness.example/w1", &[8; 32]).unwrap().verifier();
        assert!(matches!(stranger.verify(&cosigned), Err(NoteError::NotSigned(_))));
        assert!(CosignatureVerifier::from_vkey(&log.verifier().vkey()).is_err(), "a note key is not a witness key");
    }

    #[test]
    fn the_witness_cosigns_only_an_append_only_history() {
        let log = NoteKey::from_seed("example.com/log", &[1; 32]).unwrap();
        let trusted = |origin: &str| (origin == "example.com/log").then(|| vec![log.verifier()]);
        let (small, large) = (tree(5), tree(9));
        let note = |t: &MemoryTree| {
            log.sign_note(&Checkpoint { origin: "example.com/log".into(), size: t.size(), root: t.root() }.body())
        };
        let first = AddCheckpoint { old: 0, proof: vec![], note: note(&small) };
        assert_eq!(AddCheckpoint::parse(&first.encode()), Ok(first.clone()));
        assert_eq!(check_add_checkpoint(&first, trusted, |_| None).map(|c| c.size), Ok(5));
        let seen = |_: &str| Some((5, small.root()));
        // Growing with a good proof: cosigned; with a bad one: 422.
        let proof = consistency_proof(&large, 5, 9).unwrap();
        let grow = AddCheckpoint { old: 5, proof: proof.clone(), note: note(&large) };
        assert_eq!(AddCheckpoint::parse(&grow.encode()), Ok(grow.clone()));
        assert_eq!(check_add_checkpoint(&grow, trusted, seen).map(|c| c.size), Ok(9));
        let mut wrong = grow.clone();
        wrong.proof[0][0] ^= 1;
        assert_eq!(check_add_checkpoint(&wrong, trusted, seen), Err(Refusal::Inconsistent));
        // A stale old size: 409 with the witness's size.
        assert_eq!(
            check_add_checkpoint(&AddCheckpoint { old: 0, ..grow.clone() }, trusted, seen),
            Err(Refusal::Conflict(5))
        );
        // The same size with another root (a fork): 409.
        let fork = Checkpoint { origin: "example.com/log".into(), size: 5, root: [1; 32] };
        let fork = AddCheckpoint { old: 5, proof: vec![], note: log.sign_note(&fork.body()) };
        assert_eq!(check_add_checkpoint(&fork, trusted, seen), Err(Refusal::Conflict(5)));
        // Signed by another key: 403; another log: 404; garbage: 400.
        let forged = NoteKey::from_seed("example.com/log", &[2; 32]).unwrap();
        let forged = AddCheckpoint {
            note: forged
                .sign_note(&Checkpoint { origin: "example.com/log".into(), size: 9, root: large.root() }.body()),
            ..grow.clone()
        };
        assert_eq!(check_add_checkpoint(&forged, trusted, seen), Err(Refusal::NotSigned));
        let elsewhere = NoteKey::from_seed("other.example/log", &[1; 32]).unwrap();
        let elsewhere = AddCheckpoint {
            note: elsewhere
                .sign_note(&Checkpoint { origin: "other.example/log".into(), size: 9, root: large.root() }.body()),
            ..grow.clone()
        };
        assert_eq!(
            check_add_checkpoint(&elsewhere, trusted, seen),
            Err(Refusal::UnknownLog("other.example/log".into()))
        );
        assert!(matches!(AddCheckpoint::parse("old 01\n\nx"), Err(Refusal::BadRequest(_))));
        assert!(matches!(AddCheckpoint::parse("old 1\nnot-base64\n\nx"), Err(Refusal::BadRequest(_))));
        let shrink = AddCheckpoint { old: 9, proof: vec![], note: note(&small) };
        assert!(matches!(check_add_checkpoint(&shrink, trusted, seen), Err(Refusal::BadRequest(_))));
    }

    proptest::proptest! {
        #[test]
        fn requests_round_trip_and_no_body_panics_the_parser(
            old in proptest::prelude::any::<u64>(),
            proof in proptest::collection::vec(proptest::prelude::any::<[u8; 32]>(), 0..63),
            note in "[a-z./]{1,20}\n[0-9]{1,5}\n[A-Za-z0-9+/=]{0,44}\n\n\u{2014} [a-z]{1,8} [A-Za-z0-9+/=]{4,90}\n",
            junk in ".{0,300}",
        ) {
            let request = AddCheckpoint { old, proof, note };
            proptest::prop_assert_eq!(AddCheckpoint::parse(&request.encode()), Ok(request));
            let _ = AddCheckpoint::parse(&junk);
        }
    }
}
