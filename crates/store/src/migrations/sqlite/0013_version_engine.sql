-- The engine that validated each version (tract, or onnxruntime): a market
-- may change engines, and a version says which one accepted it.
ALTER TABLE model_versions ADD COLUMN engine TEXT NOT NULL DEFAULT 'tract';
