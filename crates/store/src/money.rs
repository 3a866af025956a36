//! The ledger's persistence: balances on account rows, holds, transfers,
//! payouts and idempotency keys. The rules are the `ledger` crate's; this
//! module loads what a batch touches, runs the batch through
//! `ledger::LedgerState`, and writes back what changed, in one transaction.

use std::collections::{HashMap, HashSet};

use crate::backend::{Columns, Piece, Tx, Writes, on_pool, on_tx, select_in, table_row};
use crate::db::{AccountKind, parse_column};
use crate::{Account, Store, StoreError, now_ms};
use domain::{AccountName, Amount, Sha256};
use ledger::{AccountId, AccountState, Command, Hold, HoldId, LedgerError, LedgerState, TransferKind};

/// One thing the sequencer's batch writes, as what really happens.
#[derive(Debug, Clone)]
pub enum BatchItem {
    /// A paid call: its transfers (all or none), its receipt leaf, its usage
    /// event and its idempotency answer, together or not at all.
    Charge(Charge),
    /// A call that moves no money (free, or failed): its log leaf (every
    /// call is logged) and the node's signature of it, its usage event and,
    /// for a free call with an Idempotency-Key, the answer a retry replays.
    RecordOnly {
        leaf: Vec<u8>,
        signature: Vec<u8>,
        usage: crate::UsageEvent,
        answer: Option<IdempotencyAnswer>,
        /// Back-dating on development servers, as for [`Charge::at_ms`].
        at_ms: Option<i64>,
    },
    /// Any other ledger command (a deposit, a void), with the payout it is
    /// part of, if any.
    Ledger { command: Command, payout: Option<PayoutChange> },
    /// A grant: a hold a serving node places on a caller's balance and
    /// spends call by call ([`Charge::grant`]), sized by
    /// [`ledger::grant_size`] from what is available when it commits
    /// (refused below one price).
    Grant(GrantRequest),
    /// Deposits read from the chain in a range of final blocks: their
    /// credits and the chain cursor moved past the range, in one
    /// transaction, only if the cursor still stands where the range began
    /// (else another node read it: nothing is written).
    Deposits(ChainDeposits),
}

/// A range of final blocks' deposits ([`BatchItem::Deposits`]).
#[derive(Debug, Clone)]
pub struct ChainDeposits {
    /// `Command::Once`, each with its (network, transaction, log index) id.
    pub credits: Vec<Command>,
    pub network: String,
    pub token: String,
    /// The cursor as it stood when the range was read (its last block
    /// read), and where the range ends.
    pub from: u64,
    pub to: u64,
}

/// What a node asks of a caller's balance ([`BatchItem::Grant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    /// The hold's id: random, so that nodes need not agree on one.
    pub hold: HoldId,
    pub account: AccountId,
    /// What it asks for, a price and how many nodes share the balance.
    pub ask: ledger::GrantAsk,
    pub expires_at_ms: i64,
    /// The node that spends it.
    pub node: String,
}

/// A paid call's writes.
#[derive(Debug, Clone)]
pub struct Charge {
    /// From the caller, as `ledger::charge_transfers` gives them.
    pub transfers: Vec<ledger::Transfer>,
    /// The model the call paid for.
    pub model_id: i64,
    /// The receipt leaf and the node's signature of it; its log index goes
    /// on the transfers and the idempotency answer.
    pub leaf: Vec<u8>,
    pub signature: Vec<u8>,
    pub usage: crate::UsageEvent,
    pub answer: Option<IdempotencyAnswer>,
    /// The time recorded on the item's rows instead of now: development
    /// servers back-date demo traffic with it. Ledger rules (hold expiry)
    /// always use the real time.
    pub at_ms: Option<i64>,
    /// The serving node's grant on the caller's balance to pay from
    /// ([`Command::Draw`]). A grant that is gone (expired, voided) or too
    /// small leaves the charge to the caller's free balance, as without one.
    pub grant: Option<HoldId>,
    /// The server's in-memory reservation that this charge ends, if any:
    /// named to the sequencer's `committed` hook once the charge is applied,
    /// with the balances the batch left, so that no one sees the price both
    /// reserved and spent.
    pub release: Option<u64>,
    /// The x402 payment that paid this call (its transfers then come from
    /// the issuer: the tokens arrived on the chain): credited here, once,
    /// if it is settling, else the charge fails and writes nothing.
    pub payment: Option<crate::PaymentKey>,
}

/// Completes an Idempotency-Key with the answer a retry replays.
#[derive(Debug, Clone)]
pub struct IdempotencyAnswer {
    pub account_id: i64,
    pub key: String,
    /// What the key stands for (the request's fingerprint).
    pub request: Sha256,
    /// The answer a retry replays; `None`: the call was answered, but its
    /// answer is not kept (larger than the server keeps), so a retry is
    /// refused rather than run again. Stored as an empty text (a NULL is a
    /// claim an older server left unfinished).
    pub response: Option<String>,
}

impl BatchItem {
    /// A ledger command on its own.
    pub fn command(command: Command) -> BatchItem {
        BatchItem::Ledger { command, payout: None }
    }

    /// The ledger command the item runs; `None` for a record without money.
    fn ledger_command(&self) -> Option<Command> {
        match self {
            BatchItem::Charge(charge) => Some(charge.command()),
            BatchItem::RecordOnly { .. } | BatchItem::Deposits(_) => None,
            BatchItem::Ledger { command, .. } => Some(command.clone()),
            BatchItem::Grant(grant) => Some(grant.command()),
        }
    }

    /// Commands beside [`BatchItem::ledger_command`]: a range's deposits.
    fn more_commands(&self) -> &[Command] {
        match self {
            BatchItem::Deposits(deposits) => &deposits.credits,
            _ => &[],
        }
    }

    fn usage(&self) -> Option<&crate::UsageEvent> {
        match self {
            BatchItem::Charge(charge) => Some(&charge.usage),
            BatchItem::RecordOnly { usage, .. } => Some(usage),
            BatchItem::Ledger { .. } | BatchItem::Grant(_) | BatchItem::Deposits(_) => None,
        }
    }

