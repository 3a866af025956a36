//! RFC 6962 Merkle trees (RFC 9162 §2.1).
//!
//! A tree of `size` leaves is stored as the hashes of its complete subtrees:
//! node `(level, index)` covers leaves `[index · 2^level, (index + 1) · 2^level)`;
//! level 0 is the leaf hashes. Every root and proof is computed from those
//! with O(log² n) lookups at most, and every node is written once, when the
//! leaf that completes it is appended.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A SHA-256 hash in the tree.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Where the hashes of complete subtrees come from (a database, memory).
pub trait NodeSource {
    type Error;
    /// The hash of node `(level, index)`, which must be complete.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The largest power of two strictly below `n` (n ≥ 2): RFC 6962's split.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[start:end])` for a range that RFC 6962's recursion produces (its
/// start is a multiple of the largest power of two not above its length).
fn subtree<S: NodeSource>(source: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return source.node(n.trailing_zeros(), start / n);
    }
    let k = split(n);
    Ok(node_hash(&subtree(source, start, start + k)?, &subtree(source, start + k, end)?))
}

/// The root of the tree of the first `size` leaves.
pub fn root<S: NodeSource>(source: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 { Ok(empty_root()) } else { subtree(source, 0, size) }
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 9162
/// §2.1.3.1), leaf to root. `index < size`.
pub fn inclusion_proof<S: NodeSource>(source: &S, index: u64, size: u64) -> Result<Vec<Hash>, S::Error> {
    assert!(index < size, "inclusion_proof: index {index} outside a tree of {size}");
    let mut proof = vec![];
    path(source, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path<S: NodeSource>(source: &S, m: u64, start: u64, end: u64, proof: &mut Vec<Hash>) -> Result<(), S::Error> {
    let n = end - start;
    if n == 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(source, m, start, start + k, proof)?;
        proof.push(subtree(source, start + k, end)?);
    } else {
        path(source, m - k, start + k, end, proof)?;
        proof.push(subtree(source, start, start + k)?);
    }
    Ok(())
}

/// The proof that the tree of `from` leaves is a prefix of the tree of `to`
/// leaves (RFC 9162 §2.1.4.1). Empty when `from` is 0 or equals `to`.
pub fn consistency_proof<S: NodeSource>(source: &S, from: u64, to: u64) -> Result<Vec<Hash>, S::Error> {
    assert!(from <= to, "consistency_proof: {from} > {to}");
    let mut proof = vec![];
    if from > 0 && from < to {
        subproof(source, from, 0, to, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<S: NodeSource>(
    source: &S,
    m: u64,
    start: u64,
    end: u64,
    whole: bool,
    proof: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !whole {
            proof.push(subtree(source, start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(source, m, start, start + k, whole, proof)?;
        proof.push(subtree(source, start + k, end)?);
    } else {
        subproof(source, m - k, start + k, end, false, proof)?;
        proof.push(subtree(source, start, start + k)?);
    }
    Ok(())
}

/// Checks an audit path (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2). Any tree is consistent
/// with the empty tree; equal sizes need equal roots and an empty proof.
pub fn verify_consistency(from: u64, to: u64, from_root: &Hash, to_root: &Hash, proof: &[Hash]) -> bool {
    if from > to {
        return false;
    }
    if from == to {
        return proof.is_empty() && from_root == to_root;
    }
    if from == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *from_root && sr == *to_root && s == 0
}

/// The right edge of a tree: the roots of its maximal complete subtrees,
/// largest first (one per set bit of the size). Enough to append leaves and
/// compute the root without reading anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    pub fn empty() -> Frontier {
        Frontier { size: 0, hashes: vec![] }
    }

    /// The nodes whose hashes make the frontier of a tree of `size` leaves.
    pub fn positions(size: u64) -> Vec<(u32, u64)> {
        let mut start = 0u64;
        let mut positions = vec![];
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                positions.push((level, start >> level));
                start += 1 << level;
            }
        }
        positions
    }

    /// A frontier from the hashes of [`Frontier::positions`], in that order.
    pub fn new(size: u64, hashes: Vec<Hash>) -> Option<Frontier> {
        (hashes.len() == size.count_ones() as usize).then_some(Frontier { size, hashes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; returns every node this completes, the leaf's own
    /// `(0, index)` first, as `(level, index, hash)`.
    pub fn append(&mut self, leaf_hash: Hash) -> Vec<(u32, u64, Hash)> {
        let mut completed = vec![(0, self.size, leaf_hash)];
        let (mut level, mut index, mut hash) = (0u32, self.size, leaf_hash);
        while index & 1 == 1 {
            let sibling = self.hashes.pop().expect("a set bit has its subtree");
            hash = node_hash(&sibling, &hash);
            level += 1;
            index >>= 1;
            completed.push((level, index, hash));
        }
        self.hashes.push(hash);
        self.size += 1;
        completed
    }

    pub fn root(&self) -> Hash {
        let mut hashes = self.hashes.iter().rev();
        match hashes.next() {
            None => empty_root(),
            Some(last) => hashes.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// A whole tree in memory: for tests, benchmarks and the auditor.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    nodes: HashMap<(u32, u64), Hash>,
    frontier: Option<Frontier>,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree { nodes: HashMap::new(), frontier: Some(Frontier::empty()) }
    }

    pub fn append(&mut self, leaf_hash: Hash) {
        let frontier = self.frontier.get_or_insert_with(Frontier::empty);
        for (level, index, hash) in frontier.append(leaf_hash) {
            self.nodes.insert((level, index), hash);
        }
    }

    pub fn size(&self) -> u64 {
        self.frontier.as_ref().map_or(0, Frontier::size)
    }

    pub fn root(&self) -> Hash {
        self.frontier.as_ref().map_or_else(empty_root, Frontier::root)
    }
}

/// Asking a [`MemoryTree`] for a node it lacks means the node is not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node ({0}, {1}) is not in the tree")]
pub struct MissingNode(pub u32, pub u64);

impl NodeSource for MemoryTree {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        self.nodes.get(&(level, index)).copied().ok_or(MissingNode(level, index))
    }
}

/// Records which nodes a computation reads, answering with zeros: the nodes
/// a proof needs do not depend on their values, so a store can fetch them
/// all at once, then compute with a [`HashMap`] source.
#[derive(Debug, Default)]
pub struct NodeRecorder {
    pub wanted: std::cell::RefCell<Vec<(u32, u64)>>,
}

impl NodeSource for NodeRecorder {
    type Error = std::convert::Infallible;

    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        self.wanted.borrow_mut().push((level, index));
        Ok([0; 32])
    }
}

impl NodeSource for HashMap<(u32, u64), Hash> {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        self.get(&(level, index)).copied().ok_or(MissingNode(level, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        assert_eq!([2, 3, 4, 5, 8, 9].map(split), [1, 2, 2, 4, 4, 8]);
    }

    #[test]
    fn frontier_positions_follow_the_set_bits() {
        assert_eq!(Frontier::positions(0), vec![]);
        assert_eq!(Frontier::positions(6), vec![(2, 0), (1, 2)]);
        assert_eq!(Frontier::positions(7), vec![(2, 0), (1, 2), (0, 6)]);
    }
}
