-- The dashboard: a model's page breaks its demand down by app, read from the
-- events of one model over a window.

CREATE INDEX usage_events_by_model ON usage_events (model_id, created_at);
