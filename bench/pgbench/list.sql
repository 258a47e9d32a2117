-- conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } }:
-- one statement (service/src/query.rs list_conversations; one extra row probes hasNextPage).
SELECT * FROM conversations WHERE 1 = 1 ORDER BY last_message_at DESC, id DESC LIMIT 51;
