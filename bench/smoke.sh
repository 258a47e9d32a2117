#!/usr/bin/env bash
# The benchmark runner's smoke mode, so it never rots: tiny scale, 1 s runs, on SQLite and
# (when TEST_DATABASE_URL is set) PostgreSQL with its pgbench ceilings; exits non-zero on any
# request error. Uses the debug server build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p parley-api --bin parley
args=(--smoke)
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  args+=(--database-url "$TEST_DATABASE_URL")
  # The ceilings need pgbench (Debian: postgresql-client / postgresql-15).
  command -v pgbench >/dev/null || { echo "pgbench not found: smoke runs without ceilings"; args+=(--no-pgbench); }
fi
cargo run -p parley-bench -- "${args[@]}"
