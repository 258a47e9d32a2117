#!/usr/bin/env python3
"""System calls per request of a parley server, counted by `strace -c -f`.

The server is started on a seeded database (as `bench/callgrind.py` starts it), warmed up with
200 requests, then `strace` attaches to all its threads while N requests of one shape are sent
one at a time over one keep-alive connection. Prints strace's table and the calls per request.

    bench/syscalls.py --parley-bin target/release/parley \\
        --database-url postgres://postgres@127.0.0.1:5432/parley_bench_xyz --shape thread

Shapes and seeding as for `bench/callgrind.py` (list, edges, inbox, thread, record). Needs strace.
"""

import argparse
import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("callgrind", os.path.join(HERE, "callgrind.py"))
cg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parley-bin", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--shape", choices=cg.SHAPES, default="thread")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--conversations", type=int, default=10_000, help="ids 1..N for thread and record")
    args = ap.parse_args()
    if not shutil.which("strace"):
        sys.exit("strace not found: install strace")

    server, conn = cg.start_server(args.parley_bin, args.database_url)
    try:
        rng = random.Random(1)
        for _ in range(200):
            cg.send(conn, cg.body_for(args.shape, rng, args.conversations))
        out = tempfile.NamedTemporaryFile(prefix="parley-strace-", suffix=".txt", delete=False).name
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(server.pid)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # strace attaches to every thread before the first request
        for _ in range(args.requests):
            cg.send(conn, cg.body_for(args.shape, rng, args.conversations))
        time.sleep(0.3)
        tracer.send_signal(2)
        tracer.wait()
    finally:
        server.terminate()
        server.wait()
    table = open(out).read()
    print(table)
    print(f"per request ({args.requests} {args.shape} requests):")
    for line in table.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)$", line)
        if m and m.group(3) != "total":
            calls = int(m.group(1)) / args.requests
            errors = int(m.group(2) or 0)
            extra = f" ({errors / args.requests:.3f} of them failed)" if errors else ""
            print(f"  {m.group(3):<14} {calls:6.2f}{extra}")


if __name__ == "__main__":
    sys.exit(main())
