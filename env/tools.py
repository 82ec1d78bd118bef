"""The agent's tools: search one inbox, read an email, give the final answer.

``make_tools(db, inbox, query_date)`` returns an :class:`InboxTools` bound to one inbox and one
question date. The model never sees (and cannot pass) the inbox or the date: every query is scoped
to the inbox's rows and clamped to emails dated up to the end of ``query_date`` (ART·E leaked
future emails). The OpenAI tool schemas come from the method signatures and their Google-style
docstrings (:meth:`InboxTools.schemas`); :meth:`InboxTools.call` dispatches a model's tool call,
validating its JSON arguments against the same signatures, and never raises for bad model input.

Departures from ART·E's ``search_emails``:

- an inbox is a mailbox (the ``emails.inbox`` column), not every message naming the owner;
- keywords are quoted as literal FTS5 phrases, so model text cannot inject FTS5 syntax;
- when no email has every keyword, emails with any of them are returned (still ranked by BM25);
- ``read_email`` returns the to/cc/bcc lists and accepts the Message-ID of any copy of a message.

Cost of a search (measured in bench/results/search.md): the FTS5 query ANDs the inbox's
``inbox_token`` (see ``env.db``) with the keywords, so BM25 scores only this inbox's matches, not
every inbox's. What remains is bm25()'s IDF, which FTS5 computes per query by counting each
keyword's matches over the whole table (so keywords carry no column filter, which doubles that
count). The index holds ``emails.indexed_body``, the body's first ``env.db.INDEXED_BODY_BYTES``
bytes, so BM25's per-email work is bounded. Snippets are built in Python (:func:`_snippet`)
over at most that prefix, read with incremental blob I/O (a 5 MB body is not loaded to show 24 words
of it), in time linear in it: FTS5's snippet() scores every window around every match, quadratic in
a term's matches in one email (5,000 repeats of one word: 270 ms). So no email, however large or
hostile, makes a search slow (bench/results/search_adversarial.md).

Try it: ``inboxrl search --inbox allen-p --date 2001-05-01 gas prices``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from env.db import FTS_COLUMNS, INDEXED_BODY_BYTES, Inbox, get_inbox, inbox_token, open_db

log = logging.getLogger(__name__)

TOOL_NAMES = ("search_emails", "read_email", "return_final_answer")
MAX_RESULTS = 50  # search_emails returns at most this many emails
MAX_KEYWORDS = 20
MAX_ARG_CHARS = 200  # per keyword, address filter or message id
SNIPPET_TOKENS = 24
SNIPPET_WINDOW = 3_000  # characters after a snippet's first match that its words are taken from
SNIPPET_READ_BYTES = 65_536  # a body's first read for its snippet; more only when the match is not in it
MAX_BODY_CHARS = 20_000  # read_email's default cap on a body (about 5,000 tokens)
# Shown in the error message when a call's arguments do not fit the tool's signature.
EXAMPLES = {
    "search_emails": '{"keywords": ["gas", "price"], "sent_after": "2001-01-01", "max_results": 10}',
    "read_email": '{"message_id": "<an id from search_emails>"}',
    "return_final_answer": '{"answer": "...", "sources": ["<message_id>", ...]}',
}
INBOX_TOKEN_LIKE = re.compile(r"\W*inbox\w*\d\w*\W*", re.IGNORECASE)  # see _phrases
HIGHLIGHT = ("**", "**")  # snippet markers around matched terms
# bm25 column weights (subject, body): a hit in the subject says more about what an email is about.
BM25_WEIGHTS = (2.0, 1.0)


class ToolError(ValueError):
    """A tool call the model can fix; the message says how."""


@dataclass
class ToolResult:
    """What one tool call gave back: ``content`` is the tool message the model reads next."""

    name: str
    arguments: str | dict
    content: str
    error: str | None = None

    @property
    def is_final(self) -> bool:
        """True when this was a successful ``return_final_answer``: the episode is over."""
        return self.name == "return_final_answer" and self.error is None


def make_tools(
    db: sqlite_utils.Database | str | Path,
    inbox: str | Inbox,
    query_date: date | str | None,
    *,
    max_body_chars: int | None = MAX_BODY_CHARS,
) -> InboxTools:
    """Tools bound to one inbox and one question date.

    :param db: an open inbox DB (``env.db.open_db``) or its path.
    :param inbox: an :class:`~env.db.Inbox`, its key (``allen-p``) or any owner address;
        raises :class:`~env.db.NoInbox` when the DB has no such inbox.
    :param query_date: the question's date (``date`` or ``"YYYY-MM-DD"``): emails dated after the
        end of that day (UTC), or with no date, are invisible. ``None`` shows every email.
    :param max_body_chars: ``read_email`` shows at most this many characters of a body, then says
        how many it left out (one Enron body is 1.4 MB: no model context holds it). ``None``: all.
    """
    if not isinstance(db, sqlite_utils.Database):
        db = open_db(db)
    if not set(FTS_COLUMNS) <= {row[1] for row in db.execute("pragma table_info(emails_fts)")}:
        raise ValueError(
            "This inbox DB's search index was built by an older InboxRL (no inbox_token or indexed_body); "
            "upgrade it once with env.db.ensure_schema(db), or rerun `inboxrl ingest` on it (it skips "
            "known mail)."
        )
    if not isinstance(inbox, Inbox):
        inbox = get_inbox(db, inbox)
    return InboxTools(db, inbox, _as_date(query_date), max_body_chars=max_body_chars)


def _as_date(value: date | str | None) -> date | None:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text) if len(text) > 10 else date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"query_date must be YYYY-MM-DD, got {value!r}") from None
    if isinstance(value, datetime):
        try:
            return value.astimezone(UTC).date() if value.tzinfo else value.date()
        except OverflowError:  # before year 1 or after 9999 in UTC: the day as written
            return value.date()
    return value


class InboxTools:
    """``search_emails``, ``read_email`` and ``return_final_answer`` over one inbox up to one date."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        inbox: Inbox,
        query_date: date | None,
        *,
        max_body_chars: int | None = MAX_BODY_CHARS,
    ) -> None:
        self.db = db
        self.inbox = inbox
        self.query_date = query_date
        self.max_body_chars = max_body_chars
        # Emails dated before this instant are visible (exclusive bound: the day after query_date).
        self.until = _day_after(query_date) if query_date else None

    # ---- the tools (their signatures and docstrings ARE the model-facing schema) ----

    def search_emails(
        self,
        keywords: list[str],
        from_addr: str | None = None,
        to_addr: str | None = None,
        sent_after: str | None = None,
        sent_before: str | None = None,
        max_results: int = 10,
    ) -> list[dict]:
        """Search the inbox for emails whose subject or body contain the keywords, best match first.

        Each keyword is matched as a literal word or phrase (case-insensitive; "report" also
        matches "reports"). Results contain every keyword; only when no email has all of them are
        emails with any of them returned.

        Args:
            keywords: Words or short phrases to look for, e.g. ["gas", "price forecast"].
            from_addr: Only emails whose sender address or name contains this text.
            to_addr: Only emails with a to/cc/bcc recipient whose address or name contains this text.
            sent_after: Only emails sent on or after this date (YYYY-MM-DD).
            sent_before: Only emails sent before this date (YYYY-MM-DD).
            max_results: How many emails to return (1 to 50).

        Returns:
            A list of {message_id, subject, from_address, date, snippet}; the snippet shows the
            matched terms between ** marks.
        """
        sql, params = self.search_sql(keywords, from_addr, to_addr, sent_after, sent_before, max_results)
        rows = self.db.execute(sql, params).fetchall()
        phrases = _phrases(keywords)
        if not rows and len(phrases) > 1:
            rows = self.db.execute(sql, {**params, "query": self._fts_query(phrases, "OR")}).fetchall()
        pattern = _keyword_pattern(phrases)
        columns = ("message_id", "subject", "from_address", "date")
        return [
            {
                **dict(zip(columns, row[:4], strict=True)),
                "snippet": _snippet(row[1] or "", self._body_head(row[4], pattern), pattern),
            }
            for row in rows
        ]

    def _body_head(self, email_id: int, pattern: re.Pattern) -> str:
        """The start of an email's body, enough for its snippet: at most ``INDEXED_BODY_BYTES``, as indexed.

        Read through SQLite's incremental blob I/O, which reads only the pages it returns: selecting
        ``body`` (or a ``substr`` of it) would load the whole value, 5 MB for a hostile email.
        """
        try:
            blob = self.db.conn.blobopen("emails", "body", email_id, readonly=True)
        except sqlite3.Error:  # NULL or not text
            return ""
        with blob:
            data = blob.read(SNIPPET_READ_BYTES)
            text = data.decode("utf-8", "ignore")  # a cut may split a character
            hit = pattern.search(text)
            if len(data) == SNIPPET_READ_BYTES and (hit is None or hit.end() + SNIPPET_WINDOW > len(text)):
                text = (data + blob.read(INDEXED_BODY_BYTES - len(data))).decode("utf-8", "ignore")
        return text.replace("\x00", " ")

    def read_email(self, message_id: str) -> dict:
        """Read one email in full.

        Args:
            message_id: The message_id of an email, as returned by search_emails.

        Returns:
            {message_id, subject, from_address, from_name, date, to, cc, bcc, folder, body}.
        """
        wanted = _clean_id(message_id)
        sql = (
            "select e.id, e.message_id, e.subject, e.from_address, e.from_name, e.date, e.folder, e.body "
            "from message_ids m join emails e on e.id = m.email_id "
            "where m.inbox = :inbox and m.message_id in (:bare, :angled) and e.inbox = :inbox"
        )
        params = {"inbox": self.inbox.id, "bare": wanted, "angled": f"<{wanted}>"}
        if self.until:
            sql += " and e.date < :until"
            params["until"] = self.until
        row = self.db.execute(sql + " limit 1", params).fetchone()
        if row is None:
            raise ToolError(f"No email {message_id!r} in this inbox; use a message_id from search_emails.")
        email_id, msg_id, subject, from_address, from_name, sent, folder, body = row
        recipients: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
        for kind, address, name in self.db.execute(
            "select kind, address, name from recipients where email_id = ? order by rowid", [email_id]
        ):
            recipients.setdefault(kind, []).append(f"{name} <{address}>" if name else address)
        return {
            "message_id": msg_id,
            "subject": subject,
            "from_address": from_address,
            "from_name": from_name,
            "date": sent,
            **recipients,
            "folder": folder,
            "body": self._shown(body or ""),
        }

    def _shown(self, body: str) -> str:
        """``body`` cut to ``max_body_chars``, saying how much was left out."""
        if self.max_body_chars is None or len(body) <= self.max_body_chars:
            return body
        left_out = len(body) - self.max_body_chars
        return f"{body[: self.max_body_chars]}\n[... {left_out:,} more characters of this email not shown]"

    def return_final_answer(self, answer: str, sources: list[str]) -> dict:
        """Give the final answer to the user's question; this ends the conversation.

        If the emails do not answer the question, say "I don't know" with no sources: an honest
        "I don't know" is better than a wrong answer.

        Args:
            answer: The answer to the question, or "I don't know".
            sources: The message_ids of the emails that support the answer (empty for "I don't know").

        Returns:
            {answer, sources}.
        """
        if len(sources) > MAX_RESULTS:
            raise ToolError(f"Give at most {MAX_RESULTS} sources: the message_ids that support the answer.")
        return {"answer": answer.strip(), "sources": [_clean_id(s) for s in sources if s.strip()]}

    # ---- schemas and dispatch ----

    @classmethod
    def schemas(cls) -> list[dict]:
        """The OpenAI ``tools=`` list, generated from the tool signatures and docstrings."""
        return [_tool_schema(name) for name in TOOL_NAMES]

    def call(self, name: str, arguments: str | dict | None) -> ToolResult:
        """Run one tool call from the model. Never raises for bad model input: errors go in the result.

        :param name: the tool's name.
        :param arguments: the call's arguments, a JSON object text (as models send it) or a dict.
        """
        try:
            if name not in TOOL_NAMES:
                raise ToolError(f"Unknown tool {name!r}; the tools are {', '.join(TOOL_NAMES)}.")
            args = _parse_arguments(arguments)
            model = _arguments_model(name)
            try:
                valid = model.model_validate(args)
            except ValidationError as e:
                raise ToolError(_explain(name, e)) from None
            result = getattr(self, name)(**dict(valid))
            content = json.dumps(result, ensure_ascii=False)
            return ToolResult(name, arguments, content)
        except ToolError as e:
            message = str(e)
        except Exception as e:  # a bug or a DB failure: report it, keep the rollout alive
            log.exception("tool %s failed on %r", name, arguments)
            message = f"The tool failed unexpectedly ({type(e).__name__}: {e}); try a different call."
        return ToolResult(name, arguments, f"Error: {message}", error=message)

    # ---- SQL ----

    def search_sql(
        self,
        keywords: list[str],
        from_addr: str | None = None,
        to_addr: str | None = None,
        sent_after: str | None = None,
        sent_before: str | None = None,
        max_results: int = 10,
    ) -> tuple[str, dict[str, Any]]:
        """The SQL and parameters ``search_emails`` runs first (all keywords), e.g. for ``--sql``."""
        if max_results < 1:
            raise ToolError(f"max_results must be between 1 and {MAX_RESULTS}.")
        params: dict[str, Any] = {
            "query": self._fts_query(_phrases(keywords), "AND"),
            "inbox": self.inbox.id,
            "limit": min(max_results, MAX_RESULTS),
            "weights": "bm25({}, {}, 0.0)".format(*BM25_WEIGHTS),  # inbox_token: no weight
        }
        where = ["emails_fts match :query", "rank match :weights", "e.inbox = :inbox"]
        if self.until:
            where.append("e.date < :until")
            params["until"] = self.until
        if sent_after:
            where.append("e.date >= :sent_after")
            params["sent_after"] = _date_arg("sent_after", sent_after)
        if sent_before:
            where.append("e.date < :sent_before")
            params["sent_before"] = _date_arg("sent_before", sent_before)
        if from_addr:
            where.append(
                r"(e.from_address like :from_addr escape '\' or e.from_name like :from_addr escape '\')"
            )
            params["from_addr"] = _like_arg("from_addr", from_addr)
        if to_addr:
            where.append(
                "exists (select 1 from recipients r where r.email_id = e.id and "
                r"(r.address like :to_addr escape '\' or r.name like :to_addr escape '\'))"
            )
            params["to_addr"] = _like_arg("to_addr", to_addr)
        sql = (
            "select e.message_id, e.subject, e.from_address, e.date, e.id\n"
            "from emails_fts join emails e on e.id = emails_fts.rowid\n"
            "where " + "\n  and ".join(where) + "\norder by rank\nlimit :limit"
        )
        return sql, params

    def _fts_query(self, phrases: tuple[str, ...], op: str) -> str:
        """The FTS5 query: this inbox's token AND the keyword phrases joined by ``op``.

        The inbox token narrows the match inside FTS5, so BM25 scores only this inbox's emails;
        ``e.inbox = :inbox`` in the SQL stays the guarantee. The keywords get no column filter:
        bm25() counts each phrase's matches over the whole table (its IDF) and a column filter
        doubles that cost; ``_phrases`` drops keywords that could match an inbox token instead.
        """
        return f'inbox_token : "{inbox_token(self.inbox.id)}" AND ({f" {op} ".join(phrases)})'


