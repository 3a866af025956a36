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
    amount          BIGINT NOT NULL,
    valid_before    BIGINT NOT NULL,
    state           TEXT    NOT NULL,
    node            TEXT    NOT NULL,
    model_id        BIGINT NOT NULL,
    account_id      BIGINT,
    version         BIGINT NOT NULL,
    creator_id      BIGINT NOT NULL,
    creator_share   BIGINT NOT NULL,
    node_share      BIGINT NOT NULL,
    treasury_share  BIGINT NOT NULL,
    tx_hash         TEXT,
    log_index       BIGINT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (network, payer, nonce)
);
CREATE INDEX chain_payments_unfinished ON chain_payments (node, state);

-- Addresses an account proved it holds (an EIP-191 signature): each of one
-- account, on its network. Transfers of the token from one to the market's
-- address are credited to that account once final.
CREATE TABLE chain_addresses (
    network     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    account_id  BIGINT NOT NULL,
    proven_at   BIGINT NOT NULL,
    PRIMARY KEY (network, address)
);
CREATE INDEX chain_addresses_account ON chain_addresses (account_id);

-- How far the deposits of a token are read: every final block up to
-- `block` (its transfers credited, each once by its transaction and log).
CREATE TABLE chain_cursors (
    network     TEXT    NOT NULL,
    token       TEXT    NOT NULL,
    block       BIGINT NOT NULL,
    PRIMARY KEY (network, token)
);