    fn answer(&self) -> Option<&IdempotencyAnswer> {
        match self {
            BatchItem::Charge(charge) => charge.answer.as_ref(),
            BatchItem::RecordOnly { answer, .. } => answer.as_ref(),
            BatchItem::Ledger { .. } | BatchItem::Grant(_) | BatchItem::Deposits(_) => None,
        }
    }
}

impl Charge {
    /// Paid from its grant when that covers it, else from the free balance.
    fn command(&self) -> Command {
        match self.grant {
            Some(hold) => Command::DrawOrPay { hold, transfers: self.transfers.clone() },
            None => Command::Linked(self.transfers.clone()),
        }
    }
}

impl GrantRequest {
    fn command(&self) -> Command {
        Command::Grant { hold: self.hold, account: self.account, ask: self.ask, expires_at_ms: self.expires_at_ms }
    }
}

#[derive(Debug, Clone)]
pub enum PayoutChange {
    /// Records a payout request; the command moves its tokens to the payouts
    /// account. With `chain`, it is sent on the chain to a proven address
    /// (`chain_payouts`), and resolved when final.
    Request { account_id: i64, amount: Amount, chain: Option<crate::ChainPayoutRequest> },
    /// Resolves a requested payout; the command moves its tokens out or back.
    /// `onchain`: a payout paid on the chain, resolved by its final
    /// transaction; an operator may only reject one before it is signed.
    Resolve { payout_id: i64, to: PayoutState, reference: String, onchain: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutState {
    Requested,
    Completed,
    Rejected,
}

impl PayoutState {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutState::Requested => "requested",
            PayoutState::Completed => "completed",
            PayoutState::Rejected => "rejected",
        }
    }
}

impl std::str::FromStr for PayoutState {
    type Err = ();

    fn from_str(text: &str) -> Result<PayoutState, ()> {
        match text {
            "requested" => Ok(PayoutState::Requested),
            "completed" => Ok(PayoutState::Completed),
            "rejected" => Ok(PayoutState::Rejected),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRecord {
    pub id: i64,
    pub account: AccountName,
    pub account_id: i64,
    pub amount: Amount,
    pub state: PayoutState,
    pub reference: String,
    pub created_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: i64,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: Amount,
    pub kind: TransferKind,
    pub reference: String,
    /// The log leaf of the inference this transfer paid for.
    pub log_index: Option<u64>,
    pub created_at_ms: i64,
}

/// What a successful batch item did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub transfers: Vec<TransferRecord>,
    pub payout: Option<PayoutRecord>,
    /// Where the item's receipt leaf went in the log.
    pub log_index: Option<u64>,
    /// A [`Command::Once`] whose id was applied before with the same
    /// transfer: nothing moved, `transfers` is the original.
    pub replayed: bool,
    /// A charge paid from its grant: what the grant has left (0 once used
    /// up). `None` when it was paid from the free balance instead.
    pub grant_left: Option<u64>,
    /// A grant placed: the hold, as large as the balance allowed.
    pub grant: Option<Hold>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ItemError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("payout {0} is not waiting to be resolved")]
    PayoutNotRequested(i64),
    /// Another call with the same Idempotency-Key (on another node sharing
    /// the database) was answered first: this one charged nothing, and the
    /// first answer is the one to give.
    #[error("this Idempotency-Key was answered by another call")]
    AlreadyAnswered,
    /// The x402 payment is credited already, or was never settled.
    #[error("the payment is not waiting to be credited")]
    PaymentNotSettling,
    /// Another node read these deposits' blocks first.
    #[error("the deposits' cursor moved meanwhile")]
    CursorMoved,
}

/// The whole ledger's sums, read at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTotals {
    pub debits: i128,
    pub credits: i128,
    /// Minus the tokens in circulation.
    pub issuer_balance: i128,
    /// Sum of every other account's balance: the tokens in circulation.
    pub balances: i128,
    /// Every token that entered: deposits, faucet grants, and calls paid on
    /// the chain (x402), all from the issuer.
    pub deposited: i128,
    /// All completed payouts ever.
    pub paid_out: i128,
    /// All unresolved holds.
    pub held: i128,
}

/// How a call with an Idempotency-Key starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// The key has no answer: run the call (unless this node is running
    /// it already: the server's claims).
    Started,
    /// The same request finished before: here is its answer, and the log
    /// index of its receipt if it was paid.
    Replay(String, Option<u64>),
    /// The same request finished before, but its answer was not kept
    /// ([`IdempotencyAnswer::response`]); the log index of its receipt if it
    /// was paid.
    NotKept(Option<u64>),
    /// The key was used for a different request.
    Mismatch,
}

