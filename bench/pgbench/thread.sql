-- conversation(id) { messages(last: 50) { nodes { ... } } }: the conversation by id (read
-- directly: service::query::find_conversation), then its last page, loaded ahead from the
-- look-ahead (list_messages_batch of one).
-- Variables from the runner: -D nconv=N.
\set cid random(1, :nconv)
SELECT * FROM conversations WHERE id = :cid LIMIT 1;
SELECT * FROM (SELECT * FROM messages WHERE conversation_id = :cid ORDER BY sent_at DESC, id DESC LIMIT 51) AS page0;
