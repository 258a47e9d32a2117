#!/usr/bin/env python3
"""totalCount latency at scale: counters against counting rows, in one run.

Starts `parley serve` (with a throwaway JWT secret, so that a principal acting for one inbox
can be measured too) on an existing PostgreSQL database, and times sequential requests of:

  all            conversations { totalCount }                                  (counter)
  all-rows       the same with activeSince 1970 (same answer, counted by rows: the old path)
  address        conversations(filter: {participant: ADDRESS}) { totalCount }   (counter)
  address-rows   the same with activeSince 1970                                 (rows)
  inbox          conversations { totalCount } as a principal whose one inbox is ADDRESS (counter)
  recent-rows    with --recent-since T: activeSince T                          (rows)

With --exact, each view also asks for `totalCountIsExact` (servers with --max-count-rows) and
the table shows it; --max-count-rows passes that option to the server.

Seed a database first (bench/README in BENCHMARKS.md, "totalCount at 1M"). Usage:
  bench/total_count.py --parley-bin target/release/parley \
      --database-url postgres://postgres@127.0.0.1:5432/parley_counts_1m \
      --address +12025550100 --requests 200
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, query, token=None, exact=False):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps({"query": query}).encode(), headers)
    with urllib.request.urlopen(req, timeout=60) as res:
        body = json.loads(res.read())
    if "errors" in body:
        return "error: " + body["errors"][0].get("extensions", {}).get("code", "?")
    c = body["data"]["conversations"]
    if exact:
        return f'{c["totalCount"]}{"" if c["totalCountIsExact"] else "+"}'
    return c["totalCount"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parley-bin", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--address", required=True, help="an address in many conversations (a business number)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--exact", action="store_true", help="also ask for totalCountIsExact ('+' after a lower bound)")
    ap.add_argument("--max-count-rows", type=int, help="the server's --max-count-rows")
    ap.add_argument("--views", help="comma-separated views to run (default: all)")
    ap.add_argument("--recent-since", help="also time `recent-rows`: activeSince this instant (RFC 3339), "
                    "a filter that matches fewer rows than the count limit")
    args = ap.parse_args()

    secret = tempfile.NamedTemporaryFile("w", delete=False)
    secret.write(os.urandom(32).hex())
    secret.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    server = subprocess.Popen(
        [args.parley_bin, "--database-url", args.database_url, "serve", "--bind", f"127.0.0.1:{port}",
         "--jwt-secret-file", secret.name, "--rate-limit", "0"]
        + (["--max-count-rows", str(args.max_count_rows)] if args.max_count_rows else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def token(*extra):
            return subprocess.run(
                [args.parley_bin, "token", "--jwt-secret-file", secret.name, "--sub", "bench",
                 "--scope", "conversations:read", *extra, "--ttl", "1h"],
                check=True, capture_output=True, text=True).stdout.strip()

        admin = token("--scope", "admin", "--inbox", "*")
        inbox = token("--inbox", args.address)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        since = 'activeSince: "1970-01-01T00:00:00Z"'
        sel = "totalCount totalCountIsExact" if args.exact else "totalCount"
        views = [
            ("all", f"{{ conversations {{ {sel} }} }}", admin),
            ("all-rows", f"{{ conversations(filter: {{{since}}}) {{ {sel} }} }}", admin),
            ("address", f'{{ conversations(filter: {{participant: "{args.address}"}}) {{ {sel} }} }}', admin),
            ("address-rows",
             f'{{ conversations(filter: {{participant: "{args.address}", {since}}}) {{ {sel} }} }}', admin),
            ("inbox", f"{{ conversations {{ {sel} }} }}", inbox),
        ]
        if args.recent_since:
            views.append(("recent-rows",
                          f'{{ conversations(filter: {{activeSince: "{args.recent_since}"}}) {{ {sel} }} }}', admin))
        if args.views:
            wanted = args.views.split(",")
            views = [v for v in views if v[0] in wanted]
        print(f"{'view':<14}{'totalCount':>12}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
        for name, query, tok in views:
            rows = args.requests if not name.endswith("-rows") else max(20, args.requests // 10)
            for _ in range(args.warmup if not name.endswith("-rows") else 2):
                n = post(url, query, tok, args.exact)
            times = []
            for _ in range(rows):
                t = time.perf_counter()
                n = post(url, query, tok, args.exact)
                times.append((time.perf_counter() - t) * 1000)
                if isinstance(n, str) and n.startswith("error"):
                    break
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"{name:<14}{n:>12}{statistics.median(times):>10.2f}{p95:>10.2f}{times[-1]:>10.2f}")
    finally:
        server.terminate()
        server.wait()
        os.unlink(secret.name)


if __name__ == "__main__":
    main()
