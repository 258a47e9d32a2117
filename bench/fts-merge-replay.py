#!/usr/bin/env python3
"""What SQLite's FTS5 index costs one-message commits, under its merge settings.

A replay outside parley, with Python's own `sqlite3`, of what `recordMessage` does to the
search index on SQLite: a table of texts with an external-content FTS5 table over it, kept
in sync by an insert trigger (as migration m20261201_000003 creates them). For each setting
the index is built from scratch the way an import builds it (every row through the trigger
in one transaction, the merge settings set before), then 10,000 commits of one 12-word
text each are timed in thread CPU time (which other processes' load moves little), and a
few one-word queries are timed after them.

    bench/fts-merge-replay.py [--rows 1000000] [--commits 10000] [--dir /tmp/fts-replay]

Settings compared: no index (the trigger dropped), FTS5's defaults (automerge 4,
crisismerge 16), and the ones parley sets (migration m20261202_000004): automerge 8,
crisismerge 64, with neighbours of them.
"""

import argparse
import os
import random
import sqlite3
import time

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu order "
    "zephyr refund parcel ship late"
).split()

# (name, FTS5 settings, pages of a 'merge' step run in its own transaction every 50 commits:
# merging off the commits, as a task beside the writers would)
SETTINGS = [
    ("no index", None),
    ("defaults (4, 16)", []),
    ("automerge 8, crisismerge 64", [("automerge", 8), ("crisismerge", 64)]),
    ("automerge 16, crisismerge 64", [("automerge", 16), ("crisismerge", 64)]),
    ("automerge 16, crisismerge 16", [("automerge", 16)]),
    ("automerge 0, crisismerge 64, 'merge' steps", [("automerge", 0), ("crisismerge", 64)]),
]

#: Pages of the 'merge' step of the settings whose automerge is 0, and commits between steps
#: (--merge-step, --merge-every).
MERGE_STEP = 200
MERGE_EVERY = 50


def connect(path):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=wal")
    c.execute("PRAGMA synchronous=normal")
    return c


def fresh(path):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def source(path, rows):
    """The texts, in a database of their own, built once."""
    if os.path.exists(path):
        return
    c = connect(path)
    c.execute("CREATE TABLE message_texts (message_id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    r = random.Random(1)
    c.execute("BEGIN")
    for i in range(1, rows + 1):
        words = (
            r.choice(WORDS) + str(r.randint(0, 2000)) if r.random() < 0.3 else r.choice(WORDS)
            for _ in range(12)
        )
        c.execute("INSERT INTO message_texts VALUES (?, ?)", (i, " ".join(words)))
    c.execute("COMMIT")
    c.close()


def build(path, src, settings):
    fresh(path)
    c = connect(path)
    c.execute(f"ATTACH '{src}' AS src")
    c.execute("CREATE TABLE message_texts (message_id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    c.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content = 'message_texts', "
        "content_rowid = 'message_id', tokenize = 'unicode61 remove_diacritics 2')"
    )
    for key, value in settings or []:
        c.execute(f"INSERT INTO messages_fts (messages_fts, rank) VALUES ('{key}', {value})")
    c.execute(
        "CREATE TRIGGER message_texts_ai AFTER INSERT ON message_texts BEGIN "
        "INSERT INTO messages_fts (rowid, text) VALUES (new.message_id, new.text); END"
    )
    started = time.perf_counter()
    c.execute("BEGIN")
    c.execute("INSERT INTO message_texts SELECT * FROM src.message_texts")
    c.execute("COMMIT")
    built = time.perf_counter() - started
    c.execute("DETACH src")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if settings is None:
        c.execute("DROP TRIGGER message_texts_ai")
    return c, built


def replay(c, commits, merge_steps):
    base = c.execute("SELECT max(message_id) FROM message_texts").fetchone()[0]
    r = random.Random(2)
    words = "alpha bravo order refund parcel zephyr tango victor".split()
    took = []
    steps = []
    for i in range(commits):
        text = " ".join(r.choice(words) + str(r.randint(0, 99999)) for _ in range(12))
        started = time.thread_time()
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO message_texts VALUES (?, ?)", (base + 1 + i, text))
        c.execute("COMMIT")
        took.append((time.thread_time() - started) * 1e6)
        if merge_steps and i % MERGE_EVERY == MERGE_EVERY - 1:
            started = time.thread_time()
            c.execute("BEGIN IMMEDIATE")
            c.execute(
                f"INSERT INTO messages_fts (messages_fts, rank) VALUES ('merge', {MERGE_STEP})"
            )
            c.execute("COMMIT")
            steps.append((time.thread_time() - started) * 1e6)
    took.sort()
    steps.sort()
    started = time.perf_counter()
    for word in ("order", "zephyr", "alpha", "refund"):
        for _ in range(20):
            c.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
                "ORDER BY rowid DESC LIMIT 20",
                (word,),
            ).fetchall()
    query_ms = (time.perf_counter() - started) / 80 * 1e3
    segments = 0
    if merge_steps is not None:
        segments = c.execute("SELECT count(DISTINCT segid) FROM messages_fts_idx").fetchone()[0]
    return took, query_ms, steps, segments


def main():
    global MERGE_STEP, MERGE_EVERY
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--commits", type=int, default=10_000)
    p.add_argument("--dir", default="/tmp/fts-replay")
    p.add_argument("--only", help="run only the settings whose name contains this")
    p.add_argument("--merge-step", type=int, default=MERGE_STEP, help="pages of a 'merge' step")
    p.add_argument("--merge-every", type=int, default=MERGE_EVERY, help="commits between steps")
    a = p.parse_args()
    MERGE_STEP, MERGE_EVERY = a.merge_step, a.merge_every
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, f"texts-{a.rows}.sqlite")
    source(src, a.rows)
    print(f"SQLite {sqlite3.sqlite_version}, {a.rows:,} texts, {a.commits:,} one-text commits")
    print(
        "| setting | build s | mean µs | p50 | p95 | p99 | max µs | query ms | segments "
        "| merge steps p50 / p95 / max µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, settings in SETTINGS:
        if a.only and a.only not in name:
            continue
        path = os.path.join(a.dir, "replay.sqlite")
        c, built = build(path, src, settings)
        off_commit = settings is not None and ("automerge", 0) in settings
        took, query_ms, steps, segments = replay(
            c, a.commits, off_commit if settings is not None else None
        )
        c.close()
        n = len(took)
        q = lambda f: took[min(n - 1, int(n * f))]
        k = len(steps)
        step = (
            f"{steps[k // 2]:,.0f} / {steps[min(k - 1, int(k * 0.95))]:,.0f} / {steps[-1]:,.0f}"
            if steps
            else ""
        )
        print(
            f"| {name} | {built:.1f} | {sum(took) / n:.0f} | {q(0.5):.0f} | {q(0.95):.0f} | "
            f"{q(0.99):.0f} | {took[-1]:,.0f} | {query_ms:.2f} | {segments or ''} | {step} |",
            flush=True,
        )
        fresh(path)


if __name__ == "__main__":
    main()
