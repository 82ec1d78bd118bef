"""Search latency of the agent's ``search_emails`` tool: p50/p95 over keyword queries from real emails.

Each query picks a random email (every email equally likely, so large inboxes get more queries),
takes 1 to 3 words of four or more letters from its subject and body (a few function words left
out), and searches that email's inbox with the question date set 0 to 180 days after the email.
So every query has an inbox filter and a date clamp, and common and rare words come in the
proportions real text has. Timing covers the whole tool call (``InboxTools.search_emails``: FTS5
match, BM25 ranking, filters, snippets, and the any-keyword fallback when no email has them all),
after an untimed warm-up. Both wall-clock time and the thread's CPU time are reported: on a shared,
loaded machine the wall-clock tail is mostly time spent waiting for a core.

    .venv/bin/python bench/search_bench.py --db /tmp/bench/enron22k.db
    .venv/bin/python bench/search_bench.py --db /tmp/bench/enron450k.db --json /tmp/bench/search450k.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

from rich.progress import track

from env.db import list_inboxes, open_db
from env.tools import InboxTools, make_tools

# Left out of the sampled keywords: a searcher does not type these.
STOPWORDS = frozenset({
    "that", "this", "with", "from", "have", "will", "your", "been", "were", "they", "their", "there",
    "what", "when", "which", "would", "could", "should", "about", "into", "than", "then", "them", "these",
    "those", "also", "just", "more", "some", "only", "other", "such", "very", "here", "said", "does",
    "each", "please", "thanks", "thank", "regards", "sent", "original", "message", "subject", "forwarded",
})  # fmt: skip
WORD = re.compile(r"[A-Za-z]{4,}")


def sample_queries(db, n: int, seed: int) -> list[dict]:
    """``n`` queries ``{inbox, query_date, keywords}`` drawn from the DB's own emails.

    Emails are drawn from a list in (inbox, content_hash) order, so the sample does not depend on
    the order ingestion happened to write the rows in.
    """
    rng = random.Random(seed)
    ids = [
        row[0] for row in db.execute("select id from emails where date > '1990' order by inbox, content_hash")
    ]
    queries: list[dict] = []
    while len(queries) < n:
        inbox, sent, subject, body = db.execute(
            "select inbox, date, subject, substr(body, 1, 3000) from emails where id = ?", [rng.choice(ids)]
        ).fetchone()
        words = sorted({w.lower() for w in WORD.findall(f"{subject or ''} {body or ''}")} - STOPWORDS)
        if not words:
            continue
        keywords = rng.sample(words, min(len(words), rng.choice([1, 2, 2, 3])))
        query_date = date.fromisoformat(sent[:10]) + timedelta(days=rng.randint(0, 180))
        queries.append({"inbox": inbox, "query_date": query_date.isoformat(), "keywords": keywords})
    return queries


def replicate(source: Path, target: Path, copies: int, merge: bool = False) -> None:
    """Write ``target``: ``source`` plus ``copies`` copies of its mailboxes with fresh Message-IDs.

    Copy ``n`` of mailbox ``allen-p`` is inbox ``allen-p-x<n>`` (with ``merge``, every mailbox of
    copy ``n`` goes into one inbox ``all-x<n>``, deduplicated by content, to get large inboxes), and
    its Message-IDs get an ``x<n>.`` prefix: each copy is a distinct inbox of distinct messages.
    The FTS5 index is filled by the schema's triggers, as ingestion fills it.
    """
    src = open_db(source)
    src.execute("pragma wal_checkpoint(truncate)")
    src.close()
    shutil.copyfile(source, target)
    db = open_db(target, create=True)  # create=True: ensure_schema upgrades an older copy first
    last = db.execute("select max(id) from emails").fetchone()[0]
    inbox = "'all-' || :tag" if merge else "inbox || '-' || :tag"
    for n in track(range(1, copies + 1), description=f"replicating {last:,} emails x {copies}"):
        params = {"tag": f"x{n:02d}", "shift": n * last, "last": last}
        copied = "exists (select 1 from emails c where c.id = email_id + :shift)"
        with db.conn:
            db.execute(
                f"insert into inboxes (id, name, addresses, message_count) select distinct {inbox}, {inbox}, "
                f"json_array({inbox} || '@replica.invalid'), 0 from emails where id <= :last",
                params,
            )
            db.execute(
                "insert or ignore into emails (id, inbox, message_id, subject, from_address, from_name, "
                f"date, body, folder, source_file, content_hash) select id + :shift, {inbox}, "
                ":tag || '.' || message_id, subject, from_address, from_name, date, body, folder, "
                "source_file, content_hash from emails where id <= :last",
                params,
            )
            db.execute(
                f"insert or ignore into message_ids select {inbox}, :tag || '.' || message_id, "
                "email_id + :shift, folder, source_file from message_ids "
                f"where email_id <= :last and {copied}",
                params,
            )
            db.execute(
                "insert into recipients (email_id, kind, address, name) select email_id + :shift, kind, "
                f"address, name from recipients where email_id <= :last and {copied}",
                params,
            )
            db.execute(
                "update inboxes set (message_count, first_date, last_date) = "
                "(select count(*), min(date), max(date) from emails where inbox = inboxes.id) "
                "where id in (select distinct inbox from emails where id > :shift and id <= :shift + :last)",
                params,
            )
    db.execute("analyze")
    db.close()


class WithoutInboxToken(InboxTools):
    """The search without the inbox token in the FTS5 query: FTS5 ranks every inbox's matches and
    SQL keeps this inbox's. Same results (the SQL filter decides); the baseline for the timing."""

    def _fts_query(self, phrases: tuple[str, ...], op: str) -> str:
        return f"{{subject body}} : ({f' {op} '.join(phrases)})"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(latencies: list[float]) -> dict:
    """p50/p95/p99/max/mean in milliseconds."""
    return {
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p95_ms": round(percentile(latencies, 0.95), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies), 3),
        "mean_ms": round(statistics.fmean(latencies), 3),
    }


