"""The LLM question writer: prompts, JSON schemas and a cached client for any OpenAI-compatible endpoint.

Three calls, each asking for JSON that matches a schema (sent as ``response_format`` of type
``json_schema``, which vLLM enforces with guided decoding and OpenAI with structured outputs):

1. :func:`pairs_request`: from a batch of emails, question/answer pairs citing the emails by number;
2. :func:`unanswerable_request`: plausible questions these emails do *not* answer, with the key terms
   an answer would need (the search check uses them);
3. :func:`quote_request`: a second pass over one pair and its cited emails that must quote the
   supporting span verbatim and rate the question's realism.

Every response is stored in :class:`ResponseCache` keyed by model and a hash of the request, so a
rerun never pays twice for the same call. Model output is untrusted: it is parsed defensively and
anything malformed is counted and dropped, never raised.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai

from synth_data.sample import Batch, Email

# String caps in the schemas: guided decoding then always closes the JSON before max_tokens.
MAX_QUESTION_CHARS = 250
MAX_ANSWER_CHARS = 200
MAX_QUOTE_CHARS = 400

SYSTEM = (
    "You help build a benchmark for an assistant that answers questions about a person's mailbox by "
    "searching it. You read emails and reply only with JSON that matches the given schema."
)


# One-shot replies (about emails that exist nowhere): small models copy the compact format, and a
# copied example is dropped by the grounding checks because no email supports it.
EXAMPLE_PAIRS = {
    "pairs": [
        {
            "question": "Who is presenting the Q3 forecast to the Acme board?",
            "answer": "Maria Lopez",
            "sources": [1],
            "difficulty": "easy",
            "how_realistic": 0.8,
        }
    ]
}
EXAMPLE_UNANSWERABLE = {
    "questions": [
        {
            "question": "Which room is the Acme board meeting in?",
            "key_terms": ["Acme", "room"],
            "how_realistic": 0.6,
        }
    ]
}
EXAMPLE_QUOTE = {
    "supported": True,
    "quote": "Maria Lopez will present the Q3 forecast to the Acme board on Friday.",
    "how_realistic": 0.8,
}


def _reply_format(schema: dict, example: dict) -> str:
    compact = (",", ":")
    return (
        f"Reply with JSON matching this schema: {json.dumps(schema, separators=compact)}\n"
        f"Example reply (about other emails): {json.dumps(example, separators=compact)}"
    )


def _email_block(emails: tuple[Email, ...] | list[Email], max_body_chars: int) -> str:
    return "\n\n".join(f"[{i}]\n{e.render(max_body_chars)}" for i, e in enumerate(emails, 1))


def pairs_schema(n_emails: int, n_pairs: int) -> dict:
    """JSON schema of the pair writer's reply: up to ``n_pairs`` pairs citing emails 1..``n_emails``."""
    return {
        "type": "object",
        "properties": {
            "pairs": {
                "type": "array",
                "maxItems": n_pairs,
                "items": {
                    "type": "object",
                    "properties": {
                        "question": {"type": "string", "maxLength": MAX_QUESTION_CHARS},
                        "answer": {"type": "string", "maxLength": MAX_ANSWER_CHARS},
                        "sources": {
                            "type": "array",
                            "items": {"type": "integer", "enum": list(range(1, n_emails + 1))},
                            "minItems": 1,
                            "maxItems": 3,
                        },
                        "difficulty": {"type": "string", "enum": ["easy", "medium", "hard"]},
                        "how_realistic": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["question", "answer", "sources", "difficulty", "how_realistic"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["pairs"],
        "additionalProperties": False,
    }


def unanswerable_schema(n_questions: int) -> dict:
    """JSON schema of the unanswerable-question writer's reply."""
    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "maxItems": n_questions,
                "items": {
                    "type": "object",
                    "properties": {
                        "question": {"type": "string", "maxLength": MAX_QUESTION_CHARS},
                        "key_terms": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 60},
                            "minItems": 1,
                            "maxItems": 4,
                        },
                        "how_realistic": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["question", "key_terms", "how_realistic"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["questions"],
        "additionalProperties": False,
    }


QUOTE_SCHEMA = {
    "type": "object",
    "properties": {
        "supported": {"type": "boolean"},
        "quote": {"type": "string", "maxLength": MAX_QUOTE_CHARS},
        "how_realistic": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["supported", "quote", "how_realistic"],
    "additionalProperties": False,
}


def pairs_request(batch: Batch, owner: str, n_pairs: int, max_body_chars: int) -> tuple[list[dict], dict]:
    """Messages and schema asking for ``n_pairs`` grounded pairs about ``batch``."""
    schema = pairs_schema(len(batch.emails), n_pairs)
    user = (
        f"These are emails from the mailbox of {owner}.\n\n{_email_block(batch.emails, max_body_chars)}\n\n"
        f"Write up to {n_pairs} questions that {owner} might really ask about their own mail later, each "
        "answered by specific facts stated in these emails (names, dates, amounts, decisions, places). "
        "Rules: the answer must be stated in the cited emails, short and exact; the question must make "
        "sense without seeing the emails (name the people or topic, never 'this email'); prefer "
        "questions that need one email ('single') and add some that need two ('multi'). "
        "sources: the numbers of the emails that contain the answer. how_realistic: 0-1, how likely a "
        "real person would ask this. Skip emails that are bulk mail or say nothing specific.\n"
        + _reply_format(schema, EXAMPLE_PAIRS)
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], schema


def unanswerable_request(
    batch: Batch, owner: str, n_questions: int, max_body_chars: int
) -> tuple[list[dict], dict]:
    """Messages and schema asking for questions that sound answerable from this mailbox but are not."""
    schema = unanswerable_schema(n_questions)
    user = (
        f"These are emails from the mailbox of {owner}.\n\n{_email_block(batch.emails, max_body_chars)}\n\n"
        f"Write {n_questions} question(s) that {owner} could plausibly ask about their mail, on the same "
        "topics and people, but that NONE of these emails answers (for example a detail that is never "
        "given). key_terms: the 1-4 specific words or names an email answering it would have to contain. "
        "how_realistic: 0-1, how likely a real person would ask this.\n"
        + _reply_format(schema, EXAMPLE_UNANSWERABLE)
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], schema


def quote_request(
    question: str, answer: str, emails: list[Email], max_body_chars: int
) -> tuple[list[dict], dict]:
    """Messages and schema asking a checker to quote the span of ``emails`` that supports the answer."""
    user = (
        f"Emails:\n\n{_email_block(emails, max_body_chars)}\n\n"
        f"Question: {question}\nProposed answer: {answer}\n\n"
        "Is the proposed answer stated in these emails? supported: true or false. quote: copy, word for "
        "word, the shortest sentence from the emails that states the answer (empty if none). "
        "how_realistic: 0-1, how likely the mailbox owner would really ask this question.\n"
        + _reply_format(QUOTE_SCHEMA, EXAMPLE_QUOTE)
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], QUOTE_SCHEMA


# ---- the cache


class ResponseCache:
    """Model responses in SQLite, keyed by (model, hash of the request); safe to share between runs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "create table if not exists responses (model text, key text, content text, created real,"
            " primary key (model, key))"
        )
        self._conn.commit()

    def get(self, model: str, key: str) -> str | None:
        """A stored response, or ``None``."""
        row = self._conn.execute(
            "select content from responses where model = ? and key = ?", (model, key)
        ).fetchone()
        return row[0] if row else None

    def put(self, model: str, key: str, content: str) -> None:
        """Store a response (committed at once, so an interrupted run keeps it)."""
        self._conn.execute(
            "insert or replace into responses values (?, ?, ?, ?)", (model, key, content, time.time())
        )
        self._conn.commit()

    def __len__(self) -> int:
        return self._conn.execute("select count(*) from responses").fetchone()[0]

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()


def request_key(payload: dict) -> str:
    """The cache key of a request: SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def parse_json(text: str) -> Any:
    """Parse a model's JSON reply, tolerating prose or code fences around one object; ``None`` if none.

    >>> parse_json('Sure! ```json\\n{"a": 1}\\n```')
    {'a': 1}
    >>> parse_json('{"a": ') is None
    True
    """
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        pass
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end <= start:
        return None
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None


class LLM:
    """A cached JSON-answering model at an OpenAI-compatible endpoint.

    :param client: an ``openai.AsyncOpenAI`` (``env.model.make_client(settings)``).
    :param cache: where responses are kept; a cached request is never sent again.
    :param structured: send the schema as ``response_format`` (guided decoding); the schema is in
        the prompt either way, for servers that ignore it.
    """

    def __init__(
        self,
        client: Any,
        model: str,
        cache: ResponseCache,
        *,
        temperature: float = 0.7,
        max_tokens: int = 1024,
        structured: bool = True,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.model = model
        self.cache = cache
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.structured = structured
        self.seed = seed
        self.counters: Counter = Counter()
        self.last_rejection: str | None = None

    async def ask(self, messages: list[dict], schema: dict, name: str) -> Any:
        """The parsed JSON reply to ``messages`` (from the cache when seen before), or ``None``."""
        payload = {
            "model": self.model,
            "messages": messages,
            "schema": schema,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        key = request_key(payload)
        content = self.cache.get(self.model, key)
        if content is None:
            kwargs: dict[str, Any] = {}
            if self.structured:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": True},
                }
            try:
                response = await self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    seed=self.seed,
                    **kwargs,
                )
            except openai.BadRequestError as e:  # this request is refused (e.g. too long): skip it, go on
                self.counters["llm_rejected"] += 1
                self.last_rejection = str(e)
                return None
            self.counters["llm_calls"] += 1
            usage = getattr(response, "usage", None)
            if usage is not None:
                self.counters["prompt_tokens"] += usage.prompt_tokens or 0
                self.counters["completion_tokens"] += usage.completion_tokens or 0
            content = response.choices[0].message.content or ""
            self.cache.put(self.model, key, content)
        else:
            self.counters["cache_hits"] += 1
        data = parse_json(content)
        if not isinstance(data, dict):
            self.counters["invalid_json"] += 1
            return None
        return data
