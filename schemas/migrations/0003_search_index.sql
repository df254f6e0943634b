-- Full-text search over prompts and outputs: an inverted `text` index (ClickHouse >= 26.2; the
-- embedded chDB is 26.9). A search is `hasAllTokens(<the same expression>, tokens(lowerUTF8(q),
-- 'splitByNonAlpha'))`: the index prunes granules and answers the condition by itself (no body
-- column is read). Bloom-filter indexes (ngrambf/tokenbf) were measured to skip almost nothing
-- on bodies this size (see shared reference clickhouse-schemas.md §4).
-- The JSON columns are indexed with their escapes (\n, \", \uXXXX) blanked, so a word after a
-- newline is its own token, and without inline base64 data (images would flood the dictionary).
-- `\x3B` is ';' (the migration runner splits statements on ';').
-- The expression is repeated verbatim in inspector/queries.py (SEARCH_EXPR): keep both in step.
ALTER TABLE captures ADD INDEX IF NOT EXISTS idx_search
    lowerUTF8(concat(system_prompt, ' ', replaceRegexpAll(concat(messages, ' ', output_tool_calls), '\\\\(?:u[0-9a-fA-F]{4}|.)|data:[a-zA-Z0-9.+/-]+\x3Bbase64,[A-Za-z0-9+/=]*', ' '), ' ', output_text))
    TYPE text(tokenizer = splitByNonAlpha);
-- Existing parts get the index too (a mutation; new parts build it on insert).
ALTER TABLE captures MATERIALIZE INDEX idx_search;
