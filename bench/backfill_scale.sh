#!/usr/bin/env bash
# Backfill at scale on PostgreSQL: seeds MESSAGES legacy (unassigned) messages over PAIRS
# participant pairs with set-based SQL, then times `parley backfill` and `parley verify`.
#   bench/backfill_scale.sh [MESSAGES] [PAIRS]        (default 1000000 100000)
# Needs PostgreSQL at $ADMIN_URL (default postgres://postgres@127.0.0.1:5432/test) and a
# release build (cargo build --release -p parley-api).
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-1000000}
pairs=${2:-100000}
admin=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
db=parley_backfill_scale
url="${admin%/*}/$db"
bin=${PARLEY_BIN:-target/release/parley}
[ -x "$bin" ] || cargo build --release -p parley-api

psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
"$bin" --database-url "$url" migrate up >/dev/null

seed_start=$(date +%s.%N)
psql "$url" -q <<SQL
INSERT INTO messages (conversation_id, channel, kind, direction, from_raw, to_raw, body,
                      attachments, provider_message_id, sent_at, recorded_at)
SELECT NULL, 'SMS', 'SMS',
       CASE WHEN g % 2 = 0 THEN 'OUTBOUND' ELSE 'INBOUND' END,
       CASE WHEN g % 2 = 0 THEN '+12016661234' ELSE '(804) ' || (2000000 + g % $pairs) END,
       jsonb_build_array(CASE WHEN g % 2 = 0 THEN '804' || (2000000 + g % $pairs) ELSE '201-666-1234' END),
       'legacy message ' || g, '[]'::jsonb, 'legacy-' || g,
       timestamptz '2024-01-01' + (g || ' seconds')::interval, now()
FROM generate_series(1, $messages) AS g;
ANALYZE messages;
SQL
seed_end=$(date +%s.%N)
echo "seeded $messages legacy messages over $pairs pairs in $(echo "$seed_end - $seed_start" | bc) s"

start=$(date +%s.%N)
"$bin" --database-url "$url" --log-format json backfill --batch-size "${BATCH:-2000}" 2>/dev/null
end=$(date +%s.%N)
secs=$(echo "$end - $start" | bc)
echo "backfill: $messages messages in $secs s = $(echo "$messages / $secs" | bc) messages/s"

start=$(date +%s.%N)
"$bin" --database-url "$url" --log-format json verify 2>/dev/null | tail -n 1
end=$(date +%s.%N)
echo "verify: $(echo "$end - $start" | bc) s"

start=$(date +%s.%N)
"$bin" --database-url "$url" --log-format json backfill 2>/dev/null
end=$(date +%s.%N)
echo "second backfill (nothing to do): $(echo "$end - $start" | bc) s"
