#!/usr/bin/env bash
# Server instructions per request (valgrind's callgrind), authentication off vs on: the same
# binary and the same SQLite database (N email conversations of agent@parley.example, two
# messages each, loaded with `parley import`), in one run. "on" sends an HS256 token whose
# only inbox is agent@parley.example, so every conversation is visible through the
# visibility rule (not the admin shortcut). Instrumentation is on only while the measured
# requests run (list: conversations(first: 50); thread: one conversation's messages(last: 50)).
# Usage: bench/auth-callgrind.sh target/release/parley [N_CONVERSATIONS] [N_REQUESTS]
set -euo pipefail
BIN=$(realpath "$1"); N=${2:-2000}; R=${3:-20}
W=$(mktemp -d)
DB="sqlite://$W/parley.sqlite?mode=rwc"
python3 - "$N" > "$W/seed.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1])
for i in range(n):
    for k, d in enumerate(["INBOUND", "OUTBOUND"]):
        a, b = ("u%d@bench.example" % i, "agent@parley.example")
        f, t = (a, b) if d == "INBOUND" else (b, a)
        print(json.dumps({"channel": "EMAIL", "direction": d, "from": f, "to": [t],
            "body": "message %d of conversation %d" % (k, i),
            "sentAt": "2026-01-01T%02d:%02d:%02dZ" % ((i // 3600) % 24, (i // 60) % 60, i % 60 if k == 0 else (i % 60))}))
PY
"$BIN" --database-url "$DB" migrate up > "$W/migrate.txt" 2>&1
"$BIN" --database-url "$DB" import "$W/seed.jsonl" > "$W/import.txt" 2>&1
openssl rand -hex 32 > "$W/jwt.secret"
TOKEN=$("$BIN" token --jwt-secret-file "$W/jwt.secret" --sub bench --scope conversations:read --inbox agent@parley.example --ttl 1d)
LIST='{"query":"{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } } }"}'
for mode in off on; do
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  EXTRA=(); AUTH=()
  if [ $mode = on ]; then EXTRA=(--jwt-secret-file "$W/jwt.secret" --rate-limit 0 --ip-rate-limit 0); AUTH=(-H "authorization: Bearer $TOKEN"); fi
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg.$mode.%p" \
    "$BIN" --database-url "$DB" --log-format json serve --bind 127.0.0.1:$PORT --no-migrate "${EXTRA[@]}" \
    > "$W/server.$mode.log" 2>&1 &
  VPID=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.5; done
  GID=$(curl -sf "http://127.0.0.1:$PORT/graphql" "${AUTH[@]}" -H 'content-type: application/json' -d '{"query":"{ conversations(first: 1) { nodes { id } } }"}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["data"]["conversations"]["nodes"][0]["id"])')
  THREAD="{\"query\":\"query T(\$id: ID!) { conversation(id: \$id) { messages(last: 50) { nodes { id body sentAt direction } } } }\",\"variables\":{\"id\":\"$GID\"}}"
  for _ in 1 2 3; do
    curl -sf "http://127.0.0.1:$PORT/graphql" "${AUTH[@]}" -H 'content-type: application/json' -d "$LIST" > /dev/null
    curl -sf "http://127.0.0.1:$PORT/graphql" "${AUTH[@]}" -H 'content-type: application/json' -d "$THREAD" > /dev/null
  done
  # Check the answers are whole (50 conversations; the thread's 2 messages).
  curl -sf "http://127.0.0.1:$PORT/graphql" "${AUTH[@]}" -H 'content-type: application/json' -d "$LIST" | python3 -c 'import sys,json; d=json.load(sys.stdin); assert len(d["data"]["conversations"]["nodes"])==50, d'
  curl -sf "http://127.0.0.1:$PORT/graphql" "${AUTH[@]}" -H 'content-type: application/json' -d "$THREAD" | python3 -c 'import sys,json; d=json.load(sys.stdin); assert len(d["data"]["conversation"]["messages"]["nodes"])==2, d'
  for scen in list thread; do
    if [ $scen = list ]; then BODY=$LIST; else BODY=$THREAD; fi
    callgrind_control -z $VPID > /dev/null; callgrind_control -i on $VPID > /dev/null
    for _ in $(seq $R); do curl -sf "http://127.0.0.1:$PORT/graphql" "${AUTH[@]}" -H 'content-type: application/json' -d "$BODY" > /dev/null; done
    callgrind_control -i off $VPID > /dev/null; callgrind_control -d "$scen" $VPID > /dev/null
  done
  kill -TERM $VPID; wait $VPID || true
  for scen in list thread; do
    f=$(grep -l "^desc: Trigger: dump $scen\$" "$W"/cg.$mode.*)
    total=$(grep -m1 '^totals:' "$f" | awk '{print $2}')
    echo "$mode $scen requests=$R instructions_total=$total per_request=$((total / R))"
  done
done
rm -rf "$W"
