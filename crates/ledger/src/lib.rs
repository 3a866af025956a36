//! The token ledger's rules, as pure functions over plain data.
//!
//! Double entry: every [`Transfer`] debits one account and credits another by
//! the same amount, so over all accounts debits always equal credits. Only the
//! issuer account (the outside world: deposits come from it, completed
//! payouts go back to it) may have a negative balance; no other account may
//! ever spend more than it has available (balance minus what is held).
//!
//! A [`Hold`] reserves part of an account's balance (a caller's price, before
//! the model runs). It is resolved exactly once: posted as linked transfers
//! that together spend exactly the held amount, voided, or expired.
//!
//! [`LedgerState`] holds whatever accounts and holds a batch touches; the
//! store loads them, runs the batch's commands through
//! [`LedgerState::execute`] and writes back what changed. Each command is
//! atomic: on error the state is exactly as before.
//!
//! This crate knows nothing about SQL or HTTP.

mod charge;
mod grant;
mod split;

use std::collections::HashMap;

use domain::Amount;

pub use charge::{ChargeParties, charge_transfers, charged};
pub use grant::{GrantAsk, grant_size};
pub use split::{FeeSplit, FeeSplitError, Shares};

/// An account's number, shared with the store's account rows.
pub type AccountId = i64;
/// A hold's number, chosen by whoever places it (unique per ledger).
pub type HoldId = i64;

/// Whether an account may go below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// The outside world: its negative balance is the amount of tokens in
    /// circulation (deposits minus completed payouts).
    Issuer,
    /// Everyone else: callers, creators, nodes, the treasury, pending payouts.
    Regular,
}

/// An account's running totals, in minor units. Totals only grow, so a
/// balance is always recomputable from them. Each stays at most
/// [`Amount::MAX`] (what a signed 64-bit database integer holds): a command
/// that would take one past it is refused with [`LedgerError::Overflow`], so
/// no amount the ledger accepted can later fail to be stored or summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    pub kind: AccountKind,
    pub debits_posted: u64,
    pub credits_posted: u64,
    /// Sum of this account's unresolved holds.
    pub debits_pending: u64,
}

impl AccountState {
    pub fn new(kind: AccountKind) -> AccountState {
        AccountState { kind, debits_posted: 0, credits_posted: 0, debits_pending: 0 }
    }

    /// Credits minus debits; negative only for the issuer.
    pub fn balance(&self) -> i128 {
        self.credits_posted as i128 - self.debits_posted as i128
    }

    /// What the account can still spend or hold.
    pub fn available(&self) -> i128 {
        self.balance() - self.debits_pending as i128
    }
}

/// Why tokens moved. Stored with every transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferKind {
    /// Tokens enter: issuer → account, by the operator, with an outside reference.
    Deposit,
    /// Test tokens for development servers: issuer → account.
    Faucet,
    /// An inference's creator share: caller → creator.
    InferenceCreator,
    /// An inference's node share: caller → serving node.
    InferenceNode,
    /// An inference's treasury share: caller → treasury.
    InferenceTreasury,
    /// A creator asks to be paid: creator → pending payouts.
    PayoutRequest,
    /// The operator paid out: pending payouts → issuer (tokens leave).
    PayoutComplete,
    /// The operator refused: pending payouts → creator.
    PayoutReject,
}

impl TransferKind {
    pub const ALL: [TransferKind; 8] = [
        TransferKind::Deposit,
        TransferKind::Faucet,
        TransferKind::InferenceCreator,
        TransferKind::InferenceNode,
        TransferKind::InferenceTreasury,
        TransferKind::PayoutRequest,
        TransferKind::PayoutComplete,
        TransferKind::PayoutReject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Deposit => "deposit",
            TransferKind::Faucet => "faucet",
            TransferKind::InferenceCreator => "inference_creator",
            TransferKind::InferenceNode => "inference_node",
            TransferKind::InferenceTreasury => "inference_treasury",
            TransferKind::PayoutRequest => "payout_request",
            TransferKind::PayoutComplete => "payout_complete",
            TransferKind::PayoutReject => "payout_reject",
        }
    }

    pub fn parse(text: &str) -> Option<TransferKind> {
        TransferKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One movement of tokens, immutable once applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Amount,
    pub kind: TransferKind,
    /// Free text: an outside reference, or what the transfer pays for.
    pub reference: String,
}

/// Tokens reserved on an account until resolved or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: HoldId,
    pub account: AccountId,
    pub amount: Amount,
    pub expires_at_ms: i64,
}

/// One leg of a posted hold: part of the held amount goes to `credit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub credit: AccountId,
    pub amount: Amount,
    pub kind: TransferKind,
}

