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

-- Addresses an account proved it holds (an EIP-191 signature): each of one
-- account, on its network. Transfers of the token from one to the market's
-- address are credited to that account once final.
CREATE TABLE chain_addresses (
    network     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    account_id  INTEGER NOT NULL,
    proven_at   INTEGER NOT NULL,
    PRIMARY KEY (network, address)
);
CREATE INDEX chain_addresses_account ON chain_addresses (account_id);

-- How far the deposits of a token are read: every final block up to
-- `block` (its transfers credited, each once by its transaction and log).
CREATE TABLE chain_cursors (
    network     TEXT    NOT NULL,
    token       TEXT    NOT NULL,
    block       INTEGER NOT NULL,
    PRIMARY KEY (network, token)
);
