//! Money reserved for paid calls in flight, in memory.
//!
//! A paid call's price is reserved here before its model runs (402 if the
//! caller cannot cover it) and charged after it ran, by one ledger batch:
//! one durable commit per paid call. A reservation need not be durable: if
//! the server stops, the calls it covered stop with it and charged nothing.
//!
//! What a caller may still reserve is the available balance the sequencer
//! last committed (balance less durable holds) less what is reserved here.
//! The sequencer records every batch's account states before it answers
//! anyone in that batch ([`Reservations::committed`]), and a reservation is
//! released only when its call is over (its charge answered, or its failure
//! known), so at no instant can reservations and charges together spend more
//! than a balance. The ledger checks every charge against the durable
//! balance all the same: a balance changed behind this server's back (by
//! another node on the same database) can make a charge fail, never go
//! below zero.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ledger::{AccountId, AccountState};
use store::Store;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Default)]
pub struct Reservations {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// Each account's durable available balance, as of the last batch that
    /// touched it (or its first read). One entry per account seen: a few
    /// dozen bytes each.
    available: HashMap<AccountId, i128>,
    /// Minor units reserved by calls in flight; no entry at zero.
    reserved: HashMap<AccountId, u64>,
}

/// A reservation; dropping it releases it.
#[derive(Debug)]
pub struct Reservation {
    reservations: Arc<Reservations>,
    account: AccountId,
    amount: u64,
}

impl Reservations {
    /// Reserves `amount` on `account` if its available balance, less what
    /// calls in flight reserved, covers it; 402 `insufficient_balance` if not.
    pub async fn reserve(self: &Arc<Self>, store: &Store, account: AccountId, amount: u64) -> ApiResult<Reservation> {
        if !self.lock().available.contains_key(&account) {
            let (state, _) = store.balances(account).await?;
            // A batch may have committed since the read: its state wins.
            self.lock().available.entry(account).or_insert(state.available());
        }
        let mut book = self.lock();
        let reserved = book.reserved.get(&account).copied().unwrap_or(0);
        let free = book.available.get(&account).copied().unwrap_or(0) - reserved as i128;
        if free < amount as i128 {
            return Err(ApiError::insufficient_balance(format!(
                "the balance available is {} minor units, {amount} are needed",
                free.max(0)
            )));
        }
        *book.reserved.entry(account).or_default() += amount;
        Ok(Reservation { reservations: self.clone(), account, amount })
    }

    /// Records the accounts' states after a batch committed; called by the
    /// sequencer before it answers the batch's requests.
    pub fn committed(&self, states: &HashMap<AccountId, AccountState>) {
        let mut book = self.lock();
        for (id, state) in states {
            book.available.insert(*id, state.available());
        }
    }

    /// Minor units reserved on `account` now (for tests and metrics).
    pub fn reserved(&self, account: AccountId) -> u64 {
        self.lock().reserved.get(&account).copied().unwrap_or(0)
    }

    fn release(&self, account: AccountId, amount: u64) {
        let mut book = self.lock();
        if let Some(reserved) = book.reserved.get_mut(&account) {
            *reserved -= amount;
            if *reserved == 0 {
                book.reserved.remove(&account);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // The book holds plain numbers updated in single steps: a panic
        // elsewhere cannot leave it half-written.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reservations.release(self.account, self.amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(credits: u64, debits: u64, pending: u64) -> AccountState {
        AccountState {
            kind: ledger::AccountKind::Regular,
            credits_posted: credits,
            debits_posted: debits,
            debits_pending: pending,
        }
    }

    #[tokio::test]
    async fn reservations_never_spend_more_than_the_committed_balance() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vitrine.db")).await.unwrap();
        let reservations = Arc::new(Reservations::default());
        reservations.committed(&HashMap::from([(7, state(100, 20, 30))]));
        // 50 available: 30 + 20 fit, 1 more does not.
        let first = reservations.reserve(&store, 7, 30).await.unwrap();
        let second = reservations.reserve(&store, 7, 20).await.unwrap();
        let refused = reservations.reserve(&store, 7, 1).await.unwrap_err();
        assert_eq!(
            (refused.code, refused.message.as_str()),
            ("insufficient_balance", "the balance available is 0 minor units, 1 are needed")
        );
        assert_eq!(reservations.reserved(7), 50);
        // The first call is charged: the batch commits, then it is released.
        reservations.committed(&HashMap::from([(7, state(100, 50, 30))]));
        drop(first);
        assert_eq!(reservations.reserved(7), 20);
        assert!(reservations.reserve(&store, 7, 1).await.is_err(), "20 available, 20 reserved");
        // The second call fails: released, nothing charged.
        drop(second);
        assert_eq!(reservations.reserved(7), 0);
        assert!(reservations.reserve(&store, 7, 20).await.is_ok());
    }
}
