"""Example questions for a newcomer: what to ask the default inbox, and which "today" to pick.

The default inbox holds three Enron mailboxes from 2000-2002, so a newcomer cannot guess a question
or a date. The examples come from the shipped question set (``default_questions_path()``), each
with its inbox and query date:

1. the questions the default model answered correctly in its eval: the ``example_question_ids`` of
   the released agent's shipped ``run.json`` (``env.model.released_run``), or of a registered run's
   ``run.json`` (top level, or in its ``eval`` summary), one inbox at a time;
2. then answerable, short, realistic ones (easy before hard), spread over the inboxes.

``inboxrl demo`` prints them as ``inboxrl ask`` commands; the app's chat page shows them as buttons
that fill the chat input and set the inbox and date.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from env.config import RELEASED_MODEL_NAME, Settings
from synth_data.questions import Question, default_questions_path, load_questions

EXAMPLE_IDS_KEY = "example_question_ids"
DIFFICULTY_RANK = {"easy": 0, "medium": 1, "hard": 2}


def pick_examples(
    questions: Sequence[Question],
    n: int = 3,
    *,
    preferred_ids: Iterable[str] = (),
    inboxes: Iterable[str] | None = None,
) -> list[Question]:
    """Up to ``n`` example questions: ``preferred_ids`` first (in their order, each inbox's first in
    turn), then the best of the rest, each inbox's best in turn, so the examples cover the inboxes.

    "Best" is answerable, then more realistic (``how_realistic``), easier, and shorter.
    ``inboxes`` (keys or owner addresses) keeps only questions about those inboxes.

    >>> qs = [Question(id=f"q{i}", inbox_address=a, question="Q" * i, answer="A", message_ids=["<m>"],
    ...       query_date="2001-01-01", kind="single", how_realistic=r, mailbox=a)
    ...       for i, (a, r) in enumerate([("a", 0.9), ("a", 0.8), ("b", 0.5), ("c", 0.7)], 1)]
    >>> [q.id for q in pick_examples(qs, 3)]
    ['q1', 'q4', 'q3']
    >>> [q.id for q in pick_examples(qs, 2, preferred_ids=["q2", "nope"], inboxes=["a", "b"])]
    ['q2', 'q1']
    >>> [q.id for q in pick_examples(qs, 2, preferred_ids=["q1", "q2", "q3"])]
    ['q1', 'q3']
    """
    allowed = None if inboxes is None else set(inboxes)
    pool = [q for q in questions if allowed is None or {q.inbox_key, q.inbox_address} & allowed]
    by_id = {q.id: q for q in pool}
    chosen = _round_robin([by_id[i] for i in dict.fromkeys(preferred_ids) if i in by_id], n)
    rest = sorted(
        (q for q in pool if q.answer is not None and q not in chosen),
        key=lambda q: (
            -(q.how_realistic or 0.0),
            DIFFICULTY_RANK.get(q.difficulty or "", 3),
            len(q.question),
            q.id,
        ),
    )
    return chosen + _round_robin(rest, n - len(chosen))


def _round_robin(questions: list[Question], n: int) -> list[Question]:
    """Up to ``n`` of ``questions``: the first of each inbox in turn, keeping their order within one."""
    queues: dict[str, list[Question]] = {}
    for q in questions:
        queues.setdefault(q.inbox_key, []).append(q)
    out: list[Question] = []
    while len(out) < n and any(queues.values()):
        for queue in queues.values():
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


def preferred_example_ids(settings: Settings, model: str | None = None) -> list[str]:
    """The ``example_question_ids`` of ``model`` (default ``settings.model``): the shipped run.json of
    the released agent, or the registered run.json of a trained run.

    Empty when the model is neither (the embedded base model) or lists none.
    """
    from env.model import ModelError, released_run
    from train.registry import RUN_FILE, NoRun, get_run

    name = model or settings.model
    try:
        if name == RELEASED_MODEL_NAME:
            data = released_run()
        else:
            data = json.loads((Path(get_run(settings, name).path) / RUN_FILE).read_text(encoding="utf-8"))
    except (ModelError, NoRun, OSError, ValueError):
        return []
    ids = data.get(EXAMPLE_IDS_KEY) or (data.get("eval") or {}).get(EXAMPLE_IDS_KEY) or []
    return [str(i) for i in ids] if isinstance(ids, list) else []


def example_questions(
    settings: Settings | None = None, n: int = 3, *, inboxes: Iterable[str] | None = None
) -> list[Question]:
    """``n`` examples from the shipped question set for the default model (see the module docstring)."""
    settings = settings or Settings()
    return pick_examples(
        load_questions(default_questions_path()),
        n,
        preferred_ids=preferred_example_ids(settings),
        inboxes=inboxes,
    )


def expected_answer(question: Question) -> str:
    """What a right answer to an example says: its gold answer, or "I don't know" for a question
    nothing in the inbox answers (so a newcomer can tell a right answer from a wrong one).

    >>> q = Question(id="x", inbox_address="p@e.com", question="Who's on call?", answer=None,
    ...              message_ids=[], query_date="2001-05-01", kind="unanswerable", mailbox="allen-p")
    >>> expected_answer(q)
    "I don't know (no email up to 2001-05-01 answers it)"
    """
    if question.answer is None:
        return f"I don't know (no email up to {question.query_date} answers it)"
    return question.answer


def ask_command(question: Question) -> str:
    """The ``inboxrl ask`` command line that asks ``question`` of its inbox on its date.

    >>> q = Question(id="x", inbox_address="p@e.com", question="Who's on call?", answer=None,
    ...              message_ids=[], query_date="2001-05-01", kind="unanswerable", mailbox="allen-p")
    >>> print(ask_command(q))
    inboxrl ask --inbox allen-p --date 2001-05-01 'Who'"'"'s on call?'
    """
    inbox, text = shlex.quote(question.inbox_key), shlex.quote(question.question)
    return f"inboxrl ask --inbox {inbox} --date {question.query_date} {text}"
