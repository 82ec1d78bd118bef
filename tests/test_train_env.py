"""The TRL environment and the SFT trajectories: the serving tools, prompt and reward, on a literal DB."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from env.config import Settings
from env.db import get_inbox, open_db
from env.prompt import I_DONT_KNOW, build_messages
from env.tools import InboxTools, make_tools
from synth_data.questions import Question, default_questions_path, load_questions
from train.env import (
    InboxEnvironment,
    build_dataset,
    make_reward,
    run_last_turn,
    template_messages,
    to_trajectory,
    use_serving_tool_schemas,
)
from train.sft import hindsight_answer, qa_examples, qa_trajectory, tokenize_examples

GAS = Question(
    id="gas",
    inbox_address="alice@example.com",
    mailbox="alice-a",
    question="What is the gas price forecast for May?",
    answer="$5.10 at Henry Hub",
    message_ids=["<m1.alice@example.com>"],
    query_date="2001-05-01",
)
NOPE = Question(
    id="nope",
    inbox_address="alice@example.com",
    mailbox="alice-a",
    question="What did the lawyers say about the zoning permit?",
    answer=None,
    message_ids=[],
    query_date="2001-05-01",
    kind="unanswerable",
)


def _call(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def _rollout(env: InboxEnvironment, *calls: tuple[str, dict]) -> list[dict]:
    """Run tool calls on ``env`` as TRL does and return TRL-style completion messages."""
    completion = []
    for name, arguments in calls:
        completion.append({"role": "assistant", "content": "", "tool_calls": [_call(name, arguments)]})
        completion.append({"role": "tool", "name": name, "content": getattr(env, name)(**arguments)})
    return completion


@pytest.fixture
def env(tools_db_path: Path) -> InboxEnvironment:
    environment = InboxEnvironment.factory(tools_db_path)()
    row = build_dataset([GAS], open_db(tools_db_path))[0]
    environment.reset(**row)
    return environment


def test_dataset_prompt_is_the_serving_prompt(tools_db_path: Path) -> None:
    db = open_db(tools_db_path)
    row = build_dataset([GAS, NOPE], db)[0]
    inbox = get_inbox(db, "alice-a")
    # Arrow fills keys that only some messages have with None; templates treat None as absent.
    prompt = [{k: v for k, v in m.items() if v is not None} for m in row["prompt"]]
    assert prompt == template_messages(build_messages(GAS.question, inbox, GAS.query_date))
    # Tool-call arguments become objects, as vLLM decodes them before rendering the template.
    serving = build_messages(GAS.question, inbox, GAS.query_date)
    example = json.loads(serving[2]["tool_calls"][0]["function"]["arguments"])
    assert row["prompt"][2]["tool_calls"][0]["function"]["arguments"] == example
    assert Question.from_dict(json.loads(row["question_json"])) == GAS


def test_tools_answer_exactly_as_serving_does(env: InboxEnvironment, tools_db_path: Path) -> None:
    serving = make_tools(open_db(tools_db_path), "alice-a", "2001-05-01")
    for name, arguments in [
        ("search_emails", {"keywords": ["gas", "forecast"]}),
        ("search_emails", {"keywords": "gas"}),  # wrong type
        ("read_email", {"message_id": "<m3.alice@example.com>"}),  # after the query date
        ("read_email", {"id": "x"}),  # wrong argument name
    ]:
        assert getattr(env, name)(**arguments) == serving.call(name, arguments).content
    assert [c.error is None for c in env.calls] == [True, False, False, False]


def test_final_answer_ends_the_episode(env: InboxEnvironment) -> None:
    completion = _rollout(
        env,
        ("search_emails", {"keywords": ["gas", "forecast"]}),
        ("return_final_answer", {"answer": "$5.10 at Henry Hub", "sources": ["<m1.alice@example.com>"]}),
    )
    assert env.finished and env.answer == "$5.10 at Henry Hub"
    assert env.search_emails(keywords=["gas"]).startswith("Error: not run")
    traj = to_trajectory(env, [], completion)
    assert traj.ended == "answered" and len(traj.turns) == 2 and traj.sources == ["m1.alice@example.com"]


def test_trajectory_endings(env: InboxEnvironment) -> None:
    gave_up = to_trajectory(env, [], [{"role": "assistant", "content": "It is $5."}])
    assert gave_up.ended == "gave_up" and gave_up.reply == "It is $5."
    completion = _rollout(env, ("search_emails", {"keywords": ["gas"]}))
    assert to_trajectory(env, [], completion).ended == "max_turns"


def test_an_answer_on_the_last_allowed_turn_counts(env: InboxEnvironment) -> None:
    """TRL does not run the last turn's tool calls (max_tool_calling_iterations = max_turns - 1)."""
    completion = _rollout(env, ("search_emails", {"keywords": ["gas", "forecast"]}))
    answer = {"answer": "$5.10 at Henry Hub", "sources": ["<m1.alice@example.com>"]}
    last_turn = {"role": "assistant", "content": "", "tool_calls": [_call("return_final_answer", answer)]}
    completion.append(last_turn)
    assert to_trajectory(env, [], completion).ended == "max_turns"  # as TRL leaves it
    run_last_turn(env, completion)
    traj = to_trajectory(env, [], completion)
    assert traj.ended == "answered" and traj.answer == "$5.10 at Henry Hub"
    assert [c.name for c in traj.tool_calls] == ["search_emails", "return_final_answer"]
    run_last_turn(env, completion)  # already run: not run twice
    assert len(env.calls) == 2


