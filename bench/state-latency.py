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

With --before-bin, a second server (an earlier build) runs beside the first on the same
database, and a third shape, `before-list` (the list through that server), joins the
rotation: the list with state of this build against the list as it was, in one run.
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


def start(binary, database_url):
    """Starts `binary` serving `database_url`; returns (process, port)."""
    port = free_port()
    server = subprocess.Popen(
        [binary, "--database-url", database_url, "--log-format", "json",
         "serve", "--bind", f"127.0.0.1:{port}", "--no-migrate"],
        env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    return server, port


def connect(server, port):
    """A keep-alive connection to the server, once it answers /healthz."""
    deadline = time.time() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return conn
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                sys.exit("server did not start: " + server.stderr.read().decode()[-2000:])
            time.sleep(0.2)


def pct(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(round(p / 100 * (len(sorted_ms) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parley-bin", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--requests", type=int, default=400, help="per round")
    ap.add_argument("--rounds", type=int, default=6, help="per shape")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--before-bin", help="an earlier build, serving `before-list` beside")
    args = ap.parse_args()

    servers = {"new": start(args.parley_bin, args.database_url)}
    if args.before_bin:
        servers["before"] = start(args.before_bin, args.database_url)
    try:
        conns = {name: connect(*server) for name, server in servers.items()}
        # shape: (server, body)
        shapes = {"list": ("new", json.dumps({"query": LIST})),
                  "state": ("new", json.dumps({"query": STATE}))}
        if args.before_bin:
            shapes["before-list"] = ("before", json.dumps({"query": LIST}))
        for _ in range(args.warmup):
            for name, body in shapes.values():
                send(conns[name], body)
        lat = {k: [] for k in shapes}
        cpu = {k: 0.0 for k in shapes}
        names = list(shapes)
        # ABBA (or ABCCBA) ...: each shape runs in each position equally often.
        order = names + names[::-1]
        for r in range(args.rounds * len(names)):
            shape = order[r % len(order)]
            name, body = shapes[shape]
            pid = servers[name][0].pid
            c0 = cpu_seconds(pid)
            for _ in range(args.requests):
                t0 = time.perf_counter()
                send(conns[name], body)
                lat[shape].append((time.perf_counter() - t0) * 1000)
            cpu[shape] += cpu_seconds(pid) - c0
    finally:
        for server, _ in servers.values():
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
