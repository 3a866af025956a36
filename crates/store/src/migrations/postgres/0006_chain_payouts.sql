-- Payouts sent on the chain (with a `chain`): one row per payout to a
-- proven address, beside its `payouts` row (whose state stays the ledger's:
-- requested until final, then completed; rejected if it failed).
-- `requested`: waiting to be signed; `signed`: its nonce and raw transaction
-- stored, maybe not yet sent; `broadcast`: sent, not mined; `mined`: in a
-- block (`block`), not yet final; `final`: paid, its tokens out of the
-- ledger; `failed`: reverted or refused, its tokens back to the creator.
CREATE TABLE chain_payouts (
    payout_id    BIGINT PRIMARY KEY REFERENCES payouts (id),
    network      TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    -- Token units, in decimal: the ledger amount converted exactly.
    token_amount TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    -- The node that signed it: only it sends it again or bumps its fee.
    node         TEXT,
    nonce        BIGINT,
    -- The transaction that was mined (or, before, the latest one sent).
    tx_hash      TEXT,
    block        BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX chain_payouts_unfinished ON chain_payouts (state);

-- Every transaction signed for a payout: the first, and each fee bump (the
-- same nonce, a higher fee). Stored before it is sent.
CREATE TABLE chain_payout_transactions (
    payout_id    BIGINT NOT NULL REFERENCES payouts (id),
    hash         TEXT    NOT NULL,
    raw          TEXT    NOT NULL,
    max_fee      TEXT    NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (payout_id, hash)
);

-- A creator's automatic payouts: whenever its balance reaches `threshold`
-- (minor units), all of it is paid out to `address` (a proven address).
CREATE TABLE chain_auto_payouts (
    account_id   BIGINT PRIMARY KEY REFERENCES accounts (id),
    network      TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    threshold    BIGINT NOT NULL CHECK (threshold > 0),
    updated_at   BIGINT NOT NULL
);
