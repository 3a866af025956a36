-- A model's life after its first upload: owners unlist or delete models and
-- yank versions; the operator takes models down and restores them. Nothing
-- here removes a row: history, receipts and usage keep naming what they
-- named.

-- 0: hidden from listings and search (still reachable by its name).
ALTER TABLE models ADD COLUMN listed INTEGER NOT NULL DEFAULT 1 CHECK (listed IN (0, 1));
-- Set once the owner deleted the model: it answers 410 from then on and its
-- name is not given out again.
ALTER TABLE models ADD COLUMN deleted_at INTEGER;
-- Set while the operator has taken the model down, with the reason.
ALTER TABLE models ADD COLUMN takedown_at INTEGER;
ALTER TABLE models ADD COLUMN takedown_reason TEXT;

-- Set while the owner has yanked the version: its calls answer 410 and
-- "latest" skips it.
ALTER TABLE model_versions ADD COLUMN yanked_at INTEGER;
ALTER TABLE model_versions ADD COLUMN yank_reason TEXT;
