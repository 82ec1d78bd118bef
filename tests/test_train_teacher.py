"""SFT data from a teacher's rollouts (train.sft.teacher_examples) through the real vLLM server: the
released agent as its own teacher, its right rollouts kept, the others ending with the gold answer
where they read it and relabeled as abstentions elsewhere (R-Tuning, ``relabel_wrong``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from env.config import Settings
from env.prompt import I_DONT_KNOW
from judge import judge_answer
from synth_data.questions import default_questions_path, load_questions
from train.config import InboxSFTConfig
from train.sft import teacher_examples

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _calls(message: dict) -> list[tuple[str, dict]]:
    out = []
    for call in message.get("tool_calls") or []:
        arguments = call["function"]["arguments"]
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        out.append((call["function"]["name"], parsed))
    return out


def test_the_teachers_wrong_rollouts_become_abstentions_after_its_own_searches(
    vllm_server: Settings, default_db_path: Path
) -> None:
    settings = vllm_server.model_copy(update={"db": default_db_path, "max_turns": 4})
    questions = [q for q in load_questions(default_questions_path()) if q.answer is not None]
    config = InboxSFTConfig(
        source="teacher",
        relabel_wrong=True,
        hindsight_answers=True,
        teacher_questions=4,
        few_shot=False,
        max_body_chars=1200,
    )
    examples, skipped, counts = teacher_examples(settings, config, questions, progress=False)

    assert counts["infra"] == 0
    assert sum(counts.values()) == 4
    kept = counts["correct"] + counts["corrected"] + counts["relabeled"]
    assert len(examples) == kept and len(skipped) == 4 - len(examples)
    assert counts["corrected"] + counts["relabeled"] >= 1, counts  # the 135M agent gets most wrong
    by_id = {q.id: q for q in questions}
    for example in examples:
        messages = example["messages"]
        final = _calls(messages[-1]) if example["teacher"] != "correct" else _calls(messages[-2])
        assert final and final[-1][0] == "return_final_answer"
        answer = final[-1][1]
        if example["teacher"] == "relabeled":
            assert answer == {"answer": I_DONT_KNOW, "sources": []}
            earlier = [name for m in messages[:-1] for name, _ in _calls(m)]
            assert "search_emails" in earlier and "return_final_answer" not in earlier
            # every earlier call has its tool result, as the model saw it
            assert sum(m["role"] == "tool" for m in messages) == len(earlier)
        elif example["teacher"] == "corrected":  # it read the answer: the gold answer, citing those reads
            q = by_id[example["question_id"]]
            assert answer["answer"] == q.answer and answer["sources"]
            read = [
                args["message_id"] for m in messages[:-1] for name, args in _calls(m) if name == "read_email"
            ]
            assert set(answer["sources"]) <= set(read)
        else:
            q = by_id[example["question_id"]]
            verdict = judge_answer(q.question, q.answer, answer["answer"], answer["sources"], q.message_ids)
            assert verdict.verdict == "correct"


def test_teacher_sample_and_sources_are_checked() -> None:
    with pytest.raises(ValueError, match="teacher_questions=0"):
        InboxSFTConfig(source="teacher", teacher_questions=0)
    with pytest.raises(ValueError, match="qa\\+teacher"):
        InboxSFTConfig(source="teachers")
    assert InboxSFTConfig(source="qa+teacher").source == "qa+teacher"
