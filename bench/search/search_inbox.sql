-- search.sql for a principal with one customer inbox (the visibility rule's correlated
-- EXISTS): the customer's conversation only, picked at random per transaction.
\set uid random(1, :nconv)
BEGIN;
SET LOCAL statement_timeout = 2000;
SELECT "messages"."id", "messages"."conversation_id", "messages"."channel", "messages"."kind", "messages"."direction", "messages"."from_raw", "messages"."to_raw", "messages"."from_address", "messages"."to_addresses", "messages"."body", "messages"."attachments", "messages"."provider_message_id", "messages"."sent_at", "messages"."recorded_at", "messages"."assignment_error" FROM "messages" WHERE "messages"."conversation_id" IS NOT NULL AND "messages"."id" IN (SELECT "message_id" FROM "message_texts" WHERE tsv @@ to_tsquery('simple', '( ' || quote_literal(:term) || ' )')) AND EXISTS (SELECT 1 FROM "conversation_participants" AS "visible_participant" WHERE "visible_participant"."conversation_id" = "messages"."conversation_id" AND "visible_participant"."address" IN ('u' || :uid || '@bench.example')) ORDER BY "messages"."sent_at" DESC, "messages"."id" DESC LIMIT 21;
COMMIT;