def _phrases(keywords: list[str]) -> tuple[str, ...]:
    """Each keyword as a quoted FTS5 phrase, so no model text is read as FTS5 syntax."""
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise ToolError('keywords must be a list of strings, e.g. ["budget", "meeting"].')
    if len(keywords) > MAX_KEYWORDS:
        raise ToolError(f"Use at most {MAX_KEYWORDS} keywords; pick the few most specific words.")
    for keyword in keywords:
        if len(keyword) > MAX_ARG_CHARS:
            raise ToolError(f"Keywords are words or short phrases of at most {MAX_ARG_CHARS} characters.")
    cleaned = [_plain(k) for k in keywords]
    # A keyword with no letter or digit has no token for FTS5's unicode61 tokenizer; one that looks
    # like an inbox token ("inbox" + hex) would match the inbox_token column rather than the text.
    usable = [k for k in cleaned if any(c.isalnum() for c in k) and not INBOX_TOKEN_LIKE.fullmatch(k)]
    if not usable:
        raise ToolError('Give at least one keyword with letters or digits, e.g. ["budget", "meeting"].')
    return tuple('"' + k.replace('"', '""') + '"' for k in usable)


def _keyword_pattern(phrases: tuple[str, ...]) -> re.Pattern:
    """A regex for the words the FTS5 query may have matched: each phrase's words, in order.

    Porter stemming is approximated by prefixes: a word longer than four letters may lose up to
    three (``forecasting`` matches ``forecast``, ``prices`` matches ``price``).
    """
    alternatives = []
    for phrase in phrases:
        words = re.findall(r"\w+", phrase.lower())
        stems = [re.escape(w[: max(4, len(w) - 3)]) + r"\w*" for w in words]
        alternatives.append(r"\b" + r"\W+".join(stems))
    alternatives.sort(key=len, reverse=True)
    return re.compile("|".join(alternatives), re.IGNORECASE)


