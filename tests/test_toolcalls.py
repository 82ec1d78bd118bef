"""The text fallback for tool calls: a table of dialects real models emit, and junk that is none.

Each row is a model's raw reply text and the calls it stands for. The sources are the models'
own formats (chat templates, vLLM's tool parsers, model cards) and, for ``qwen-coder-tools``, the
reply Qwen2.5-Coder-1.5B gave zero-shot on the default questions (issue 15).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from env.agent import run_agent
from env.toolcalls import TextCall, parse_tool_calls, tool_parameters
from env.tools import InboxTools
from env.trajectory import Trajectory
from tests.fixtures.scripted import ScriptedServer, text, tool_call
from tests.fixtures.tools import QUERY_DATE, build_tools_db

TOOLS = tool_parameters(InboxTools.schemas())
FINAL = "return_final_answer"
NAMES = list(TOOLS)
MID = "<18782981.1075855378110.JavaMail.evans@thyme>"
GAS = {"keywords": ["gas", "price"]}
READ = {"message_id": MID}
ANSWER = {"answer": "$5.10", "sources": [MID]}
S = ("search_emails", GAS)
R = ("read_email", READ)
A = ("return_final_answer", ANSWER)
GAS_JSON = json.dumps(GAS)
SEARCH_JSON = json.dumps({"name": "search_emails", "arguments": GAS})
READ_JSON = json.dumps({"name": "read_email", "arguments": READ})

# (id, raw model text, expected [(name, arguments)], expected rest)
DIALECTS = [
    ("hermes", f"Let me search.\n<tool_call>\n{SEARCH_JSON}\n</tool_call>", [S], "Let me search."),
    (
        "hermes-two-calls",
        f"<tool_call>\n{SEARCH_JSON}\n</tool_call>\n<tool_call>\n{READ_JSON}\n</tool_call>",
        [S, R],
        None,
    ),
    ("hermes-unclosed", f"<tool_call>\n{SEARCH_JSON}", [S], None),
    ("hermes-unclosed-twice", f"<tool_call>{SEARCH_JSON}\n<tool_call>{READ_JSON}", [S, R], None),
    (
        "qwen-coder-tools",
        f"To find it I will search, then read.\n<tools>\n{SEARCH_JSON}\n{READ_JSON}\n</tools>",
        [S, R],
        "To find it I will search, then read.",
    ),
    ("tool-tag", f"<tool>{SEARCH_JSON}</tool>", [S], None),
    (
        "function-call-tag-parameters",
        f'<function_call>{{"name": "search_emails", "parameters": {GAS_JSON}}}</function_call>',
        [S],
        None,
    ),
    (
        "glaive-functioncall-quoted-arguments",
        f'<functioncall> {{"name": "read_email", "arguments": \'{json.dumps(READ)}\'}}',
        [R],
        None,
    ),
    ("json-fence", f"I'll search first:\n```json\n{SEARCH_JSON}\n```\n", [S], "I'll search first:"),
    ("bare-json", f"{SEARCH_JSON}", [S], None),
    ("bare-json-in-prose", f"Sure! {SEARCH_JSON} Let me know.", [S], "Sure!  Let me know."),
    ("bare-json-array", f"[{SEARCH_JSON}, {READ_JSON}]", [S, R], None),
    (
        "openai-function-arguments-string",
        json.dumps({"type": "function", "function": {"name": "read_email", "arguments": json.dumps(READ)}}),
        [R],
        None,
    ),
    (
        "openai-tool-calls-object",
        json.dumps(
            {
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "search_emails", "arguments": GAS}},
                    {"id": "2", "type": "function", "function": {"name": "read_email", "arguments": READ}},
                ]
            }
        ),
        [S, R],
        None,
    ),
    (
        "doubled-braces",
        '{{"name": "search_emails", "arguments": {{"keywords": ["gas", "price"]}}}}',
        [S],
        None,
    ),
    ("doubled-outer-braces", "{" + SEARCH_JSON + "}", [S], None),
    (
        "python-dict-single-quotes",
        "{'name': 'search_emails', 'arguments': {'keywords': ['gas', 'price'], 'from_addr': None}}",
        [("search_emails", {**GAS, "from_addr": None})],
        None,
    ),
    (
        "trailing-commas",
        '{"name": "search_emails", "arguments": {"keywords": ["gas", "price",],},}',
        [S],
        None,
    ),
    (
        "firefunction-functools",
        f'functools[{{"name": "search_emails", "arguments": {GAS_JSON}}}]',
        [S],
        None,
    ),
    (
        "llama3-python-tag",
        f'<|python_tag|>{{"name": "search_emails", "parameters": {GAS_JSON}}}<|eom_id|>',
        [S],
        None,
    ),
    (
        "llama3.2-json-type-function",
        f'{{"type": "function", "name": "search_emails", "parameters": {GAS_JSON}}}',
        [S],
        None,
    ),
    ("mistral-tool-calls", f"[TOOL_CALLS] [{SEARCH_JSON}, {READ_JSON}]</s>", [S, R], None),
    ("mistral-v11-args", f"[TOOL_CALLS]search_emails[ARGS]{GAS_JSON}", [S], None),
    ("llama3.1-function-tag", f"<function=search_emails>{GAS_JSON}</function>", [S], None),
    (
        "qwen3-coder-xml",
        "<tool_call>\n<function=search_emails>\n<parameter=keywords>\n"
        '["gas", "price"]\n</parameter>\n<parameter=max_results>\n5\n</parameter>\n</function>\n</tool_call>',
        [("search_emails", {**GAS, "max_results": 5})],
        None,
    ),
    (
        "python-call-in-prose",
        'I will call search_emails(keywords=["gas", "price"]) to look.',
        [S],
        "I will call  to look.",
    ),
    ("python-call-positional", f'`read_email("{MID}")`', [R], None),
    ("gemma-tool-code", '```tool_code\nsearch_emails(keywords=["gas", "price"])\n```', [S], None),
    (
        "pythonic-list",
        f'[search_emails(keywords=["gas", "price"]), read_email(message_id="{MID}")]',
        [S, R],
        None,
    ),
    (
        "lfm2-special-tokens",
        '<|tool_call_start|>[search_emails(keywords=["gas", "price"])]<|tool_call_end|>Searching.',
        [S],
        "Searching.",
    ),
    ("granite-tool-call-token", f"<|tool_call|>[{SEARCH_JSON}]", [S], None),
    ("phi4-mini-tool-call", f"<|tool_call|>[{READ_JSON}]<|/tool_call|>", [R], None),
    (
        "deepseek-v3",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>search_emails\n"
        f"```json\n{GAS_JSON}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        [S],
        "<｜tool▁calls▁begin｜><｜tool▁calls▁end｜>",
    ),
    (
        "xml-invoke",
        '<function_calls>\n<invoke name="search_emails">\n<parameter name="keywords">["gas", "price"]'
        "</parameter>\n</invoke>\n</function_calls>",
        [S],
        None,
    ),
    (
        "react",
        f"Thought: I need the forecast.\nAction: search_emails\nAction Input: {GAS_JSON}\nObservation:",
        [S],
        "Thought: I need the forecast.\n\nObservation:",
    ),
    (
        "langchain-action-json",
        f'```json\n{{"action": "search_emails", "action_input": {GAS_JSON}}}\n```',
        [S],
        None,
    ),
    (
        "anthropic-tool-use",
        f'{{"type": "tool_use", "id": "toolu_1", "name": "read_email", "input": {json.dumps(READ)}}}',
        [R],
        None,
    ),
    (
        "openai-multi-tool-use",
        json.dumps({"tool_uses": [{"recipient_name": "functions.search_emails", "parameters": GAS}]}),
        [S],
        None,
    ),
    ("name-keyed-object", json.dumps({"search_emails": GAS}), [S], None),
    (
        "answer-call-with-text-after",
        f"<tool_call>\n{json.dumps({'name': 'return_final_answer', 'arguments': ANSWER})}\n</tool_call>\n"
        "The answer is $5.10.",
        [A],
        "The answer is $5.10.",
    ),
]


@pytest.mark.parametrize(("raw", "expected", "rest"), [r[1:] for r in DIALECTS], ids=[r[0] for r in DIALECTS])
def test_dialect(raw: str, expected: list[tuple[str, dict]], rest: str | None) -> None:
    calls, left = parse_tool_calls(raw, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == expected
    assert all(c.problem is None for c in calls)
    assert left == rest


def test_the_table_covers_twenty_dialects() -> None:
    assert len({row[0] for row in DIALECTS}) == len(DIALECTS) >= 20


NOT_CALLS = [
    ("prose", "I could not find any email about the offsite, so I don't know."),
    ("prose-naming-a-tool", "I will use search_emails to look for the budget."),
    ("prose-empty-call", "Next I would call search_emails() with better keywords."),
    ("json-unknown-name", 'Her details: {"name": "Jane Doe", "arguments": {"role": "trader"}}'),
    ("unknown-function-call", "delete_inbox(everything=True)"),
    (
        "echoed-tool-schema",
        "<tools>\n"
        + json.dumps({"type": "function", "function": InboxTools.schemas()[0]["function"]})
        + "\n</tools>",
    ),
    ("call-of-a-variable", "search_emails(keywords)"),
    ("python-code", "```python\nimport os\nprint(os.listdir('.'))\n```"),
    ("json-without-name", '```json\n{"keywords": ["gas"]}\n```'),
    ("hermes-word-in-prose", "I don't know how to write a tool call here."),
    # Python literals JSON has no type for (an Ellipsis once crashed the loop re-sending the call)
    ("python-ellipsis-argument", "search_emails(keywords=[...])"),
    ("python-dict-with-ellipsis", "{'name': 'search_emails', 'arguments': {'keywords': ...}}"),
    ("python-complex-argument", "search_emails(keywords=['gas'], max_results=2j)"),
    ("python-bytes-argument", "read_email(message_id=b'<m1@x>')"),
]


@pytest.mark.parametrize("raw", [row[1] for row in NOT_CALLS], ids=[row[0] for row in NOT_CALLS])
def test_text_that_is_not_a_call(raw: str) -> None:
    assert parse_tool_calls(raw, TOOLS) == ([], raw)


@pytest.mark.parametrize(
    ("raw", "name", "problem"),
    [
        (
            '<tool_call>{"name": "search_emails", "arguments": {"keywords": ["gas"]</tool_call>',
            "search_emails",
            "not valid JSON",
        ),
        ('<tool_call>["search_emails"]</tool_call>', "", 'JSON object with a "name"'),
        ('<tool_call>{"name": "delete_inbox", "arguments": {}}</tool_call>', "delete_inbox", "unknown tool"),
    ],
    ids=["truncated-json", "not-an-object", "unknown-tool"],
)
def test_an_unreadable_hermes_block_is_a_call_with_a_problem(raw: str, name: str, problem: str) -> None:
    """Inside <tool_call> the model surely meant a call: it is told what to fix, not ignored."""
    (call,), rest = parse_tool_calls(raw, TOOLS)
    assert call.name == name and problem in call.problem and rest is None
    assert "<tool_call>" not in call.arguments  # the block's body, to show in the trajectory


def test_positional_arguments_need_parameter_names() -> None:
    """With only tool names, positional arguments cannot be named, so the text is not a call."""
    raw = f'read_email("{MID}")'
    assert parse_tool_calls(raw, NAMES) == ([], raw)
    assert parse_tool_calls(raw, TOOLS)[0] == [TextCall("read_email", READ, "python")]


def test_arguments_that_are_not_an_object_are_kept_raw() -> None:
    """The tools explain what is wrong with them; the parser does not guess."""
    (call,), _ = parse_tool_calls('{"name": "search_emails", "arguments": "gas prices"}', TOOLS)
    assert call.arguments == "gas prices" and call.problem is None


def test_dialects_are_named() -> None:
    raw = f"<tools>{SEARCH_JSON}</tools> then search_emails(keywords=['x'])"
    calls, _ = parse_tool_calls(raw, TOOLS)
    assert [c.dialect for c in calls] == ["tools-tag", "python"]


# ---------------------------------------------------------------------------------------------
# Property-style checks: any text, no exception


FRAGMENTS = [
    "{", "}", "[", "]", "(", ")", '"', "'", ",", ":", "\\", "\n", " ", "```", "```json\n",
    "</tool_call>", "<tools>", "</tools>", "<function=", ">", "</function>",
    "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "functools", "<parameter=", "Action:", "Action Input:",
    '"name"', '"arguments"', "name", "true", "null", "None", "0", "-1", "1e309", "\x00", "é", "\u2581",
    "{{", "}}", "search", "emails", "=", "<invoke name=\"", "<｜tool▁sep｜>",
]  # fmt: skip


def junk(rng: random.Random, fragments: list[str]) -> str:
    return "".join(rng.choice(fragments) for _ in range(rng.randint(0, 60)))


def test_random_junk_never_raises_and_has_no_calls() -> None:
    """Without a tool's name (or a ``<tool_call>`` tag) in it, no text is a call, and none raises."""
    rng = random.Random(15)
    for _ in range(3000):
        raw = junk(rng, FRAGMENTS)
        assert parse_tool_calls(raw, TOOLS) == ([], raw)