impl Store {
    /// Creates one of the ledger's own accounts if it does not exist.
    pub async fn ensure_system_account(&self, name: &AccountName, kind: AccountKind) -> Result<Account, StoreError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "INSERT INTO accounts (name, is_operator, kind, created_at) VALUES ($1, 0, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name.as_str())
            .bind(kind.as_str())
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        let account =
            self.account_by_name(name).await?.ok_or_else(|| StoreError::Corrupt("system account vanished".into()))?;
        if account.kind != kind {
            return Err(StoreError::Corrupt(format!(
                "account '{name}' exists but is a {} account",
                account.kind.as_str()
            )));
        }
        Ok(account)
    }

    /// Runs a batch of ledger commands in one transaction (one fsync), and
    /// returns once it is durable. Each item succeeds or fails on its own;
    /// the batch as a whole fails only on a database fault or a broken
    /// invariant, and then nothing is written.
    pub async fn apply_batch(&self, items: &[BatchItem]) -> Result<Vec<Result<BatchOutcome, ItemError>>, StoreError> {
        let (outcomes, _) = self.apply_batch_reporting(items).await?;
        self.sync_writes().await?;
        Ok(outcomes)
    }

    /// [`Store::apply_batch`] without waiting for the disk: the batch is
    /// committed (visible) when this returns, and durable once the store's
    /// [`crate::WalSync`] has synced since; nobody may be told of an
    /// outcome before. Also gives the state after the batch of every account
    /// it loaded (each account a command names): what the sequencer's view
    /// of balances is kept current with.
    pub async fn apply_batch_reporting(
        &self,
        items: &[BatchItem],
    ) -> Result<(Vec<Result<BatchOutcome, ItemError>>, HashMap<AccountId, AccountState>), StoreError> {
        let now = now_ms();
        let mut write = self.begin_write().await?;
        let tx = &mut write.tx;
        let (mut state, names) = load_state(tx, items, &write.memory.accounts).await?;
        let before = state.accounts.clone();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut rows = BatchRows { answered: answered_before(tx, items).await?, ..BatchRows::default() };
        rows.transfers.next = write.memory.next_transfer_id;
        // The log's edge is read only by batches that append (every call
        // does), and only when the writer does not remember it.
        if items.iter().any(|i| matches!(i, BatchItem::Charge(_) | BatchItem::RecordOnly { .. })) {
            rows.frontier = Some(match write.memory.frontier.take() {
                Some(frontier) => frontier,
                None => crate::log::load_frontier(tx).await?,
            });
        }
        let mut events = vec![];
        let mut applying = Applying {
            tx: &mut *tx,
            state: &mut state,
            names: &names,
            now,
            resolved_payouts: HashSet::new(),
            rows: &mut rows,
        };
        for item in items {
            let outcome = applying.apply(item).await?;
            if let (Ok(done), Some(event)) = (&outcome, item.usage()) {
                events.push((event.clone(), done.log_index));
            }
            outcomes.push(outcome);
        }
        let mut writes = Writes::default();
        rows.pieces(&mut writes, now);
        crate::usage::record(tx, &events, self.rollups, &mut write.memory.rollups, &mut writes).await?;
        // Invariant 1 at the batch's edge: the batch moved as much in as out,
        // and no account it touched is below zero or mismatches its holds.
        let net = ledger::net_change(&before, &state.accounts);
        if net != 0 {
            return Err(StoreError::Corrupt(format!("a ledger batch is unbalanced by {net}")));
        }
        let changed: Vec<(&AccountId, &AccountState)> =
            state.accounts.iter().filter(|(id, account)| before.get(id) != Some(account)).collect();
        writes.push(Piece::update(changed.iter().map(|(id, account)| AccountBalances {
            id: **id,
            debits_posted: account.debits_posted as i64,
            credits_posted: account.credits_posted as i64,
            debits_pending: account.debits_pending as i64,
        })));
        if rows.frontier.is_some() {
            write.memory.frontier = rows.frontier.take();
        }
        if rows.transfers.next.is_some() {
            write.memory.next_transfer_id = rows.transfers.next;
        }
        write.memory.remember_accounts(&state.accounts, &names);
        // Every row the batch writes, in one round trip with the commit on
        // SQLite, in one before it on PostgreSQL.
        write.commit_unsynced_with(writes).await?;
        Ok((outcomes, state.accounts))
    }

    /// The holds that expired by `now_ms`.
    pub async fn expired_holds(&self, now_ms: i64) -> Result<Vec<i64>, StoreError> {
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query_scalar("SELECT id FROM holds WHERE expires_at <= $1").bind(now_ms).fetch_all(pool).await?
        }))
    }

    /// Voids every hold that expired by `now_ms` (all of them with
    /// `i64::MAX`, as at start-up, before the sequencer starts, when no
    /// request from before is alive).
    pub async fn expire_holds(&self, now_ms: i64) -> Result<usize, StoreError> {
        let ids = self.expired_holds(now_ms).await?;
        self.void_holds_now(&ids).await
    }

    /// Voids, at a node's start, the holds no call alive can need: on
    /// PostgreSQL those of `node` (its grants from before a stop) and those
    /// of no node, not the grants of other nodes sharing the database
    /// (those expire, or their nodes settle them); on SQLite, which one node
    /// owns, all of them.
    pub async fn release_holds_of(&self, node: &str) -> Result<usize, StoreError> {
        let ids: Vec<i64> = on_pool!(&self.pool, pool => {
            sqlx::query_scalar("SELECT id FROM holds WHERE $1 OR node IS NULL OR node = $2")
                .bind(!self.is_postgres())
                .bind(node)
                .fetch_all(pool)
                .await?
        });
        self.void_holds_now(&ids).await
    }

    /// Voids `ids` in one batch, outside the sequencer (before it starts);
    /// how many were voided.
    async fn void_holds_now(&self, ids: &[HoldId]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let items: Vec<BatchItem> = ids.iter().map(|&hold| BatchItem::command(Command::Void { hold })).collect();
        let outcomes = self.apply_batch(&items).await?;
        Ok(outcomes.iter().filter(|o| o.is_ok()).count())
    }

    /// The ledger totals of one account and what it earned from inferences.
    pub async fn balances(&self, account_id: i64) -> Result<(AccountState, u64), StoreError> {
        on_pool!(&self.pool, pool => {
            let row = sqlx::query(
                "SELECT kind, debits_posted, credits_posted, debits_pending, \
                   (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM transfers \
                    WHERE credit_account_id = a.id AND kind = 'inference_creator') AS earned \
                 FROM accounts a WHERE id = $1",
            )
            .bind(account_id)
            .fetch_one(pool)
            .await?;
            let earned: i64 = row.get("earned")?;
            Ok((account_state(&row)?, earned as u64))
        })
    }

    /// Sums over the whole ledger from one consistent snapshot (one
    /// statement), for the bank check. Every stored total and amount is at
    /// most `i64::MAX`, but a sum of them need not be, and SQLite's `SUM`
    /// fails on overflow: each sum is taken in two halves (`x >> 31` and
    /// `x & (2^31 - 1)`, each summing safely over up to 2^31 rows) and put
    /// together here in 128 bits.
    pub async fn ledger_totals(&self) -> Result<LedgerTotals, StoreError> {
        let halves = |column: &str, from: &str| {
            format!(
                "(SELECT CAST(COALESCE(SUM({column} >> 31), 0) AS BIGINT) FROM {from}), \
                 (SELECT CAST(COALESCE(SUM({column} & 2147483647), 0) AS BIGINT) FROM {from})"
            )
        };
        let sql = [
            halves("debits_posted", "accounts"),
            halves("credits_posted", "accounts"),
            halves("debits_posted", "accounts WHERE kind = 'issuer'"),
            halves("credits_posted", "accounts WHERE kind = 'issuer'"),
            halves("amount", "transfers WHERE debit_account_id IN (SELECT id FROM accounts WHERE kind = 'issuer')"),
            halves("amount", "transfers WHERE kind = 'payout_complete'"),
            halves("debits_pending", "accounts"),
        ]
        .join(", ");
        let halves: Vec<i64> = on_pool!(&self.pool, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {sql}"))).fetch_one(pool).await?;
            (0..14).map(|i| row.at(i)).collect::<Result<_, _>>()?
        });
        let sum = |i: usize| -> Result<i128, StoreError> {
            let (high, low) = (halves[2 * i], halves[2 * i + 1]);
            Ok(((high as i128) << 31) + low as i128)
        };
        let (debits, credits) = (sum(0)?, sum(1)?);
        let issuer_balance = sum(3)? - sum(2)?;
        Ok(LedgerTotals {
            debits,
            credits,
            issuer_balance,
            // Everyone's balance but the issuer's; with debits = credits, minus its.
            balances: (credits - debits) - issuer_balance,
            deposited: sum(4)?,
            paid_out: sum(5)?,
            held: sum(6)?,
        })
    }

    /// One page of an account's transfers, newest first (keyset on id).
    pub async fn transfers_for(
        &self,
        account_id: i64,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<TransferRecord>, Option<i64>), StoreError> {
        let mut transfers = on_pool!(&self.pool, pool => {
            let rows = sqlx::query(
                "SELECT t.id, d.name AS debit_name, c.name AS credit_name, t.amount, t.kind, t.reference, t.log_index, \
                   t.created_at \
                 FROM transfers t JOIN accounts d ON d.id = t.debit_account_id JOIN accounts c ON c.id = t.credit_account_id \
                 WHERE (t.debit_account_id = $1 OR t.credit_account_id = $1) AND t.id < $2 ORDER BY t.id DESC LIMIT $3",
            )
            .bind(account_id)
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await?;
            rows.iter().map(transfer_from_row).collect::<Result<Vec<_>, _>>()?
        });
        let next = if transfers.len() > limit as usize {
            transfers.truncate(limit as usize);
            transfers.last().map(|t| t.id)
        } else {
            None
        };
        Ok((transfers, next))
    }

    pub async fn payout(&self, payout_id: i64) -> Result<Option<PayoutRecord>, StoreError> {
        on_pool!(&self.pool, pool => {
            let row = sqlx::query(PAYOUT_SELECT_BY_ID).bind(payout_id).fetch_optional(pool).await?;
            row.as_ref().map(payout_from_row).transpose()
        })
    }

    /// Payouts, newest first: one account's, or everyone's; optionally in one state.
    pub async fn payouts(
        &self,
        account_id: Option<i64>,
        state: Option<PayoutState>,
    ) -> Result<Vec<PayoutRecord>, StoreError> {
        on_pool!(&self.pool, pool => {
            let rows = sqlx::query(
                "SELECT p.id, p.account_id, a.name, p.amount, p.state, p.reference, p.created_at, p.resolved_at \
                 FROM payouts p JOIN accounts a ON a.id = p.account_id \
                 WHERE ($1 IS NULL OR p.account_id = $1) AND ($2 IS NULL OR p.state = $2) ORDER BY p.id DESC LIMIT 1000",
            )
            .bind(account_id)
            .bind(state.map(PayoutState::as_str))
            .fetch_all(pool)
            .await?;
            rows.iter().map(payout_from_row).collect()
        })
    }

    /// What an Idempotency-Key already stands for. Nothing is written for a
    /// new key: the call's batch writes the key with its answer, in the
    /// transaction of its charge, and a call running meanwhile is known only
    /// to its node (the server's claims). A key older than `window_ms` is
    /// forgotten here.
    pub async fn idempotency_lookup(
        &self,
        account_id: i64,
        key: &str,
        request: &Sha256,
        window_ms: i64,
    ) -> Result<IdempotencyStart, StoreError> {
        let row: Option<(String, Option<String>, Option<i64>, i64)> = on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT request_sha256, response, log_index, created_at FROM idempotency_keys \
                 WHERE account_id = $1 AND key = $2",
            )
            .bind(account_id)
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        let Some((stored, response, log_index, created_at)) = row else { return Ok(IdempotencyStart::Started) };
        // A row without an answer is a claim an earlier version of the
        // server made durable; start-up forgets those, and a batch replaces it.
        let Some(response) = response.filter(|_| created_at >= now_ms() - window_ms) else {
            on_pool!(&self.pool, pool => {
                sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND created_at = $3")
                    .bind(account_id)
                    .bind(key)
                    .bind(created_at)
                    .execute(pool)
                    .await?;
            });
            return Ok(IdempotencyStart::Started);
        };
        if stored != request.to_hex() {
            return Ok(IdempotencyStart::Mismatch);
        }
        let log_index = log_index.map(|i| i as u64);
        if response.is_empty() {
            return Ok(IdempotencyStart::NotKept(log_index));
        }
        Ok(IdempotencyStart::Replay(response, log_index))
    }

    /// Forgets every key whose call never finished: at start-up no call from
    /// before is alive, and its hold has been voided, so a retry must run.
    pub async fn abandon_unfinished_idempotency_keys(&self) -> Result<u64, StoreError> {
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE response IS NULL").execute(pool).await?.rows_affected()
        }))
    }

    /// Deletes every key older than `window_ms`; returns how many.
    pub async fn purge_idempotency_keys(&self, window_ms: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(now_ms() - window_ms)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

/// Loads every account and hold the batch's commands name: the accounts
/// from `remembered` where the writer has them, the rest from the database.
async fn load_state(
    tx: &mut Tx,
    items: &[BatchItem],
    remembered: &HashMap<AccountId, (String, AccountState)>,
) -> Result<(LedgerState, HashMap<AccountId, String>), StoreError> {
    let mut account_ids: HashSet<AccountId> = HashSet::new();
    let mut hold_ids: HashSet<HoldId> = HashSet::new();
    let mut external_ids: HashSet<String> = HashSet::new();
    let commands =
        items.iter().flat_map(|item| item.ledger_command().into_iter().chain(item.more_commands().iter().cloned()));
    for command in commands {
        match &command {
            Command::Transfer(t) => account_ids.extend([t.debit, t.credit]),
            Command::Once { id, transfer: t } => {
                account_ids.extend([t.debit, t.credit]);
                external_ids.insert(id.clone());
            }
            Command::Linked(ts) => account_ids.extend(ts.iter().flat_map(|t| [t.debit, t.credit])),
            Command::Reserve(hold) => {
                account_ids.insert(hold.account);
            }
            Command::Post { hold, legs, .. } => {
                hold_ids.insert(*hold);
                account_ids.extend(legs.iter().map(|l| l.credit));
            }
            Command::Void { hold } => {
                hold_ids.insert(*hold);
            }
            Command::Draw { hold, transfers } | Command::DrawOrPay { hold, transfers } => {
                hold_ids.insert(*hold);
                account_ids.extend(transfers.iter().flat_map(|t| [t.debit, t.credit]));
            }
            Command::Grant { account, .. } => {
                account_ids.insert(*account);
            }
        }
    }
    let mut state = LedgerState::default();
    let hold_ids: Vec<HoldId> = hold_ids.into_iter().collect();
    let select = "SELECT id, account_id, amount, expires_at FROM holds WHERE id IN ";
    for (id, account, amount, expires_at_ms) in select_in::<(i64, i64, i64, i64), _>(tx, select, &hold_ids).await? {
        account_ids.insert(account);
        state.holds.insert(id, Hold { id, account, amount: amount_from(amount)?, expires_at_ms });
    }
    let external_ids: Vec<String> = external_ids.into_iter().collect();
    let select = "SELECT external_id, debit_account_id, credit_account_id, amount, kind, reference FROM transfers \
                  WHERE external_id IN ";
    type Applied = (String, i64, i64, i64, String, String);
    for (external_id, debit, credit, amount, kind, reference) in
        select_in::<Applied, _>(tx, select, &external_ids).await?
    {
        let transfer = ledger::Transfer {
            debit,
            credit,
            amount: amount_from(amount)?,
            kind: TransferKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("transfer kind {kind}")))?,
            reference,
        };
        state.applied.insert(external_id, transfer);
    }
    let mut names = HashMap::new();
    account_ids.retain(|id| match remembered.get(id) {
        Some((name, account)) => {
            names.insert(*id, name.clone());
            state.accounts.insert(*id, *account);
            false
        }
        None => true,
    });
    let account_ids: Vec<AccountId> = account_ids.into_iter().collect();
    let select = "SELECT id, name, kind, debits_posted, credits_posted, debits_pending FROM accounts WHERE id IN ";
    type Loaded = (i64, String, String, i64, i64, i64);
    for (id, name, kind, debits, credits, pending) in select_in::<Loaded, _>(tx, select, &account_ids).await? {
        names.insert(id, name);
        state.accounts.insert(id, account_state_of(&kind, debits, credits, pending)?);
    }
    // The ledger's pending totals must match the holds loaded with them;
    // holds of accounts in this batch that this batch does not touch are
    // not loaded, so only the per-account checks that hold regardless run.
    Ok((state, names))
}

