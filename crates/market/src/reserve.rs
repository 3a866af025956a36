//! Money reserved for paid calls in flight.
//!
//! A paid call's price is reserved here before its model runs (402 if the
//! caller cannot cover it) and charged after it ran, by one ledger batch:
//! one durable commit per paid call.
//!
//! On a market one node owns (SQLite), reservations live in memory alone
//! and need not be durable: if the server stops, the calls they covered
//! stop with it and charged nothing. What a caller may still reserve is the
//! available balance the sequencer last committed (balance less durable
//! holds) less what is reserved here. The sequencer records every batch's
//! account states before it answers anyone in that batch
//! ([`Reservations::committed`]), and a reservation ends only when its
//! charge is applied, in that same step (the charge names it:
//! [`store::Charge::release`]), or when its call is over otherwise (failed,
//! or given up), so at no instant can reservations and charges together
//! spend more than a balance; nor is a price ever seen both spent and
//! reserved, which would refuse a call the balance covers.
//!
//! On a market several nodes share (PostgreSQL), no node's memory knows
//! what the others spend, so each node reserves from grants instead (as
//! online charging systems grant quota to serving nodes, RFC 4006): a
//! grant is a durable hold this node places on a caller's balance, of
//! `grant_calls` calls or a share of what is available
//! ([`ledger::grant_size`]: at most the available balance ÷ (2 × live
//! nodes)), and spends call by call in memory; each charge draws its price
//! from the grant in the call's batch ([`ledger::Command::Draw`]). A node
//! asks for a grant only when the ones it has cannot cover a call, so the
//! database is off the path of most calls. A grant stops being used well
//! before it expires (an `inference_timeout_ms` and some slack), and what
//! is left of it is voided once it is idle, old, or the node stops.
//!
//! 402 means the caller cannot pay, not that another node holds their
//! money: a node that finds too little free while other nodes hold the rest
//! recalls it ([`store::Store::recall_grants`]; each node gives back its
//! idle grants on that balance at once, and the others as their calls end)
//! and waits up to `grant_recall_wait_ms` for it. A node that dies leaves
//! its grants to the others, which void them within two seconds of its
//! presence lock going (`store/src/presence.rs`). The ledger checks every
//! charge all the same: a grant gone leaves the charge to the free balance,
//! which can refuse it, never go below zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ledger::{AccountId, AccountState, HoldId, LedgerError};
use store::{BatchItem, GrantRequest, ItemError, Sequencer, Store};

use crate::error::CallError;

/// Stop reserving from a grant this long, beyond the inference timeout,
/// before it expires: room for the clocks of the nodes to differ.
const GRANT_SLACK_MS: i64 = 5_000;

/// How often a call waiting for recalled grants looks at the balance.
const RECALL_POLL: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Default)]
pub struct Reservations {
    book: Mutex<Book>,
    /// Set on a shared market: reserve from grants.
    grants: Option<GrantPolicy>,
    /// One grant asked for at a time per account, by the calls that need one.
    asking: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
    /// Nodes alive on the market, as last counted: grants are sized by it.
    live_nodes: AtomicU64,
}

/// How this node takes grants.
#[derive(Debug, Clone)]
pub struct GrantPolicy {
    /// The node the grants belong to (its `node_id`).
    pub node: String,
    /// Calls' worth of a price asked for at once.
    pub calls: u64,
    /// A grant's life (`hold_expiry_ms`).
    pub lifetime_ms: i64,
    /// How long before its expiry a grant stops being used.
    pub margin_ms: i64,
    /// A grant unused this long is released.
    pub idle_ms: i64,
    /// How long a call waits for grants recalled from other nodes.
    pub recall_wait_ms: u64,
}

impl GrantPolicy {
    /// The policy of a node with these settings (`grant_calls`,
    /// `hold_expiry_ms`, `inference_timeout_ms`, `grant_idle_ms`;
    /// `grant_recall_wait_ms` set apart).
    pub fn new(node: &str, calls: u64, lifetime_ms: u64, inference_timeout_ms: u64, idle_ms: u64) -> GrantPolicy {
        GrantPolicy {
            node: node.to_owned(),
            calls: calls.max(1),
            lifetime_ms: lifetime_ms as i64,
            margin_ms: inference_timeout_ms as i64 + GRANT_SLACK_MS,
            idle_ms: idle_ms as i64,
            recall_wait_ms: 0,
        }
    }

