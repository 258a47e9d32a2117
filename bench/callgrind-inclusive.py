#!/usr/bin/env python3
"""Inclusive instructions per function name from `bench/callgrind.py`'s callgrind files.

`callgrind_annotate --inclusive=yes` splits one function by the file of each inlined piece
and counts a recursive function once per level (`'2`, `'3`). This reads the files itself:
a function is its name (every file of it merged), its inclusive cost is its own cost plus
the cost of its calls, counted at the outermost level only (callgrind names deeper levels
`name'N`; those are left out, their cost is inside the outer level's calls).

    bench/callgrind-inclusive.py /tmp/parley-callgrind-XXXX --requests 200 --top 60
    bench/callgrind-inclusive.py DIR --requests 200 --match 'sqlx_core::query' --match parse_query

Prints per-request figures: `--top N` the N most expensive functions, or each function whose
name contains a `--match` (case-sensitive), most expensive first.
"""

import argparse
import collections
import os
import re
import sys


def read(path, own, calls, names):
    """Adds one callgrind file's costs to `own` (name -> Ir) and `calls` ((caller, callee) -> Ir)."""
    ids = {}
    fn = None
    pending_call = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call is not None:
                    calls[(fn, pending_call)] += cost
                    pending_call = None
                elif fn is not None:
                    own[fn] += cost
                continue
            if line.startswith("fn=") or line.startswith("cfn="):
                key, _, rest = line.partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
                if m:
                    if m.group(2) is not None:
                        ids[m.group(1)] = m.group(2)
                    name = ids.get(m.group(1), "?")
                else:
                    name = rest
                names.add(name)
                if key == "fn":
                    fn = name
                else:
                    callee = name
                continue
            if line.startswith("calls="):
                pending_call = callee
                continue


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the directory bench/callgrind.py printed as `files`")
    ap.add_argument("--requests", type=int, default=1, help="divide by this many requests")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--match", action="append", default=[])
    ap.add_argument("--width", type=int, default=160, help="cut names at this many characters")
    args = ap.parse_args()

    own = collections.Counter()
    calls = collections.Counter()
    names = set()
    for name in sorted(os.listdir(args.dir)):
        read(os.path.join(args.dir, name), own, calls, names)
    total = sum(own.values())
    inclusive = collections.Counter()
    for fn, cost in own.items():
        if "'" not in fn:
            inclusive[fn] += cost
    for (caller, callee), cost in calls.items():
        if "'" not in caller and caller != callee and not callee.startswith(caller + "'"):
            inclusive[caller] += cost
    n = args.requests
    print(f"total {total // n:,} instructions per request ({total:,} / {n})")
    if args.match:
        rows = [(c, f) for f, c in inclusive.items() if any(m in f for m in args.match)]
    else:
        rows = [(c, f) for f, c in inclusive.items()]
    rows.sort(reverse=True)
    if not args.match:
        rows = rows[: args.top]
    for c, f in rows:
        print(f"{c // n:>12,} {own[f] // n:>10,}  {f[: args.width]}")


if __name__ == "__main__":
    sys.exit(main())
