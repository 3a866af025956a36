-- No query reads usage events by time alone (a creator's, a model's and a
-- caller's views each have an index of their own), and every call's event
-- paid for this index's entry in the writer's batch.
DROP INDEX IF EXISTS usage_events_by_time;
