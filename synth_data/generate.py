"""Write, check and keep question/answer pairs for one inbox: the `inboxrl synth generate` pipeline.

1. Sample batches of emails spread across time, folders and senders (``synth_data.sample``).
2. Write candidate pairs: the LLM (``synth_data.llm``) or the templates (``synth_data.template``).
3. Ground each pair (``synth_data.ground``): citations, a verbatim quote, realism, search, dedup.
4. Stop at ``n`` kept pairs; write them atomically, with a report of generated / dropped / kept.

Batches are processed in a fixed order and every LLM response is cached, so an interrupted run,
rerun with the same arguments, replays what it had from the cache and continues: no batch is paid
for twice.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from env.db import Inbox
from synth_data import ground
from synth_data.llm import (
    EXAMPLE_PAIRS,
    EXAMPLE_UNANSWERABLE,
    LLM,
    pairs_request,
    quote_request,
    unanswerable_request,
)
from synth_data.questions import DIFFICULTIES, Question, save_questions
from synth_data.sample import Batch, load_emails, sample_batches
from synth_data.template import query_date_after, template_pairs


@dataclass
class SynthConfig:
    """How many pairs to write and how strictly to check them."""

    n: int = field(default=100, metadata={"help": "Pairs to keep."})
    generator: str = field(
        default="llm", metadata={"help": "llm (any OpenAI-compatible endpoint) or template."}
    )
    batch_size: int = field(default=10, metadata={"help": "Emails the LLM reads per batch."})
    pairs_per_batch: int = field(default=5, metadata={"help": "Answerable pairs asked for per batch."})
    unanswerable_per_batch: int = field(
        default=1, metadata={"help": "Unanswerable questions asked for per batch."}
    )
    max_batches: int | None = field(
        default=None,
        metadata={"help": "Stop after this many batches (default: enough for 3x n at the asked rate)."},
    )
    max_body_chars: int = field(
        default=1500, metadata={"help": "Email bodies are cut to this many characters."}
    )
    max_prompt_chars: int = field(
        default=4_500,
        metadata={
            "help": "Email text per prompt: bodies are cut to fit (the embedded model reads 4k tokens)."
        },
    )
    min_realism: float = field(
        default=0.4, metadata={"help": "Drop pairs rated less realistic than this (0-1)."}
    )
    dedup_threshold: float = field(
        default=0.8,
        metadata={"help": "Drop a question whose content words overlap an earlier one's this much."},
    )
    findable_k: int = field(
        default=10,
        metadata={"help": "A search with the question's words must rank a cited email in this top k."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling batches."})

    def __post_init__(self) -> None:
        if self.generator not in ("llm", "template"):
            raise ValueError(f"generator must be 'llm' or 'template', got {self.generator!r}")
        if self.n < 1 or self.batch_size < 1 or self.pairs_per_batch < 0 or self.unanswerable_per_batch < 0:
            raise ValueError("n and batch_size must be positive; pairs per batch must not be negative")
        if self.generator == "llm" and self.pairs_per_batch + self.unanswerable_per_batch == 0:
            raise ValueError(
                "Ask for at least one pair per batch: set pairs_per_batch or unanswerable_per_batch"
            )
        if not 0.0 <= self.min_realism <= 1.0 or not 0.0 < self.dedup_threshold <= 1.0:
            raise ValueError("min_realism must be in [0, 1] and dedup_threshold in (0, 1]")

    def body_chars(self, n_emails: int) -> int:
        """How much of each body a prompt showing ``n_emails`` emails may quote."""
        return min(self.max_body_chars, max(200, self.max_prompt_chars // max(1, n_emails)))

    def batch_limit(self) -> int:
        """How many batches the LLM path may use."""
        if self.max_batches is not None:
            return self.max_batches
        return max(3, math.ceil(3 * self.n / max(1, self.pairs_per_batch + self.unanswerable_per_batch)))


@dataclass
class Candidate:
    """A pair before checks, with what the checks need beyond the record."""

    question: Question | None
    batch: int
    key_terms: list[str] = field(default_factory=list)
    drop: str | None = None


# ---- template path


def _check_template_pair(
    db: sqlite_utils.Database, inbox: Inbox, q: Question, config: SynthConfig
) -> str | None:
    """Citations, realism, search, and the answer and evidence as verbatim spans of the cited email."""
    emails, reason = ground.cited_emails(db, inbox.id, q)
    return (
        reason
        or ground.check_realism(q, config.min_realism)
        or ground.check_findable(db, inbox.id, q, emails, k=config.findable_k)
        or ground.check_answer_verbatim(q.answer or "", emails)
        or ground.check_quote(q.evidence or "", q.answer or "", emails, min_chars=4)
    )


def _run_template(
    db: sqlite_utils.Database, inbox: Inbox, config: SynthConfig, report: ground.Report, advance: Callable
) -> list[Question]:
    batches, skipped = sample_batches(db, inbox, batch_size=config.batch_size, seed=config.seed)
    report.counters.update({f"emails_skipped_{k}": v for k, v in skipped.items()})
    ordered = [e for b in batches for e in b.emails]
    deduper = ground.Deduper(config.dedup_threshold)
    kept: list[Question] = []
    for q in template_pairs(ordered, inbox, all_emails=load_emails(db, inbox.id)):
        report.generated += 1
        reason = _check_template_pair(db, inbox, q, config)
        if reason is None and not deduper.is_new(q.question):
            reason = "near_duplicate"
        if reason:
            report.drop(reason)
            continue
        kept.append(q)
        advance(1)
        if len(kept) >= config.n:
            break
    return kept


# ---- LLM path


def _pair_id(inbox: Inbox, batch: Batch, text: str) -> str:
    digest = hashlib.sha256(f"{batch.key}\n{text}".encode()).hexdigest()[:10]
    return f"{inbox.id}-l-{digest}"


def _clean_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return min(1.0, max(0.0, float(value)))


@functools.cache
def _examples() -> ground.Deduper:
    """The prompts' own example questions: a pair that copies one is dropped before any check is paid."""
    examples = ground.Deduper()
    for example in (*EXAMPLE_PAIRS["pairs"], *EXAMPLE_UNANSWERABLE["questions"]):
        examples.is_new(example["question"])
    return examples


