-- Seeds :nconv EMAIL conversations (the agent and one customer each) of :per messages each
-- (1,000,000 messages at 10,000 x 100), one message a second, alternating inbound and
-- outbound. Bodies are lowercase words joined by single spaces (so a body's search text,
-- service::search::search_text, is the body itself): "message N", twelve words of a
-- 5,003-word vocabulary, "order" in every fifth message (200,000: the common term) and
-- "zephyr" in one message of a thousand (1,000: the selective term).
\timing on
INSERT INTO conversations (id, channel, participants_key, participants, message_count,
    first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at)
SELECT c, 'EMAIL', 'agent@parley.example' || chr(31) || 'u' || c || '@bench.example',
    jsonb_build_array('agent@parley.example', 'u' || c || '@bench.example'), :per,
    timestamptz '2026-01-01 00:00:00+00' + ((c - 1) * :per + 1) * interval '1 second',
    timestamptz '2026-01-01 00:00:00+00' + (c * :per) * interval '1 second',
    c * :per, '', now(), now()
FROM generate_series(1, :nconv) c;
INSERT INTO conversation_participants (address, conversation_id)
SELECT a, c FROM generate_series(1, :nconv) c,
    LATERAL (VALUES ('agent@parley.example'), ('u' || c || '@bench.example')) v(a);
INSERT INTO messages (id, conversation_id, channel, kind, direction, from_raw, to_raw,
    from_address, to_addresses, body, attachments, provider_message_id, sent_at, recorded_at)
SELECT i, (i - 1) / :per + 1, 'EMAIL', 'EMAIL',
    CASE WHEN i % 2 = 0 THEN 'INBOUND' ELSE 'OUTBOUND' END,
    'agent@parley.example', '["u1@bench.example"]', 'agent@parley.example',
    '["u1@bench.example"]',
    'message ' || i
      || (SELECT string_agg(' w' || ((i::bigint * 7919 + k * 104729) % 5003), '') FROM generate_series(1, 12) k)
      || CASE WHEN i % 5 = 0 THEN ' order' ELSE '' END
      || CASE WHEN i % 1000 = 7 THEN ' zephyr' ELSE '' END,
    '[]', NULL,
    timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', now()
FROM generate_series(1, :nconv * :per) i;
SELECT setval(pg_get_serial_sequence('conversations', 'id'), :nconv);
SELECT setval(pg_get_serial_sequence('messages', 'id'), :nconv * :per);
-- The search index: texts without the GIN index, then the index built once (its build time).
DROP INDEX message_texts_tsv;
\echo message_texts (text, generated tsvector, page keys):
INSERT INTO message_texts (message_id, text, conversation_id, channel, direction, sent_at)
    SELECT id, body, conversation_id, channel, direction, sent_at FROM messages;
\echo GIN build:
CREATE INDEX message_texts_tsv ON message_texts USING GIN (tsv);
\timing off
VACUUM ANALYZE conversations, conversation_participants, messages, message_texts;
SELECT pg_size_pretty(pg_relation_size('message_texts_tsv')) AS gin_size,
    pg_size_pretty(pg_table_size('message_texts')) AS message_texts_size,
    pg_size_pretty(pg_relation_size('messages_sent_at_id')) AS sent_at_index_size,
    pg_size_pretty(pg_table_size('messages')) AS messages_size,
    (SELECT count(*) FROM message_texts WHERE tsv @@ to_tsquery('simple', 'order')) AS common_matches,
    (SELECT count(*) FROM message_texts WHERE tsv @@ to_tsquery('simple', 'zephyr')) AS selective_matches;
