-- Seeds every node of a market shares (the log's key, the pseudonym key),
-- for markets whose nodes have data directories of their own. A SQLite
-- market keeps them as files in its one data directory, as before; this
-- table serves `vitrine migrate`, which carries them to PostgreSQL.

CREATE TABLE market_secrets (
    name       TEXT    PRIMARY KEY,
    seed       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
