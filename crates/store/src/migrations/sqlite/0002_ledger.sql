-- The token ledger: balances on accounts, holds, immutable transfers,
-- payouts, and idempotency keys of paid calls. Amounts are minor units.

-- user | operator | issuer | treasury | payouts | node. Only the issuer's
-- balance (credits - debits) may be negative: it is minus the tokens in
-- circulation.
ALTER TABLE accounts ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';
-- Running totals; they only grow. Balance = credits_posted - debits_posted.
ALTER TABLE accounts ADD COLUMN debits_posted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN credits_posted INTEGER NOT NULL DEFAULT 0;
-- Sum of this account's rows in holds.
ALTER TABLE accounts ADD COLUMN debits_pending INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET kind = 'operator' WHERE is_operator = 1;

CREATE TABLE holds (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX holds_by_expiry ON holds (expires_at);

CREATE TABLE transfers (
    id                INTEGER PRIMARY KEY,
    debit_account_id  INTEGER NOT NULL REFERENCES accounts (id),
    credit_account_id INTEGER NOT NULL REFERENCES accounts (id),
    amount            INTEGER NOT NULL CHECK (amount > 0),
    kind              TEXT    NOT NULL,
    reference         TEXT    NOT NULL,
    -- The model an inference transfer pays for.
    model_id          INTEGER REFERENCES models (id),
    -- Set for transfers applied once per outside id (deposits): a retry
    -- with the same id finds this row instead of moving tokens again.
    external_id       TEXT UNIQUE,
    created_at        INTEGER NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX transfers_by_debit ON transfers (debit_account_id, id);
CREATE INDEX transfers_by_credit ON transfers (credit_account_id, id);

CREATE TABLE payouts (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    state       TEXT    NOT NULL CHECK (state IN ('requested', 'completed', 'rejected')),
    -- The operator's outside reference (completed) or reason (rejected).
    reference   TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE INDEX payouts_by_account ON payouts (account_id, id);

-- A paid call retried with the same Idempotency-Key gets the first answer.
CREATE TABLE idempotency_keys (
    account_id     INTEGER NOT NULL REFERENCES accounts (id),
    key            TEXT    NOT NULL,
    request_sha256 TEXT    NOT NULL,
    -- NULL while the first call runs.
    response       TEXT,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