/// The rows a batch inserts in bulk at its end (`log::LogRows` says why).
#[derive(Debug, Default)]
struct BatchRows {
    /// The log's right edge, for batches that append.
    frontier: Option<tlog::Frontier>,
    log: crate::log::LogRows,
    transfers: TransferRows,
    /// The batch's Idempotency-Keys that have an answer: those another call
    /// answered before the batch, then those its own items answer.
    answered: HashSet<(i64, String)>,
    /// Answers to write: (answer, its receipt's log index).
    answers: Vec<(IdempotencyAnswer, Option<i64>)>,
    /// What is left of each hold the batch drew from and did not resolve.
    drawn: HashMap<HoldId, u64>,
}

impl BatchRows {
    /// Adds the kept rows to the batch's writes.
    fn pieces(&mut self, writes: &mut Writes, now: i64) {
        std::mem::take(&mut self.log).pieces(writes);
        writes.push(self.transfers.piece());
        writes.push(answers_piece(std::mem::take(&mut self.answers), now));
        let drawn = std::mem::take(&mut self.drawn);
        writes.push(Piece::update(drawn.into_iter().map(|(id, left)| HoldLeft { id, amount: left as i64 })));
    }
}

table_row! {
    /// A batch's new balances of an account (`Piece::update`).
    struct AccountBalances in "accounts" { id: i64, debits_posted: i64, credits_posted: i64, debits_pending: i64 }
}

