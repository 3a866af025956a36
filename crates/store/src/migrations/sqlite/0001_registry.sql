-- Accounts, API keys, the model registry and its content-addressed blobs.
-- Times are Unix milliseconds (UTC). Amounts are integer minor units.

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    is_operator INTEGER NOT NULL DEFAULT 0 CHECK (is_operator IN (0, 1)),
    created_at  INTEGER NOT NULL
);

-- Only a hash of each key is kept; key_id is the key's public part.
CREATE TABLE api_keys (
    key_id     TEXT    PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    key_hash   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX api_keys_by_account ON api_keys (account_id);

-- One row per distinct file: a model uploaded twice is stored once.
CREATE TABLE blobs (
    sha256     TEXT    PRIMARY KEY,
    size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
    created_at INTEGER NOT NULL
);

CREATE TABLE models (
    id                  INTEGER PRIMARY KEY,
    owner_id            INTEGER NOT NULL REFERENCES accounts (id),
    name                TEXT    NOT NULL,
    description         TEXT    NOT NULL,
    task                TEXT    NOT NULL,
    license             TEXT    NOT NULL,
    -- Tags are well-formed (no commas), so a comma-joined list is exact.
    tags                TEXT    NOT NULL,
    visibility          TEXT    NOT NULL CHECK (visibility IN ('public', 'private')),
    price_per_inference INTEGER NOT NULL CHECK (price_per_inference >= 0),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE INDEX models_by_name ON models (name, id);

-- Versions are numbered 1, 2, … per model and never change once written.
CREATE TABLE model_versions (
    model_id    INTEGER NOT NULL REFERENCES models (id),
    version     INTEGER NOT NULL CHECK (version >= 1),
    blob_sha256 TEXT    NOT NULL REFERENCES blobs (sha256),
    -- The inputs and outputs tract found, as JSON (see signature.rs).
    signature   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (model_id, version)
);
CREATE INDEX model_versions_by_blob ON model_versions (blob_sha256);
