#!/usr/bin/env python3
"""Timed latency and server CPU per request of the conversations list without and with the
messaging state, on one server, the two shapes alternating in rounds (ABBA...) so that the
machine's other load falls on both alike.

The database must be seeded as `bench/state-callgrind.sh` seeds it (keep it with KEEP=1 for
SQLite, or pass a PostgreSQL database as its 4th argument and do not drop it), then:

    bench/state-latency.py --parley-bin target/release/parley \
        --database-url 'sqlite:///tmp/tmp.XXXX/parley.sqlite?mode=rwc' --requests 400 --rounds 6

Each round sends --requests requests of one shape, one at a time over one keep-alive
connection (latency is the server's, not a queue's); server CPU is the server process's
utime + stime (/proc/PID/stat, every thread) over the round, divided by the requests.
Prints one JSON line per shape: p50, p95, p99 in ms and CPU µs per request, over all rounds.
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time

LIST = "{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } } }"
STATE = (
    "{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt "
    'viewerState(inbox: "agent@parley.example") { readUpTo unreadCount archived } } } }'
)
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / TICK


def send(conn, body):
    conn.request("POST", "/graphql", body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200 or b'"errors"' in data:
        sys.exit(f"request failed: HTTP {resp.status}: {data[:300]!r}")


def pct(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(round(p / 100 * (len(sorted_ms) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parley-bin", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--requests", type=int, default=400, help="per round")
    ap.add_argument("--rounds", type=int, default=6, help="per shape")
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [args.parley_bin, "--database-url", args.database_url, "--log-format", "json",
         "serve", "--bind", f"127.0.0.1:{port}", "--no-migrate"],
        env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit("server did not start: " + server.stderr.read().decode()[-2000:])
                time.sleep(0.2)
        bodies = {"list": json.dumps({"query": LIST}), "state": json.dumps({"query": STATE})}
        for _ in range(args.warmup):
            for b in bodies.values():
                send(conn, b)
        lat = {k: [] for k in bodies}
        cpu = {k: 0.0 for k in bodies}
        for r in range(args.rounds * 2):
            # ABBA ABBA ...: each shape runs first as often as second.
            shape = ["list", "state", "state", "list"][r % 4]
            body = bodies[shape]
            c0 = cpu_seconds(server.pid)
            for _ in range(args.requests):
                t0 = time.perf_counter()
                send(conn, body)
                lat[shape].append((time.perf_counter() - t0) * 1000)
            cpu[shape] += cpu_seconds(server.pid) - c0
    finally:
        server.terminate()
        server.wait(timeout=60)
    for shape, ms in lat.items():
        ms.sort()
        print(json.dumps({
            "shape": shape, "requests": len(ms),
            "p50_ms": round(pct(ms, 50), 3), "p95_ms": round(pct(ms, 95), 3),
            "p99_ms": round(pct(ms, 99), 3),
            "cpu_us_per_request": round(cpu[shape] / len(ms) * 1e6, 1),
        }))


if __name__ == "__main__":
    main()
