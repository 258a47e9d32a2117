-- conversation(id) { messages(last: 50) { nodes { ... } } }: the conversation by id
-- (ConversationLoader), then its last page (ThreadPageLoader, list_messages_batch of one).
-- Variables from the runner: -D nconv=N.
\set cid random(1, :nconv)
SELECT * FROM conversations WHERE id IN (:cid);
SELECT * FROM (SELECT * FROM messages WHERE conversation_id = :cid ORDER BY sent_at DESC, id DESC LIMIT 51) AS page0;
