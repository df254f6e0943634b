-- Merge column by column (ClickHouse's vertical merge), whatever the part size. By default a
-- merge of parts under 131,072 rows reads and writes every column at once: a read and a write
-- buffer per column stream, for about 60 columns here, so merges briefly took 100-200 MiB
-- above the steady state of the embedded engine. Measured (c=64 for 35 s, peak RSS of the
-- proxy process over 4 runs): 441-499 MiB before, 392-401 MiB after. Merges spend a little
-- more CPU, off the request path.
ALTER TABLE captures MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1;
ALTER TABLE otel_traces MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1;