def test_junk_with_tool_names_never_raises() -> None:
    """With tool names and ``<tool_call>`` mixed in, a call is of a known tool or says its problem."""
    rng = random.Random(16)
    fragments = FRAGMENTS + NAMES + ["<tool_call>", "search_emails(", "keywords=", '"keywords": ["gas"]']
    for _ in range(3000):
        raw = junk(rng, fragments)
        calls, rest = parse_tool_calls(raw, TOOLS)
        assert all(c.name in TOOLS or c.problem for c in calls)
        assert rest is None or isinstance(rest, str)


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "search_emails",
        "{" * 50_000 + '"name": "search_emails"' + "}" * 50_000,
        "search_emails(" * 5_000,
        "<tool_call>" + "[" * 10_000,
        '{"name": "search_emails", "arguments": ' * 2_000,
        "x" * 1_000_000,
    ],
    ids=["deep-brackets", "deep-braces", "many-calls", "deep-hermes", "repeated-prefix", "long"],
)
def test_pathological_text_is_handled(raw: str) -> None:
    calls, _ = parse_tool_calls(raw, TOOLS)
    assert all(c.name in TOOLS or c.problem for c in calls)


@pytest.mark.parametrize("raw", [None, "", "   \n"])
def test_empty_replies(raw: str | None) -> None:
    assert parse_tool_calls(raw, TOOLS) == ([], raw)


