"""SFT warm-start: LoRA supervised fine-tuning on successful trajectories (TRL SFTTrainer).

    inboxrl train sft --preset cpu --name sft-1                       # trajectories built from the QA pairs
    inboxrl train sft --source teacher --set teacher_model=gpt-4.1     # distil a teacher's correct rollouts
    inboxrl train grpo --init-adapter sft-1                           # then GRPO from the warm start

The embedded 135M model rarely finishes a rollout on its own, so GRPO from scratch sees almost no
reward. Two ways to get trajectories that end in a right answer:

- ``qa`` (offline): for each question, search with words of the question that retrieve a cited
  email (checked with the real ``search_emails``), read it, and return the gold answer with its
  sources. An unanswerable question searches, finds nothing that answers it, and says
  "I don't know". :func:`qa_trajectory` builds one.
- ``teacher``: run the agent loop (``env.agent.arun_batch``) with a stronger model on any
  OpenAI-compatible endpoint and keep the trajectories the judge marks correct.

Both use the serving prompt (``env.prompt.build_messages``), tool schemas and tool messages, and
the loss covers only the assistant turns (:func:`tokenize_examples` gives TRL the masks).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from env.config import Settings
from env.db import get_inbox, open_db, resolve_message_ids
from env.prompt import I_DONT_KNOW, build_messages
from env.tools import MAX_BODY_CHARS, InboxTools, ToolError, make_tools
from synth_data.ground import answer_terms_in, normalize
from synth_data.questions import Question
from train.budget import budget_callbacks
from train.config import InboxSFTConfig
from train.env import FINAL_TOOL, template_messages
from train.loading import (
    CHECKPOINTS,
    METRICS,
    TrainResult,
    base_model_path,
    load_policy,
    load_tokenizer,
    prepare_run_dir,
    train_and_save,
    training_questions,
    with_unanswerables,
)
from train.metrics import make_callback
from train.registry import new_run_name, run_dir

MAX_READS = 2  # cited emails a built trajectory reads before answering
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9$#.'/-]*[A-Za-z0-9]|[A-Za-z0-9]")
_STOP = set(
    """a about above after again all am an and any are as at be been before being below between both but by
    can could did do does doing down during each few for from further had has have having he her here hers
    him his how i if in into is it its just me more most my myself no nor not now of off on once only or
    other our ours out over own same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself didn't don't doesn't get got tell know say said send
    sent mail email emails please thanks week month day year today yesterday tomorrow""".split()  # noqa: SIM905
)


# ---------------------------------------------------------------------------------------------------
# Trajectories built from QA pairs


def question_keywords(question: str, limit: int = 6) -> list[str]:
    """Content words of a question, longest (most specific) first, without duplicates or stop words.

    >>> question_keywords("What price did Brenda Stone quote for the Sagewood townhomes?")
    ['townhomes', 'sagewood', 'brenda', 'price', 'stone', 'quote']
    """
    words = []
    for word in _WORD.findall(question):
        w = word.lower().strip(".'/-")
        if len(w) >= 3 and w not in _STOP and w not in words:
            words.append(w)
    return sorted(words, key=len, reverse=True)[:limit]


def _candidates(question: str, email_text: str) -> list[list[str]]:
    """Keyword sets to try, most specific first: question words in the cited email, then subject words."""
    text = email_text.lower()
    inside = [w for w in question_keywords(question, 10) if w in text]
    sets = [inside[:2], inside[:1], inside[:3], inside[1:3]]
    sets += [[w] for w in inside[1:4]]
    subject_words = question_keywords(email_text.split("\n", 1)[0], 4)
    sets += [subject_words[:2], subject_words[:1]]
    out: list[list[str]] = []
    for s in sets:
        if s and s not in out:
            out.append(s)
    return out


def _assistant_call(name: str, arguments: dict[str, Any], index: int) -> dict:
    call = {
        "id": f"call_{index}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def _tool_message(index: int, name: str, content: str) -> dict:
    return {"role": "tool", "tool_call_id": f"call_{index}", "name": name, "content": content}


def qa_trajectory(
    question: Question,
    db: Any,
    *,
    few_shot: bool = True,
    max_body_chars: int | None = MAX_BODY_CHARS,
    search_results: int = 5,
) -> list[dict] | None:
    """An OpenAI-format conversation that answers ``question`` with the real tools, or None.

    Answerable: ``search_emails`` with keywords that return a cited email, ``read_email`` on the
    cited emails found (up to :data:`MAX_READS`), ``return_final_answer`` with the gold answer and
    the message_ids read. Returns None when no keyword set retrieves a cited email.
    Unanswerable: a search with the question's words, one retry with others, then "I don't know"
    with no sources. Every search asks for ``search_results`` emails.
    """
    inbox = get_inbox(db, question.inbox_key)
    tools = make_tools(db, inbox, question.query_date, max_body_chars=max_body_chars)
    messages = build_messages(question.question, inbox, question.query_date, few_shot=few_shot)
    step = 0

    def call(name: str, arguments: dict[str, Any]) -> str:
        nonlocal step
        result = tools.call(name, arguments)
        messages.append(_assistant_call(name, arguments, step))
        messages.append(_tool_message(step, name, result.content))
        step += 1
        return result.content

    if question.kind == "unanswerable" or not question.answer:
        keywords = question_keywords(question.question, 6) or ["update"]
        call("search_emails", {"keywords": keywords[:2], "max_results": search_results})
        if keywords[2:4]:  # one retry with other words before giving up
            call("search_emails", {"keywords": keywords[2:4], "max_results": search_results})
        messages.append(_assistant_call("return_final_answer", {"answer": I_DONT_KNOW, "sources": []}, step))
        return messages

    gold = resolve_message_ids(db, inbox.id, question.message_ids)
    if not gold:
        return None
    gold_rows = set(gold.values())
    try:
        first = tools.read_email(next(iter(gold)))
    except ToolError:  # the cited email is dated after the question: no honest trajectory reaches it
        return None
    found: list[str] = []
    for keywords in _candidates(question.question, f"{first['subject']}\n{first['body']}"):
        hits = tools.search_emails(keywords, max_results=search_results)
        ids = [h["message_id"] for h in hits]
        resolved = resolve_message_ids(db, inbox.id, ids)
        found = [i for i in ids if resolved.get(i) in gold_rows]
        if found:
            call("search_emails", {"keywords": keywords, "max_results": search_results})
            break
    if not found:
        return None
    seen_rows: set[int] = set()
    sources, shown = [], []
    for message_id in found:
        row = resolve_message_ids(db, inbox.id, [message_id]).get(message_id)
        if row in seen_rows or len(sources) >= MAX_READS:
            continue
        seen_rows.add(row)
        shown.append(call("read_email", {"message_id": message_id}))
        sources.append(message_id)
    if not _supported(question, shown):
        return None  # the answer is not in what the trajectory read (e.g. past max_body_chars)
    messages.append(
        _assistant_call("return_final_answer", {"answer": question.answer, "sources": sources}, step)
    )
    return messages


def _supported(question: Question, shown: list[str]) -> bool:
    """Whether the emails a trajectory read (``read_email`` results) back its answer: the evidence
    quote is in them, or at least half of the answer's content words are."""
    text = "\n".join(" ".join(str(v) for v in json.loads(content).values()) for content in shown)
    if question.evidence and normalize(question.evidence) in normalize(text):
        return True
    return answer_terms_in(question.answer or "", text) >= 0.5


