-- searchMessages' transaction on PostgreSQL, as service/src/query/search.rs issues it for
-- an admin (every conversation), no filter, first page of 20 (21 rows: the has-more
-- probe). -D "term='word'" picks the word (the tsquery text is SearchQuery::tsquery's for it).
BEGIN;
SET LOCAL statement_timeout = 2000;
SELECT "messages"."id", "messages"."conversation_id", "messages"."channel", "messages"."kind", "messages"."direction", "messages"."from_raw", "messages"."to_raw", "messages"."from_address", "messages"."to_addresses", "messages"."body", "messages"."attachments", "messages"."provider_message_id", "messages"."sent_at", "messages"."recorded_at", "messages"."assignment_error" FROM "messages" WHERE "messages"."conversation_id" IS NOT NULL AND "messages"."id" IN (SELECT "message_id" FROM "message_texts" WHERE tsv @@ to_tsquery('simple', '( ' || quote_literal(:term) || ' )')) ORDER BY "messages"."sent_at" DESC, "messages"."id" DESC LIMIT 21;
COMMIT;
