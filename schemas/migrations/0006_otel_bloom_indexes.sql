-- otel_traces: the exporter's bloom-filter indexes instead of its text indexes (the set the
-- OTel Collector's clickhouseexporter itself creates on ClickHouse before 26.2). The spans
-- carry whole prompts and completions as attribute values, and the `array` tokenizer makes each
-- whole `key=value` string a token: building those dictionaries on every insert and merge took
-- about 75 MiB of the embedded engine's peak memory (c=64 then streams, two rounds: peak RSS
-- 438-446 MiB with them, 366-377 without). Queries are unchanged: `has(SpanAttributeItems, ...)`
-- and `SpanAttributes['k'] = 'v'` read the same columns; the blooms skip granules for them.
-- The inspector reads `captures` and never these indexes.
ALTER TABLE otel_traces DROP INDEX IF EXISTS idx_trace_id;
ALTER TABLE otel_traces DROP INDEX IF EXISTS idx_res_attr_key;
ALTER TABLE otel_traces DROP INDEX IF EXISTS idx_res_attr_items;
ALTER TABLE otel_traces DROP INDEX IF EXISTS idx_span_attr_key;
ALTER TABLE otel_traces DROP INDEX IF EXISTS idx_span_attr_items;
ALTER TABLE otel_traces ADD INDEX IF NOT EXISTS idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE otel_traces ADD INDEX IF NOT EXISTS idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE otel_traces ADD INDEX IF NOT EXISTS idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE otel_traces ADD INDEX IF NOT EXISTS idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE otel_traces ADD INDEX IF NOT EXISTS idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1;
