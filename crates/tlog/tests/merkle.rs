//! The Merkle tree against published RFC 6962 test vectors, and property
//! tests: for random sizes, every proof verifies and every mutation fails.

use proptest::prelude::*;
use serde_json::Value;
use tlog::merkle::{Frontier, MemoryTree, consistency_proof, inclusion_proof, leaf_hash, root};
use tlog::{Hash, verify_consistency, verify_inclusion};

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/rfc6962_vectors.json")).unwrap()
}

fn hash(value: &Value) -> Hash {
    hex::decode(value.as_str().unwrap()).unwrap().try_into().unwrap()
}

fn hashes(value: &Value) -> Vec<Hash> {
    value.as_array().unwrap().iter().map(hash).collect()
}

fn reference_tree() -> MemoryTree {
    let mut tree = MemoryTree::new();
    for leaf in vectors()["leaves"].as_array().unwrap() {
        tree.append(leaf_hash(&hex::decode(leaf.as_str().unwrap()).unwrap()));
    }
    tree
}

#[test]
fn roots_nodes_and_proofs_match_the_published_vectors() {
    let v = vectors();
    let tree = reference_tree();
    for (size, expected) in v["roots"].as_array().unwrap().iter().enumerate() {
        assert_eq!(root(&tree, size as u64).unwrap(), hash(expected), "root of {size}");
    }
    for (level, row) in v["nodes"].as_array().unwrap().iter().enumerate() {
        for (index, expected) in row.as_array().unwrap().iter().enumerate() {
            let node = tlog::NodeSource::node(&tree, level as u32, index as u64).unwrap();
            assert_eq!(node, hash(expected), "node ({level}, {index})");
        }
    }
    let leaves: Vec<Hash> =
        v["leaves"].as_array().unwrap().iter().map(|l| leaf_hash(&hex::decode(l.as_str().unwrap()).unwrap())).collect();
    let roots = hashes(&v["roots"]);
    for case in v["inclusion"].as_array().unwrap() {
        let (index, size) = (case["index"].as_u64().unwrap(), case["size"].as_u64().unwrap());
        let expected = hashes(&case["proof"]);
        assert_eq!(inclusion_proof(&tree, index, size).unwrap(), expected, "inclusion {index} in {size}");
        assert!(verify_inclusion(&leaves[index as usize], index, size, &expected, &roots[size as usize]));
    }
    for case in v["consistency"].as_array().unwrap() {
        let (from, to) = (case["from"].as_u64().unwrap(), case["to"].as_u64().unwrap());
        let expected = hashes(&case["proof"]);
        assert_eq!(consistency_proof(&tree, from, to).unwrap(), expected, "consistency {from} → {to}");
        assert!(verify_consistency(from, to, &roots[from as usize], &roots[to as usize], &expected));
    }
}

#[test]
fn edge_sizes() {
    let tree = reference_tree();
    let empty = tlog::empty_root();
    let r1 = root(&tree, 1).unwrap();
    assert!(verify_consistency(0, 0, &empty, &empty, &[]));
    assert!(verify_consistency(0, 5, &empty, &root(&tree, 5).unwrap(), &[]));
    assert!(!verify_consistency(0, 5, &empty, &r1, &[r1]), "a proof from the empty tree is empty");
    assert!(verify_consistency(1, 1, &r1, &r1, &[]));
    assert!(!verify_consistency(1, 1, &r1, &empty, &[]));
    assert!(!verify_consistency(2, 1, &r1, &r1, &[]));
    assert!(verify_inclusion(&r1, 0, 1, &[], &r1));
    assert!(!verify_inclusion(&r1, 1, 1, &[], &r1));
    assert!(!verify_inclusion(&r1, 0, 0, &[], &r1));
}

/// Every way to spoil a valid proof: each bit of each hash, a hash removed,
/// added or repeated, and wrong indices and sizes.
fn mutations(proof: &[Hash]) -> Vec<Vec<Hash>> {
    let mut out = vec![];
    for i in 0..proof.len() {
        for bit in 0..256 {
            let mut spoiled = proof.to_vec();
            spoiled[i][bit / 8] ^= 1 << (bit % 8);
            out.push(spoiled);
        }
        let mut removed = proof.to_vec();
        removed.remove(i);
        out.push(removed);
        let mut doubled = proof.to_vec();
        doubled.insert(i, proof[i]);
        out.push(doubled);
    }
    let mut added = proof.to_vec();
    added.push([7; 32]);
    out.push(added);
    let mut prefixed = proof.to_vec();
    prefixed.insert(0, [7; 32]);
    out.push(prefixed);
    out
}

fn tree_of(size: u64) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for i in 0..size {
        tree.append(leaf_hash(&i.to_be_bytes()));
    }
    tree
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_proofs_verify_and_mutations_fail(size in 1u64..3000, pick in any::<u64>()) {
        let tree = tree_of(size);
        let index = pick % size;
        let root = tree.root();
        prop_assert_eq!(root, tlog::root(&tree, size).unwrap());
        let leaf = leaf_hash(&index.to_be_bytes());
        let proof = inclusion_proof(&tree, index, size).unwrap();
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root));
        for spoiled in mutations(&proof) {
            prop_assert!(!verify_inclusion(&leaf, index, size, &spoiled, &root));
        }
        // Another leaf position, or a tree twice as tall: the path no longer fits.
        // (Some other sizes share this path's shape; the signed checkpoint fixes the size.)
        let other = index ^ 1;
        if other < size {
            prop_assert!(!verify_inclusion(&leaf, other, size, &proof, &root));
        }
        prop_assert!(!verify_inclusion(&leaf, index, size * 2, &proof, &root));
        prop_assert!(!verify_inclusion(&[9; 32], index, size, &proof, &root));
    }

    #[test]
    fn consistency_proofs_verify_and_mutations_fail(to in 1u64..3000, pick in any::<u64>()) {
        let tree = tree_of(to);
        let from = pick % (to + 1);
        let (from_root, to_root) = (tlog::root(&tree, from).unwrap(), tlog::root(&tree, to).unwrap());
        let proof = consistency_proof(&tree, from, to).unwrap();
        prop_assert!(verify_consistency(from, to, &from_root, &to_root, &proof));
        if from > 0 && from < to {
            for spoiled in mutations(&proof) {
                prop_assert!(!verify_consistency(from, to, &from_root, &to_root, &spoiled));
            }
            prop_assert!(!verify_consistency(from, to, &to_root, &from_root, &proof));
            prop_assert!(!verify_consistency(from, to, &from_root, &[9; 32], &proof));
        }
    }

    #[test]
    fn a_frontier_rebuilt_from_stored_nodes_continues_the_same_tree(size in 0u64..2000, more in 1u64..50) {
        let tree = tree_of(size);
        let hashes = Frontier::positions(size).into_iter().map(|(l, i)| tlog::NodeSource::node(&tree, l, i).unwrap()).collect();
        let mut frontier = Frontier::new(size, hashes).unwrap();
        prop_assert_eq!(frontier.root(), tree.root());
        let bigger = tree_of(size + more);
        for i in size..size + more {
            frontier.append(leaf_hash(&i.to_be_bytes()));
        }
        prop_assert_eq!(frontier.root(), bigger.root());
    }
}