def _as_list(value: Any) -> list:
    """``value`` when it is a list, else empty: model output is untrusted."""
    return value if isinstance(value, list) else []


def _answerable_candidates(data: Any, batch: Batch, inbox: Inbox) -> list[Candidate]:
    out = []
    for item in _as_list((data or {}).get("pairs")):
        q_text = item.get("question") if isinstance(item, dict) else None
        answer = item.get("answer") if isinstance(item, dict) else None
        sources = item.get("sources") if isinstance(item, dict) else None
        if not (isinstance(q_text, str) and q_text.strip() and isinstance(answer, str) and answer.strip()):
            out.append(Candidate(None, batch.index, drop="malformed"))
            continue
        picked = sorted({s for s in _as_list(sources) if type(s) is int and 1 <= s <= len(batch.emails)})
        if not picked:
            out.append(Candidate(None, batch.index, drop="bad_sources"))
            continue
        emails = [batch.emails[s - 1] for s in picked]
        pair_id = _pair_id(inbox, batch, q_text)
        difficulty = item.get("difficulty") if item.get("difficulty") in DIFFICULTIES else None
        q = Question(
            id=pair_id,
            inbox_address=inbox.address,
            mailbox=inbox.id,
            question=" ".join(q_text.split()),
            answer=" ".join(answer.split()),
            message_ids=[e.message_id for e in emails],
            query_date=query_date_after(max(e.day for e in emails), pair_id),
            kind="multi" if len(emails) > 1 else "single",
            difficulty=difficulty,
            how_realistic=_clean_float(item.get("how_realistic")),
            generator="llm",
        )
        out.append(Candidate(q, batch.index, drop="copied_example" if _examples().seen(q.question) else None))
    return out


def _unanswerable_candidates(data: Any, batch: Batch, inbox: Inbox) -> list[Candidate]:
    out = []
    newest = max(e.day for e in batch.emails)
    for item in _as_list((data or {}).get("questions")):
        q_text = item.get("question") if isinstance(item, dict) else None
        terms = item.get("key_terms") if isinstance(item, dict) else None
        if not (isinstance(q_text, str) and q_text.strip()):
            out.append(Candidate(None, batch.index, drop="malformed"))
            continue
        pair_id = _pair_id(inbox, batch, q_text)
        q = Question(
            id=pair_id,
            inbox_address=inbox.address,
            mailbox=inbox.id,
            question=" ".join(q_text.split()),
            answer=None,
            message_ids=[],
            query_date=query_date_after(newest, pair_id),
            kind="unanswerable",
            difficulty="medium",
            how_realistic=_clean_float(item.get("how_realistic")),
            generator="llm",
        )
        key_terms = [t for t in _as_list(terms) if isinstance(t, str)]
        drop = "copied_example" if _examples().seen(q.question) else None
        out.append(Candidate(q, batch.index, key_terms=key_terms, drop=drop))
    return out


async def _check_answerable(
    db: sqlite_utils.Database, inbox: Inbox, c: Candidate, llm: LLM, config: SynthConfig
) -> None:
    q = c.question
    emails, reason = ground.cited_emails(db, inbox.id, q)
    if reason:
        c.drop = reason
        return
    messages, schema = quote_request(q.question, q.answer or "", emails, config.body_chars(len(emails)))
    verdict = await llm.ask(messages, schema, "support_quote")
    if not isinstance(verdict, dict) or not isinstance(verdict.get("quote"), str):
        c.drop = "checker_failed"
        return
    if verdict.get("supported") is not True:
        c.drop = "unsupported"
        return
    c.drop = ground.check_quote(verdict["quote"], q.answer or "", emails)
    if c.drop:
        return
    q.evidence = " ".join(verdict["quote"].split())
    ratings = [r for r in (q.how_realistic, _clean_float(verdict.get("how_realistic"))) if r is not None]
    q.how_realistic = min(ratings) if ratings else None
    c.drop = ground.check_realism(q, config.min_realism) or ground.check_findable(
        db, inbox.id, q, emails, k=config.findable_k
    )