    pub fn with_recall_wait_ms(self, recall_wait_ms: u64) -> GrantPolicy {
        GrantPolicy { recall_wait_ms, ..self }
    }
}

impl Book {
    /// Ends a memory reservation, if it has not ended yet.
    fn end_call(&mut self, id: u64) {
        let Some((account, amount)) = self.calls.remove(&id) else { return };
        if let Some(reserved) = self.reserved.get_mut(&account) {
            *reserved -= amount;
            if *reserved == 0 {
                self.reserved.remove(&account);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Book {
    /// Each account's durable available balance, as of the last batch that
    /// touched it (or its first read). One entry per account seen: a few
    /// dozen bytes each. (Memory reservations only.)
    available: HashMap<AccountId, i128>,
    /// Minor units reserved by calls in flight; no entry at zero. (Memory
    /// reservations only.)
    reserved: HashMap<AccountId, u64>,
    /// Each memory reservation in flight, by id: its account and amount.
    /// Ended once, by whichever comes first: the batch that applied its
    /// charge ([`Reservations::committed`]) or its drop.
    calls: HashMap<u64, (AccountId, u64)>,
    next_call: u64,
    /// This node's grants, by caller.
    grants: HashMap<AccountId, Vec<Grant>>,
}

/// A grant this node holds.
#[derive(Debug, Clone)]
struct Grant {
    hold: HoldId,
    /// What the hold has left, as this node's charges left it.
    left: u64,
    /// Reserved by calls in flight, out of `left` (above it for a moment
    /// when a charge answered before calls charged in the same batch).
    reserved: u64,
    /// Reserved from until then.
    usable_until_ms: i64,
    last_used_ms: i64,
}

impl Grant {
    fn covers(&self, amount: u64, now_ms: i64) -> bool {
        // `left` may be below `reserved` for a moment: a charge of the same
        // batch answered before the ones reserved earlier.
        now_ms < self.usable_until_ms && self.left.saturating_sub(self.reserved) >= amount
    }
}

/// A reservation; dropping it releases it.
#[derive(Debug)]
pub struct Reservation {
    reservations: Arc<Reservations>,
    account: AccountId,
    amount: u64,
    grant: Option<HoldId>,
    /// A memory reservation's id ([`Book::calls`]).
    id: Option<u64>,
}

impl Reservation {
    /// The grant the call is to be charged from, if it reserved from one.
    pub fn grant(&self) -> Option<HoldId> {
        self.grant
    }

    /// A memory reservation's id, for its charge to end it
    /// ([`store::Charge::release`]).
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// Records what the call's charge left of its grant, and releases the
    /// reservation: `Some(left)` when it drew from the grant, `None` when
    /// the grant could not pay (gone, or expired), which is then used no more.
    pub fn charged(mut self, left: Option<u64>) {
        let Some(hold) = self.grant else { return };
        let mut book = self.reservations.lock();
        if let Some(grant) = book.grants.get_mut(&self.account).and_then(|g| g.iter_mut().find(|g| g.hold == hold)) {
            grant.reserved -= self.amount;
            grant.last_used_ms = store::now_ms();
            match left {
                // Grants only shrink: answers of one batch may come in any
                // order, and the least left is the truth. (Keeping at least
                // what calls still reserve let a spent grant look unspent,
                // and a call reserve from it, run, and fail at its charge.)
                Some(left) => grant.left = grant.left.min(left),
                None => grant.usable_until_ms = i64::MIN,
            }
        }
        self.amount = 0;
    }
}

impl Reservations {
    /// Reservations that come from grants this node takes.
    pub fn with_grants(policy: GrantPolicy) -> Reservations {
        Reservations { grants: Some(policy), live_nodes: AtomicU64::new(1), ..Reservations::default() }
    }

    /// Whether calls reserve from grants (a shared market).
    pub fn takes_grants(&self) -> bool {
        self.grants.is_some()
    }

    /// Nodes alive on the market, as last counted (1 on one node's market).
    pub fn live_nodes(&self) -> u64 {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }

    /// Records how many nodes are alive: later grants take a share of a
    /// balance that leaves the others theirs.
    pub fn set_live_nodes(&self, live_nodes: u64) {
        self.live_nodes.store(live_nodes.max(1), Ordering::Relaxed);
    }

    /// Reserves `amount` on `account` if what it can spend here covers it;
    /// 402 `insufficient_balance` if not.
    pub async fn reserve(
        self: &Arc<Self>,
        store: &Store,
        sequencer: &Sequencer,
        account: AccountId,
        amount: u64,
    ) -> Result<Reservation, CallError> {
        match &self.grants {
            None => self.reserve_in_memory(store, account, amount).await,
            Some(policy) => self.reserve_from_grant(policy, store, sequencer, account, amount).await,
        }
    }

    async fn reserve_in_memory(
        self: &Arc<Self>,
        store: &Store,
        account: AccountId,
        amount: u64,
    ) -> Result<Reservation, CallError> {
        if !self.lock().available.contains_key(&account) {
            let (state, _) = store.balances(account).await?;
            // A batch may have committed since the read: its state wins.
            self.lock().available.entry(account).or_insert(state.available());
        }
        let mut book = self.lock();
        let reserved = book.reserved.get(&account).copied().unwrap_or(0);
        let free = book.available.get(&account).copied().unwrap_or(0) - reserved as i128;
        if free < amount as i128 {
            return Err(CallError::insufficient(free, amount));
        }
        *book.reserved.entry(account).or_default() += amount;
        let id = book.next_call;
        book.next_call += 1;
        book.calls.insert(id, (account, amount));
        Ok(Reservation { reservations: self.clone(), account, amount, grant: None, id: Some(id) })
    }

    async fn reserve_from_grant(
        self: &Arc<Self>,
        policy: &GrantPolicy,
        store: &Store,
        sequencer: &Sequencer,
        account: AccountId,
        amount: u64,
    ) -> Result<Reservation, CallError> {
        if let Some(reservation) = self.take_from_grant(account, amount) {
            return Ok(reservation);
        }
        let asking = self.asking.lock().unwrap_or_else(PoisonError::into_inner).entry(account).or_default().clone();
        let _turn = asking.lock().await;
        // Calls that waited their turn find the grant the one before took.
        // A fresh grant covers one call at least, but calls that need none
        // may take it first: a few tries.
        let mut placed = 0;
        let mut recall_until = None;
        loop {
            if let Some(reservation) = self.take_from_grant(account, amount) {
                return Ok(reservation);
            }
            if placed == 4 {
                return Err(CallError::unavailable("the caller's balance is in heavy demand here; retry", 1));
            }
            let now = store::now_ms();
            let request = GrantRequest {
                hold: random_hold_id(),
                account,
                ask: ledger::GrantAsk {
                    want: amount.saturating_mul(policy.calls),
                    price: amount,
                    live_nodes: self.live_nodes.load(Ordering::Relaxed),
                },
                expires_at_ms: now + policy.lifetime_ms,
                node: policy.node.clone(),
            };
            let expires_at_ms = request.expires_at_ms;
            let hold = match sequencer.submit(BatchItem::Grant(request)).await? {
                Ok(outcome) => outcome.grant.ok_or_else(|| CallError::internal("a grant placed no hold"))?,
                Err(ItemError::Ledger(LedgerError::InsufficientBalance { available, .. })) => {
                    // What this node holds idle, too little for this call, goes back first.
                    let idle = self.recall(Some(account));
                    if !idle.is_empty() {
                        void_holds(sequencer, idle, "returning a grant too small for a call").await;
                        continue;
                    }
                    // Then what other nodes hold: money the caller has, that
                    // those nodes give back when asked, while the wait lasts.
                    let held = store.balances(account).await.map_or(0, |(state, _)| state.debits_pending);
                    let held_elsewhere = held.saturating_sub(self.held_here(account));
                    let until = *recall_until.get_or_insert_with(|| {
                        tokio::time::Instant::now() + std::time::Duration::from_millis(policy.recall_wait_ms)
                    });
                    if held_elsewhere > 0 && self.recall_from_others(policy, store, account, amount, until).await {
                        continue;
                    }
                    let mut refused = CallError::insufficient(available, amount);
                    if held > 0
                        && let CallError::InsufficientBalance(message) = &mut refused
                    {
                        message.push_str(&format!(
                            "; {} more are held by serving nodes for calls in flight, and what they do not \
                             spend comes back when those calls end",
                            crate::error::tokens(held as u128)
                        ));
                    }
                    return Err(refused);
                }
                Err(error) => return Err(error.into()),
            };
            placed += 1;
            self.lock().grants.entry(account).or_default().push(Grant {
                hold: hold.id,
                left: hold.amount.minor_units(),
                reserved: 0,
                usable_until_ms: expires_at_ms - policy.margin_ms,
                last_used_ms: now,
            });
        }
    }

    /// Asks the other nodes to give back what they hold of `account`'s
    /// balance, and waits until `amount` is free or `until`; true if it is
    /// free.
    async fn recall_from_others(
        &self,
        policy: &GrantPolicy,
        store: &Store,
        account: AccountId,
        amount: u64,
        until: tokio::time::Instant,
    ) -> bool {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        if let Err(error) = store.recall_grants(account, &policy.node).await {
            tracing::warn!(%error, "cannot recall grants from other nodes");
            return false;
        }
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(RECALL_POLL).await;
            match store.balances(account).await {
                Ok((state, _)) if state.available() >= amount as i128 => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Minor units this node's grants on `account` have left.
    fn held_here(&self, account: AccountId) -> u64 {
        self.lock().grants.get(&account).map_or(0, |grants| grants.iter().map(|g| g.left).sum())
    }

    /// Gives back this node's grants on `account` (on every account with
    /// `None`): those no call is using are forgotten and returned, for the
    /// caller to void now; those in use are used no more, and go back
    /// ([`Reservations::settle`]) once their calls end.
    pub fn recall(&self, account: Option<AccountId>) -> Vec<HoldId> {
        let mut book = self.lock();
        let mut to_void = vec![];
        book.grants.retain(|owner, grants| {
            if account.is_some_and(|account| account != *owner) {
                return true;
            }
            grants.retain_mut(|grant| {
                if grant.reserved > 0 {
                    grant.usable_until_ms = i64::MIN;
                    return true;
                }
                if grant.left > 0 {
                    to_void.push(grant.hold);
                }
                false
            });
            !grants.is_empty()
        });
        to_void
    }

    fn take_from_grant(self: &Arc<Self>, account: AccountId, amount: u64) -> Option<Reservation> {
        let now = store::now_ms();
        let mut book = self.lock();
        let grant = book.grants.get_mut(&account)?.iter_mut().find(|g| g.covers(amount, now))?;
        grant.reserved += amount;
        grant.last_used_ms = now;
        Some(Reservation { reservations: self.clone(), account, amount, grant: Some(grant.hold), id: None })
    }

    /// Forgets the grants that are used up, too old to use or idle, with no
    /// call in flight; returns those with something left, for the caller to
    /// void (at a stop, with `now_ms` = `i64::MAX`, all of them).
    pub fn settle(&self, now_ms: i64) -> Vec<HoldId> {
        let Some(policy) = &self.grants else { return vec![] };
        let mut book = self.lock();
        let mut to_void = vec![];
        book.grants.retain(|_, grants| {
            grants.retain(|g| {
                let done = g.left == 0
                    || now_ms >= g.usable_until_ms
                    || now_ms.saturating_sub(g.last_used_ms) >= policy.idle_ms;
                if done && g.reserved == 0 {
                    if g.left > 0 {
                        to_void.push(g.hold);
                    }
                    return false;
                }
                true
            });
            !grants.is_empty()
        });
        // The turns of accounts with no grant and nobody waiting go too.
        let mut asking = self.asking.lock().unwrap_or_else(PoisonError::into_inner);
        asking.retain(|account, turn| book.grants.contains_key(account) || Arc::strong_count(turn) > 1);
        to_void
    }

    /// Records the accounts' states after a batch committed, and ends the
    /// reservations of the charges it applied, in one step: a price is never
    /// seen both spent and still reserved (which would refuse a call the
    /// balance covers). Called by the sequencer before it answers the
    /// batch's requests.
    pub fn committed(&self, states: &HashMap<AccountId, AccountState>, released: &[u64]) {
        if self.grants.is_some() {
            return;
        }
        let mut book = self.lock();
        for (id, state) in states {
            book.available.insert(*id, state.available());
        }
        for id in released {
            book.end_call(*id);
        }
    }

    /// Minor units reserved on `account` in memory, beyond its durable
    /// holds (for the account's view and tests). Grants are durable holds:
    /// what calls reserve from them is part of the holds already.
    pub fn reserved(&self, account: AccountId) -> u64 {
        self.lock().reserved.get(&account).copied().unwrap_or(0)
    }

    /// This node's grants: (how many, minor units left in them).
    pub fn grants(&self) -> (usize, u64) {
        let book = self.lock();
        let grants = book.grants.values().flatten();
        (grants.clone().count(), grants.map(|g| g.left).sum())
    }

    fn release(&self, reservation: &Reservation) {
        let mut book = self.lock();
        if let Some(hold) = reservation.grant {
            let grants = book.grants.get_mut(&reservation.account);
            if let Some(grant) = grants.and_then(|g| g.iter_mut().find(|g| g.hold == hold))
                && reservation.amount > 0
            {
                grant.reserved -= reservation.amount;
                grant.last_used_ms = store::now_ms();
            }
            return;
        }
        if let Some(id) = reservation.id {
            book.end_call(id);
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
        self.reservations.release(self);
    }
}

/// A hold id no node has used: random, positive, 63 bits.
fn random_hold_id() -> HoldId {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    (u64::from_le_bytes(bytes) >> 1).max(1) as HoldId
}

/// A shared market's upkeep, each second: this node's presence, grants
/// sized by the nodes alive, and the grants of nodes gone voided: those seen
/// without their node at two ticks running (`departed`, the holds seen at
/// the last; the ones seen now are returned), so that a node whose presence
/// connection is re-made in a moment keeps the grants its calls draw on.
pub async fn keep_grants_shared(
    store: &Store,
    sequencer: &Sequencer,
    reservations: &Reservations,
    departed: std::collections::HashSet<ledger::HoldId>,
) -> std::collections::HashSet<ledger::HoldId> {
    match store.keep_presence().await {
        Ok(false) => {}
        Ok(true) => {
            // Others may have taken this node for gone and voided its grants.
            tracing::warn!("this node lost its connection to the market's database and is back");
            void_holds(sequencer, reservations.recall(None), "returning a grant").await;
        }
        Err(error) => tracing::warn!(%error, "cannot keep this node's presence"),
    }
    match store.live_nodes().await {
        Ok(live) => reservations.set_live_nodes(live),
        Err(error) => tracing::warn!(%error, "cannot count the nodes alive"),
    }
    match store.grants_of_departed_nodes().await {
        Ok(holds) => {
            let gone: Vec<ledger::HoldId> = holds.iter().copied().filter(|hold| departed.contains(hold)).collect();
            if !gone.is_empty() {
                tracing::info!(grants = gone.len(), "voiding the grants of nodes that are gone");
            }
            void_holds(sequencer, gone, "voiding a departed node's grant").await;
            holds.into_iter().collect()
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the grants of departed nodes");
            departed
        }
    }
}

/// Gives back this node's grants on a balance whenever another node recalls
/// them, until the store closes.
pub async fn answer_recalls(store: Store, sequencer: Sequencer, reservations: Arc<Reservations>, node: String) {
    let mut recalls = None;
    loop {
        if store.is_closed() {
            return;
        }
        if recalls.is_none() {
            match store.listen_for_recalls().await {
                Ok(Some(listening)) => recalls = Some(listening),
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for recalls of grants");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(listening) = recalls.as_mut() else { continue };
        match listening.next().await {
            Ok(recall) if recall.node != node => {
                void_holds(&sequencer, reservations.recall(Some(recall.account)), "returning a recalled grant").await
            }
            Ok(_) => {}
            Err(error) => {
                if !store.is_closed() {
                    tracing::warn!(%error, "listening for recalls of grants failed");
                }
                recalls = None;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Voids holds through the sequencer, all queued at once so that they share
/// its batches; one that is gone already (voided by another node as it
/// expired) is no matter.
pub async fn void_holds(sequencer: &Sequencer, holds: Vec<ledger::HoldId>, what: &str) {
    let voids = holds.into_iter().map(|hold| async move {
        match sequencer.submit(store::BatchItem::command(ledger::Command::Void { hold })).await {
            Ok(Ok(_)) | Ok(Err(store::ItemError::Ledger(ledger::LedgerError::UnknownHold(_)))) => {}
            Ok(Err(error)) => tracing::warn!(hold, %error, "{what} failed"),
            Err(error) => tracing::warn!(hold, %error, "{what} failed"),
        }
    });
    futures_util::future::join_all(voids).await;
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
        let sequencer =
            Sequencer::start(store.clone(), store::Batching { max: 16, delay: std::time::Duration::ZERO }, |_, _| {});
        let reservations = Arc::new(Reservations::default());
        reservations.committed(&HashMap::from([(7, state(100, 20, 30))]), &[]);
        // 50 available: 30 + 20 fit, 1 more does not.
        let first = reservations.reserve(&store, &sequencer, 7, 30).await.unwrap();
        let second = reservations.reserve(&store, &sequencer, 7, 20).await.unwrap();
        let refused = reservations.reserve(&store, &sequencer, 7, 1).await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.to_string().as_str()),
            ("insufficient_balance", "the balance available is 0 minor units, 1 minor units are needed")
        );
        assert_eq!(reservations.reserved(7), 50);
        // The first call is charged: the batch that spends its 30 ends its
        // reservation in the same step, so the 20 left are not seen as 20
        // spent plus 30 reserved meanwhile.
        reservations.committed(&HashMap::from([(7, state(100, 50, 30))]), &[first.id().unwrap()]);
        assert_eq!(reservations.reserved(7), 20);
        drop(first);
        assert_eq!(reservations.reserved(7), 20, "a reservation ends once");
        assert!(reservations.reserve(&store, &sequencer, 7, 1).await.is_err(), "20 available, 20 reserved");
        // The second call fails: released, nothing charged.
        drop(second);
        assert_eq!(reservations.reserved(7), 0);
        // A call given up before its charge's batch: its drop ends it, and
        // the batch naming it then ends nothing more.
        let third = reservations.reserve(&store, &sequencer, 7, 20).await.unwrap();
        let fourth = reservations.reserve(&store, &sequencer, 7, 1).await;
        assert!(fourth.is_err(), "20 available, 20 reserved");
        let id = third.id().unwrap();
        drop(third);
        reservations.committed(&HashMap::from([(7, state(100, 70, 30))]), &[id]);
        assert_eq!(reservations.reserved(7), 0);
    }

    /// A caller with `units` deposited on a fresh SQLite store (grants are
    /// the same ledger commands on either database).
    async fn funded(units: u64) -> (tempfile::TempDir, Store, Sequencer, AccountId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vitrine.db")).await.unwrap();
        let issuer =
            store.ensure_system_account(&domain::AccountName::issuer(), store::AccountKind::Issuer).await.unwrap();
        let name = "caller".parse::<domain::AccountName>().unwrap();
        let caller = store.create_account(&name, false, &domain::ApiKey::generate()).await.unwrap();
        let deposit = ledger::Transfer {
            debit: issuer.id,
            credit: caller.id,
            amount: domain::Amount::from_minor_units(units).unwrap(),
            kind: ledger::TransferKind::Deposit,
            reference: "wire".into(),
        };
        store.apply_batch(&[BatchItem::command(ledger::Command::Transfer(deposit))]).await.unwrap();
        let sequencer =
            Sequencer::start(store.clone(), store::Batching { max: 16, delay: std::time::Duration::ZERO }, |_, _| {});
        (dir, store, sequencer, caller.id)
    }

    #[tokio::test]
    async fn calls_reserve_from_grants_that_go_back_when_idle() {
        let (_dir, store, sequencer, caller) = funded(1_000).await;
        let policy = GrantPolicy::new("a", 3, 60_000, 1_000, 2_000);
        let reservations = Arc::new(Reservations::with_grants(policy));
        let pending = || async { store.balances(caller).await.unwrap().0.debits_pending };
        // The first call takes a grant of three calls; the next two need no trip.
        let first = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        assert!(first.grant().is_some());
        assert_eq!(pending().await, 300);
        let second = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        let third = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        assert_eq!((second.grant(), third.grant()), (first.grant(), first.grant()));
        assert_eq!(pending().await, 300);
        // A fourth call in flight takes another grant.
        let fourth = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        assert_ne!(fourth.grant(), first.grant());
        assert_eq!((reservations.grants(), pending().await), ((2, 600), 600));
        // Reservations are part of the grants, not on top of them.
        assert_eq!(reservations.reserved(caller), 0);
        // A charge drew 100 from the first grant.
        let first_grant = first.grant();
        first.charged(Some(200));
        assert_eq!(reservations.grants(), (2, 500));
        // A grant that could not pay is used no more.
        let fourth_grant = fourth.grant();
        fourth.charged(None);
        // The first grant's 200 left are the second and third calls'; once
        // the second failed, the next call fits there.
        drop(second);
        let fifth = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        assert_eq!(fifth.grant(), first_grant);
        assert_ne!(fifth.grant(), fourth_grant);
        drop((third, fifth));
        // Nothing is returned while in use; everything once idle.
        let now = store::now_ms();
        assert_eq!(reservations.settle(now).len(), 1, "the grant that could not pay goes back at once");
        assert_eq!(reservations.settle(now + 2_000).len(), 1);
        assert_eq!(reservations.grants(), (0, 0));
    }

    /// Two charges of one batch drew a grant to nothing; their answers came
    /// back in the other order (the second's "0 left" first, then the
    /// first's "100 left"). The grant is spent: no third call may reserve
    /// from it, run its model, and find at its charge that nothing pays.
    #[tokio::test]
    async fn a_grant_answers_spent_out_of_order_is_not_reserved_from_again() {
        let (_dir, store, sequencer, caller) = funded(1_000).await;
        let reservations = Arc::new(Reservations::with_grants(GrantPolicy::new("a", 2, 60_000, 1_000, 60_000)));
        let first = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        let second = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        let grant = first.grant();
        assert_eq!((second.grant(), reservations.grants()), (grant, (1, 200)));
        second.charged(Some(0));
        assert_eq!(reservations.grants(), (1, 0), "spent, whatever the first call's answer says later");
        first.charged(Some(100));
        assert_eq!(reservations.grants(), (1, 0));
        let third = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        assert_ne!(third.grant(), grant, "a fresh grant pays for the third call");
    }

    #[tokio::test]
    async fn a_grant_takes_a_share_of_the_balance_and_a_call_none_covers_is_refused() {
        let (_dir, store, sequencer, caller) = funded(250).await;
        let reservations = Arc::new(Reservations::with_grants(GrantPolicy::new("a", 100, 60_000, 1_000, 2_000)));
        // One node alive: the first grant takes half of 250 in whole prices
        // (100), the second one price of the 150 left.
        let calls: Vec<Reservation> = {
            let mut calls = vec![];
            for _ in 0..2 {
                calls.push(reservations.reserve(&store, &sequencer, caller, 100).await.unwrap());
            }
            calls
        };
        assert_eq!(reservations.grants(), (2, 200));
        assert_ne!(calls[0].grant(), calls[1].grant());
        // 50 free and the rest in use here: refused, before any model runs.
        let refused = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.to_string().as_str()),
            (
                "insufficient_balance",
                "the balance available is 50 minor units, 100 minor units are needed; 200 minor units more are held \
                 by serving nodes for \
                 calls in flight, and what they do not spend comes back when those calls end"
            )
        );
        drop(calls);
        // A node's grants go back at its stop.
        for hold in reservations.settle(i64::MAX) {
            sequencer.submit(BatchItem::command(ledger::Command::Void { hold })).await.unwrap().unwrap();
        }
        let (state, _) = store.balances(caller).await.unwrap();
        assert_eq!((state.available(), state.debits_pending), (250, 0));
    }

    #[tokio::test]
    async fn grants_are_smaller_with_more_nodes_alive_and_go_back_when_recalled() {
        let (_dir, store, sequencer, caller) = funded(6_000).await;
        let reservations = Arc::new(Reservations::with_grants(GrantPolicy::new("a", 100, 60_000, 1_000, 60_000)));
        reservations.set_live_nodes(3);
        // 6,000 ÷ (2 × 3): a grant of 1,000, ten calls' worth, not a hundred.
        let busy = reservations.reserve(&store, &sequencer, caller, 100).await.unwrap();
        assert_eq!(reservations.grants(), (1, 1_000));
        reservations.set_live_nodes(1);
        let idle = {
            // Eleven calls at once: the eleventh needs a second grant, of 2,500.
            let more: Vec<Reservation> =
                futures_util::future::join_all((0..10).map(|_| reservations.reserve(&store, &sequencer, caller, 100)))
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
            more.last().unwrap().grant()
        };
        assert_eq!(reservations.grants(), (2, 3_500));
        assert_ne!(idle, busy.grant());
        // Recalled: the idle grant goes back now; the one in use is used no
        // more and goes back once its call ends.
        assert_eq!(reservations.recall(Some(caller)), vec![idle.unwrap()]);
        assert_eq!(
            reservations.recall(Some(caller + 1)),
            Vec::<HoldId>::new(),
            "another caller's recall takes nothing"
        );
        assert_eq!(reservations.grants(), (1, 1_000));
        drop(busy);
        let now = store::now_ms();
        assert_eq!(reservations.settle(now).len(), 1, "a recalled grant goes back once its calls end");
        assert_eq!(reservations.grants(), (0, 0));
    }
}
