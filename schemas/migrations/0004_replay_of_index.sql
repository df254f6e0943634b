-- The capture page lists a capture's replays: index replay_of so that lookup prunes
-- instead of scanning the column.
ALTER TABLE captures ADD INDEX IF NOT EXISTS idx_replay_of replay_of TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE captures MATERIALIZE INDEX idx_replay_of;
