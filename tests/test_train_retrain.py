"""`inboxrl retrain` end to end on CPU, on a small maildir that is not part of the default inbox.

Ingest -> template QA -> split -> SFT -> GRPO (each stopped by the time budget after 1 of its 2
planned steps) -> eval of base vs new adapter on a vLLM server the stage starts (the adapter merged
into its weights) -> register only if not worse. Rerunning resumes: finished stages are skipped, and
stages whose records are removed run again (here the eval, through the running server with the
adapter loaded as a LoRA, and the register, which loads the adapter into that server).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from env.config import Settings
from tests.fixtures.model import free_port
from train.registry import list_runs
from train.retrain import STAGES, STATE_FILE

OWNER = "dana.reyes@example.org"
SENDERS = [
    ("Marco Ruiz", "marco.ruiz@example.org"),
    ("Priya Shah", "priya.shah@example.org"),
    ("Tom Becker", "tom.becker@example.org"),
    ("Lena Ortiz", "lena.ortiz@example.org"),
]
TOPICS = [
    ("Warehouse lease renewal", "The landlord wants $18,500 per month for the Tulsa warehouse from July."),
    (
        "Pipeline maintenance window",
        "Crews will shut the Line 4 valve station for maintenance; budget $42,000.",
    ),
    ("Conference booth invoice", "The booth at the Denver energy expo came to $7,250 including power."),
    ("Turbine spare parts", "We ordered two spare blades for unit 3 at $96,000 from the Houston vendor."),
    ("Office move schedule", "Movers arrive Saturday; the new office deposit of $5,400 is paid."),
    ("Storage contract terms", "The Katy storage contract renews at $0.12 per unit; total $61,000 a year."),
    ("Trading desk laptops", "IT quoted $13,800 for six new laptops for the trading desk."),
    ("Safety audit findings", "The auditors fined the compressor site $2,500 for missing signage."),
    ("Quarterly bonus pool", "Finance approved a bonus pool of $210,000 for the west desk this quarter."),
    ("Vendor dinner receipt", "Dinner with the Calpine team cost $640; please file it under client events."),
    ("Gas curve review", "Our May Henry Hub curve sits at $4.85; Priya thinks it is too low."),
    ("Training course fees", "The risk management course in Austin costs $3,300 per person."),
]


def write_maildir(root: Path) -> Path:
    """A CMU-layout maildir ``root/reyes-d/inbox/N.`` of a dozen distinct emails over five months."""
    inbox = root / "reyes-d" / "inbox"
    inbox.mkdir(parents=True)
    for n, (subject, fact) in enumerate(TOPICS, start=1):
        name, address = SENDERS[n % len(SENDERS)]
        month, day = ["Jan", "Feb", "Mar", "Apr", "May"][n // 3], 1 + (7 * n) % 27
        body = (
            f"Dana,\n\n{fact} Let me know by Friday if you want to go ahead, and copy the desk "
            f"so everyone sees the numbers before the review.\n\nThanks,\n{name.split()[0]}\n"
        )
        headers = [
            f"Message-ID: <{n}.reyes.retrain@example.org>",
            f"Date: Mon, {day} {month} 2001 10:{n:02d}:00 -0600",
            f"From: {address}",
            f"To: {OWNER}",
            f"Subject: {subject}",
            "Mime-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            "Content-Transfer-Encoding: 7bit",
            f"X-From: {name}",
            "X-To: Dana Reyes",
            "X-Folder: \\Dana_Reyes_Jun2001\\Notes Folders\\Inbox",
            "X-Origin: Reyes-D",
        ]
        (inbox / f"{n}.").write_text("\r\n".join(headers) + "\r\n\r\n" + body)
    return root / "reyes-d"


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(3600)
def test_retrain_on_a_new_maildir(tmp_path: Path, vllm_server: Settings, released_model_dir: Path) -> None:
    """Trains on top of the served released agent (as `inboxrl retrain` does by default), so the new
    adapter loads on the model the server serves."""
    from app.cli import cli
    from env.model import served_models

    maildir = write_maildir(tmp_path / "mail")
    home = tmp_path / "home"
    env = {
        "INBOXRL_HOME": str(home),
        "INBOXRL_DB": str(home / "inbox.db"),
        "INBOXRL_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",  # no server: the eval starts one
        "INBOXRL_API_KEY": vllm_server.api_key,
        "INBOXRL_MODEL": vllm_server.model,
        "INBOXRL_MAX_TURNS": "2",
    }
    args = [
        "retrain", "--inbox", str(maildir), "--model", str(released_model_dir), "--name", "reyes-1",
        "--preset", "smoke", "--questions-per-inbox", "10", "--minutes", "0.05", "--eval-questions", "2",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    state_path = home / "runs" / "reyes-1" / STATE_FILE
    state = json.loads(state_path.read_text())
    assert list(state["stages"]) == list(STAGES)
    stages = state["stages"]
    assert stages["ingest"]["inboxes"] == ["reyes-d"] and stages["ingest"]["ingested"] == len(TOPICS)
    assert stages["synth"]["generator"] == "template"
    assert Path(stages["split"]["train"]).is_file() and Path(stages["split"]["test"]).is_file()
    for stage in ("sft", "grpo"):  # the smoke preset plans 2 steps; 3 seconds fit one
        assert stages[stage]["steps"] == 1
        assert (
            stages[stage]["budget_stop"]["step"] == 1 and stages[stage]["budget_stop"]["planned_steps"] == 2
        )
    assert re.search(r"SFT +1 step \(time budget: 1 of 2 planned\)", result.output), result.output
    assert set(stages["eval"]) == {"base", "new"}  # no earlier adapter to beat
    assert stages["eval"]["base"]["model"] == str(released_model_dir)
    assert stages["eval"]["new"]["model"] == "reyes-1-candidate"
    for summary in stages["eval"].values():
        assert summary["n"] >= 1 and summary["accuracy"] is not None
    assert not (home / "runs" / "reyes-1" / "generation" / "run" / "vllm.pid").exists()  # its server ended
    assert "hallucination_rate" in stages["register"]["decision"]
    assert "95% CI" in stages["register"]["decision"]
    assert "Retrain reyes-1" in result.output and "new adapter" in result.output

    # Resume: finished stages are skipped; stages whose records are gone run again, here through the
    # running server (the adapter loaded as a LoRA), where a registered adapter is loaded too.
    del state["stages"]["eval"], state["stages"]["register"]
    state_path.write_text(json.dumps(state))
    served = {**env, "INBOXRL_BASE_URL": vllm_server.base_url}
    again = CliRunner().invoke(cli, args, env=served)
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert "Resuming retrain reyes-1" in again.output
    assert "[6/7] eval" in again.output and "[5/7]" not in again.output
    stages = json.loads(state_path.read_text())["stages"]
    assert list(stages) == list(STAGES)
    assert stages["eval"]["new"]["model"] == "reyes-1-candidate"
    assert "reyes-1-candidate" in served_models(vllm_server)
    settings = Settings(home=home, base_url=vllm_server.base_url, api_key=vllm_server.api_key)
    names = [r.name for r in list_runs(settings)]
    if stages["register"]["registered"]:
        assert names == ["reyes-1"] and stages["register"]["loaded"]
        assert "reyes-1" in served_models(settings)
    else:
        assert names == [] and "Not registered" in stages["register"]["decision"]


def _eval_dir(root: Path, db: Path, name: str, outcomes: list[str]) -> Path:
    """An eval run folder whose rows end with ``outcomes`` (scored as the reward table scores them)."""
    from judge.baseline import evaluate_policy
    from synth_data.questions import default_questions_path, load_questions

    questions = [q for q in load_questions(default_questions_path()) if q.answer][: len(outcomes)]
    out = root / name
    evaluate_policy(questions, db_path=db, out_dir=out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    totals = {"correct": 1.3, "abstained": 0.0, "incorrect": -1.0}
    for row, outcome in zip(rows, outcomes, strict=True):
        row["reward"] = {**row["reward"], "outcome": outcome, "total": totals[outcome]}
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.mark.parametrize(
    ("new", "registered", "why"),
    [
        (["correct", "abstained", "abstained", "abstained"], True, "hallucination_rate +0.000"),
        (["correct", "correct", "incorrect", "abstained"], False, "hallucination_rate +0.250"),
        (["abstained", "abstained", "abstained", "abstained"], False, "reward -0.325"),
    ],
)
def test_a_new_adapter_that_hallucinates_more_or_earns_less_is_refused(
    tmp_path: Path, default_db_path: Path, new: list[str], registered: bool, why: str
) -> None:
    from train.retrain import not_worse

    first = ["correct", "abstained", "abstained", "abstained"]
    reference = _eval_dir(tmp_path, default_db_path, "reference", first)
    ok, reason = not_worse(reference, _eval_dir(tmp_path, default_db_path, "new", new))
    assert ok is registered
    assert why in reason and "95% CI" in reason


def test_mail_already_ingested_is_named_as_such_not_as_a_missing_mailbox(tmp_path: Path) -> None:
    from train.retrain import RetrainOptions, _ingest

    settings = Settings(home=tmp_path / "home", db=tmp_path / "home" / "inbox.db")
    options = RetrainOptions(inbox=write_maildir(tmp_path / "mail"))
    assert _ingest(settings, options)["inboxes"] == ["reyes-d"]
    with pytest.raises(ValueError, match=r"No new mail in .*already in .*same --name"):
        _ingest(settings, options)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):  # a folder without mail says so
        _ingest(settings, RetrainOptions(inbox=tmp_path / "empty"))
