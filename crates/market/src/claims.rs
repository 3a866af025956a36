//! Idempotency-Keys whose calls are running on this node. A key is written
//! to the database only with its answer, in the batch of the call's charge
//! (one durable commit per call); while the call runs, its claim lives
//! here, and a second call with the key gets 409 instead of running too.
//! Nodes sharing a database do not see each other's claims: there, the
//! batch refuses a key answered meanwhile (`store::ItemError::AlreadyAnswered`)
//! and the call gives the first answer, so a key is still charged once.

use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct IdempotencyClaims(Mutex<HashSet<(i64, String)>>);

/// A claimed key; dropping it ends the claim.
#[derive(Debug)]
pub struct Claim<'a> {
    claims: &'a IdempotencyClaims,
    key: (i64, String),
}

impl IdempotencyClaims {
    /// Claims `key` of `account`, unless a running call holds it.
    pub fn claim(&self, account: i64, key: &str) -> Option<Claim<'_>> {
        let key = (account, key.to_owned());
        let fresh = self.0.lock().expect("the claims are never poisoned").insert(key.clone());
        fresh.then_some(Claim { claims: self, key })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims.0.lock().expect("the claims are never poisoned").remove(&self.key);
    }
}
