"""Search latency with hostile bodies in the inbox (issue 14 item 2): NULs, 5 MB bodies, repeated terms.

Builds two DBs from the shipped default inbox (allen-p, south-s, grigsby-m, ingested with
``env.ingest.ingest``): ``clean`` as shipped, and ``hostile``, the same plus hostile emails filed in
allen-p:

- ingested from .eml files (what ``inboxrl ingest`` stores today): a 5.4 MB body with a NUL after
  its first words, 40 KB and 160 KB bodies with an early NUL, 5 MB of one repeated word ("gas"),
  5 MB of random words, 5 MB of random bytes;
- written straight into the tables, as an older ingest stored them (NULs kept in the text): 5 MB of
  random words with a NUL after the first ones, and 5 MB of the letter "A" with a NUL in front.

Then times ``search_emails`` (whole tool call: FTS5 match, BM25, filters, snippets, the any-keyword
fallback) in allen-p: fixed keyword sets that hit the hostile emails (each the median of
``--repeat`` runs), and ``--queries`` keyword queries drawn from real emails as in
bench/search_bench.py, on both DBs. Wall-clock and thread CPU time (the machine is shared).

    .venv/bin/python bench/search_adversarial.py --out /tmp/adv --json bench/results/search_adversarial.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_bench import sample_queries, summarize

from env.db import get_inbox, list_inboxes, open_db
from env.ingest import default_inbox_archive, ingest
from env.tools import make_tools

WORDS = ["gas", "price", "forecast", "budget", "power", "trade", "houston", "deal", "report", "meeting"]
HOSTILE_KEYWORDS = [["gas"], ["price"], ["A"], ["gas", "price"], ["zzz", "gas"], ["forecast", "houston"]]
QUERY_DATE = date(2002, 12, 31)
MB = 1_000_000


def _words(rng: random.Random, size: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(size // 6))[:size]


def _eml(subject: str, body: bytes, charset: str = "utf-8") -> bytes:
    head = f"Message-ID: <{subject}@adversarial>\nDate: Tue, 1 May 2001 10:00:00 -0500\nFrom: x@example.com\n"
    head += (
        f"To: phillip.allen@enron.com\nSubject: {subject}\nContent-Type: text/plain; charset={charset}\n\n"
    )
    return head.encode() + body


def build(out: Path, seed: int, workers: int | None = None) -> tuple[Path, Path]:
    """Write ``clean.db`` and ``hostile.db`` under ``out``; return their paths."""
    rng = random.Random(seed)
    clean, hostile = out / "clean.db", out / "hostile.db"
    for path in (clean, hostile):
        path.unlink(missing_ok=True)
    ingest([default_inbox_archive()], clean, progress=False, workers=workers)
    db = open_db(clean)
    db.execute("pragma wal_checkpoint(truncate)")
    db.close()
    shutil.copyfile(clean, hostile)
    mail = out / "hostile-eml"
    shutil.rmtree(mail, ignore_errors=True)
    mail.mkdir()
    files = {
        "nul-5400k": _eml("nul5400k", b"gas price \x00" + _words(rng, 54 * MB // 10).encode()),
        "nul-40k": _eml("nul40k", b"gas price \x00" + _words(rng, 40_000).encode()),
        "nul-160k": _eml("nul160k", b"gas price \x00" + _words(rng, 160_000).encode()),
        "repeat-5m": _eml("repeat5m", b"gas " * (5 * MB // 4)),
        "words-5m": _eml("words5m", _words(rng, 5 * MB).encode()),
        "bytes-5m": _eml("bytes5m", rng.randbytes(5 * MB), "latin-1"),
    }
    for name, data in files.items():
        (mail / f"{name}.eml").write_bytes(data)
    report = ingest([mail], hostile, inbox="allen-p", progress=False, workers=workers)
    assert report.ingested == len(files), report
    db = open_db(hostile)
    legacy = {
        "legacy-nul-words": "gas\x00" + _words(rng, 5 * MB),
        "legacy-nul-a": "\x00" + "A " * (5 * MB // 2),
    }
    with db.conn:
        next_id = db.execute("select max(id) + 1 from emails").fetchone()[0]
        for offset, (name, body) in enumerate(legacy.items()):
            row = {"id": next_id + offset, "inbox": "allen-p", "message_id": f"<{name}@adversarial>"}
            db["emails"].insert({**row, "subject": name, "date": "2001-05-01T15:00:00Z", "body": body})
            db["message_ids"].insert(
                {"inbox": "allen-p", "message_id": row["message_id"], "email_id": row["id"]}
            )
    db.close()
    return clean, hostile


def _time(tools, keywords: list[str], repeat: int, limit: float) -> tuple[float, float, int]:
    """Median wall and CPU milliseconds of ``repeat`` searches, and how many emails they found.

    A search still running after ``limit`` seconds is interrupted (SQLite's progress handler) and
    counted as ``inf`` (``found`` -1): older code took over 600 s on one of these bodies.
    """
    walls, cpus, found = [], [], 0
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.thread_time()
        stop = start + limit
        tools.db.conn.set_progress_handler(lambda stop=stop: time.perf_counter() > stop, 10_000)
        try:
            found = len(tools.search_emails(keywords, max_results=10))
        except sqlite3.OperationalError:
            return math.inf, math.inf, -1
        finally:
            tools.db.conn.set_progress_handler(None, 0)
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((time.thread_time() - start_cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus), found


def _ms(value: float) -> float | None:
    """Milliseconds for JSON: None for a search that was cut off."""
    return None if math.isinf(value) else round(value, 2)


def run(clean: Path, hostile: Path, repeat: int, queries: int, seed: int, limit: float) -> dict:
    """Time the hostile keyword sets and the sampled queries on both DBs."""
    results: dict = {"load_average_1m": round(os.getloadavg()[0], 2), "hostile_keywords": []}
    dbs = {"clean": open_db(clean), "hostile": open_db(hostile)}
    tools = {name: make_tools(db, "allen-p", QUERY_DATE) for name, db in dbs.items()}
    for keywords in HOSTILE_KEYWORDS:
        row: dict = {"keywords": keywords}
        for name, t in tools.items():
            wall, cpu, found = _time(t, keywords, repeat, limit)
            row[name] = {"wall_ms": _ms(wall), "cpu_ms": _ms(cpu), "found": found}
        results["hostile_keywords"].append(row)
    sampled = [q for q in sample_queries(dbs["clean"], queries * 4, seed) if q["inbox"] == "allen-p"][
        :queries
    ]
    for name, db in dbs.items():
        inbox = get_inbox(db, "allen-p")
        walls, cpus = [], []
        for q in sampled:
            t = make_tools(db, inbox, q["query_date"])
            wall, cpu, _ = _time(t, q["keywords"], 1, limit)
            walls.append(wall)
            cpus.append(cpu)
        results[f"sampled_{name}"] = {
            "queries": len(sampled),
            "wall": summarize(walls),
            "cpu": summarize(cpus),
        }
    results["emails"] = {
        name: db.execute("select count(*) from emails").fetchone()[0] for name, db in dbs.items()
    }
    results["inboxes"] = [i.id for i in list_inboxes(dbs["hostile"])]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/search-adversarial"), help="Work folder.")
    parser.add_argument("--repeat", type=int, default=7, help="Runs of each hostile keyword set.")
    parser.add_argument("--queries", type=int, default=300, help="Sampled real queries in allen-p.")
    parser.add_argument("--seed", type=int, default=14, help="Seed of the bodies and the query sample.")
    parser.add_argument("--limit", type=float, default=30.0, help="Seconds before a search is cut off.")
    parser.add_argument("--workers", type=int, help="Ingest's parsing processes (1: in this process).")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    clean, hostile = build(args.out, args.seed, args.workers)
    built = time.perf_counter() - started
    results = {
        "build_seconds": round(built, 1),
        **run(clean, hostile, args.repeat, args.queries, args.seed, args.limit),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
