-- The one writer's epoch: every transaction that appends to the log, adds
-- transfers or merges usage rollups bumps it. A writer that finds the epoch
-- one past its own last commit knows nobody else wrote in between, and may
-- trust what it remembers (the log's right edge, the next transfer id, the
-- rollup rows it last wrote) instead of reading them again.

CREATE TABLE writer_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO writer_epoch (id, epoch) VALUES (1, 0);
