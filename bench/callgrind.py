#!/usr/bin/env python3
"""Instructions per request of a parley server, counted by valgrind's callgrind.

A CPU figure that does not move with the machine's other load: the server runs under
`valgrind --tool=callgrind` with instrumentation off, is warmed up, then instrumentation is
switched on for exactly N requests of one shape (sent one at a time over one keep-alive connection),
and the instructions executed by every server thread while serving them are divided by N.

Seed a database first (e.g. `parley-bench ... --keep-db` prints its URL), then:

    bench/callgrind.py --parley-bin target/release/parley \
        --database-url postgres://postgres@127.0.0.1:5432/parley_bench_xyz \
        --shape list --requests 300

Shapes: list (conversations(first: 50) nodes), edges (the same with edges/cursor/pageInfo),
inbox (the list with each conversation's lastMessage: the page and the last messages, two
statements),
thread (conversation(id) messages(last: 50)), record (recordMessage into a random seeded
conversation, half inbound and half outbound, as `parley-bench --scenario record` sends them,
each with a fresh provider id: a database seeded by `parley-bench --keep-db`). Needs valgrind (callgrind_control) and Python 3.
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

LIST = "{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } } }"
EDGES = (
    "{ conversations(first: 50) { edges { cursor node { id channel participants messageCount "
    "snippet lastMessageAt } } pageInfo { endCursor hasNextPage } } }"
)
INBOX = (
    "{ conversations(first: 50) { nodes { participants snippet lastMessageAt "
    "lastMessage { body sentAt direction } } } }"
)
THREAD = (
    "query T($id: ID!) { conversation(id: $id) { messages(last: 50) "
    "{ nodes { id body sentAt direction } } } }"
)
RECORD = (
    "mutation R($i: RecordMessageInput!) { recordMessage(input: $i) { conversationCreated "
    "duplicate message { id } conversation { messageCount } } }"
)
AGENT = "agent@parley.example"
RUN = f"cg{os.getpid()}-{int(time.time())}"
SEQ = [0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body_for(shape, rng, conversations):
    if shape == "list":
        return json.dumps({"query": LIST})
    if shape == "edges":
        return json.dumps({"query": EDGES})
    if shape == "inbox":
        return json.dumps({"query": INBOX})
    cid = 1 + rng.randrange(conversations)
    if shape == "record":
        SEQ[0] += 1
        user = f"u{cid}@bench.example"
        inbound = rng.randrange(2) == 0
        return json.dumps({"query": RECORD, "variables": {"i": {
            "channel": "EMAIL", "direction": "INBOUND" if inbound else "OUTBOUND",
            "from": user if inbound else AGENT, "to": [AGENT if inbound else user],
            "body": f"Callgrind message {SEQ[0]} of run {RUN}",
            "providerMessageId": f"{RUN}-{SEQ[0]}"}}})
    gid = base64.urlsafe_b64encode(f"Conversation:{cid}".encode()).decode().rstrip("=")
    return json.dumps({"query": THREAD, "variables": {"id": gid}})


def send(conn, body):
    conn.request("POST", "/graphql", body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200 or b'"errors"' in data:
        sys.exit(f"request failed: HTTP {resp.status}: {data[:300]!r}")


SHAPES = ["list", "edges", "inbox", "thread", "record"]


def start_server(parley_bin, database_url, wrapper=(), server_env=()):
    """Starts `parley serve` (under `wrapper`, e.g. valgrind) on `database_url` and a free
    port, without migrating; returns (process, connection) once it answers `/healthz`, the
    connection kept alive for the requests to come."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url, PARLEY_BIND=f"127.0.0.1:{port}",
               RUST_LOG="warn", PARLEY_NO_MIGRATE="true")
    for kv in server_env:
        k, _, v = kv.partition("=")
        env[k] = v
    server = subprocess.Popen([*wrapper, parley_bin, "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return server, conn
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                sys.exit("server did not start: " + server.stderr.read().decode()[-2000:])
            time.sleep(0.5)


def callgrind_control(*args):
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parley-bin", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--shape", choices=SHAPES, default="list")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--conversations", type=int, default=10_000, help="ids 1..N for thread and record")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: install valgrind")

    out_dir = tempfile.mkdtemp(prefix="parley-callgrind-")
    out = os.path.join(out_dir, "callgrind.out")
    server, conn = start_server(
        args.parley_bin, args.database_url,
        wrapper=["valgrind", "--tool=callgrind", "--instr-atstart=no",
                 f"--callgrind-out-file={out}"],
        server_env=args.server_env)
    try:
        rng = random.Random(7)
        for _ in range(args.warmup):
            send(conn, body_for(args.shape, rng, args.conversations))
        callgrind_control("--instr=on", str(server.pid))
        for _ in range(args.requests):
            send(conn, body_for(args.shape, rng, args.conversations))
        callgrind_control("--instr=off", str(server.pid))
        callgrind_control("--dump", str(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=120)
    total = 0
    for name in os.listdir(out_dir):
        # Each dump holds the events since the one before; its `totals:` line (at the end)
        # is what it counted (the `summary:` line in its header may be 0).
        with open(os.path.join(out_dir, name)) as f:
            counted = [int(m.group(1)) for m in map(re.compile(r"totals:\s+(\d+)").match, f) if m]
        total += max(counted, default=0)
    print(json.dumps({"shape": args.shape, "requests": args.requests,
                      "instructions": total, "per_request": total // args.requests,
                      "files": out_dir}))


if __name__ == "__main__":
    main()