def qa_examples(
    questions: list[Question],
    db: Any,
    *,
    few_shot: bool = True,
    max_body_chars: int | None = MAX_BODY_CHARS,
    search_results: int = 5,
) -> tuple[list[dict], list[str]]:
    """SFT examples (``messages`` + serving ``tools``) from QA pairs; also the ids of questions skipped."""
    tools = json.dumps(InboxTools.schemas())
    examples, skipped = [], []
    for q in questions:
        messages = qa_trajectory(
            q, db, few_shot=few_shot, max_body_chars=max_body_chars, search_results=search_results
        )
        if messages is None:
            skipped.append(q.id)
            continue
        examples.append({"question_id": q.id, "messages": template_messages(messages), "tools": tools})
    return examples, skipped


# ---------------------------------------------------------------------------------------------------
# Trajectories distilled from a teacher


def teacher_examples(
    settings: Settings, config: InboxSFTConfig, questions: list[Question], *, progress: bool = True
) -> tuple[list[dict], list[str], dict[str, int]]:
    """Run a teacher model on the questions (a ``teacher_questions`` sample of them); keep the
    trajectories the judge marks correct, and with ``relabel_wrong`` the others: with the gold answer
    where the emails the rollout read hold it (:func:`hindsight_answer`, when ``hindsight_answers``),
    else as abstentions (:func:`abstention_relabel`). A rollout with a failed tool call (malformed
    arguments, an unknown message_id...) is dropped: training on it would teach the mistake. Returns
    the examples, the ids of the questions skipped, and how many trajectories were kept (``correct``,
    ``corrected``, ``relabeled``) or dropped (``failed_call``, ``dropped``, ``infra``)."""
    import random

    from env.agent import arun_batch

    teacher = settings.model_copy(
        update={
            k: v
            for k, v in {"model": config.teacher_model, "base_url": config.teacher_base_url}.items()
            if v is not None
        }
        | {"few_shot": config.few_shot, "max_body_chars": config.max_body_chars}
    )
    if config.teacher_api_key_env:
        import os

        key = os.environ.get(config.teacher_api_key_env)
        if not key:
            raise ValueError(
                f"teacher_api_key_env={config.teacher_api_key_env} is not set in the environment."
            )
        teacher = teacher.model_copy(update={"api_key": key})
    if config.teacher_questions is not None and config.teacher_questions < len(questions):
        questions = random.Random(config.seed).sample(questions, config.teacher_questions)
    trajectories = asyncio.run(
        arun_batch(questions, db=settings.db_path, settings=teacher, progress=progress, description="teacher")
    )
    tools = json.dumps(InboxTools.schemas())
    db = open_db(settings.db_path)
    examples, skipped = [], []
    counts = dict.fromkeys(("correct", "corrected", "relabeled", "failed_call", "dropped", "infra"), 0)
    for q, traj in zip(questions, trajectories, strict=True):
        messages: list[dict] | None = None
        failed = any(c.error and not c.error.startswith("not run") for c in traj.tool_calls)
        if traj.infra_error:
            counts["infra"] += 1
        elif failed:
            counts["failed_call"] += 1
        elif traj.ended == "answered" and _right(q, traj, settings):
            messages, kind = traj.messages, "correct"
        elif config.relabel_wrong and traj.ended in RELABELED_ENDINGS:
            corrected = hindsight_answer(q, traj.messages, db) if config.hindsight_answers else None
            if corrected is not None:
                messages, kind = corrected, "corrected"
            else:
                messages, kind = abstention_relabel(traj.messages), "relabeled"
        if messages is None:
            counts["dropped"] += not (traj.infra_error or failed)
            skipped.append(q.id)
            continue
        counts[kind] += 1
        examples.append(
            {"question_id": q.id, "messages": template_messages(messages), "tools": tools, "teacher": kind}
        )
    return examples, skipped, counts