table_row! {
    /// What a grant has left after the batch's draws (`Piece::update`).
    struct HoldLeft in "holds" { id: i64, amount: i64 }
}

table_row! {
    struct TransferRow in "transfers" {
        id: i64,
        debit_account_id: i64,
        credit_account_id: i64,
        amount: i64,
        kind: &'static str,
        reference: String,
        /// The paid call's model.
        model_id: Option<i64>,
        /// A `Command::Once`'s id.
        external_id: Option<String>,
        /// The paid call's leaf.
        log_index: Option<i64>,
        created_at: i64,
    }
}

table_row! {
    /// An Idempotency-Key's answer (`response` empty when not kept).
    struct AnswerRow in "idempotency_keys" {
        account_id: i64,
        key: String,
        request_sha256: String,
        response: String,
        log_index: Option<i64>,
        created_at: i64,
    }
}

/// Transfers not written yet, with their ids: given here, one after the last
/// stored (the batch holds the database's write lock, so nobody else takes one).
#[derive(Debug, Default)]
struct TransferRows {
    next: Option<i64>,
    rows: Vec<TransferRow>,
}

impl TransferRows {
    async fn next_id(&mut self, tx: &mut Tx) -> Result<i64, StoreError> {
        let next = match self.next {
            Some(next) => next,
            None => on_tx!(tx, tx => {
                sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM transfers").fetch_one(&mut **tx).await?
            }),
        };
        self.next = Some(next + 1);
        Ok(next)
    }

