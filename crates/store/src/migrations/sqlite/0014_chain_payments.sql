-- x402 payments (with a `chain`): one row per authorization (its network,
-- payer and nonce), claimed before the model runs (or, for a top-up of
-- `account_id`'s balance, before it is settled) so that it pays once.
-- `claimed`: verified, the call running; `settling`: its settlement
-- transaction signed (its hash stored before it was sent); `credited`: paid
-- and split in the ledger (its call's log index); `void`: never settled (a
-- call that failed, or an authorization that expired unsent).
CREATE TABLE chain_payments (
    network         TEXT    NOT NULL,
    payer           TEXT    NOT NULL,
    nonce           TEXT    NOT NULL,
    amount          INTEGER NOT NULL,
    valid_before    INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    node            TEXT    NOT NULL,
    model_id        INTEGER NOT NULL,
    account_id      INTEGER,
    version         INTEGER NOT NULL,
    creator_id      INTEGER NOT NULL,
    creator_share   INTEGER NOT NULL,
    node_share      INTEGER NOT NULL,
    treasury_share  INTEGER NOT NULL,
    tx_hash         TEXT,
    log_index       INTEGER,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (network, payer, nonce)
);
CREATE INDEX chain_payments_unfinished ON chain_payments (node, state);
