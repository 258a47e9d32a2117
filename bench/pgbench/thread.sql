-- conversation(id) { messages(last: 50) { nodes { ... } } }: the conversation by id and its
-- last page (one row past it probes hasPreviousPage), in one statement: the page left-joined
-- to the lookup (service::query::conversation_with_thread; the lookup reads every column
-- but `participants`).
-- Variables from the runner: -D nconv=N.
\set cid random(1, :nconv)
SELECT c.*, m.* FROM (SELECT id, channel, participants_key, message_count, first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at, last_sequence FROM conversations WHERE id = :cid LIMIT 1) AS c LEFT JOIN (SELECT * FROM messages WHERE conversation_id = :cid ORDER BY sent_at DESC, id DESC LIMIT 51) AS m ON 1 = 1;
