-- Isolation: the CPU time each call used in its worker, and versions taken
-- out of service (quarantined) after crashing or exhausting their worker's
-- memory repeatedly, until the operator lifts it.

ALTER TABLE usage_events ADD COLUMN cpu_us INTEGER NOT NULL DEFAULT 0;

-- Set while the version is quarantined; its calls are refused (503).
ALTER TABLE model_versions ADD COLUMN quarantined_at INTEGER;
ALTER TABLE model_versions ADD COLUMN quarantine_reason TEXT;
