"""One command to retrain on new mail: ``inboxrl retrain --inbox PATH [--model ...]``.

Stages (each recorded in ``<runs_dir>/<name>/retrain.json`` when it finishes, so a rerun of the
same command skips what is done and resumes the stage that was interrupted):

1. ``ingest``: add the new mail to the inbox DB (``env.ingest.ingest``; known mail is skipped).
2. ``synth``: write and check QA pairs for the new mailboxes (``synth_data.generate``: the
   template generator offline, the LLM writer when ``synth_model`` is set).
3. ``split``: by time within each mailbox (``synth_data.split.split_by_time``): test questions cite
   only mail newer than every training question's date.
4. ``sft`` (optional): warm-start LoRA on trajectories built from the train questions.
5. ``grpo``: LoRA GRPO from the SFT adapter (checkpoints: an interrupted run resumes).
6. ``eval``: the base model, the previous adapter (the newest registered run) and the new one on
   the test questions (``judge.evaluate``): through the running server (adapters loaded as LoRA),
   else on a server the stage starts on the base model, each adapter merged into its weights in turn.

``--minutes`` (default 30) bounds one invocation: SFT may use ``SFT_SHARE`` of the time left before
the eval's reserve (``EVAL_SHARE`` of the budget) and GRPO the rest, each stopping before a step
that would overrun (``max_minutes``, train.budget); the planned steps are the most that run.
7. ``register``: the new adapter is registered only if it is not worse than the reference (the
   previous adapter, else the served model: by default the released agent, which the new adapter is
   trained on top of): mean reward not lower and hallucination rate not higher, paired by question
   (the decision quotes both differences with their 95% bootstrap CIs, and says why it refuses).
   A registered adapter is loaded into the running server (``env.model.load_adapter``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from env.config import Settings
from train.registry import (
    RunInfo,
    check_name,
    list_runs,
    new_run_name,
    prompt_settings,
    register_run,
    write_json_atomic,
)

log = logging.getLogger(__name__)

STAGES = ("ingest", "synth", "split", "sft", "grpo", "eval", "register")
STATE_FILE = "retrain.json"
EVAL_SHARE = 0.15
"""Share of ``--minutes`` kept for the eval stage (and the servers' and models' start-up)."""
SFT_SHARE = 0.35
"""Share of the training time left at the SFT stage that SFT may use; GRPO gets the rest."""


@dataclass
class RetrainOptions:
    """What ``inboxrl retrain`` was asked to do (stored in the state file)."""

    inbox: Path
    model: str | None = None
    name: str | None = None
    preset: str = "auto"
    questions_per_inbox: int = 24
    synth_model: str | None = None
    sft: bool = True
    sft_steps: int | None = None
    grpo_steps: int | None = None
    eval_questions: int | None = None
    test_fraction: float = 0.3
    grpo_overrides: list[str] = field(default_factory=list)
    minutes: float | None = 30.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {**asdict(self), "inbox": str(self.inbox)}


@dataclass
class RetrainOutcome:
    """The result of a retrain: where everything went and whether the adapter was registered."""

    name: str
    state: dict[str, Any]

    @property
    def registered(self) -> bool:
        """True when the new adapter passed the comparison and is in the registry."""
        return bool(self.state["stages"].get("register", {}).get("registered"))

    def summary(self) -> str:
        """A few lines for the terminal."""
        stages = self.state["stages"]
        lines = [f"Retrain {self.name}:"]
        for stage in ("sft", "grpo"):
            done = stages.get(stage) or {}
            if done.get("steps"):
                stop = done.get("budget_stop")
                why = f" (time budget: {stop['step']} of {stop['planned_steps']} planned)" if stop else ""
                steps = done["steps"]
                lines.append(f"  {stage.upper():17s} {steps} step{'s' if steps != 1 else ''}{why}")
        ev = stages.get("eval", {})
        for label, key in (("base model", "base"), ("previous adapter", "previous"), ("new adapter", "new")):
            s = ev.get(key)
            if s:
                lines.append(
                    f"  {label:17s} accuracy {_pct(s.get('accuracy'))}  hallucination "
                    f"{_pct(s.get('hallucination_rate'))}  ({s.get('model')})"
                )
        reg = stages.get("register", {})
        lines.append(f"  {reg.get('decision', 'not decided')}")
        if reg.get("loaded"):
            lines.append(f"  loaded into the running server as {self.name!r}")
        if reg.get("registered"):
            lines.append(f"  serve it merged (fastest on CPU): inboxrl model serve --model {self.name}")
        return "\n".join(lines)


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "n/a"


# ---------------------------------------------------------------------------------------------------


def _find_unfinished(settings: Settings, inbox: Path) -> str | None:
    """The newest retrain of ``inbox`` that did not finish (to resume when no --name is given)."""
    if not settings.runs_dir.is_dir():
        return None
    found = []
    for state_file in settings.runs_dir.glob(f"*/{STATE_FILE}"):
        state = json.loads(state_file.read_text())
        if state["options"]["inbox"] == str(inbox) and "register" not in state["stages"]:
            found.append((state_file.stat().st_mtime, state_file.parent.name))
    return max(found)[1] if found else None


def run_retrain(
    settings: Settings, options: RetrainOptions, *, echo: Callable[[str], Any] = print
) -> RetrainOutcome:
    """Run (or resume) every stage; see the module docstring."""
    options.inbox = Path(options.inbox).expanduser().resolve()
    if not options.inbox.exists():
        raise FileNotFoundError(f"No mail at {options.inbox}: give a maildir, mbox, .eml folder or .tar.gz.")
    name = options.name or _find_unfinished(settings, options.inbox) or new_run_name(settings, "retrain")
    folder = settings.runs_dir / check_name(name)
    state_path = folder / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        echo(f"Resuming retrain {name}: done {', '.join(state['stages']) or 'nothing yet'}.")
    else:
        state = {"name": name, "options": options.to_dict(), "stages": {}}
    previous = _previous_run(settings, exclude=name)
    deadline = time.monotonic() + options.minutes * 60 if options.minutes else None

    def done(stage: str, result: dict[str, Any]) -> None:
        state["stages"][stage] = result
        write_json_atomic(state_path, state)

    stages = {
        "ingest": lambda: _ingest(settings, options),
        "synth": lambda: _synth(settings, options, state, folder),
        "split": lambda: _split(settings, options, state, folder),
        "sft": lambda: _sft(settings, options, state, name, _training_minutes(options, deadline, SFT_SHARE)),
        "grpo": lambda: _grpo(settings, options, state, name, _training_minutes(options, deadline, 1.0)),
        "eval": lambda: _eval(settings, options, state, folder, previous),
        "register": lambda: _register(settings, options, state, name, previous),
    }
    for index, stage in enumerate(STAGES, 1):
        if stage in state["stages"]:
            continue
        echo(f"[{index}/{len(STAGES)}] {stage}")
        done(stage, stages[stage]())
    return RetrainOutcome(name=name, state=state)


def _training_minutes(options: RetrainOptions, deadline: float | None, share: float) -> float | None:
    """A training stage's ``max_minutes``: ``share`` of what is left before the eval's reserve, or
    None without ``--minutes``. With nothing left it is a token budget: a stage always trains a step."""
    if deadline is None:
        return None
    left = (deadline - time.monotonic()) / 60 - options.minutes * EVAL_SHARE
    return round(max(left * share, 0.01), 2)


def _previous_run(settings: Settings, exclude: str) -> RunInfo | None:
    """The newest registered adapter other than ``exclude`` (the reference to beat)."""
    runs = [r for r in list_runs(settings) if r.name != exclude and r.kind in ("grpo", "sft", "retrain")]
    return runs[-1] if runs else None


# ---- stages -----------------------------------------------------------------------------------------


def _ingest(settings: Settings, options: RetrainOptions) -> dict[str, Any]:
    from env.ingest import ingest

    report = ingest([options.inbox], settings.db_path, progress=True)
    if not report.inboxes and (report.skipped_sources or report.duplicate):
        raise ValueError(
            f"No new mail in {options.inbox}: it is already in {settings.db_path} "
            f"({report.skipped_sources} sources unchanged, {report.duplicate} duplicate messages). "
            "Resume the retrain that ingested it (same --name), or point --inbox at new mail."
        )
    if not report.inboxes:
        raise ValueError(f"No mailbox found in {options.inbox}; check the path and format.")
    return {"inboxes": list(report.inboxes), "ingested": report.ingested, "quarantined": report.quarantined}


def _synth(settings: Settings, options: RetrainOptions, state: dict, folder: Path) -> dict[str, Any]:
    from env.db import get_inbox, open_db
    from synth_data.generate import SynthConfig, generate
    from synth_data.questions import save_questions

    db = open_db(settings.db_path)
    llm = None
    if options.synth_model:
        from env.model import make_client
        from synth_data.llm import LLM, ResponseCache

        llm = LLM(
            make_client(settings), options.synth_model, ResponseCache(settings.home / "synth" / "cache.db")
        )
    config = SynthConfig(n=options.questions_per_inbox, generator="llm" if llm else "template")
    questions, counts = [], {}
    for key in state["stages"]["ingest"]["inboxes"]:
        kept, _report = generate(db, get_inbox(db, key), config, llm=llm, progress=True)
        questions += kept
        counts[key] = len(kept)
    if not questions:
        raise ValueError(
            "No question survived the checks for the new mail; add more mail or use an LLM writer."
        )
    path = save_questions(folder / "questions.jsonl", questions)
    return {"questions": str(path), "per_inbox": counts, "generator": config.generator}


def _split(settings: Settings, options: RetrainOptions, state: dict, folder: Path) -> dict[str, Any]:
    from env.db import open_db
    from synth_data.questions import load_questions, save_questions
    from synth_data.split import split_by_time

    questions = load_questions(state["stages"]["synth"]["questions"])
    split = split_by_time(questions, test_fraction=options.test_fraction, db=open_db(settings.db_path))
    if not split.train or not split.test:
        raise ValueError(
            f"The split left {len(split.train)} train and {len(split.test)} test questions; "
            "synthesize more (--questions-per-inbox)."
        )
    train = save_questions(folder / "train.jsonl", split.train)
    test = save_questions(folder / "test.jsonl", split.test)
    # The summary counts questions under "train"/"test"; the stages after this one read the file paths.
    return {**split.summary(), "train": str(train), "test": str(test)}


def _sft(
    settings: Settings, options: RetrainOptions, state: dict, name: str, minutes: float | None
) -> dict[str, Any]:
    if not options.sft:
        return {"skipped": True}
    from train.config import InboxSFTConfig, load_config
    from train.sft import train_sft

    overrides: dict[str, Any] = {"questions": state["stages"]["split"]["train"], "base_model": options.model}
    if options.sft_steps is not None:
        overrides["max_steps"] = options.sft_steps
    if minutes:
        overrides["max_minutes"] = minutes
    config = load_config(InboxSFTConfig, options.preset, None, overrides)
    result = train_sft(settings, config, name=f"{name}-sft", resume=True)
    return {
        "adapter": result.adapter_dir,
        "run": result.name,
        "steps": result.steps,
        "max_minutes": minutes,
        "budget_stop": result.data.get("budget_stop"),
    }


def _grpo(
    settings: Settings, options: RetrainOptions, state: dict, name: str, minutes: float | None
) -> dict[str, Any]:
    from train.config import InboxGRPOConfig, load_config, parse_overrides
    from train.grpo import train_grpo

    overrides = parse_overrides(options.grpo_overrides, InboxGRPOConfig)
    overrides.update({"questions": state["stages"]["split"]["train"], "base_model": options.model})
    sft = state["stages"].get("sft", {})
    if sft.get("adapter"):
        overrides["init_adapter"] = sft["adapter"]
    if options.grpo_steps is not None:
        overrides["max_steps"] = options.grpo_steps
    if minutes:
        overrides.setdefault("max_minutes", minutes)  # a --set max_minutes=... wins
    config = load_config(InboxGRPOConfig, options.preset, None, overrides)
    result = train_grpo(settings, config, name=name, resume=True)
    return {
        "adapter": result.adapter_dir,
        "base_model": result.base_model,
        "steps": result.steps,
        "budget_stop": result.data.get("budget_stop"),
        "config": config.to_dict(),
        "metrics": result.metrics_path,
    }


def _eval(
    settings: Settings, options: RetrainOptions, state: dict, folder: Path, previous: RunInfo | None
) -> dict[str, Any]:
    from env.model import is_healthy, model_prompt_settings
    from judge.evaluate import evaluate
    from synth_data.questions import load_questions

    test_path = state["stages"]["split"]["test"]
    questions = load_questions(test_path)[: options.eval_questions or None]
    grpo = state["stages"]["grpo"]
    candidate = f"{state['name']}-candidate"
    # key -> (served name, adapter folder (None: the base model itself), prompt settings), in eval order
    models: dict[str, tuple[str, Path | None, dict]] = {
        "base": (settings.model, None, model_prompt_settings(settings.model)),  # the released: its prompt
    }
    if previous:
        models["previous"] = (previous.name, previous.adapter_dir, prompt_settings(previous.config))
    models["new"] = (candidate, Path(grpo["adapter"]), prompt_settings(grpo["config"]))

    def run(key: str, agent: Settings, label: str) -> dict[str, Any]:
        out_dir = folder / "eval" / key
        _drop_other_models_eval(out_dir, agent.model)
        summary = evaluate(
            questions, db_path=settings.db_path, out_dir=out_dir, settings=agent, questions_path=test_path
        )
        return {**_headline(summary), "model": label, "out_dir": str(out_dir)}

    if is_healthy(settings.base_url, settings.api_key):  # the user's server (a GPU, say): adapters as LoRA
        from env.model import load_adapter

        load_adapter(settings, candidate, Path(grpo["adapter"]))
        if previous:
            _ensure_loaded(settings, previous)
        served = {}
        for key, (name, _, prompt) in models.items():
            served[key] = run(key, settings.model_copy(update={"model": name, **prompt}), name)
        return served
    # Our own server on the base model, each adapter merged into its weights in turn (as GRPO's
    # rollouts and the checkpoint pick do): a weight reload costs seconds, and the merged model
    # computes no LoRA term per layer.
    from train.rollout import generation_server
    from train.select import serve_merged

    base_model = grpo["base_model"]
    out = {}
    with generation_server(settings, base_model, folder) as server:
        for key, (name, adapter, prompt) in models.items():
            if adapter is not None:
                serve_merged(server, base_model, adapter, folder)
            label = (options.model or name) if adapter is None else name  # the base: --model
            out[key] = run(key, server.model_copy(update=prompt), label)
    return out


def _drop_other_models_eval(out_dir: Path, model: str) -> None:
    """Remove an unfinished eval in ``out_dir`` that asked another served model (the stage resumed on
    the other kind of server), which ``judge.evaluate`` would refuse to resume."""
    try:
        asked = json.loads((out_dir / "run.json").read_text())["model"]
    except (OSError, ValueError, KeyError):
        return
    if asked != model:
        log.warning(
            "Starting %s again: its unfinished eval asked %r, this one asks %r.", out_dir, asked, model
        )
        shutil.rmtree(out_dir)


def _ensure_loaded(settings: Settings, run: RunInfo) -> None:
    from env.model import ModelError, load_adapter, served_models

    if run.name not in served_models(settings):
        try:
            load_adapter(settings, run.name, run.adapter_dir)
        except ModelError as e:
            raise RuntimeError(f"Cannot load the previous adapter {run.name!r} for comparison: {e}") from e


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers the decision uses, from a ``judge.evaluate`` summary."""
    keys = (
        "n",
        "judged",
        "accuracy",
        "hallucination_rate",
        "abstention_rate",
        "no_answer_rate",
        "reward_mean",
    )
    return {k: summary.get(k) for k in keys}