    /// The rows not written yet, as one piece of the batch's writes.
    fn piece(&mut self) -> Piece {
        Piece::insert(std::mem::take(&mut self.rows))
    }

    /// Writes the rows not written yet, now.
    async fn write(&mut self, tx: &mut Tx) -> Result<(), StoreError> {
        let mut writes = Writes::default();
        writes.push(self.piece());
        Ok(writes.flush(tx).await?)
    }
}

/// Which of the batch's Idempotency-Keys another call already answered (on
/// a node sharing the database): read under the write lock, in one
/// statement, before any item's charge, so a key is charged once whichever
/// nodes its calls reach.
async fn answered_before(tx: &mut Tx, items: &[BatchItem]) -> Result<HashSet<(i64, String)>, StoreError> {
    let keys: Vec<(i64, String)> =
        items.iter().filter_map(BatchItem::answer).map(|a| (a.account_id, a.key.clone())).collect();
    let mut answered = HashSet::new();
    for chunk in keys.chunks(crate::backend::ROWS_PER_STATEMENT) {
        let rows: Vec<(i64, String)> = on_tx!(&mut *tx, tx => {
            let mut select = sqlx::QueryBuilder::new(
                "SELECT account_id, key FROM idempotency_keys WHERE response IS NOT NULL AND (account_id, key) IN ",
            );
            select.push_tuples(chunk, |mut row, (account, key)| {
                row.push_bind(*account).push_bind(key.clone());
            });
            select.build_query_as().fetch_all(&mut **tx).await?
        });
        answered.extend(rows);
    }
    Ok(answered)
}

/// The batch's idempotency keys with the answers a retry replays (over
/// expired or unanswered rows of the same keys), as one piece.
fn answers_piece(answers: Vec<(IdempotencyAnswer, Option<i64>)>, now: i64) -> Piece {
    let rows = answers.into_iter().map(|(answer, log_index)| AnswerRow {
        account_id: answer.account_id,
        key: answer.key,
        request_sha256: answer.request.to_hex(),
        response: answer.response.unwrap_or_default(),
        log_index,
        created_at: now,
    });
    Piece::upsert(&["account_id", "key"], rows)
}

/// One batch's items as they apply, one after the other: the open
/// transaction, the ledger's state as the items before left it, the
/// accounts' names, and the rows written at the batch's end.
struct Applying<'a> {
    tx: &'a mut Tx,
    state: &'a mut LedgerState,
    names: &'a HashMap<AccountId, String>,
    now: i64,
    /// Payouts resolved earlier in this batch (one resolution each).
    resolved_payouts: HashSet<i64>,
    rows: &'a mut BatchRows,
}

/// What a command's rows record beside its effects.
#[derive(Default)]
struct Origin<'a> {
    /// The paid call's model.
    model_id: Option<i64>,
    /// A [`Command::Once`]'s id.
    external_id: Option<&'a str>,
    /// The paid call's leaf.
    log_index: Option<i64>,
    /// The node a grant is for.
    node: Option<&'a str>,
    /// When it happened (back-dated calls on development servers).
    at_ms: Option<i64>,
}