RELABELED_ENDINGS = ("answered", "gave_up", "max_turns")  # not bad_tool_call / model_error: broken turns


def _right(question: Question, trajectory: Any, settings: Settings) -> bool:
    """Whether the judge marks a finished trajectory's answer correct ("I don't know" is correct on
    an unanswerable question)."""
    from judge import judge_answer

    verdict = judge_answer(
        question.question,
        question.answer,
        trajectory.answer,
        trajectory.sources,
        question.message_ids,
        settings=settings,
    )
    return verdict.verdict == "correct" or (question.answer is None and verdict.verdict == "abstained")


def _before_final(messages: list[dict]) -> list[dict]:
    """A rollout up to the turn that called ``return_final_answer``, without trailing assistant turns
    that got no tool result (a reply in prose, a turn cut by ``max_turns``)."""
    kept: list[dict] = []
    for message in messages:
        names = [c.get("function", {}).get("name") for c in message.get("tool_calls") or []]
        if message.get("role") == "assistant" and FINAL_TOOL in names:
            break
        kept.append(message)
    while kept and kept[-1].get("role") == "assistant":
        kept.pop()
    return kept


def _emails_read(messages: list[dict]) -> list[tuple[str, str]]:
    """``(message_id, tool result)`` of each ``read_email`` call that returned an email."""
    calls = {
        c.get("id"): c.get("function", {})
        for m in messages
        if m.get("role") == "assistant"
        for c in m.get("tool_calls") or []
    }
    out = []
    for m in messages:
        function = calls.get(m.get("tool_call_id")) if m.get("role") == "tool" else None
        if not function or function.get("name") != "read_email":
            continue
        try:
            email = json.loads(m.get("content") or "")
        except ValueError:
            continue
        if isinstance(email, dict) and isinstance(email.get("message_id"), str) and "body" in email:
            out.append((email["message_id"], m["content"]))
    return out


