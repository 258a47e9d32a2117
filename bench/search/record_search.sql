-- recordMessage's statements on PostgreSQL with search (the message_texts row, with its page keys, in the same WITH), as service/src/record.rs issues them (EMAIL
-- channel, one recipient, a provider id): BEGIN, conversation upsert, participants when
-- created, the message insert and conversation update in one statement, COMMIT. A replayed provider id is caught by the
-- message insert's ON CONFLICT inside the transaction; there is no read before it.
-- Variables from the runner: -D nconv=N (seeded conversations, customers
-- u1..uN@bench.example) -D new_pct=P (share of new conversations) -D hot=K (0, or only
-- conversations 1..K).
-- Differences to the server, all in the ceiling's favour: timestamps are now() instead of
-- bound values, and addresses are concatenated in SQL from a bound number.
\set roll random(1, 100)
\set pid random(1, 9000000000000000)
\if :hot > 0
\set uid random(1, :hot)
\elif :roll <= :new_pct
\set uid random(1000000000, 9000000000000000)
\else
\set uid random(1, :nconv)
\endif
BEGIN;
INSERT INTO conversations (channel, participants_key, participants, message_count, first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at) VALUES ('EMAIL', 'agent@parley.example' || chr(31) || 'u' || :uid || '@bench.example', jsonb_build_array('agent@parley.example', 'u' || :uid || '@bench.example'), 0, now(), now(), NULL, '', now(), now()) ON CONFLICT (channel, participants_key) DO UPDATE SET updated_at = excluded.updated_at RETURNING id AS conv_id, message_count AS conv_count \gset
\if :conv_count = 0
INSERT INTO conversation_participants (address, conversation_id) VALUES ('agent@parley.example', :conv_id), ('u' || :uid || '@bench.example', :conv_id) ON CONFLICT DO NOTHING;
\endif
WITH m AS (INSERT INTO messages (conversation_id, channel, kind, direction, from_raw, to_raw, from_address, to_addresses, body, attachments, provider_message_id, sent_at, recorded_at, assignment_error) VALUES (:conv_id, 'EMAIL', 'EMAIL', 'INBOUND', 'u' || :uid || '@bench.example', '["agent@parley.example"]', 'u' || :uid || '@bench.example', '["agent@parley.example"]', 'Bench pgbench message ' || :pid, '[]', 'pg-' || :client_id || '-' || :pid, now(), now(), NULL) ON CONFLICT (channel, provider_message_id) DO NOTHING RETURNING *), t AS (INSERT INTO message_texts (message_id, text, conversation_id, channel, direction, sent_at) SELECT m.id, 'bench pgbench message ' || :pid, m.conversation_id, m.channel, m.direction, m.sent_at FROM m) UPDATE conversations SET message_count = message_count + 1, first_message_at = CASE WHEN message_count = 0 OR m.sent_at < first_message_at THEN m.sent_at ELSE first_message_at END, last_message_at = CASE WHEN message_count = 0 OR m.sent_at > last_message_at THEN m.sent_at ELSE last_message_at END, last_message_id = CASE WHEN (last_message_id IS NULL OR m.sent_at > last_message_at OR (m.sent_at = last_message_at AND m.id > last_message_id)) THEN m.id ELSE last_message_id END, snippet = CASE WHEN (last_message_id IS NULL OR m.sent_at > last_message_at OR (m.sent_at = last_message_at AND m.id > last_message_id)) THEN 'Bench pgbench message' ELSE snippet END, updated_at = m.recorded_at FROM m WHERE conversations.id = :conv_id RETURNING conversations.*, m.id AS m_id, m.conversation_id AS m_conversation_id, m.channel AS m_channel, m.kind AS m_kind, m.direction AS m_direction, m.from_raw AS m_from_raw, m.to_raw AS m_to_raw, m.from_address AS m_from_address, m.to_addresses AS m_to_addresses, m.body AS m_body, m.attachments AS m_attachments, m.provider_message_id AS m_provider_message_id, m.sent_at AS m_sent_at, m.recorded_at AS m_recorded_at, m.assignment_error AS m_assignment_error;
COMMIT;