/// What the ledger can be asked to do. Each command is atomic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Moves tokens now.
    Transfer(Transfer),
    /// Moves tokens once per `id` (an outside reference, such as a deposit's
    /// payment id): a retry with the same id and the same transfer succeeds
    /// and changes nothing; the same id with another transfer is refused.
    Once { id: String, transfer: Transfer },
    /// Several transfers that happen all together or not at all.
    Linked(Vec<Transfer>),
    /// Reserves tokens on an account.
    Reserve(Hold),
    /// Resolves a hold by moving exactly the held amount, split into legs.
    Post { hold: HoldId, legs: Vec<Leg>, reference: String },
    /// Resolves a hold by releasing it: nothing moves.
    Void { hold: HoldId },
    /// Pays transfers out of part of a hold (a grant a serving node spends
    /// call by call): every transfer is debited to the hold's account, the
    /// hold shrinks by their total and stays with the rest (it is resolved
    /// once nothing is left). All or none; refused past the hold's
    /// remainder or its expiry.
    Draw { hold: HoldId, transfers: Vec<Transfer> },
    /// Places a grant: a hold on `account` of [`grant_size`] for `ask`,
    /// sized from what the account has available as this command runs (so
    /// after the commands before it in a batch); refused with
    /// `InsufficientBalance` below one price.
    Grant { hold: HoldId, account: AccountId, ask: GrantAsk, expires_at_ms: i64 },
    /// Pays a call from a grant when the grant covers it, else from the
    /// free balance: a grant gone, expired or too small is no refusal, and
    /// the same transfers are then a [`Command::Linked`] (which the balance
    /// may refuse). Its effects are the draw's or the transfers'.
    DrawOrPay { hold: HoldId, transfers: Vec<Transfer> },
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    pub transfers: Vec<Transfer>,
    /// A [`Command::Once`] whose id was applied before: nothing moved.
    pub replayed: bool,
    pub hold_placed: Option<Hold>,
    pub hold_resolved: Option<HoldId>,
    /// A [`Command::Draw`] that left part of its hold: the hold as it is now.
    pub hold_drawn: Option<Hold>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    #[error("account {0} is not known to the ledger")]
    UnknownAccount(AccountId),
    #[error("account {account} has {available} available, {needed} needed")]
    InsufficientBalance { account: AccountId, available: i128, needed: u64 },
    #[error("a transfer must move a positive amount")]
    ZeroAmount,
    #[error("a transfer must go between two different accounts")]
    SameAccount,
    #[error("hold {0} does not exist or was already resolved")]
    UnknownHold(HoldId),
    #[error("hold {0} exists already")]
    DuplicateHold(HoldId),
    #[error("hold {0} has expired")]
    HoldExpired(HoldId),
    #[error("the legs add up to {legs} but the hold is {held}")]
    LegsDoNotMatchHold { legs: u64, held: u64 },
    #[error("hold {hold} has {left} left, {needed} needed")]
    HoldTooSmall { hold: HoldId, left: u64, needed: u64 },
    #[error("a transfer drawn from hold {hold} must be debited to the hold's account")]
    NotTheHoldsAccount { hold: HoldId },
    #[error("the amount would take an account's running total past the ledger's limit of {} minor units", Amount::MAX)]
    Overflow,
    #[error("'{0}' was already used for a different transfer")]
    IdReused(String),
}

/// The accounts and holds a batch of commands may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    pub accounts: HashMap<AccountId, AccountState>,
    pub holds: HashMap<HoldId, Hold>,
    /// Transfers applied by [`Command::Once`], by id (those a batch names).
    pub applied: HashMap<String, Transfer>,
}

