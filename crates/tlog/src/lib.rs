//! The transparency log's formats and mathematics, as pure functions.
//!
//! - [`leaf`]: the receipt leaf, one canonical binary encoding, byte by byte.
//! - [`merkle`]: RFC 6962 / RFC 9162 hashing (`0x00` leaf prefix, `0x01` node
//!   prefix), roots, inclusion and consistency proofs and their verifiers,
//!   computed from the hashes of complete subtrees ([`NodeSource`]), and the
//!   [`Frontier`] that appends leaves.
//! - [`note`]: C2SP `tlog-checkpoint` bodies signed as C2SP `signed-note`s
//!   with Ed25519, and receipt signatures.
//! - [`proof`]: C2SP `tlog-proof`, a receipt verifiable offline.
//! - [`witness`]: C2SP `tlog-cosignature` and the checks of `tlog-witness`.
//!
//! This crate knows nothing about SQL or HTTP.

pub mod leaf;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod witness;

pub use leaf::{
    LeafError, ReceiptLeaf, TensorBytes, caller_pseudonym, caller_secret, private_model_label, tensors_sha256,
};
pub use merkle::{
    Frontier, Hash, MemoryTree, NodeSource, consistency_proof, empty_root, inclusion_proof, leaf_hash, node_hash, root,
    verify_consistency, verify_inclusion,
};
pub use note::{Checkpoint, NoteError, NoteKey, NoteVerifier};
pub use proof::TlogProof;
pub use witness::{AddCheckpoint, CosignatureVerifier, Cosigner, Refusal, check_add_checkpoint};