def _snippet(subject: str, body: str, pattern: re.Pattern) -> str:
    """About SNIPPET_TOKENS words of ``body`` around its first match of ``pattern``, matches marked.

    ``body`` is the indexed prefix (at most ``env.db.INDEXED_BODY_BYTES``): one regex search to the
    first match and a window of a few hundred characters, so the cost is linear and bounded. With
    no match in the body (the subject matched) the subject is the snippet; ``…`` marks cut text.

    >>> _snippet("Re: gas", "Hello,\\n\\nthe   gas prices rose.", _keyword_pattern(('"gas price"',)))
    'Hello, the **gas prices** rose.'
    """
    hit = pattern.search(body)
    if hit is None and pattern.search(subject):
        body, hit = subject, pattern.search(subject)
    centre = hit.start() if hit else 0
    head = body[max(0, centre - 400) : centre].split()
    before = head[len(head) - SNIPPET_TOKENS // 3 :] if len(head) > SNIPPET_TOKENS // 3 else head
    tail = body[centre : centre + SNIPPET_WINDOW]
    after = tail.split(maxsplit=SNIPPET_TOKENS - len(before))[: SNIPPET_TOKENS - len(before)]
    mark = f"{HIGHLIGHT[0]}\\g<0>{HIGHLIGHT[1]}"
    window = pattern.sub(mark, " ".join(before + after))
    cut_before = len(before) < len(head) or bool(body[: max(0, centre - 400)].strip())
    cut_after = len(tail.split(maxsplit=len(after))) > len(after) or bool(
        body[centre + SNIPPET_WINDOW :].strip()
    )
    return ("… " if cut_before else "") + window + (" …" if cut_after else "")


# ---- argument helpers ----


def _plain(text: str) -> str:
    """``text`` with control and format characters (NUL, zero-width, bidi overrides) made spaces.

    FTS5's query parser stops at a NUL, and invisible characters only hide words from the tokenizer.
    """
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def _iso(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


EARLIEST = "0001-01-01T00:00:00Z"
LATEST = "9999-12-31T23:59:59Z"
"""Bounds of the stored dates (``env.parse``: four-digit years); arguments past them are clamped."""


def _day_after(day: date) -> str:
    return LATEST if day == date.max else _iso(day + timedelta(days=1))


def _date_arg(name: str, value: str) -> str:
    """A date argument as the stored form ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), so text order is time order.

    >>> _date_arg("sent_after", "2001-05-01T02:00:00+02:00")
    '2001-05-01T00:00:00Z'
    >>> _date_arg("sent_after", "0001-01-01T00:00:00+01:00")  # before year 1 in UTC: the earliest
    '0001-01-01T00:00:00Z'
    """
    text = value.strip()
    try:
        if len(text) <= 10:
            return _iso(date.fromisoformat(text))
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(f"{name} must be a date like 2001-05-31, got {value[:40]!r}.") from None
    if moment.tzinfo:
        offset = moment.utcoffset() or timedelta()
        naive = moment.replace(tzinfo=None)
        try:
            moment = naive - offset
        except OverflowError:  # an instant before year 1 or after 9999 in UTC
            return EARLIEST if offset > timedelta() else LATEST
    return moment.replace(microsecond=0).isoformat() + "Z"


def _like_arg(name: str, value: str) -> str:
    text = _plain(value).strip()
    if len(text) > MAX_ARG_CHARS:
        raise ToolError(f"{name} is an email address or name of at most {MAX_ARG_CHARS} characters.")
    escaped = re.sub(r"([\\%_])", r"\\\1", text)
    return f"%{escaped}%"


def _clean_id(message_id: str) -> str:
    text = _plain(message_id).strip()
    if len(text) > MAX_ARG_CHARS * 5:
        raise ToolError("That is not a message_id; use a message_id from search_emails.")
    return text.removeprefix("<").removesuffix(">").strip()


def _parse_arguments(arguments: str | dict | None) -> dict:
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError) as e:
            raise ToolError(f"The arguments are not valid JSON ({e}); send a JSON object.") from None
    if not isinstance(arguments, dict):
        raise ToolError('The arguments must be a JSON object, e.g. {"keywords": ["budget"]}.')
    return arguments


def _explain(name: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        if item["type"] == "extra_forbidden":
            problems.append(f"{where} is not an argument of {name}")
        elif item["type"] == "missing":
            problems.append(f"{where} is required")
        else:
            problems.append(f"{where}: {item['msg']} (got {json.dumps(item.get('input'))[:60]})")
    return f"Bad arguments for {name}: {'; '.join(problems)}. Call it like this: {EXAMPLES[name]}"


# ---- schema generation from signatures and Google-style docstrings ----


def _docstring_parts(func: Any) -> tuple[str, dict[str, str], str]:
    """Split a Google-style docstring into (description, {arg: help}, returns)."""
    doc = inspect.getdoc(func) or ""
    sections = re.split(r"^(Args|Returns):\s*$", doc, flags=re.MULTILINE)
    paragraphs = re.split(r"\n\s*\n", sections[0].strip())
    description = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    named = dict(zip(sections[1::2], sections[2::2], strict=True))
    args: dict[str, str] = {}
    current = None
    for line in named.get("Args", "").splitlines():
        match = re.match(r"^\s*(\w+):\s*(.*)$", line)
        if match and not line.startswith(" " * 8):
            current = match.group(1)
            args[current] = match.group(2).strip()
        elif current and line.strip():
            args[current] += " " + line.strip()
    returns = " ".join(named.get("Returns", "").split())
    return description, args, returns


@cache
def _arguments_model(name: str) -> type[BaseModel]:
    """A pydantic model of the tool's arguments: the validator and the JSON schema, from one place."""
    func = getattr(InboxTools, name)
    _, helps, _ = _docstring_parts(func)
    hints = get_type_hints(func)
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(func).parameters.values())[1:]:  # skip self
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], Field(default, description=helps[param.name]))
    return create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)


@cache
def _tool_schema(name: str) -> dict:
    description, _, returns = _docstring_parts(getattr(InboxTools, name))
    schema = _arguments_model(name).model_json_schema()
    properties = {}
    for arg, spec in schema["properties"].items():
        spec.pop("title", None)
        options = [s for s in spec.pop("anyOf", []) if s.get("type") != "null"]
        if options:  # "str | None = None" is an optional string: not required, default null
            spec.update(options[0])
            spec.pop("default", None)
        properties[arg] = spec
    if returns:
        description += f"\n\nReturns: {returns}"
    parameters = {"type": "object", "properties": properties, "required": schema.get("required", [])}
    function = {"name": name, "description": description, "parameters": parameters}
    return {"type": "function", "function": function}