impl LedgerState {
    /// Applies one command at time `now_ms`. On error nothing changes.
    pub fn execute(&mut self, command: Command, now_ms: i64) -> Result<Effects, LedgerError> {
        match command {
            Command::Transfer(transfer) => self.apply_linked(vec![transfer], None),
            Command::Linked(transfers) => self.apply_linked(transfers, None),
            Command::Once { id, transfer } => match self.applied.get(&id) {
                Some(first) if *first == transfer => Ok(Effects { replayed: true, ..Effects::default() }),
                Some(_) => Err(LedgerError::IdReused(id)),
                None => {
                    let effects = self.apply_linked(vec![transfer.clone()], None)?;
                    self.applied.insert(id, transfer);
                    Ok(effects)
                }
            },
            Command::Reserve(hold) => self.reserve(hold),
            Command::Post { hold, legs, reference } => {
                let placed = self.holds.get(&hold).ok_or(LedgerError::UnknownHold(hold))?.clone();
                if now_ms >= placed.expires_at_ms {
                    return Err(LedgerError::HoldExpired(hold));
                }
                let total = legs.iter().try_fold(0u64, |sum, leg| sum.checked_add(leg.amount.minor_units()));
                let total = total.ok_or(LedgerError::Overflow)?;
                if total != placed.amount.minor_units() {
                    return Err(LedgerError::LegsDoNotMatchHold { legs: total, held: placed.amount.minor_units() });
                }
                let transfers = legs
                    .into_iter()
                    // A zero leg (a share rounded to nothing) moves nothing and is not recorded.
                    .filter(|leg| leg.amount > Amount::ZERO)
                    .map(|leg| Transfer {
                        debit: placed.account,
                        credit: leg.credit,
                        amount: leg.amount,
                        kind: leg.kind,
                        reference: reference.clone(),
                    })
                    .collect();
                self.apply_linked(transfers, Some((&placed, placed.amount.minor_units())))
            }
            Command::Draw { hold, transfers } => {
                let placed = self.holds.get(&hold).ok_or(LedgerError::UnknownHold(hold))?.clone();
                if now_ms >= placed.expires_at_ms {
                    return Err(LedgerError::HoldExpired(hold));
                }
                if transfers.iter().any(|t| t.debit != placed.account) {
                    return Err(LedgerError::NotTheHoldsAccount { hold });
                }
                let total = transfers.iter().try_fold(0u64, |sum, t| sum.checked_add(t.amount.minor_units()));
                let total = total.ok_or(LedgerError::Overflow)?;
                if total > placed.amount.minor_units() {
                    return Err(LedgerError::HoldTooSmall { hold, left: placed.amount.minor_units(), needed: total });
                }
                self.apply_linked(transfers, Some((&placed, total)))
            }
            Command::Grant { hold, account, ask, expires_at_ms } => {
                let available = self.accounts.get(&account).map_or(0, |a| a.available().max(0));
                let size = grant_size(ask, available).ok_or(LedgerError::InsufficientBalance {
                    account,
                    available,
                    needed: ask.price,
                })?;
                let amount = Amount::from_minor_units(size).map_err(|_| LedgerError::Overflow)?;
                self.reserve(Hold { id: hold, account, amount, expires_at_ms })
            }
            Command::DrawOrPay { hold, transfers } => {
                match self.execute(Command::Draw { hold, transfers: transfers.clone() }, now_ms) {
                    Err(
                        LedgerError::UnknownHold(_) | LedgerError::HoldExpired(_) | LedgerError::HoldTooSmall { .. },
                    ) => self.apply_linked(transfers, None),
                    drawn => drawn,
                }
            }
            Command::Void { hold } => {
                let placed = self.holds.remove(&hold).ok_or(LedgerError::UnknownHold(hold))?;
                let account = self.accounts.get_mut(&placed.account).expect("a hold's account is loaded with it");
                account.debits_pending -= placed.amount.minor_units();
                Ok(Effects { hold_resolved: Some(hold), ..Effects::default() })
            }
        }
    }

    /// Removes every hold that expired by `now_ms`, releasing its tokens.
    pub fn expire_holds(&mut self, now_ms: i64) -> Vec<HoldId> {
        let expired: Vec<HoldId> = self.holds.values().filter(|h| now_ms >= h.expires_at_ms).map(|h| h.id).collect();
        for id in &expired {
            self.execute(Command::Void { hold: *id }, now_ms).expect("an existing hold can always be voided");
        }
        expired
    }

    fn reserve(&mut self, hold: Hold) -> Result<Effects, LedgerError> {
        if self.holds.contains_key(&hold.id) {
            return Err(LedgerError::DuplicateHold(hold.id));
        }
        let amount = hold.amount.minor_units();
        if amount == 0 {
            return Err(LedgerError::ZeroAmount);
        }
        let account = self.accounts.get_mut(&hold.account).ok_or(LedgerError::UnknownAccount(hold.account))?;
        ensure_can_spend(hold.account, account, amount)?;
        account.debits_pending = add_to_total(account.debits_pending, amount)?;
        self.holds.insert(hold.id, hold.clone());
        Ok(Effects { hold_placed: Some(hold), ..Effects::default() })
    }

