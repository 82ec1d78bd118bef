"""Tool calls written as text: read the dialects real models emit into calls.

A served model's tool calls normally arrive in the structured ``tool_calls`` field: vLLM's
``hermes`` parser reads ``<tool_call>{json}</tool_call>``. Models that were not trained on that
format write their calls in other ways, and the rollout would end as ``gave_up`` with a perfectly
good call in its text. Measured: Qwen2.5-Coder-1.5B, zero-shot, wrote two JSON calls inside
``<tools>...</tools>``. :func:`parse_tool_calls` is the text fallback of the agent loop
(``env.agent``); it reads:

- wrappers: Hermes ``<tool_call>`` (one or several, closing tag optional), ``<tools>``,
  ``<tool>``, ``<function_call>``, ``<functioncall>`` (Glaive), ``<|tool_call|>`` (Granite,
  Phi-4-mini), ``<|tool_call_start|>`` (LFM2), Llama-3 ``<|python_tag|>``, Mistral
  ``[TOOL_CALLS]`` (list, or ``name[ARGS]{...}``), ``functools[...]``, fenced code blocks
  (`````json``, `````tool_code``...), DeepSeek's ``<｜tool▁sep｜>name`` blocks and ReAct's
  ``Action:`` / ``Action Input:``;
- named forms: ``<function=name>{...}</function>`` (Llama 3.1), ``<function=name><parameter=k>v``
  (Qwen3-Coder) and ``<invoke name="..."><parameter name="k">v`` (XML);
- payloads: JSON objects and arrays of them with ``name`` + ``arguments`` / ``parameters`` /
  ``args`` / ``input``, ``{"function": {"name", "arguments": "<json text>"}}``, OpenAI's
  ``{"tool_calls": [...]}``, ``{"action": ..., "action_input": ...}``, ``{"search_emails": {...}}``,
  doubled braces ``{{...}}``, single-quoted Python dicts, ``True``/``None``, trailing commas, and
  Python-style calls ``search_emails(keywords=["a", "b"])`` (alone, in a list, or dotted as
  ``functions.search_emails(...)``);
- any of these with text around them, and several calls in one message (kept in order).

A name that is not one of the tools is not a call (``{"name": "Jane"}`` in prose stays prose),
and neither is a tool schema the model echoed back. Only inside a Hermes ``<tool_call>`` block,
which can only mean a call, does an unreadable or unknown call come back as a :class:`TextCall`
with ``problem`` set, so the model is told how to fix it. Nothing here raises on any text.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TextCall", "parse_tool_calls", "tool_parameters"]


@dataclass(frozen=True)
class TextCall:
    """A tool call read from a reply's text.

    ``arguments`` is a dict when they were an object, else the raw text (the tools report it).
    ``dialect`` names the form it was written in (``hermes``, ``tools-tag``, ``json``,
    ``python``...). ``problem`` is set, with a fix the model can apply, when an explicit
    ``<tool_call>`` block held no readable call of a known tool.
    """

    name: str
    arguments: Any
    dialect: str
    problem: str | None = None


def tool_parameters(schemas: Iterable[dict]) -> dict[str, list[str]]:
    """``{tool name: parameter names in order}`` from OpenAI ``tools=`` schemas.

    Pass it to :func:`parse_tool_calls` so positional Python-style arguments map to names.

    >>> tool_parameters([{"type": "function", "function": {"name": "f", "parameters":
    ...     {"type": "object", "properties": {"a": {}, "b": {}}}}}])
    {'f': ['a', 'b']}
    """
    out: dict[str, list[str]] = {}
    for schema in schemas:
        function = schema.get("function", schema)
        out[function["name"]] = list((function.get("parameters") or {}).get("properties") or {})
    return out


def parse_tool_calls(
    text: str | None, tools: Iterable[str] | Mapping[str, Sequence[str]]
) -> tuple[list[TextCall], str | None]:
    """The tool calls written in ``text``, and the text left around them.

    :param text: a model reply's text.
    :param tools: the tool names, or ``{name: parameter names in order}`` (see
        :func:`tool_parameters`) so that positional Python-style arguments can be named.
    :returns: ``(calls, rest)``: calls in the order written; ``rest`` is the text without them
        (stripped, None when empty), or ``text`` unchanged when there is no call.

    >>> calls, rest = parse_tool_calls(
    ...     'Searching.<tools>{"name": "search_emails", "arguments": {"keywords": ["gas"]}}</tools>',
    ...     ["search_emails"])
    >>> calls[0].name, calls[0].arguments, calls[0].dialect, rest
    ('search_emails', {'keywords': ['gas']}, 'tools-tag', 'Searching.')
    >>> parse_tool_calls('My name is {"name": "Jane"}', ["search_emails"])
    ([], 'My name is {"name": "Jane"}')
    """
    if not isinstance(text, str) or not text.strip():
        return [], text
    if isinstance(tools, Mapping):
        params = {str(k): [str(p) for p in v] for k, v in tools.items()}
    else:
        params = {str(name): [] for name in tools}
    found = _Parser(params).region(text, 0, len(text), explicit=False)
    if not found:
        return [], text
    pieces, at = [], 0
    for start, end, _ in found:
        pieces.append(text[at:start])
        at = end
    pieces.append(text[at:])
    rest = re.sub(r"\n{3,}", "\n\n", "".join(pieces)).strip()
    return [call for _, _, calls in found for call in calls], rest or None


# ---------------------------------------------------------------------------------------------
# Blocks: markup that wraps calls


_FENCE_LANGS = {"", "json", "jsonc", "json5", "tool_call", "tool_calls", "tool_code", "python", "py"}
_S = r"\s*"


@dataclass(frozen=True)
class _Block:
    """A pattern for markup around calls: its body is parsed as a region, or by ``read``."""

    dialect: str
    pattern: re.Pattern[str]
    read: str = "region"  # region | named | mistral-v11 | deepseek | react | fence


_BLOCKS = (
    _Block("hermes", re.compile(r"<tool_call>(?P<body>.*?)(?:</tool_call>|(?=<tool_call>)|$)", re.S)),
    _Block(
        "tools-tag",
        re.compile(
            r"<(?P<tag>tools?|function_calls?|functioncall|tool_calls)>"
            r"(?P<body>.*?)(?:</(?P=tag)>|(?=<(?P=tag)>)|$)",
            re.S,
        ),
    ),
    _Block(
        "special-token",
        re.compile(
            r"<\|(?:tool_call|tool_calls|tool_call_start)\|>(?P<body>.*?)"
            r"(?:<\|/tool_calls?\|>|<\|tool_call_end\|>|(?=<\|tool_calls?\|>)|<\|im_end\|>|$)",
            re.S,
        ),
    ),
    _Block("python-tag", re.compile(r"<\|python_tag\|>(?P<body>.*?)(?:<\|eom_id\|>|<\|eot_id\|>|$)", re.S)),
    _Block("mistral", re.compile(r"\[TOOL_CALLS\](?P<body>.*?)(?:(?=\[TOOL_CALLS\])|</s>|$)", re.S)),
    _Block("functools", re.compile(r"functools(?P<body>\s*\[.*)", re.S)),
    _Block(
        "function-tag",
        re.compile(r"<function=(?P<name>[\w.\-]+)>(?P<body>.*?)(?:</function>|(?=<function=)|$)", re.S),
        "named",
    ),
    _Block(
        "xml-invoke",
        re.compile(r"<invoke\s+name=[\"'](?P<name>[\w.\-]+)[\"']\s*>(?P<body>.*?)(?:</invoke>|$)", re.S),
        "named",
    ),
    _Block(
        "deepseek",
        re.compile(
            r"<｜tool▁call▁begin｜>(?:function)?<｜tool▁sep｜>(?P<name>[\w.\-]+)(?P<body>.*?)"
            r"(?:<｜tool▁call▁end｜>|$)",
            re.S,
        ),
        "named",
    ),
    _Block(
        "react",
        re.compile(
            r"Action:[ \t]*`?(?P<name>[\w.\-]+)`?[ \t]*\n+[ \t]*Action[ _]Input:(?P<body>.*?)"
            r"(?=\n[ \t]*(?:Observation|Thought|Action):|$)",
            re.S,
        ),
        "named",
    ),
    _Block("fence", re.compile(r"```[ \t]*(?P<lang>[\w\-]*)[^\n`]*\n(?P<body>.*?)(?:```|$)", re.S), "fence"),
)
_PARAM_TAG = re.compile(
    r"<parameter(?:=|\s+name=[\"'])(?P<key>[\w.\-]+)[\"']?\s*>\n?(?P<value>.*?)\n?"
    r"(?:</parameter>|(?=<parameter[=\s])|$)",
    re.S,
)
_MISTRAL_V11 = re.compile(r"^\s*(?P<name>[\w.\-]+)(?:\[CALL_ID\]\w+)?\[ARGS\](?P<body>.*)$", re.S)
_TRAILING_COMMA = re.compile(r",\s*[}\]]")
_NAME_IN_JSON = re.compile(r"""["']name["']\s*:\s*["']([^"']*)["']""")

# ---------------------------------------------------------------------------------------------
# Payloads: JSON / Python values


# Strings (either quote, escapes kept; single-quoted ones end at the line) and brackets.
_TOKEN = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|[{}\[\]()]", re.S)
_CLOSE = {"{": "}", "[": "]", "(": ")"}
_ARG_KEYS = ("arguments", "parameters", "args", "input", "action_input", "tool_input", "params", "kwargs")
_NAME_KEYS = ("name", "tool", "tool_name", "action", "recipient_name", "function")
_NAME_PREFIXES = ("functions.", "tools.", "function.")
_LITERAL_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_FAIL = object()
_Span = tuple[int, int, list[TextCall]]  # (start, end, calls) in the text
MAX_CANDIDATES = 400  # bracket / call starts tried per region: bounds the work on pathological text
MAX_FALLBACK_TOKENS = 20_000  # tokens scanned for brackets hidden in strings, per region


@dataclass(frozen=True)
class _PyCall:
    """``name(...)`` in a Python-style payload, its arguments already named."""

    name: str
    arguments: dict


class _Parser:
    def __init__(self, params: dict[str, list[str]]) -> None:
        self.params = params
        self.names = set(params)
        names = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        self.call_start = (
            re.compile(rf"(?<![\w.])(?:(?:functions|tools)\.)?(?:{names})(?:\.call)?\s*\(") if names else None
        )

    # ---- regions ----

    def region(self, text: str, start: int, end: int, *, explicit: bool) -> list[_Span]:
        """``(start, end, calls)`` spans in ``text[start:end]``: blocks first, then bare payloads."""
        spans: list[_Span] = []
        taken: list[tuple[int, int]] = []
        for s, e, calls in self._blocks(text, start, end):
            if calls:
                spans.append((s, e, calls))
                taken.append((s, e))
        gaps, at = [], start
        for s, e in sorted(taken):
            gaps.append((at, s))
            at = e
        gaps.append((at, end))
        for s, e in gaps:
            spans.extend(self._payloads(text, s, e, explicit=explicit))
        return sorted(spans, key=lambda span: span[0])

    def _blocks(self, text: str, start: int, end: int) -> Iterator[_Span]:
        matches = []
        for block in _BLOCKS:
            for m in block.pattern.finditer(text, start, end):
                if block.read == "fence" and m.group("lang").lower() not in _FENCE_LANGS:
                    continue
                matches.append((m.start(), -m.end(), block, m))
        at = start
        for s, neg_end, block, m in sorted(matches, key=lambda item: (item[0], item[1])):
            if s < at:
                continue  # inside a block already read
            calls = self._read_block(text, block, m)
            if calls:
                at = -neg_end
                yield s, -neg_end, calls

    def _read_block(self, text: str, block: _Block, m: re.Match[str]) -> list[TextCall]:
        s, e = m.span("body")
        if block.read == "named":
            call = self._named(block.dialect, m.group("name"), m.group("body"))
            return [call] if call else []
        if block.dialect == "mistral":
            v11 = _MISTRAL_V11.match(m.group("body"))
            if v11:
                call = self._named(block.dialect, v11.group("name"), v11.group("body"))
                return [call] if call else []
        explicit = block.dialect == "hermes"
        calls = [c for _, _, found in self.region(text, s, e, explicit=explicit) for c in found]
        calls = [TextCall(c.name, c.arguments, block.dialect, c.problem) for c in calls]
        if not calls and explicit:
            return [self._problem(m.group("body").strip())]
        return calls

    def _named(self, dialect: str, raw_name: str, body: str) -> TextCall | None:
        """A call whose name is in the markup: its body is a JSON object or ``<parameter>`` tags."""
        name = _tool_name(raw_name, self.names)
        if name is None:
            return None
        if _PARAM_TAG.search(body):
            tags = _PARAM_TAG.finditer(body)
            arguments: Any = {m.group("key"): _param_value(m.group("value")) for m in tags}
        else:
            payload = _strip_fence(body.strip())
            arguments = {} if not payload else _arguments(payload)
        if arguments is _FAIL:
            return None
        return TextCall(name, arguments, dialect)

    def _problem(self, body: str) -> TextCall:
        """What to tell the model about a ``<tool_call>`` block that held no readable call."""
        guess = _NAME_IN_JSON.search(body)
        name = guess.group(1) if guess else ""
        example = '<tool_call>{"name": "search_emails", "arguments": {"keywords": ["..."]}}</tool_call>'
        try:
            json.loads(body)
        except json.JSONDecodeError as exc:
            where = f"{exc.msg} at character {exc.pos}"
            problem = f"the tool call is not valid JSON ({where}). Write it as {example}"
        except RecursionError:
            problem = f"the tool call is not valid JSON (nested too deeply). Write it as {example}"
        else:
            if name and name not in self.names:
                problem = f"unknown tool {name!r}; the tools are {', '.join(sorted(self.names))}"
            else:
                problem = 'a tool call must be a JSON object with a "name" (string) and "arguments" (object)'
        return TextCall(name, body, "hermes", problem)

    # ---- bare payloads ----

    def _payloads(self, text: str, start: int, end: int, *, explicit: bool) -> list[_Span]:
        """JSON values and Python-style calls of known tools in ``text[start:end]``."""
        segment = text[start:end]
        if not any(name in segment for name in self.names):
            return []
        # (where the value starts, its opening bracket, kind)
        candidates = [(m.start(), m.start(), "json") for m in re.finditer(r"\{|\[", segment)]
        if self.call_start:
            candidates += [(m.start(), m.end() - 1, "python") for m in self.call_start.finditer(segment)]
        closing = _bracket_table(segment)
        budget = [MAX_FALLBACK_TOKENS]
        out, at = [], 0
        for pos, bracket, kind in sorted(candidates)[:MAX_CANDIDATES]:
            if pos < at:
                continue
            close = closing[bracket] if bracket in closing else _match_bracket(segment, bracket, budget)
            if close is None:
                continue
            source = segment[pos : close + 1]
            if not any(name in source for name in self.names):
                continue
            calls = self._calls(_value(source, self.params), kind)
            if kind == "python" and not explicit and calls and not any(c.arguments for c in calls):
                continue  # "use search_emails() next" in prose is not a call
            if calls:
                s, e = _widen(segment, pos, close + 1)
                out.append((start + s, start + e, calls))
                at = close + 1
        return out

    def _calls(self, value: Any, dialect: str) -> list[TextCall]:
        """The calls a decoded value stands for (none when it is not call-shaped)."""
        if value is _FAIL:
            return []
        if isinstance(value, _PyCall):
            return [TextCall(value.name, value.arguments, "python")]
        if isinstance(value, list):
            return [c for item in value for c in self._calls(item, dialect)]
        if not isinstance(value, dict):
            return []
        for key in ("tool_calls", "tool_uses", "function_call", "tool_call", "calls"):
            if isinstance(value.get(key), list | dict):
                return self._calls(value[key], dialect)
        function = value.get("function")
        if isinstance(function, dict):
            merged = {k: v for k, v in value.items() if k != "function"}
            return self._calls({**merged, **function}, dialect)
        named = [_tool_name(value[k], self.names) for k in _NAME_KEYS if isinstance(value.get(k), str)]
        name = next((n for n in named if n), None)
        if name is None:
            if len(value) == 1:  # {"search_emails": {"keywords": [...]}}
                ((key, arguments),) = value.items()
                name = _tool_name(str(key), self.names)
                if name and isinstance(arguments, dict) and not _is_schema(arguments):
                    return [TextCall(name, arguments, dialect)]
            return []
        raw_args = next((value[k] for k in _ARG_KEYS if k in value), {})
        arguments = {} if raw_args is None else raw_args
        if isinstance(arguments, str):
            decoded = _arguments(arguments) if arguments.strip() else {}
            arguments = arguments if decoded is _FAIL else decoded
        if isinstance(arguments, dict) and _is_schema(arguments):
            return []  # the tool's schema echoed back, not a call
        return [TextCall(name, arguments, dialect)]


def _tool_name(raw: str, names: set[str]) -> str | None:
    name = raw.strip().strip("`'\"")
    for prefix in _NAME_PREFIXES:
        name = name.removeprefix(prefix)
    return name if name in names else None


def _is_schema(arguments: dict) -> bool:
    return arguments.get("type") == "object" and isinstance(arguments.get("properties"), dict)


def _bracket_table(text: str) -> dict[int, int | None]:
    """``{opening bracket: its closing bracket or None}`` for the brackets outside strings of
    ``text`` read from its start, in one pass.

    Scanning from such a bracket reads the same tokens, so this is what :func:`_match_bracket`
    would answer for it; a bracket inside a string of this reading (after a prose apostrophe,
    say) is not in the table and is scanned on its own.
    """
    table: dict[int, int | None] = {}
    stack: list[tuple[int, str]] = []
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token in _CLOSE:
            stack.append((m.start(), _CLOSE[token]))
            table[m.start()] = None
        elif token in ")]}" and stack:
            if token == stack[-1][1]:
                table[stack.pop()[0]] = m.start()
            else:
                stack.clear()  # a mismatch: every bracket still open is unbalanced
    return table


def _match_bracket(text: str, pos: int, budget: list[int]) -> int | None:
    """Index of the bracket closing ``text[pos]``, skipping strings; None when unbalanced.

    ``budget`` (tokens left to scan, shared by the calls on one text) bounds the work.
    """
    stack: list[str] = []
    for m in _TOKEN.finditer(text, pos):
        budget[0] -= 1
        if budget[0] < 0:
            return None
        token = m.group()
        if token in _CLOSE:
            stack.append(_CLOSE[token])
        elif token in ")]}":
            if not stack or token != stack.pop():
                return None
            if not stack:
                return m.start()
        elif not stack:
            return None
    return None


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    """Take the inline-code backticks around a call with it (`` `search_emails(...)` ``)."""
    if start > 0 and end < len(text) and text[start - 1] == "`" and text[end] == "`":
        return start - 1, end + 1
    return start, end


def _strip_fence(text: str) -> str:
    m = re.fullmatch(r"```[\w\-]*\s*\n?(.*?)\n?```", text, re.S)
    return m.group(1).strip() if m else text


def _param_value(raw: str) -> Any:
    """A ``<parameter>`` value: JSON when it is JSON (lists, numbers), else the text itself."""
    value = raw.strip()
    if value[:1] in '[{"' or value in ("true", "false", "null") or re.fullmatch(r"-?\d+(\.\d+)?", value):
        decoded = _value(value, {})
        if decoded is not _FAIL:
            return decoded
    return value


def _arguments(text: str) -> Any:
    """Arguments text as a dict, or ``_FAIL`` when it is not an object."""
    value = _value(_strip_fence(text.strip()), {})
    return value if isinstance(value, dict) else _FAIL


def _value(source: str, params: dict[str, list[str]]) -> Any:
    """JSON, or failing that a Python literal (tool calls allowed), of ``source``; else ``_FAIL``.

    Doubled braces (``{{...}}``, from templates written for ``str.format``) are undone when the
    text does not read as it is.
    """
    variants = [source]
    if "{{" in source:
        variants.append(source.replace("{{", "{").replace("}}", "}"))
        if source.startswith("{{") and source.endswith("}}"):
            variants.append(source[1:-1])
    for variant in variants:
        for decode in (_json, _without_trailing_commas, lambda s: _python(s, params)):
            value = decode(variant)
            if value is not _FAIL:
                return value
    return _FAIL


def _json(source: str) -> Any:
    try:
        return json.loads(source, strict=False)
    except (ValueError, RecursionError):
        return _FAIL


def _without_trailing_commas(source: str) -> Any:
    """JSON with commas before ``}`` / ``]`` (outside strings) removed."""
    if not _TRAILING_COMMA.search(source):
        return _FAIL
    fixed = re.sub(r"(\"(?:[^\"\\]|\\.)*\")|,\s*(?=[}\]])", lambda m: m.group(1) or "", source, flags=re.S)
    return _json(fixed) if fixed != source else _FAIL


def _python(source: str, params: dict[str, list[str]]) -> Any:
    """A Python literal (``true``/``null`` too), with calls of known tools as :class:`_PyCall`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source.strip(), mode="eval")
        return _literal(tree.body, params, calls=True)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError, _NotLiteral):
        return _FAIL


class _NotLiteral(Exception):
    """The expression is not a literal (or a tool call) we read."""


def _literal(node: ast.AST, params: dict[str, list[str]], *, calls: bool = False) -> Any:
    def evaluate(child: ast.AST) -> Any:
        return _literal(child, params)

    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str | int | float)):
        return node.value  # JSON's types only: ``...``, ``1j`` and bytes are not arguments
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(n, params, calls=calls) for n in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        keys = [evaluate(k) for k in node.keys]
        if not all(isinstance(k, str | int | float | bool) or k is None for k in keys):
            raise _NotLiteral
        return dict(zip(keys, (evaluate(v) for v in node.values), strict=True))
    if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = evaluate(node.operand)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    if calls and isinstance(node, ast.Call):
        return _py_call(node, params)
    raise _NotLiteral


def _py_call(node: ast.Call, params: dict[str, list[str]]) -> _PyCall:
    """``name(...)`` (also ``functions.name(...)``, ``name.call(...)``) of a known tool."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise _NotLiteral
    parts.insert(0, func.id)
    if parts[-1] == "call" and len(parts) > 1:
        parts.pop()
    name = _tool_name(".".join(parts), set(params))
    if name is None or any(isinstance(a, ast.Starred) for a in node.args):
        raise _NotLiteral
    names = params[name]
    if len(node.args) > len(names):
        raise _NotLiteral  # positional arguments we cannot name
    arguments = {names[i]: _literal(a, params) for i, a in enumerate(node.args)}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise _NotLiteral
        arguments[keyword.arg] = _literal(keyword.value, params)
    return _PyCall(name, arguments)