def hindsight_answer(question: Question, messages: list[dict], db: Any) -> list[dict] | None:
    """A rollout that read the email holding the answer but answered wrongly (or abstained, or ran out
    of turns), ending with the gold answer instead: its own searches and reads, then
    ``return_final_answer`` with the gold answer and, as sources, the cited emails it read.

    None when the question is unanswerable, when the rollout read none of the question's cited emails,
    or when what those reads showed does not back the answer (:func:`_supported`: the evidence quote,
    or half the answer's words). An answer is taught only where the model saw it: "I don't know"
    after reading the answer would teach the model to abstain when it should answer.
    """
    if question.kind == "unanswerable" or not question.answer:
        return None
    kept = _before_final(messages)
    inbox = get_inbox(db, question.inbox_key)
    gold_rows = set(resolve_message_ids(db, inbox.id, question.message_ids).values())
    reads = _emails_read(kept)
    rows = resolve_message_ids(db, inbox.id, [message_id for message_id, _ in reads])
    sources, shown = [], []
    for message_id, content in reads:
        if rows.get(message_id) in gold_rows and message_id not in sources:
            sources.append(message_id)
            shown.append(content)
    if not sources or not _supported(question, shown):
        return None
    return [*kept, _assistant_call(FINAL_TOOL, {"answer": question.answer, "sources": sources}, len(kept))]


def abstention_relabel(messages: list[dict]) -> list[dict] | None:
    """A rollout's searches and reads, then "I don't know" with no sources in place of how it ended
    (a wrong answer, a reply without a tool call, or running out of turns).

    Everything from the turn that called ``return_final_answer`` on is replaced, so are trailing
    assistant turns without tool results. None when no search ran before that point: abstaining
    without looking is not what to teach.

    >>> call = lambda name, args: {"role": "assistant", "content": "", "tool_calls": [
    ...     {"id": "c", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}
    >>> convo = [{"role": "user", "content": "q"}, call("search_emails", {"keywords": ["x"]}),
    ...          {"role": "tool", "tool_call_id": "c", "content": "[]"}, call("return_final_answer",
    ...          {"answer": "42", "sources": []}), {"role": "tool", "tool_call_id": "c", "content": "{}"}]
    >>> relabeled = abstention_relabel(convo)
    >>> len(relabeled), json.loads(relabeled[-1]["tool_calls"][0]["function"]["arguments"])["answer"]
    (4, "I don't know")
    >>> abstention_relabel(convo[:1] + convo[3:]) is None
    True
    """
    kept = _before_final(messages)
    searched = any(
        c.get("function", {}).get("name") == "search_emails" for m in kept for c in m.get("tool_calls") or []
    )
    if not searched:
        return None
    return [*kept, _assistant_call(FINAL_TOOL, {"answer": I_DONT_KNOW, "sources": []}, len(kept))]


# ---------------------------------------------------------------------------------------------------
# Training


