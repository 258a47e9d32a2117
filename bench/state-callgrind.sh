#!/usr/bin/env bash
# Server instructions per request (valgrind's callgrind) of the conversations list without
# and with the messaging state in the selection, in one run of one server: the same binary
# and the same database, SQLite unless a URL is given (N email conversations of
# agent@parley.example, two messages each, loaded with `parley import`; half of the first
# page marked read). Development mode (admin).
# Instrumentation is on only while the measured requests run.
#   list:  conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } }
#   state: the same + viewerState(inbox: "agent@parley.example") { readUpTo unreadCount archived }
# Usage: bench/state-callgrind.sh target/release/parley [N_CONVERSATIONS] [N_REQUESTS] [DATABASE_URL]
# DATABASE_URL (optional): an empty PostgreSQL database to seed and serve from instead of a
# SQLite file (PostgreSQL runs in its own processes: the counts are the server's alone).
set -euo pipefail
BIN=$(realpath "$1"); N=${2:-2000}; R=${3:-20}
W=$(mktemp -d)
DB=${4:-"sqlite://$W/parley.sqlite?mode=rwc"}
python3 - "$N" > "$W/seed.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1])
for i in range(n):
    for k, d in enumerate(["OUTBOUND", "INBOUND"]):
        a, b = ("u%d@bench.example" % i, "agent@parley.example")
        f, t = (a, b) if d == "INBOUND" else (b, a)
        print(json.dumps({"channel": "EMAIL", "direction": d, "from": f, "to": [t],
            "body": "message %d of conversation %d" % (k, i),
            "sentAt": "2026-01-01T%02d:%02d:%02dZ" % ((i // 3600) % 24, (i // 60) % 60, i % 60)}))
PY
"$BIN" --database-url "$DB" migrate up > "$W/migrate.txt" 2>&1
"$BIN" --database-url "$DB" import "$W/seed.jsonl" > "$W/import.txt" 2>&1
LIST='{"query":"{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } } }"}'
STATE='{"query":"{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt viewerState(inbox: \"agent@parley.example\") { readUpTo unreadCount archived } } } }"}'
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg.%p" \
  "$BIN" --database-url "$DB" --log-format json serve --bind 127.0.0.1:$PORT --no-migrate \
  > "$W/server.log" 2>&1 &
VPID=$!
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.5; done
# Mark every other conversation of the first page read, so the state rows are a mix.
curl -sf "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' \
  -d '{"query":"{ conversations(first: 50) { nodes { id } } }"}' \
  | python3 -c 'import sys,json; [print(n["id"]) for n in json.load(sys.stdin)["data"]["conversations"]["nodes"][::2]]' \
  | while read -r id; do
    curl -sf "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' \
      -d "{\"query\":\"mutation { markConversationRead(conversationId: \\\"$id\\\", inbox: \\\"agent@parley.example\\\") { id } }\"}" > /dev/null
  done
for _ in 1 2 3; do
  curl -sf "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' -d "$LIST" > /dev/null
  curl -sf "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' -d "$STATE" > /dev/null
done
curl -sf "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' -d "$STATE" \
  | python3 -c 'import sys,json; d=json.load(sys.stdin); n=d["data"]["conversations"]["nodes"]; assert len(n)==50, d; assert sum(x["viewerState"]["unreadCount"] for x in n)==25, d'
for scen in list state; do
  if [ $scen = list ]; then BODY=$LIST; else BODY=$STATE; fi
  callgrind_control -z $VPID > /dev/null; callgrind_control -i on $VPID > /dev/null
  for _ in $(seq $R); do curl -sf "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' -d "$BODY" > /dev/null; done
  callgrind_control -i off $VPID > /dev/null; callgrind_control -d "$scen" $VPID > /dev/null
done
kill -TERM $VPID; wait $VPID || true
for scen in list state; do
  f=$(grep -l "^desc: Trigger: dump $scen\$" "$W"/cg.*)
  total=$(grep -m1 '^totals:' "$f" | awk '{print $2}')
  echo "$scen requests=$R instructions_total=$total per_request=$((total / R))"
done
[ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
