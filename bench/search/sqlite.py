#!/usr/bin/env python3
"""The search benchmark on SQLite (issue 16): the same 1,000,000 messages as seed.sql
(10,000 email conversations x 100, "order" in every fifth message, "zephyr" in one of a
thousand) in a fresh database migrated by `parley migrate up`, the search text written
through the FTS5 triggers (its build time and size), then each statement searchMessages
issues on SQLite for the first page of 20, timed sequentially in this process (SQLite runs
in the server's process; no HTTP, no pool). The statements are the service's text
(service/src/query/search.rs) for an admin and for a one-inbox principal.

Usage: bench/search/sqlite.py [--parley target/debug/parley] [--nconv 10000] [--per 100]
       [--reps 200] [--keep DIR] [--alternatives zephyr,order]
"""
import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone

COLS = ", ".join(
    f'"messages"."{c}"'
    for c in "id conversation_id channel kind direction from_raw to_raw from_address "
    "to_addresses body attachments provider_message_id sent_at recorded_at "
    "assignment_error sequence".split()
)
MATCHING = 'SELECT rowid FROM "messages_fts" WHERE messages_fts MATCH ?'
VISIBLE = (
    'AND EXISTS (SELECT ? FROM "conversation_participants" AS "visible_participant" '
    'WHERE "visible_participant"."conversation_id" = {t}."conversation_id" '
    'AND "visible_participant"."address" IN (?))'
)
# search_page: newest messages first, each checked against the FTS5 match.
WALK = (
    f'SELECT {COLS} FROM "messages" WHERE "messages"."id" IN ({MATCHING}) '
    'AND "messages"."conversation_id" IS NOT NULL {visible} '
    'ORDER BY "messages"."sent_at" DESC, "messages"."id" DESC LIMIT ?'
)
# search_page for an admin: each message walked looked up in the FTS5 index by rowid.
WALK_EXISTS = (
    f'SELECT {COLS} FROM "messages" WHERE EXISTS (SELECT ? FROM "messages_fts" '
    'WHERE messages_fts MATCH ? AND rowid = "messages"."id") '
    'AND "messages"."conversation_id" IS NOT NULL '
    'ORDER BY "messages"."sent_at" DESC, "messages"."id" DESC LIMIT ?'
)
# search_page_keys: the page's ids from message_texts alone, then the messages by id.
KEYS = (
    'SELECT "message_texts"."message_id" FROM "message_texts" '
    f'WHERE "message_texts"."message_id" IN ({MATCHING}) '
    'AND "message_texts"."conversation_id" IS NOT NULL {visible} '
    'ORDER BY "message_texts"."sent_at" DESC, "message_texts"."message_id" DESC LIMIT ?'
)
BY_ID = f'SELECT {COLS} FROM "messages" WHERE "messages"."id" IN ({{ids}})'
# The count of matches up to 2,000 (as the PostgreSQL path probes).
PROBE = 'SELECT count(*) FROM (SELECT 1 FROM "messages_fts" WHERE messages_fts MATCH ? LIMIT 2000)'


def ts(dt):
    # sqlx's encoding of a DateTime<Utc> in SQLite (RFC 3339).
    return dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def seed(db, nconv, per):
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    now = ts(datetime.now(timezone.utc))
    t = time.time()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO conversations (id, channel, participants_key, participants, message_count, "
        "first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at, "
        "last_sequence) VALUES (?, 'EMAIL', ?, ?, ?, ?, ?, ?, '', ?, ?, ?)",
        (
            (
                c,
                f"agent@parley.example\x1fu{c}@bench.example",
                f'["agent@parley.example","u{c}@bench.example"]',
                per,
                ts(base + timedelta(seconds=(c - 1) * per + 1)),
                ts(base + timedelta(seconds=c * per)),
                c * per,
                now,
                now,
                per,
            )
            for c in range(1, nconv + 1)
        ),
    )
    db.executemany(
        "INSERT INTO conversation_participants (address, conversation_id) VALUES (?, ?)",
        (
            (a, c)
            for c in range(1, nconv + 1)
            for a in ("agent@parley.example", f"u{c}@bench.example")
        ),
    )

    def body(i):
        words = "".join(f" w{(i * 7919 + k * 104729) % 5003}" for k in range(1, 13))
        return (
            f"message {i}{words}"
            + (" order" if i % 5 == 0 else "")
            + (" zephyr" if i % 1000 == 7 else "")
        )

    db.executemany(
        "INSERT INTO messages (id, conversation_id, channel, kind, direction, from_raw, to_raw, "
        "from_address, to_addresses, body, attachments, provider_message_id, sent_at, "
        "recorded_at, sequence) VALUES (?, ?, 'EMAIL', 'EMAIL', ?, 'agent@parley.example', "
        "'[\"u1@bench.example\"]', 'agent@parley.example', '[\"u1@bench.example\"]', ?, '[]', "
        "NULL, ?, ?, ?)",
        (
            (
                i,
                (i - 1) // per + 1,
                "INBOUND" if i % 2 == 0 else "OUTBOUND",
                body(i),
                ts(base + timedelta(seconds=i)),
                now,
                (i - 1) % per + 1,
            )
            for i in range(1, nconv * per + 1)
        ),
    )
    db.execute("COMMIT")
    print(f"messages seeded: {time.time() - t:.1f} s")


