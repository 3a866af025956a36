-- The node a hold belongs to: a grant, a slice of a caller's balance that a
-- serving node reserves and spends call by call. NULL for holds from before.
ALTER TABLE holds ADD COLUMN node TEXT;
