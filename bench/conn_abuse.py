#!/usr/bin/env python3
"""Connection abuse against a real `parley serve`: resident memory and disconnect times.

Starts the given parley binary on a throwaway SQLite database and a free loopback port, then:

1. baseline: the server's VmRSS (from /proc/PID/status) once it answers /healthz;
2. idle: opens --idle connections that send nothing, records VmRSS with them open, then how
   many the server refused at once (503) and how long until it had closed the rest;
3. slow bodies: --slow clients each POST /graphql declaring --declared bytes, send --sent of
   them at once and then stall; VmRSS is sampled every 100 ms for the peak, and each client's
   answer (408, 503) and time until the server closed it are recorded.

Standard library only. Extra arguments after `--` go to `parley serve` (for example the
connection caps, so that 2,000 idle connections are held rather than refused):

    python3 bench/conn_abuse.py --parley-bin target/release/parley -- \
        --max-connections 4096 --max-connections-per-ip 4096
"""

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, within=60.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"parley exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("parley did not come up")


def limited(port):
    """The server's `parley_http_limited_total` counters, by reason."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("parley_http_limited_total{"):
            series, value = line.rsplit(" ", 1)
            out[series.split('reason="')[1].split('"')[0]] = int(float(value))
    return out


def idle_phase(port, pid, n, within):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        socks.append(s)
    opened = time.monotonic()
    time.sleep(0.5)
    rss = rss_mb(pid)
    refused = 0
    closed_after = []
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    pending = len(socks)
    while pending and time.monotonic() - opened < within:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 503"):
                refused += 1
            elif data:
                continue
            else:
                closed_after.append(time.monotonic() - opened)
            sel.unregister(s)
            s.close()
            pending -= 1
    still_open = pending
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return {
        "rss_mb": rss,
        "refused_503": refused,
        "held": n - refused,
        "closed_by_server": len(closed_after),
        "last_closed_s": max(closed_after) if closed_after else None,
        "still_open": still_open,
    }


def slow_client(port, declared, sent, results, i, within):
    head = (
        "POST /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {declared}\r\n\r\n"
    ).encode()
    body = b'{"query": "{ __typename }", "pad": "' + b"x" * (sent - 40)
    s = socket.socket()
    s.settimeout(within)
    started = time.monotonic()
    status, sent_all = None, False
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(head + body)
        sent_all = True
        data = s.recv(65536)
        if data.startswith(b"HTTP/1.1 "):
            status = int(data.split(b" ")[1])
            while s.recv(65536):
                pass
    except socket.timeout:
        status = "open"
    except OSError:
        pass
    results[i] = (status, sent_all, time.monotonic() - started)
    s.close()


def slow_phase(port, pid, n, declared, sent, within):
    results = [None] * n
    threads = [
        threading.Thread(target=slow_client, args=(port, declared, sent, results, i, within))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.1)
    for t in threads:
        t.join()
    by_status = {}
    for status, _, _ in results:
        by_status[str(status)] = by_status.get(str(status), 0) + 1
    return {
        "peak_rss_mb": peak,
        "answers": by_status,
        "fully_sent": sum(1 for _, ok, _ in results if ok),
        "last_disconnected_s": max((t for _, _, t in results), default=0.0),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parley-bin", default="target/release/parley")
    p.add_argument("--idle", type=int, default=2000, help="idle connections")
    p.add_argument("--slow", type=int, default=200, help="slow-body clients")
    p.add_argument("--declared", type=int, default=2_000_000, help="declared body bytes")
    p.add_argument("--sent", type=int, default=1_900_000, help="body bytes sent before stalling")
    p.add_argument("--within", type=float, default=120.0, help="seconds to wait per phase")
    p.add_argument("serve_args", nargs="*", help="extra `parley serve` flags (after --)")
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + args.slow + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))

    tmp = tempfile.mkdtemp(prefix="parley-conn-abuse-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not (k.startswith("PARLEY_") or k == "DATABASE_URL")}
    env["RUST_LOG"] = "warn"
    log = open(os.path.join(tmp, "parley.log"), "w")
    cmd = [
        args.parley_bin,
        "--database-url", f"sqlite://{tmp}/parley.sqlite?mode=rwc",
        "serve", "--bind", f"127.0.0.1:{port}",
    ] + args.serve_args
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_healthy(port, proc)
        time.sleep(1.0)
        base = rss_mb(proc.pid)
        print(f"command: {' '.join(cmd)}")
        print(f"baseline: VmRSS {base:.1f} MB")
        idle = idle_phase(port, proc.pid, args.idle, args.within)
        print(
            f"idle: {args.idle} connections opened, {idle['held']} held, "
            f"{idle['refused_503']} refused with 503; VmRSS {idle['rss_mb']:.1f} MB "
            f"(+{idle['rss_mb'] - base:.1f} MB); server closed {idle['closed_by_server']}, "
            f"the last after {idle['last_closed_s'] or 0:.1f} s; still open after "
            f"{args.within:.0f} s: {idle['still_open']}"
        )
        print(f"limits hit so far: {limited(port)}")
        time.sleep(1.0)
        base2 = rss_mb(proc.pid)
        slow = slow_phase(port, proc.pid, args.slow, args.declared, args.sent, args.within)
        print(
            f"slow bodies: {args.slow} clients declaring {args.declared} bytes, sending "
            f"{args.sent} then stalling ({slow['fully_sent']} got all {args.sent} out); "
            f"VmRSS before {base2:.1f} MB, peak {slow['peak_rss_mb']:.1f} MB "
            f"(+{slow['peak_rss_mb'] - base:.1f} MB over baseline); answers {slow['answers']}; "
            f"the last disconnected after {slow['last_disconnected_s']:.1f} s"
        )
        print(f"limits hit in all: {limited(port)}")
        print(f"after: VmRSS {rss_mb(proc.pid):.1f} MB; server alive: {proc.poll() is None}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
