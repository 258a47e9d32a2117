#!/usr/bin/env python3
"""`/healthz` latency while clients send the largest documents parley accepts.

Starts the given parley binary on a throwaway SQLite database and a free loopback port, then
runs --clients threads that each POST, in a loop over one keep-alive connection, a document
at the server's pre-parse limits (issue 11's CPU-amplification shapes), while one prober
GETs /healthz every --interval seconds on its own connection. Prints the probe latencies
(p50, p95, p99, max) and what the load clients received (status counts, requests/s).

Documents (--shape):
  typename   `{ a0: __typename a1: __typename ... }`, as many aliases as --max-query-tokens
             lets through (accepted and run);
  bytes      `{ __typename __typename ... }` just under --max-query-bytes (refused by the
             token limit before parsing);
  over       the issue's 1.98 MB `{ __typename x180,000 }` (refused by the size limit).

Standard library only:

    python3 bench/healthz_under_load.py --parley-bin target/release/parley --shape typename
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def document(shape, max_tokens, max_bytes):
    if shape == "typename":
        # `{` `}` plus 3 tokens per alias (`aN`, `:`, `__typename`), kept under the limit.
        n = (max_tokens - 2) // 3 - 1
        return "{ " + " ".join(f"a{i}: __typename" for i in range(n)) + " }"
    if shape == "bytes":
        n = (max_bytes - 4) // len("__typename ")
        return "{ " + "__typename " * n + "}"
    return "{ " + "__typename " * 180_000 + "}"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parley-bin", required=True)
    ap.add_argument("--shape", choices=["typename", "bytes", "over"], default="typename")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--max-query-tokens", type=int, default=5000, help="the server's limit")
    ap.add_argument("--max-query-bytes", type=int, default=64 * 1024, help="the server's limit")
    args = ap.parse_args()

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="parley-healthz-")
    env = dict(os.environ, RUST_LOG="warn")
    server = subprocess.Popen(
        [args.parley_bin, "--database-url", f"sqlite://{tmp}/p.sqlite?mode=rwc", "serve",
         "--bind", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz")
                c.getresponse().read()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("server exited: " + server.stderr.read().decode()[-2000:])
                time.sleep(0.1)
        doc = document(args.shape, args.max_query_tokens, args.max_query_bytes)
        body = json.dumps({"query": doc}).encode()
        stop = time.monotonic() + args.duration
        statuses = {}
        lock = threading.Lock()

        def load():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while time.monotonic() < stop:
                try:
                    conn.request("POST", "/graphql", body=body,
                                 headers={"content-type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    key = resp.status
                    if resp.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                except (OSError, http.client.HTTPException) as e:
                    key = type(e).__name__
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    statuses[key] = statuses.get(key, 0) + 1

        threads = [threading.Thread(target=load) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        probes = []
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            probe.request("GET", "/healthz")
            r = probe.getresponse()
            r.read()
            probes.append((time.perf_counter() - t0) * 1000)
            if r.status != 200:
                sys.exit(f"/healthz answered {r.status}")
            time.sleep(args.interval)
        for t in threads:
            t.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    total = sum(statuses.values())
    print(json.dumps({
        "shape": args.shape, "document_bytes": len(doc), "clients": args.clients,
        "load_requests_per_s": round(total / args.duration, 1), "load_statuses": statuses,
        "healthz_probes": len(probes),
        "healthz_ms": {"p50": round(percentile(probes, 50), 2), "p95": round(percentile(probes, 95), 2),
                       "p99": round(percentile(probes, 99), 2), "max": round(max(probes), 2)},
    }))


if __name__ == "__main__":
    main()