impl Applying<'_> {
    /// Applies one item: a refusal of it (`Ok(Err)`) changes nothing; an
    /// `Err` fails the whole batch.
    async fn apply(&mut self, item: &BatchItem) -> Result<Result<BatchOutcome, ItemError>, StoreError> {
        if item.answer().is_some_and(|a| self.rows.answered.contains(&(a.account_id, a.key.clone()))) {
            return Ok(Err(ItemError::AlreadyAnswered));
        }
        match item {
            BatchItem::RecordOnly { leaf, signature, answer, at_ms, .. } => {
                Ok(Ok(self.record(leaf, signature, answer.as_ref(), *at_ms)))
            }
            BatchItem::Charge(charge) => self.charge(charge).await,
            BatchItem::Grant(grant) => self.grant(grant).await,
            BatchItem::Ledger { command, payout } => self.ledger(command, payout.as_ref()).await,
            BatchItem::Deposits(deposits) => self.deposits(deposits).await,
        }
    }

    /// A range's deposits: the cursor moved past the range if it stands
    /// where the range began, and each credit applied once (a credit
    /// applied before, by its id, moves nothing; one the ledger refuses, an
    /// amount past what it can hold, stays in the reserves, logged).
    async fn deposits(&mut self, deposits: &ChainDeposits) -> Result<Result<BatchOutcome, ItemError>, StoreError> {
        if !crate::chain_payments::move_cursor(self.tx, deposits).await? {
            return Ok(Err(ItemError::CursorMoved));
        }
        let mut transfers = vec![];
        for command in &deposits.credits {
            let Command::Once { id, .. } = command else {
                return Err(StoreError::Corrupt("a deposit that is not a once-only transfer".into()));
            };
            match self.state.execute(command.clone(), self.now) {
                Ok(effects) if effects.replayed => {}
                Ok(effects) => {
                    let origin = Origin { external_id: Some(id), ..Origin::default() };
                    transfers.extend(self.write_effects(&effects, origin).await?);
                }
                Err(error) => tracing::warn!(%error, id, "a deposit the ledger cannot take stays in the reserves"),
            }
        }
        Ok(Ok(BatchOutcome { transfers, ..BatchOutcome::default() }))
    }

    /// A record without money (a free or failed call): logged, and its
    /// answer kept all the same (a free call's answer has no receipt, so its
    /// replay has none either).
    fn record(
        &mut self,
        leaf: &[u8],
        signature: &[u8],
        answer: Option<&IdempotencyAnswer>,
        at_ms: Option<i64>,
    ) -> BatchOutcome {
        let now = self.now;
        let log_index =
            self.rows.frontier.as_mut().map(|f| self.rows.log.append(f, leaf, signature, at_ms.unwrap_or(now)));
        self.remember_answer(answer, None);
        BatchOutcome { log_index, ..BatchOutcome::default() }
    }

    /// A paid call: its transfers (from its grant, or the free balance),
    /// its leaf and its answer.
    async fn charge(&mut self, charge: &Charge) -> Result<Result<BatchOutcome, ItemError>, StoreError> {
        if let Some(payment) = &charge.payment
            && !crate::chain_payments::is_settling(self.tx, payment).await?
        {
            return Ok(Err(ItemError::PaymentNotSettling));
        }
        let effects = match self.state.execute(charge.command(), self.now) {
            Ok(effects) => effects,
            Err(error) => return Ok(Err(ItemError::Ledger(error))),
        };
        let grant_left = match (&effects.hold_drawn, effects.hold_resolved) {
            (Some(hold), _) => Some(hold.amount.minor_units()),
            (None, Some(_)) => Some(0),
            (None, None) => None,
        };
        let at_ms = charge.at_ms.unwrap_or(self.now);
        let log_index =
            self.rows.frontier.as_mut().map(|f| self.rows.log.append(f, &charge.leaf, &charge.signature, at_ms) as i64);
        let origin = Origin { model_id: Some(charge.model_id), log_index, at_ms: charge.at_ms, ..Origin::default() };
        let transfers = self.write_effects(&effects, origin).await?;
        if let Some(payment) = &charge.payment {
            crate::chain_payments::credit(self.tx, payment, log_index).await?;
        }
        self.remember_answer(charge.answer.as_ref(), log_index);
        Ok(Ok(BatchOutcome {
            transfers,
            log_index: log_index.map(|i| i as u64),
            grant_left,
            ..BatchOutcome::default()
        }))
    }

    /// A grant, sized by the ledger from the balance as this batch left it.
    async fn grant(&mut self, grant: &GrantRequest) -> Result<Result<BatchOutcome, ItemError>, StoreError> {
        let effects = match self.state.execute(grant.command(), self.now) {
            Ok(effects) => effects,
            Err(error) => return Ok(Err(ItemError::Ledger(error))),
        };
        self.write_effects(&effects, Origin { node: Some(&grant.node), ..Origin::default() }).await?;
        Ok(Ok(BatchOutcome { grant: effects.hold_placed, ..BatchOutcome::default() }))
    }

    /// Any other command, with the payout it is part of.
    async fn ledger(
        &mut self,
        command: &Command,
        payout: Option<&PayoutChange>,
    ) -> Result<Result<BatchOutcome, ItemError>, StoreError> {
        // A payout on the chain leaves its chain state here (mined → final,
        // or → failed), which is put back if the command fails.
        let mut left_chain_state = None;
        if let Some(PayoutChange::Resolve { payout_id, to, onchain, .. }) = payout {
            let current: Option<String> = on_tx!(&mut *self.tx, tx => {
                sqlx::query_scalar("SELECT state FROM payouts WHERE id = $1").bind(payout_id).fetch_optional(&mut **tx).await?
            });
            if current.as_deref() != Some("requested") || self.resolved_payouts.contains(payout_id) {
                return Ok(Err(ItemError::PayoutNotRequested(*payout_id)));
            }
            let completed = *to == PayoutState::Completed;
            match crate::chain_payouts::resolve(self.tx, *payout_id, completed, *onchain, self.now).await? {
                Ok(left) => left_chain_state = left.map(|state| (*payout_id, state, completed)),
                Err(()) => return Ok(Err(ItemError::PayoutNotRequested(*payout_id))),
            }
        }
        let external_id = match command {
            Command::Once { id, .. } => Some(id.as_str()),
            _ => None,
        };
        let effects = match self.state.execute(command.clone(), self.now) {
            Ok(effects) => effects,
            Err(error) => {
                if let Some((payout_id, state, completed)) = left_chain_state {
                    use crate::ChainPayoutState::{Failed, Final};
                    let to = if completed { Final } else { Failed };
                    crate::chain_payouts::set_state(self.tx, payout_id, to, state, self.now).await?;
                }
                return Ok(Err(ItemError::Ledger(error)));
            }
        };
        if effects.replayed {
            let id = external_id.expect("only Once commands replay");
            // The first application may be earlier in this very batch.
            self.rows.transfers.write(self.tx).await?;
            let transfer = on_tx!(&mut *self.tx, tx => {
                transfer_from_row(&sqlx::query(TRANSFER_SELECT_BY_EXTERNAL_ID).bind(id).fetch_one(&mut **tx).await?)?
            });
            return Ok(Ok(BatchOutcome { transfers: vec![transfer], replayed: true, ..BatchOutcome::default() }));
        }
        let transfers = self.write_effects(&effects, Origin { external_id, ..Origin::default() }).await?;
        let payout = match payout {
            None => None,
            Some(change) => Some(self.change_payout(change).await?),
        };
        Ok(Ok(BatchOutcome { transfers, payout, ..BatchOutcome::default() }))
    }

    /// A payout's row: requested, or resolved.
    async fn change_payout(&mut self, change: &PayoutChange) -> Result<PayoutRecord, StoreError> {
        let now = self.now;
        let id = match change {
            PayoutChange::Request { account_id, amount, chain } => {
                let id = on_tx!(&mut *self.tx, tx => {
                    sqlx::query_scalar(
                        "INSERT INTO payouts (account_id, amount, state, created_at) VALUES ($1, $2, 'requested', $3) \
                         RETURNING id",
                    )
                    .bind(account_id)
                    .bind(amount.minor_units() as i64)
                    .bind(now)
                    .fetch_one(&mut **tx)
                    .await?
                });
                if let Some(chain) = chain {
                    crate::chain_payouts::request(self.tx, id, chain, now).await?;
                }
                id
            }
            PayoutChange::Resolve { payout_id, to, reference, .. } => {
                self.resolved_payouts.insert(*payout_id);
                on_tx!(&mut *self.tx, tx => {
                    sqlx::query("UPDATE payouts SET state = $1, reference = $2, resolved_at = $3 WHERE id = $4")
                        .bind(to.as_str())
                        .bind(reference)
                        .bind(now)
                        .bind(payout_id)
                        .execute(&mut **tx)
                        .await?;
                });
                *payout_id
            }
        };
        fetch_payout(self.tx, id).await
    }

    /// Writes what a command did: the hold it placed, resolved or drew
    /// from, and its transfers (rows written at the batch's end); returns
    /// the transfers as records.
    async fn write_effects(
        &mut self,
        effects: &ledger::Effects,
        origin: Origin<'_>,
    ) -> Result<Vec<TransferRecord>, StoreError> {
        let now = self.now;
        if let Some(hold) = &effects.hold_placed {
            on_tx!(&mut *self.tx, tx => {
                sqlx::query(
                    "INSERT INTO holds (id, account_id, amount, expires_at, created_at, node) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(hold.id)
                .bind(hold.account)
                .bind(hold.amount.minor_units() as i64)
                .bind(hold.expires_at_ms)
                .bind(now)
                .bind(origin.node)
                .execute(&mut **tx)
                .await?;
            });
        }
        if let Some(hold) = effects.hold_resolved {
            self.rows.drawn.remove(&hold);
            on_tx!(&mut *self.tx, tx => {
                sqlx::query("DELETE FROM holds WHERE id = $1").bind(hold).execute(&mut **tx).await?;
            });
        }
        if let Some(hold) = &effects.hold_drawn {
            self.rows.drawn.insert(hold.id, hold.amount.minor_units());
        }
        let recorded_at = origin.at_ms.unwrap_or(now);
        let mut transfers = Vec::with_capacity(effects.transfers.len());
        for transfer in &effects.transfers {
            let id = self.rows.transfers.next_id(self.tx).await?;
            self.rows.transfers.rows.push(TransferRow {
                id,
                debit_account_id: transfer.debit,
                credit_account_id: transfer.credit,
                amount: transfer.amount.minor_units() as i64,
                kind: transfer.kind.as_str(),
                reference: transfer.reference.clone(),
                model_id: origin.model_id,
                external_id: origin.external_id.map(str::to_owned),
                log_index: origin.log_index,
                created_at: recorded_at,
            });
            let name = |id: &AccountId| self.names.get(id).cloned().unwrap_or_default();
            transfers.push(TransferRecord {
                id,
                debit_account: name(&transfer.debit),
                credit_account: name(&transfer.credit),
                amount: transfer.amount,
                kind: transfer.kind,
                reference: transfer.reference.clone(),
                log_index: origin.log_index.map(|i| i as u64),
                created_at_ms: recorded_at,
            });
        }
        Ok(transfers)
    }

    fn remember_answer(&mut self, answer: Option<&IdempotencyAnswer>, log_index: Option<i64>) {
        if let Some(answer) = answer {
            self.rows.answered.insert((answer.account_id, answer.key.clone()));
            self.rows.answers.push((answer.clone(), log_index));
        }
    }
}