def tokenize_examples(examples: list[dict], tokenizer: Any, max_length: int) -> tuple[list[dict], list[dict]]:
    """Each example's ``input_ids`` and ``assistant_masks``; drops those over ``max_length`` tokens.

    Rendered here, before ``datasets`` sees the messages: a column of messages merges every tool
    call's arguments into one Arrow struct, so the trainer would render a ``read_email`` call as
    ``{"keywords": null, "message_id": "...", "answer": null, "sources": null}`` and teach the model
    to mix the tools' arguments up. Truncating instead of dropping would cut off the final answer.
    The masks come from TRL's training variant of the chat template (``{% generation %}`` markers).
    Returns the token rows and the examples they came from (both without the ones too long).
    """
    from trl.chat_template_utils import get_training_chat_template

    template = get_training_chat_template(tokenizer)
    rows, kept = [], []
    for ex in examples:
        out = tokenizer.apply_chat_template(
            ex["messages"],
            tools=json.loads(ex["tools"]),
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        if len(out["input_ids"]) > max_length:
            continue
        rows.append({"input_ids": list(out["input_ids"]), "assistant_masks": list(out["assistant_masks"])})
        kept.append(ex)
    return rows, kept


def _count_teacher(examples: list[dict]) -> dict[str, int]:
    """Teacher examples by kind (``correct``, ``corrected``, ``relabeled``) among ``examples``."""
    counts: dict[str, int] = {}
    for ex in examples:
        if "teacher" in ex:
            counts[ex["teacher"]] = counts.get(ex["teacher"], 0) + 1
    return counts


SFT_DATA = "sft_data.jsonl"  # the examples a run trains on (after max_length)
SFT_DATA_INFO = "sft_data.json"  # what they are: the ``data`` of result.json


def sft_data(
    settings: Settings,
    config: InboxSFTConfig,
    name: str,
    *,
    resume: bool = True,
    progress: bool = True,
    questions: list[Question] | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """The examples run ``name`` trains on, and what they are (``data`` of its result.json).

    Built (qa trajectories, teacher rollouts) and saved in the run folder; a resumed run reads them
    back, so an interrupted run does not roll its teacher out again and trains on the same data.
    Call it before :func:`train_sft` to run a teacher server only while it is needed.
    """
    from judge.evaluate import write_atomic
    from train.registry import write_json_atomic

    folder = prepare_run_dir(settings, name, "sft", config, resume=resume)
    data_file, info_file = folder / SFT_DATA, folder / SFT_DATA_INFO
    if resume and data_file.is_file() and info_file.is_file():
        examples = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines() if line]
        return examples, json.loads(info_file.read_text(encoding="utf-8"))
    path, selected = training_questions(settings, config)
    if questions is not None:
        selected = questions
    selected = with_unanswerables(settings, config, selected)
    db = open_db(settings.db_path)
    examples, skipped, teacher = [], [], None
    if config.source in ("qa", "qa+teacher"):
        examples, skipped = qa_examples(
            selected,
            db,
            few_shot=config.few_shot,
            max_body_chars=config.max_body_chars,
            search_results=config.search_results,
        )
    if config.source in ("teacher", "qa+teacher"):
        taught, not_taught, teacher = teacher_examples(settings, config, selected, progress=progress)
        examples += taught
        skipped = sorted(set(skipped) | set(not_taught)) if config.source == "teacher" else skipped
    tokenizer = load_tokenizer(base_model_path(settings, config))
    rows, kept = tokenize_examples(examples, tokenizer, config.max_length)
    too_long = len(examples) - len(kept)
    if not rows:
        raise ValueError(
            f"No SFT trajectories from {len(selected)} questions ({len(skipped)} had no usable trajectory, "
            f"{too_long} longer than max_length={config.max_length}). Raise max_length or add questions."
        )
    info = {
        "questions": str(path),
        "n_questions": len(selected),
        "source": config.source,
        "examples": len(rows),
        "skipped_questions": skipped,
        "too_long": too_long,
        **({"teacher": {**teacher, "kept_after_max_length": _count_teacher(kept)}} if teacher else {}),
        "inboxes": sorted({q.inbox_key for q in selected}),
    }
    write_atomic(data_file, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in kept))
    write_json_atomic(info_file, info)
    return kept, info


def train_sft(
    settings: Settings,
    config: InboxSFTConfig,
    *,
    name: str | None = None,
    resume: bool = True,
    progress: bool = True,
    questions: list[Question] | None = None,
) -> TrainResult:
    """Build trajectories (:func:`sft_data`), fine-tune a LoRA on them, save it to
    ``<runs_dir>/<name>/adapter``.

    :param questions: use these instead of ``config.questions`` (retrain passes its train split).
    """
    from datasets import Dataset
    from trl import SFTTrainer

    device = config.resolved_device()
    name = name or new_run_name(settings, "sft")
    examples, info = sft_data(settings, config, name, resume=resume, progress=progress, questions=questions)
    folder = run_dir(settings, name)
    base_model = base_model_path(settings, config)
    tokenizer = load_tokenizer(base_model)
    rows, _ = tokenize_examples(examples, tokenizer, config.max_length)
    model, peft_config = load_policy(settings, config, base_model, device)
    trainer = SFTTrainer(
        model=model,
        args=config.to_trl(folder / CHECKPOINTS, device=device),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[make_callback(folder / METRICS, stage="sft"), *budget_callbacks(config.max_minutes)],
    )
    data = {k: v for k, v in info.items() if k not in ("questions", "n_questions")}
    return train_and_save(
        trainer,
        folder,
        name=name,
        stage="sft",
        resume=resume,
        base_model=base_model,
        init_adapter=config.init_adapter,
        questions=Path(info["questions"]),
        n_questions=info["n_questions"],
        data=data,
    )
