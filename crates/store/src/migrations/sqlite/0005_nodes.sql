-- Serving nodes and the public keys that sign their receipts. Every node
-- registers itself at start, so any node can publish every node's key.
CREATE TABLE nodes (
    name          TEXT    PRIMARY KEY,
    public_key    BLOB    NOT NULL,
    registered_at INTEGER NOT NULL
);
