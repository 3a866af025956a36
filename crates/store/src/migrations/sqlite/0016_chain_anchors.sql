-- The log's checkpoints anchored on the chain (with a `chain` whose
-- `anchor_interval_seconds` is not 0): a transaction from the market's
-- address to itself carrying the checkpoint's origin, size and root.
-- Claimed (`tx_hash` NULL) before it is sent, so that one node anchors a
-- size; `tx_hash` and `block` once it is mined.
CREATE TABLE chain_anchors (
    network     TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    root        BLOB    NOT NULL,
    tx_hash     TEXT,
    block       INTEGER,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (network, size)
);