const TRANSFER_SELECT_BY_EXTERNAL_ID: &str = "SELECT t.id, d.name AS debit_name, c.name AS credit_name, t.amount, t.kind, t.reference, t.log_index, t.created_at \
     FROM transfers t JOIN accounts d ON d.id = t.debit_account_id JOIN accounts c ON c.id = t.credit_account_id \
     WHERE t.external_id = $1";

const PAYOUT_SELECT_BY_ID: &str = "SELECT p.id, p.account_id, a.name, p.amount, p.state, p.reference, p.created_at, p.resolved_at \
     FROM payouts p JOIN accounts a ON a.id = p.account_id WHERE p.id = $1";

async fn fetch_payout(tx: &mut Tx, id: i64) -> Result<PayoutRecord, StoreError> {
    on_tx!(tx, tx => payout_from_row(&sqlx::query(PAYOUT_SELECT_BY_ID).bind(id).fetch_one(&mut **tx).await?))
}

fn amount_from(units: i64) -> Result<Amount, StoreError> {
    u64::try_from(units)
        .ok()
        .and_then(|u| Amount::from_minor_units(u).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("amount {units} out of range")))
}

fn account_state(row: &impl Columns) -> Result<AccountState, StoreError> {
    let kind: String = row.get("kind")?;
    account_state_of(&kind, row.get("debits_posted")?, row.get("credits_posted")?, row.get("debits_pending")?)
}

fn account_state_of(kind: &str, debits: i64, credits: i64, pending: i64) -> Result<AccountState, StoreError> {
    let kind: AccountKind = kind.parse().map_err(|_| StoreError::Corrupt(format!("account kind {kind:?}")))?;
    let total = |value: i64, column: &str| -> Result<u64, StoreError> {
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} is negative")))
    };
    Ok(AccountState {
        kind: if kind == AccountKind::Issuer { ledger::AccountKind::Issuer } else { ledger::AccountKind::Regular },
        debits_posted: total(debits, "debits_posted")?,
        credits_posted: total(credits, "credits_posted")?,
        debits_pending: total(pending, "debits_pending")?,
    })
}

fn transfer_from_row(row: &impl Columns) -> Result<TransferRecord, StoreError> {
    let kind: String = row.get("kind")?;
    Ok(TransferRecord {
        id: row.get("id")?,
        debit_account: row.get("debit_name")?,
        credit_account: row.get("credit_name")?,
        amount: amount_from(row.get("amount")?)?,
        kind: TransferKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("transfer kind {kind}")))?,
        reference: row.get("reference")?,
        log_index: row.get::<Option<i64>>("log_index")?.map(|i| i as u64),
        created_at_ms: row.get("created_at")?,
    })
}

fn payout_from_row(row: &impl Columns) -> Result<PayoutRecord, StoreError> {
    Ok(PayoutRecord {
        id: row.get("id")?,
        account_id: row.get("account_id")?,
        account: parse_column(row, "name")?,
        amount: amount_from(row.get("amount")?)?,
        state: parse_column(row, "state")?,
        reference: row.get("reference")?,
        created_at_ms: row.get("created_at")?,
        resolved_at_ms: row.get("resolved_at")?,
    })
}