def test_doctests() -> None:
    import doctest

    import env.toolcalls

    result = doctest.testmod(env.toolcalls)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------
# In the agent loop


def test_the_agent_runs_calls_written_in_any_dialect_and_counts_them(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """Qwen2.5-Coder-1.5B's zero-shot reply (two calls in ``<tools>``) no longer ends the rollout."""
    gas = "<m1.alice@example.com>"
    scripted.queue(
        text(
            "I will search and read.\n<tools>\n"
            '{"name": "search_emails", "arguments": {"keywords": ["gas"]}}\n'
            f'{{"name": "read_email", "arguments": {{"message_id": "{gas}"}}}}\n</tools>'
        ),
        tool_call("search_emails", {"keywords": ["forecast"]}),  # a structured call is not recovered
        text(f"return_final_answer(answer='$5.10', sources=['{gas}'])"),
    )
    settings = scripted.settings(tmp_path)
    db = build_tools_db(tmp_path / "inbox.db")
    traj = run_agent("What is the gas price forecast?", "alice-a", QUERY_DATE, db=db, settings=settings)
    assert traj.ended == "answered" and traj.answer == "$5.10" and traj.sources == [gas.strip("<>")]
    assert [c.name for c in traj.tool_calls] == ["search_emails", "read_email", "search_emails", FINAL]
    assert all(c.error is None for c in traj.tool_calls)
    assert [t.recovered_calls for t in traj.turns] == [2, 0, 1] and traj.recovered_calls == 3
    first, _, third = [m for m in traj.messages if m["role"] == "assistant"][-3:]
    assert first["content"] == "I will search and read."  # the text around the calls
    assert third["content"] is None and len(third["tool_calls"]) == 1
    sent = scripted.requests[1]["messages"][-3]["tool_calls"]  # sent back as structured calls
    assert [json.loads(c["function"]["arguments"]) for c in sent] == [
        {"keywords": ["gas"]},
        {"message_id": gas},
    ]
    assert Trajectory.from_dict(json.loads(traj.to_json())).recovered_calls == 3


def test_a_problem_call_is_not_counted_as_recovered(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.queue(
        text('<tool_call>{"name": "search_emails", "arguments": {"keywords": ["gas"]</tool_call>'),
        tool_call(FINAL, {"answer": "I don't know", "sources": []}),
    )
    db = build_tools_db(tmp_path / "inbox.db")
    traj = run_agent("q", "alice-a", QUERY_DATE, db=db, settings=scripted.settings(tmp_path))
    assert "not valid JSON" in traj.tool_calls[0].error and traj.recovered_calls == 0