def run(db_path: Path, n: int, seed: int, warmup: int, max_results: int, baseline: bool) -> dict:
    """Time ``n`` searches; return the latency summary and what the searches found.

    With ``baseline``, each query is also run (alternating, same process) without the inbox token
    in the FTS5 query, and both must return the same emails.
    """
    db = open_db(db_path)
    emails = db.execute("select count(*) from emails").fetchone()[0]
    inboxes = {inbox.id: inbox for inbox in list_inboxes(db)}
    make_tools(db, next(iter(inboxes)), None)  # refuses a DB whose index predates inbox_token
    queries = sample_queries(db, n + warmup, seed)
    variants = {"search_emails": InboxTools} | (
        {"without_inbox_token": WithoutInboxToken} if baseline else {}
    )
    latencies: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    hits, slowest = [], []
    for i, q in enumerate(queries):
        found = {}
        for name, cls in variants.items():
            search = cls(db, inboxes[q["inbox"]], date.fromisoformat(q["query_date"]))
            start, start_cpu = time.perf_counter(), time.thread_time()
            found[name] = search.search_emails(q["keywords"], max_results=max_results)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
            if i >= warmup:
                latencies[name].append(elapsed * 1000)
                cpu[name].append(elapsed_cpu * 1000)
        if baseline:
            assert found["search_emails"] == found["without_inbox_token"], q
        if i >= warmup:
            hits.append(len(found["search_emails"]))
            slowest.append((cpu["search_emails"][-1], latencies["search_emails"][-1], q))
    slowest.sort(key=lambda item: -item[0])
    tools = InboxTools(db, next(iter(inboxes.values())), date(2001, 5, 1))
    sql, params = tools.search_sql(["gas", "price"], max_results=max_results)
    plan = [row[3] for row in db.execute("explain query plan " + sql, params)]
    return {
        "db": str(db_path),
        "emails": emails,
        "inboxes": len(inboxes),
        "largest_inbox": max(inbox.message_count for inbox in inboxes.values()),
        "queries": n,
        "seed": seed,
        "max_results": max_results,
        "load_average_1m": round(os.getloadavg()[0], 2),
        **{f"{name}_wall": summarize(values) for name, values in latencies.items()},
        **{f"{name}_cpu": summarize(values) for name, values in cpu.items()},
        "empty_results": sum(1 for h in hits if h == 0),
        "mean_results": round(statistics.fmean(hits), 2),
        "slowest_cpu": [{"cpu_ms": round(c, 2), "wall_ms": round(w, 2), **q} for c, w, q in slowest[:5]],
        "plan": plan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="An ingested inbox DB.")
    parser.add_argument(
        "--replicate-from", type=Path, help="First build --db from this DB plus --copies copies."
    )
    parser.add_argument("--copies", type=int, default=36, help="Mailbox copies for --replicate-from.")
    parser.add_argument("--merge", action="store_true", help="--replicate-from: one inbox per copy.")
    parser.add_argument("--queries", type=int, default=1000, help="Timed queries.")
    parser.add_argument("--warmup", type=int, default=100, help="Untimed queries run first.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the query sample.")
    parser.add_argument("--max-results", type=int, default=10, help="max_results of each search.")
    parser.add_argument(
        "--baseline", action="store_true", help="Also time the search without the inbox token."
    )
    parser.add_argument("--json", type=Path, help="Also write the summary here.")
    args = parser.parse_args()
    if args.replicate_from:
        replicate(args.replicate_from, args.db, args.copies, args.merge)
    summary = run(args.db, args.queries, args.seed, args.warmup, args.max_results, args.baseline)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