    /// Applies transfers all together or not at all. With `(hold, drawn)`,
    /// the debits (which total `drawn`) are paid from that hold, which
    /// releases as much and is resolved once empty, not from the account's
    /// free balance.
    fn apply_linked(&mut self, transfers: Vec<Transfer>, hold: Option<(&Hold, u64)>) -> Result<Effects, LedgerError> {
        // Work on copies of the touched accounts; commit them only if every
        // transfer succeeds.
        let mut touched: HashMap<AccountId, AccountState> = HashMap::new();
        if let Some((hold, drawn)) = hold {
            let mut account = *self.accounts.get(&hold.account).ok_or(LedgerError::UnknownAccount(hold.account))?;
            account.debits_pending -= drawn;
            touched.insert(hold.account, account);
        }
        for transfer in &transfers {
            if transfer.amount == Amount::ZERO {
                return Err(LedgerError::ZeroAmount);
            }
            if transfer.debit == transfer.credit {
                return Err(LedgerError::SameAccount);
            }
            let amount = transfer.amount.minor_units();
            for id in [transfer.debit, transfer.credit] {
                if let std::collections::hash_map::Entry::Vacant(slot) = touched.entry(id) {
                    slot.insert(*self.accounts.get(&id).ok_or(LedgerError::UnknownAccount(id))?);
                }
            }
            let debit = touched.get_mut(&transfer.debit).expect("inserted above");
            ensure_can_spend(transfer.debit, debit, amount)?;
            debit.debits_posted = add_to_total(debit.debits_posted, amount)?;
            let credit = touched.get_mut(&transfer.credit).expect("inserted above");
            credit.credits_posted = add_to_total(credit.credits_posted, amount)?;
        }
        self.accounts.extend(touched);
        let mut effects = Effects { transfers, ..Effects::default() };
        if let Some((hold, drawn)) = hold {
            let left = hold.amount.minor_units() - drawn;
            if left == 0 {
                self.holds.remove(&hold.id);
                effects.hold_resolved = Some(hold.id);
            } else {
                let rest =
                    Hold { amount: Amount::from_minor_units(left).expect("less than a valid amount"), ..hold.clone() };
                self.holds.insert(hold.id, rest.clone());
                effects.hold_drawn = Some(rest);
            }
        }
        Ok(effects)
    }

    /// Debits equal credits over the accounts held here, and each pending
    /// total equals the sum of that account's holds. Cheap enough to run
    /// after every batch in release builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let debits: u128 = self.accounts.values().map(|a| a.debits_posted as u128).sum();
        let credits: u128 = self.accounts.values().map(|a| a.credits_posted as u128).sum();
        if debits != credits {
            return Err(format!("debits {debits} != credits {credits}"));
        }
        self.check_accounts()
    }

    /// The per-account half of [`LedgerState::check_invariants`], for a
    /// partial state (a batch's accounts), where totals need not balance.
    pub fn check_accounts(&self) -> Result<(), String> {
        let mut pending: HashMap<AccountId, u64> = HashMap::new();
        for hold in self.holds.values() {
            *pending.entry(hold.account).or_default() += hold.amount.minor_units();
        }
        for (id, account) in &self.accounts {
            if account.kind == AccountKind::Regular && account.available() < 0 {
                return Err(format!("account {id} is below zero: {account:?}"));
            }
            let max = Amount::MAX.minor_units();
            if account.debits_posted > max || account.credits_posted > max || account.debits_pending > max {
                return Err(format!("account {id} has a running total past {max}: {account:?}"));
            }
            let held = pending.get(id).copied().unwrap_or(0);
            if held != account.debits_pending {
                return Err(format!("account {id} has {} pending but holds of {held}", account.debits_pending));
            }
        }
        Ok(())
    }
}

/// A running total plus `amount`, if it stays within [`Amount::MAX`].
fn add_to_total(total: u64, amount: u64) -> Result<u64, LedgerError> {
    total.checked_add(amount).filter(|&sum| sum <= Amount::MAX.minor_units()).ok_or(LedgerError::Overflow)
}

/// The one balance rule: only the issuer may spend (or hold) more than it
/// has available.
fn ensure_can_spend(id: AccountId, account: &AccountState, amount: u64) -> Result<(), LedgerError> {
    if account.kind != AccountKind::Issuer && account.available() < amount as i128 {
        return Err(LedgerError::InsufficientBalance { account: id, available: account.available(), needed: amount });
    }
    Ok(())
}

/// Net change of debits minus credits between two snapshots of the same
/// accounts: zero after any sequence of commands (double entry).
pub fn net_change(before: &HashMap<AccountId, AccountState>, after: &HashMap<AccountId, AccountState>) -> i128 {
    let total = |accounts: &HashMap<AccountId, AccountState>| -> i128 {
        accounts.values().map(|a| a.debits_posted as i128 - a.credits_posted as i128).sum()
    };
    total(after) - total(before)
}