def test_reward_is_the_judge_reward(tools_db_path: Path) -> None:
    """Right answer > honest "I don't know" > wrong answer > no answer, with metrics logged."""
    db = open_db(tools_db_path)
    row = build_dataset([GAS], db)[0]
    answers = {
        "right": [
            ("return_final_answer", {"answer": "$5.10 at Henry Hub", "sources": ["<m1.alice@example.com>"]})
        ],
        "idk": [("return_final_answer", {"answer": I_DONT_KNOW, "sources": []})],
        "wrong": [("return_final_answer", {"answer": "$9.99 at Waha", "sources": []})],
        "none": [("search_emails", {"keywords": ["budget"]})],
    }
    envs, completions = [], []
    for calls in answers.values():
        environment = InboxEnvironment(tools_db_path)
        environment.reset(**row)
        completions.append(_rollout(environment, *calls))
        envs.append(environment)
    logged: dict[str, float] = {}
    reward = make_reward(Settings(home=tools_db_path.parent, judge_model=None))
    rewards = reward(
        prompts=[row["prompt"]] * 4,
        completions=completions,
        environments=envs,
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    right, idk, wrong, none = rewards
    assert right > idk > wrong > none
    assert logged["inbox/accuracy"] == 0.25 and logged["inbox/hallucination"] == 0.25
    assert logged["inbox/abstention"] == 0.25 and logged["inbox/judge_errors"] == 0.0


def test_trl_renders_the_serving_tool_schemas() -> None:
    trainer = SimpleNamespace(_env_tools={None: [InboxTools.search_emails, InboxTools.read_email]})
    with pytest.raises(RuntimeError, match="Unexpected environment tools"):
        use_serving_tool_schemas(trainer)
    env = InboxEnvironment.__new__(InboxEnvironment)
    trainer = SimpleNamespace(_env_tools={None: [env.search_emails, env.read_email, env.return_final_answer]})
    use_serving_tool_schemas(trainer)
    assert trainer._env_tools[None] == InboxTools.schemas()
    with pytest.raises(RuntimeError, match="_env_tools"):
        use_serving_tool_schemas(SimpleNamespace())


def test_qa_trajectory_searches_reads_and_answers(tools_db_path: Path) -> None:
    db = open_db(tools_db_path)
    messages = qa_trajectory(GAS, db)
    assert messages is not None
    calls = [m["tool_calls"][0]["function"] for m in messages if m.get("tool_calls")][1:]  # skip the example
    assert [c["name"] for c in calls] == ["search_emails", "read_email", "return_final_answer"]
    search_result = json.loads(messages[-4]["content"])
    assert "m1.alice@example.com" in {r["message_id"].strip("<>") for r in search_result}
    assert json.loads(calls[-1]["arguments"]) == {"answer": GAS.answer, "sources": ["<m1.alice@example.com>"]}
    unanswerable = qa_trajectory(NOPE, db)
    final = json.loads(unanswerable[-1]["tool_calls"][0]["function"]["arguments"])
    assert final == {"answer": I_DONT_KNOW, "sources": []}


def _final(messages: list[dict]) -> dict:
    call = messages[-1]["tool_calls"][0]["function"]
    assert call["name"] == "return_final_answer"
    return json.loads(call["arguments"])


def _answered(messages: list[dict], answer: str) -> list[dict]:
    """``messages`` then a ``return_final_answer(answer)`` call and the tool's reply, as a rollout ends."""
    final = {"answer": answer, "sources": []}
    call = {
        "id": "final",
        "type": "function",
        "function": {"name": "return_final_answer", "arguments": json.dumps(final)},
    }
    return [
        *messages,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "final",
            "name": "return_final_answer",
            "content": json.dumps(final),
        },
    ]