def pages(db):
    return db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]


def timed(fn, reps):
    lat = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
    return f"p50={q(0.5):8.2f} ms p95={q(0.95):8.2f} ms max={lat[-1]:8.2f} ms"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--parley", default=os.path.join(here, "../../target/debug/parley"))
    ap.add_argument("--nconv", type=int, default=10000)
    ap.add_argument("--per", type=int, default=100)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--keep", help="reuse or keep the database in this directory")
    ap.add_argument(
        "--alternatives",
        default="zephyr",
        help="comma-separated words to also time each statement alone for (slow for order)",
    )
    a = ap.parse_args()
    a.alternatives = a.alternatives.split(",")
    tmp = a.keep or tempfile.mkdtemp(prefix="parley_search_sqlite_")
    path = os.path.join(tmp, "search.sqlite")
    try:
        fresh = not os.path.exists(path)
        if fresh:
            subprocess.run(
                [a.parley, "--database-url", f"sqlite://{path}?mode=rwc", "migrate", "up"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        print(f"SQLite {sqlite3.sqlite_version} (Python's; the server links its own)")
        if fresh:
            seed(db, a.nconv, a.per)
            before = pages(db)
            t = time.time()
            db.execute(
                "INSERT INTO message_texts (message_id, text, conversation_id, channel, "
                "direction, sent_at) SELECT id, body, conversation_id, channel, direction, "
                "sent_at FROM messages"
            )
            print(f"message_texts + FTS5 index (triggers): {time.time() - t:.1f} s")
            print(f"database grew by {(pages(db) - before) / 2**20:.0f} MB (message_texts and messages_fts)")
            t = time.time()
            db.execute("ANALYZE")
            print(f"ANALYZE: {time.time() - t:.1f} s")
        print(f"database: {pages(db) / 2**20:.0f} MB")
        for name, n in db.execute(
            "SELECT 'order', count(*) FROM messages_fts WHERE messages_fts MATCH '((\"order\"))' "
            "UNION ALL SELECT 'zephyr', count(*) FROM messages_fts WHERE messages_fts MATCH '((\"zephyr\"))'"
        ):
            print(f"{name}: {n} matches")
        rng = random.Random(1)
        for word in ("zephyr", "order"):
            q = f'(("{word}"))'
            for viewer in ("admin", "inbox"):
                def args():
                    if viewer == "admin":
                        return "", [q, 21]
                    return "{v}", [q, 1, f"u{rng.randint(1, a.nconv)}@bench.example", 21]

                def walk():
                    v, p = args()
                    sql = WALK.format(visible=VISIBLE.format(t='"messages"') if v else "")
                    return db.execute(sql, p).fetchall()

                def walk_exists():
                    return db.execute(WALK_EXISTS, [1, q, 21]).fetchall()

                def keys():
                    v, p = args()
                    sql = KEYS.format(visible=VISIBLE.format(t='"message_texts"') if v else "")
                    ids = [r[0] for r in db.execute(sql, p)]
                    if ids:
                        db.execute(BY_ID.format(ids=", ".join("?" * len(ids))), ids).fetchall()
                    return ids

                def service():
                    # search_messages: the count, then the keys page or the walk.
                    n = db.execute(PROBE, [q]).fetchone()[0]
                    if n < 2000:
                        return keys()
                    return walk_exists() if viewer == "admin" else walk()

                if viewer == "admin":
                    assert [r[0] for r in walk()] == keys() == [r[0] for r in walk_exists()]
                print(f"{word:6} {viewer:5} searchMessages' statements {timed(service, a.reps)}")
                if word in a.alternatives:
                    # Each statement alone, a tenth as many times (some take seconds).
                    n = max(5, a.reps // 10)
                    print(f"{word:6} {viewer:5}   walk, matches first      {timed(walk, n)}")
                    print(f"{word:6} {viewer:5}   keys + by id             {timed(keys, n)}")
                    if viewer == "admin":
                        print(f"{word:6} {viewer:5}   walk, rowid lookups      {timed(walk_exists, n)}")
            print(f"{word:6} probe (count up to 2,000)        {timed(lambda: db.execute(PROBE, [q]).fetchall(), a.reps)}")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