def not_worse(reference_dir: str | Path, new_dir: str | Path) -> tuple[bool, str]:
    """The registration rule on two eval runs of the same questions: the new model's mean reward is
    not lower and its hallucination rate not higher than the reference's, paired by question.

    Returns the decision and the reason, which quotes both paired differences with their 95%
    bootstrap CIs (``judge.compare``).
    """
    from judge.compare import compare

    metrics = compare([reference_dir, new_dir])["metrics"]
    name = Path(new_dir).name
    parts, ok = [], True
    for metric, worse in (("reward", lambda d: d < 0), ("hallucination_rate", lambda d: d > 0)):
        test = metrics[metric]["vs_baseline"].get(name)
        if test is None:
            return False, f"no question was judged in both runs, so {metric} cannot be compared"
        ok = ok and not worse(test["diff"])
        parts.append(f"{metric} {test['diff']:+.3f} (95% CI {test['ci_low']:+.3f} to {test['ci_high']:+.3f})")
    return ok, ", ".join(parts)


def _register(
    settings: Settings, options: RetrainOptions, state: dict, name: str, previous: RunInfo | None
) -> dict[str, Any]:
    from env.model import ModelError, is_healthy, load_adapter

    ev = state["stages"]["eval"]
    reference_key = "previous" if "previous" in ev else "base"
    reference = ev[reference_key]["model"]
    ok, why = not_worse(ev[reference_key]["out_dir"], ev["new"]["out_dir"])
    if not ok:
        return {
            "registered": False,
            "decision": f"Not registered: worse than {reference} ({reference_key}) on the test questions "
            f"(new - {reference}: {why}). A new adapter must not lower the reward nor hallucinate more.",
        }
    grpo = state["stages"]["grpo"]
    info = register_run(
        settings,
        name,
        grpo["adapter"],
        kind="grpo",
        base_model=grpo["base_model"],
        data={
            "questions": state["stages"]["synth"]["questions"],
            "train": state["stages"]["split"]["train"],
            "test": state["stages"]["split"]["test"],
            "inboxes": state["stages"]["ingest"]["inboxes"],
        },
        config=grpo["config"],
        eval_summary=ev["new"],
        parent=previous.name if previous else None,
    )
    loaded = False
    if is_healthy(settings.base_url, settings.api_key):
        try:
            load_adapter(settings, name, info.adapter_dir)
            loaded = True
        except ModelError as e:
            return {"registered": True, "loaded": False, "decision": f"Registered; not loaded: {e}"}
    return {
        "registered": True,
        "loaded": loaded,
        "decision": f"Registered as {name!r}: not worse than {reference} ({reference_key}; new - "
        f"{reference}: {why}).",
    }