def test_hindsight_answer_teaches_the_answer_a_rollout_read_and_nothing_it_did_not(
    tools_db_path: Path,
) -> None:
    db = open_db(tools_db_path)
    read_it = qa_trajectory(GAS, db, few_shot=False)
    assert read_it is not None
    for ending in ("$4.00 at Henry Hub", I_DONT_KNOW):  # a wrong answer, an abstention
        fixed = hindsight_answer(GAS, _answered(read_it[:-1], ending), db)
        assert fixed is not None and fixed[:-1] == read_it[:-1]
        assert _final(fixed) == {"answer": GAS.answer, "sources": ["<m1.alice@example.com>"]}
    ran_out = [*read_it[:-1], {"role": "assistant", "content": "Let me think."}]  # cut by max_turns
    assert _final(hindsight_answer(GAS, ran_out, db))["answer"] == GAS.answer

    searched_only = [
        m
        for m in read_it
        if not m.get("tool_calls") or m["tool_calls"][0]["function"]["name"] == "search_emails"
    ]
    searched_only = [m for m in searched_only if m["role"] != "tool" or m["name"] == "search_emails"]
    assert hindsight_answer(GAS, _answered(searched_only, "$4.00"), db) is None  # never read the answer

    other = dataclasses.replace(
        GAS,
        id="offsite",
        question="Where is the team offsite?",
        answer="Houston office",
        message_ids=["<m2.alice@example.com>"],
    )
    assert hindsight_answer(other, _answered(read_it[:-1], "Henry Hub"), db) is None  # read another email

    cut = qa_trajectory(GAS, db, few_shot=False, max_body_chars=20)
    assert cut is None  # the built trajectory is refused too: the answer is past the cap
    tools = make_tools(db, get_inbox(db, GAS.inbox_key), GAS.query_date, max_body_chars=20)
    shown = tools.call("read_email", {"message_id": "<m1.alice@example.com>"}).content
    short = [m if m.get("name") != "read_email" else {**m, "content": shown} for m in read_it]
    assert hindsight_answer(GAS, _answered(short[:-1], "$4.00"), db) is None  # the read did not show it
    assert (
        hindsight_answer(NOPE, _answered(read_it[:-1], "$4.00"), db) is None
    )  # unanswerable: "I don't know"


def test_qa_examples_cover_the_shipped_questions(default_db_path: Path) -> None:
    questions = load_questions(default_questions_path())
    examples, skipped = qa_examples(questions, open_db(default_db_path))
    assert len(examples) >= 0.9 * len(questions), skipped
    assert all(json.loads(e["tools"]) == InboxTools.schemas() for e in examples[:3])


def test_sft_tokens_are_the_serving_rendering_with_each_calls_own_arguments(
    tools_db_path: Path, embedded_model_dir: Path
) -> None:
    """What SFT learns is what the server renders; only assistant turns count.

    A ``datasets`` column of messages would merge the tools' arguments into one struct and render
    every call with the other tools' arguments as null (the bug this guards against).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    examples, _ = qa_examples([GAS], open_db(tools_db_path))
    rows, kept = tokenize_examples(examples, tokenizer, max_length=100_000)
    assert kept == examples and len(rows) == 1
    ids, mask = rows[0]["input_ids"], rows[0]["assistant_masks"]
    served = tokenizer.apply_chat_template(
        examples[0]["messages"], tools=InboxTools.schemas(), tokenize=True, return_dict=True
    )["input_ids"]
    assert ids == list(served)
    learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert "null" not in tokenizer.decode(ids)
    assert learned.count("<tool_call>") == 4  # the worked example, search, read, answer
    assert '"name": "read_email", "arguments": {"message_id": "<m1.alice@example.com>"}' in learned
    assert "Henry Hub" in learned and GAS.question not in learned  # the user turn is not learned
    assert tokenize_examples(examples, tokenizer, max_length=len(ids) - 1) == ([], [])


def test_question_filter_drops_groups_without_signal(scripted, tools_db_path: Path, tmp_path: Path) -> None:
    """A question solved in some rollouts is kept; one never solved is dropped and counted.

    A scripted policy stands in for the model: the test is about the filter's bookkeeping.
    """
    from tests.fixtures.scripted import text, tool_call
    from train.config import InboxGRPOConfig
    from train.grpo import filter_questions

    offsite = Question(
        id="offsite",
        inbox_address="alice@example.com",
        mailbox="alice-a",
        question="When does the team offsite start?",
        answer="Friday at 10am",
        message_ids=["<m2.alice@example.com>"],
        query_date="2001-05-01",
    )
    scripted.queue(
        tool_call(
            "return_final_answer", {"answer": "$5.10 at Henry Hub", "sources": ["<m1.alice@example.com>"]}
        ),
        tool_call("return_final_answer", {"answer": "$7 at Waha", "sources": []}),
        text("No idea."),
        text("No idea."),
    )
    shutil.copy(tools_db_path, tmp_path / "inbox.db")  # the rollouts' traces are written beside the DB
    settings = scripted.settings(tmp_path, db=tmp_path / "inbox.db", concurrency=1)
    config = InboxGRPOConfig(device="cpu", use_vllm=False, filter_questions=True, filter_samples=2)
    kept, stats = filter_questions(settings, config, [GAS, offsite])
    assert [q.id for q in kept] == ["gas"]
    assert stats["outcomes"] == {"gas": [True, False], "offsite": [False, False]}
    assert (stats["kept"], stats["always_solved"], stats["always_failed"]) == (1, 0, 1)
