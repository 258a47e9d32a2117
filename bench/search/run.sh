#!/usr/bin/env bash
# The search benchmark on PostgreSQL (issue 16): seeds 1,000,000 messages in a fresh
# database, builds the search index (time and size), then with pgbench at a fixed rate runs
# searchMessages' transaction for a selective term (1,000 matches) and a common term
# (200,000 matches), as an admin and as a one-inbox principal, and recordMessage's
# transaction without search, with the search text but no GIN index, and with both.
# Usage: bash bench/search/run.sh [postgres://postgres@127.0.0.1:5432] [parley binary]
# Env: RATE (100), DURATION (30 s), NCONV (10000), PER (100). Drops its database at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
server=${1:-postgres://postgres@127.0.0.1:5432}
parley=${2:-$here/../../target/debug/parley}
rate=${RATE:-100}
duration=${DURATION:-30}
nconv=${NCONV:-10000}
per=${PER:-100}
db=parley_bench_search_$$
url=$server/$db
logs=$(mktemp -d)
trap 'psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; rm -rf "$logs"' EXIT

psql "$server/postgres" -qc "CREATE DATABASE $db"
"$parley" --database-url "$url" migrate up >/dev/null
echo "## seed: $nconv conversations x $per messages"
psql "$url" -q -v ON_ERROR_STOP=1 -v nconv="$nconv" -v per="$per" -f "$here/seed.sql"

# p50/p95/p99 (ms) from pgbench's per-transaction log, from each transaction's scheduled
# start (latency + schedule lag), as bench/src/pgbench.rs reads it.
percentiles() {
  python3 - "$@" <<'PY'
import sys, glob
lat = []
for f in glob.glob(sys.argv[1] + '.[0-9]*'):
    for line in open(f):
        p = line.split()
        if len(p) >= 7 and p[2] != 'skipped':
            lat.append((int(p[2]) + int(p[6])) / 1000.0)
lat.sort()
q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
print(f"n={len(lat)} p50={q(0.50):.2f} ms p95={q(0.95):.2f} ms p99={q(0.99):.2f} ms")
PY
}

run() { # name script vars...
  local name=$1 script=$2; shift 2
  rm -f "$logs/$name".[0-9]*
  (cd "$logs" && pgbench -n -c 4 -j 2 -R "$rate" -T "$duration" -l --log-prefix="$logs/$name" \
      -D nconv="$nconv" "$@" -f "$script" "$url" >/dev/null 2>"$logs/$name.err") \
    || { cat "$logs/$name.err"; exit 1; }
  printf '%-40s %s\n' "$name" "$(percentiles "$logs/$name")"
}

# One script per (term, viewer), as search_messages runs it (see search.sql.in).
# ONLY=search skips the record runs.
cols='"messages"."id", "messages"."conversation_id", "messages"."channel", "messages"."kind", "messages"."direction", "messages"."from_raw", "messages"."to_raw", "messages"."from_address", "messages"."to_addresses", "messages"."body", "messages"."attachments", "messages"."provider_message_id", "messages"."sent_at", "messages"."recorded_at", "messages"."assignment_error", "messages"."sequence"'
script() { # name term viewer
  local matches visible="" textvisible="" page
  matches=$(psql "$url" -Atc "SELECT count(*) FROM (SELECT 1 FROM message_texts WHERE tsv @@ to_tsquery('simple', '( ''$2'' )') LIMIT 2000) s")
  if [ "$3" = inbox ]; then
    visible="AND EXISTS (SELECT 1 FROM \"conversation_participants\" AS \"visible_participant\" WHERE \"visible_participant\".\"conversation_id\" = \"messages\".\"conversation_id\" AND \"visible_participant\".\"address\" IN ('u' || :uid || '@bench.example'))"
    textvisible=${visible//\"messages\"/\"message_texts\"}
  fi
  if [ "$matches" -ge 2000 ]; then
    page="SELECT $cols FROM \"messages\" WHERE \"messages\".\"id\" IN (SELECT \"message_id\" FROM \"message_texts\" WHERE tsv @@ to_tsquery('simple', '( ''$2'' )')) AND \"messages\".\"conversation_id\" IS NOT NULL $visible ORDER BY \"messages\".\"sent_at\" DESC, \"messages\".\"id\" DESC LIMIT 21;"
  else
    # The admin's newest 21 stand for the page's rows (a one-inbox page has fewer).
    local newest
    newest=$(psql "$url" -Atc "SELECT string_agg(message_id::text, ',') FROM (SELECT message_id FROM message_texts WHERE tsv @@ to_tsquery('simple', '( ''$2'' )') AND conversation_id IS NOT NULL ORDER BY sent_at DESC, message_id DESC LIMIT 21) s")
    page="SELECT $cols FROM \"messages\" WHERE \"messages\".\"id\" IN ($newest);"
  fi
  python3 - "$here/search.sql.in" "$logs/$1.sql" "$2" "$page" "$textvisible" <<'PY'
import sys
src, dst, term, page, visible = sys.argv[1:]
text = open(src).read().replace('@TERM@', term).replace('@PAGE@', page)
open(dst, 'w').write(text.replace('@VISIBLE@', visible))
PY
}

echo "## at $rate transactions/s for $duration s each (4 clients)"
for term in zephyr order; do
  for viewer in admin inbox; do
    name=search-$term-$viewer
    script "$name" "$term" "$viewer"
    run "$name" "$logs/$name.sql"
  done
done
# The rare word's admin page as the service issued it before message_texts kept the page
# keys (the 2,000 ids, their positions from messages, the page's rows), in the same run.
ids=$(psql "$url" -Atc "SELECT string_agg(message_id::text, ',') FROM (SELECT message_id FROM message_texts WHERE tsv @@ to_tsquery('simple', '( ''zephyr'' )') LIMIT 2000) s")
newest=$(psql "$url" -Atc "SELECT string_agg(id::text, ',') FROM (SELECT id FROM messages WHERE id IN ($ids) ORDER BY sent_at DESC, id DESC LIMIT 21) s")
cat >"$logs/search-zephyr-admin-before.sql" <<SQL
BEGIN;
SET LOCAL statement_timeout = 2000;
SELECT "message_id" FROM "message_texts" WHERE tsv @@ to_tsquery('simple', '( ''zephyr'' )') LIMIT 2000;
SELECT "messages"."sent_at", "messages"."id" FROM "messages" WHERE "messages"."conversation_id" IS NOT NULL AND "messages"."id" IN ($ids);
SELECT $cols FROM "messages" WHERE "messages"."id" IN ($newest);
COMMIT;
SQL
run search-zephyr-admin-before "$logs/search-zephyr-admin-before.sql"
[ "${ONLY:-}" = search ] && exit 0
rec=(-D nconv="$nconv" -D new_pct=5 -D hot=0)
run record-without-search "$here/../pgbench/record.sql" "${rec[@]}"
psql "$url" -qc "DROP INDEX message_texts_tsv"
run record-text-no-gin "$here/record_search.sql" "${rec[@]}"
psql "$url" -qc "CREATE INDEX message_texts_tsv ON message_texts USING GIN (tsv)"
run record-with-gin "$here/record_search.sql" "${rec[@]}"
run record-without-search-again "$here/../pgbench/record.sql" "${rec[@]}"
