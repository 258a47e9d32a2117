#!/usr/bin/env bash
# The frontend contract checks that need Node.js, against a real parley server:
#   - the GraphQL-over-HTTP audit (graphql-http's serverAudits): 0 errors, 0 warnings;
#   - relay/: a Relay fixture compiled by relay-compiler against schema.graphql;
#   - codegen/: graphql-codegen's client preset over schema.graphql, compiled by tsc --strict;
#   - apollo/: Apollo Client's relayStylePagination merging two pages from the server;
#   - browser/: CORS and cross-site writes in headless Chromium (Debian's chromium; skipped with a
#     note where it is missing, a failure when CI is set).
# Versions are pinned in package.json / package-lock.json (installed with `npm ci`).
# Without Node.js it prints a note and exits 0. PARLEY_BIN overrides the server binary.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "note: Node.js/npm not found; the frontend client checks (tests/clients) are SKIPPED"
  exit 0
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
root=$(cd ../.. && pwd)
parley=${PARLEY_BIN:-$root/target/debug/parley}
if [ -z "${PARLEY_BIN:-}" ]; then
  (cd "$root" && cargo build -q -p parley-api)
fi

passed=0
failed=0
check() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAIL: $name"
    failed=$((failed + 1))
  fi
}

# A server on a free port, on a throwaway database.
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
log=$(mktemp)
"$parley" --database-url sqlite::memory: serve --bind "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
url="http://127.0.0.1:$port/graphql"
wait_up() {
  for _ in $(seq 1 100); do
    if node -e "fetch('http://127.0.0.1:$1/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"; then
      return 0
    fi
    sleep 0.2
  done
}
wait_up "$port"

check "graphql-http audit" node audit/audit.mjs "$url"
check "relay-compiler" bash -c 'cd relay && rm -rf src/__generated__ && echo "{}" > persisted-queries.json && npx --no-install relay-compiler'
check "graphql-codegen client preset + tsc --strict" \
  bash -c 'cd codegen && npx --no-install graphql-codegen --config codegen.yml --silent && npx --no-install tsc -p .'
check "Apollo Client relayStylePagination" node apollo/pagination.mjs "$url"

# Trusted-documents mode, with the maps codegen and Relay just wrote (merged into one file).
trusted=$(mktemp)
node -e 'const fs=require("fs");const m={...JSON.parse(fs.readFileSync(process.argv[1])),...JSON.parse(fs.readFileSync(process.argv[2]))};fs.writeFileSync(process.argv[3],JSON.stringify(m))' \
  codegen/src/gql/persisted-documents.json relay/persisted-queries.json "$trusted"
tport=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
tlog=$(mktemp)
"$parley" --database-url sqlite::memory: serve --bind "127.0.0.1:$tport" \
  --trusted-documents "$trusted" >"$tlog" 2>&1 &
tserver=$!
trap 'kill "$server" "$tserver" 2>/dev/null || true; rm -f "$log" "$tlog" "$trusted"' EXIT
wait_up "$tport"
check "trusted documents from codegen and Relay" node codegen/trusted.mjs "http://127.0.0.1:$tport/graphql"

# Browser safety in headless Chromium: a server with a key and one allowed origin, and a
# development-mode server (every request that executes acts as admin) for the cross-site writes.
chromium_bin=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium_bin" ]; then
  free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
  secret=$(mktemp)
  node -e 'process.stdout.write(require("crypto").randomBytes(32).toString("hex"))' >"$secret"
  aport=$(free_port)
  dport=$(free_port)
  allowed_port=$(free_port)
  other_port=$(free_port)
  alog=$(mktemp)
  dlog=$(mktemp)
  "$parley" --database-url sqlite::memory: serve --bind "127.0.0.1:$aport" \
    --jwt-secret-file "$secret" --cors-origin "http://127.0.0.1:$allowed_port" >"$alog" 2>&1 &
  aserver=$!
  "$parley" --database-url sqlite::memory: serve --bind "127.0.0.1:$dport" \
    --cors-origin "http://127.0.0.1:$allowed_port" >"$dlog" 2>&1 &
  dserver=$!
  trap 'kill "$server" "$tserver" "$aserver" "$dserver" 2>/dev/null || true; rm -f "$log" "$tlog" "$trusted" "$secret" "$alog" "$dlog"' EXIT
  wait_up "$aport"
  wait_up "$dport"
  token=$("$parley" token --jwt-secret-file "$secret" --sub browser-check \
    --scope conversations:read --scope messages:write --inbox '+1 202 555 0199' --ttl 10m)
  CHROMIUM=$chromium_bin check "headless Chromium: CORS and cross-site writes" \
    node browser/browser.mjs "http://127.0.0.1:$aport/graphql" "$token" \
    "http://127.0.0.1:$dport/graphql" "$allowed_port" "$other_port"
  if grep -q '^type Subscription' ../../schema.graphql; then
    CHROMIUM=$chromium_bin check "headless Chromium: a graphql-ws subscription" \
      node browser/subscription.mjs "http://127.0.0.1:$aport/graphql" "$token" "$allowed_port" "$other_port"
  fi
elif [ -n "${CI:-}" ]; then
  echo "FAIL: $chromium_bin not found (CI is set; .ci/run installs Debian's chromium)"
  failed=$((failed + 1))
else
  echo "note: $chromium_bin not found; the headless-Chromium browser checks are SKIPPED (apt install chromium)"
fi

if [ "$failed" -ne 0 ]; then
  echo "--- server log"
  tail -n 50 "$log" "${tlog:-/dev/null}" "${alog:-/dev/null}" "${dlog:-/dev/null}"
fi
echo "client checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