async def _process_batch(
    db: sqlite_utils.Database, inbox: Inbox, batch: Batch, llm: LLM, config: SynthConfig
) -> list[Candidate]:
    candidates: list[Candidate] = []
    if config.pairs_per_batch:
        body_chars = config.body_chars(len(batch.emails))
        messages, schema = pairs_request(batch, inbox.address, config.pairs_per_batch, body_chars)
        data = await llm.ask(messages, schema, "qa_pairs")
        found = _answerable_candidates(data, batch, inbox)
        for c in found:
            if c.drop is None:
                await _check_answerable(db, inbox, c, llm, config)
        candidates += found
    if config.unanswerable_per_batch:
        messages, schema = unanswerable_request(
            batch, inbox.address, config.unanswerable_per_batch, config.body_chars(len(batch.emails))
        )
        found = _unanswerable_candidates(await llm.ask(messages, schema, "unanswerable"), batch, inbox)
        for c in found:
            if c.drop is None:
                c.drop = (
                    ground.check_on_topic(c.question.question, list(batch.emails))
                    or ground.check_unanswerable(db, inbox.id, c.question, c.key_terms)
                    or ground.check_realism(c.question, config.min_realism)
                )
        candidates += found
    return candidates


async def _run_llm(
    db: sqlite_utils.Database,
    inbox: Inbox,
    config: SynthConfig,
    report: ground.Report,
    llm: LLM,
    advance: Callable,
    concurrency: int,
) -> list[Question]:
    batches, skipped = sample_batches(db, inbox, batch_size=config.batch_size, seed=config.seed)
    report.counters.update({f"emails_skipped_{k}": v for k, v in skipped.items()})
    batches = batches[: config.batch_limit()]
    deduper = ground.Deduper(config.dedup_threshold)
    kept: list[Question] = []
    for start in range(0, len(batches), max(1, concurrency)):
        wave = batches[start : start + max(1, concurrency)]
        results = await asyncio.gather(*(_process_batch(db, inbox, b, llm, config) for b in wave))
        for candidates in results:  # in batch order, so reruns keep the same pairs
            report.counters["batches"] += 1
            for c in candidates:
                report.generated += 1
                if c.drop is None and not deduper.is_new(c.question.question):
                    c.drop = "near_duplicate"
                if c.drop:
                    report.drop(c.drop)
                elif len(kept) < config.n:
                    kept.append(c.question)
                    advance(1)
                else:
                    report.drop("over_n")
        if len(kept) >= config.n:
            break
    return kept


async def _run_llm_and_close(*args: Any) -> list[Question]:
    llm: LLM = args[4]
    try:
        return await _run_llm(*args)
    finally:
        await llm.client.close()


# ---- entry point


def generate(
    db: sqlite_utils.Database,
    inbox: Inbox,
    config: SynthConfig,
    *,
    llm: LLM | None = None,
    concurrency: int = 4,
    progress: bool = True,
) -> tuple[list[Question], ground.Report]:
    """Write up to ``config.n`` checked pairs for ``inbox``; returns them and the report.

    ``llm`` is required for ``generator="llm"``; its cache makes reruns free for done batches. Its
    client is closed at the end (it belongs to this call's event loop): pass a fresh ``LLM`` per call.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    report = ground.Report()
    columns = (
        TextColumn("[bold]synth[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"{inbox.id} ({config.generator})", total=config.n)

        def advance(k: int) -> None:
            bar.advance(task, k)

        if config.generator == "template":
            kept = _run_template(db, inbox, config, report, advance)
        else:
            if llm is None:
                raise ValueError("generator 'llm' needs an LLM endpoint (or use generator='template')")
            kept = asyncio.run(_run_llm_and_close(db, inbox, config, report, llm, advance, concurrency))
            report.counters.update(llm.counters)
    report.kept = len(kept)
    return kept, report


def report_path(out: Path) -> Path:
    """Where the report of ``out`` goes: ``pairs.jsonl`` -> ``pairs.report.json``."""
    return out.with_name(out.stem + ".report.json")


def write_outputs(out: Path, questions: list[Question], report: ground.Report, config: SynthConfig) -> Path:
    """Write the pairs and, beside them, the report (with the config that made them); both atomic."""
    save_questions(out, questions)
    path = report_path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump({**report.to_dict(), "config": asdict(config)}, f, indent=2)
    os.replace(tmp, path)
    return path
