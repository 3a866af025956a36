-- Usage: one event per inference call (paid or free, success or failure),
-- written in the same transaction as its charge, and rollups of them per
-- model, creator, task, app and node, per minute, hour and day.

CREATE TABLE usage_events (
    id            INTEGER PRIMARY KEY,
    created_at    INTEGER NOT NULL,
    model_id      INTEGER NOT NULL REFERENCES models (id),
    version       INTEGER NOT NULL,
    owner_id      INTEGER NOT NULL REFERENCES accounts (id),
    task          TEXT    NOT NULL,
    -- The model's visibility when called: private calls count only in the owner's views.
    public        INTEGER NOT NULL CHECK (public IN (0, 1)),
    caller        BLOB    NOT NULL,
    app           TEXT    NOT NULL,
    node          TEXT    NOT NULL,
    -- What the caller paid (0 for free or failed calls), and the creator's part of it.
    price         INTEGER NOT NULL,
    creator_share INTEGER NOT NULL,
    latency_us    INTEGER NOT NULL,
    -- 'ok', or the error code the caller got.
    status        TEXT    NOT NULL,
    log_index     INTEGER
);
CREATE INDEX usage_events_by_time ON usage_events (created_at);
CREATE INDEX usage_events_by_owner ON usage_events (owner_id, created_at);
CREATE INDEX usage_events_by_caller ON usage_events (caller, created_at);

-- One row per (dimension, key, bucket width, public, bucket start).
CREATE TABLE usage_rollups (
    dimension       TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    granularity     INTEGER NOT NULL,
    public          INTEGER NOT NULL,
    bucket          INTEGER NOT NULL,
    calls           INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    revenue         INTEGER NOT NULL,
    creator_revenue INTEGER NOT NULL,
    -- analytics::LatencyHistogram and analytics::CallerSketch, serialised.
    latency         BLOB    NOT NULL,
    callers         BLOB    NOT NULL,
    PRIMARY KEY (dimension, granularity, public, bucket, key)
) WITHOUT ROWID;
-- One key's series (a model's, a creator's) without scanning its neighbours.
CREATE INDEX usage_rollups_by_key ON usage_rollups (dimension, key, granularity, bucket);
