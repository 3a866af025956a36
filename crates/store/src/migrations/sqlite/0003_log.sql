-- The transparency log: receipt leaves, the hashes of complete subtrees
-- (RFC 6962; node (level, idx) covers leaves [idx·2^level, (idx+1)·2^level)),
-- and every checkpoint the server signed.

CREATE TABLE log_leaves (
    idx        INTEGER PRIMARY KEY,
    -- The canonical leaf encoding (tlog::leaf) and the node's Ed25519 signature of it.
    leaf       BLOB    NOT NULL,
    signature  BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Written once, when the leaf that completes the subtree is appended.
CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE log_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB    NOT NULL,
    -- The signed note exactly as served.
    note       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- The leaf that records the inference a transfer paid for.
ALTER TABLE transfers ADD COLUMN log_index INTEGER;
-- The leaf of a call remembered under an Idempotency-Key, to rebuild its receipt.
ALTER TABLE idempotency_keys ADD COLUMN log_index INTEGER;
