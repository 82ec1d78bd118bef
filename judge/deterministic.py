"""A deterministic answer matcher: normalised exact match, token F1, numbers and dates.

It grades with no LLM (the offline default) and cross-checks the LLM judge on every eval.

Normalisation (the same for the gold answer and the candidate):

- lower case; dates in any common spelling become one token: ``Aug 28, 2000``, ``August 28 (2000)``,
  ``28 August 2000``, ``8/28/2000`` and ``2000-08-28`` all read ``d:2000-08-28`` (``d:08-28`` without
  a year, which matches a gold date with the same month and day);
- times become ``t:H:MM`` on a 12-hour clock (``3 pm`` == ``3:00`` == ``15:00``);
- numbers lose their formatting and take their multiplier: ``$1,200`` == ``1200 dollars``,
  ``$2.7 million`` == ``2,700,000`` == ``$2.7M`` (``k``/``M``/``MM`` only after a currency sign),
  ``4.70`` == ``4.7``, ``$.18`` == ``0.18``, ``nine`` == ``9``, ``33rd`` == ``33``; phone numbers
  split into their digit groups;
- punctuation, currency words and a short stop-word list are dropped, and words are lightly stemmed
  (``mailed`` == ``mail``, ``buildings`` == ``building``);
- words that also appear in the question are dropped from both sides (echoing the question earns
  nothing), unless that would leave the gold answer empty.

Numbers, dates and times are *facts*. The documented decision (:meth:`Match.correct`):

1. the normalised token sequences are equal; or
2. every gold fact is in the answer, at least half of the answer's facts are gold facts (listing
   every number in the inbox does not pass) and token F1 >= ``FACT_F1_THRESHOLD`` (0.3); or
3. token F1 >= ``F1_THRESHOLD`` (0.5) and the answer states no fact that the gold answer lacks
   (``Check #1179`` against ``Check #1178`` fails).

The matcher is strict on purpose: a false "correct" teaches the agent to hallucinate, a false
"incorrect" only costs some reward.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

#: Token F1 needed when the answer adds no fact the gold answer lacks.
F1_THRESHOLD = 0.5
#: Token F1 needed when every gold fact is present.
FACT_F1_THRESHOLD = 0.3
#: Share of the answer's facts that must be gold facts when matching on facts.
FACT_PRECISION_THRESHOLD = 0.5

_MONTHS = {
    "jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3, "apr": 4, "april": 4,
    "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7, "aug": 8, "august": 8, "sep": 9, "sept": 9,
    "september": 9, "oct": 10, "october": 10, "nov": 11, "november": 11, "dec": 12, "december": 12,
}  # fmt: skip
_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}  # fmt: skip
_MULTIPLIERS = {
    "thousand": 1e3, "thousands": 1e3, "million": 1e6, "millions": 1e6, "billion": 1e9, "billions": 1e9,
}  # fmt: skip
# Abbreviated multipliers count only after a currency sign ("$2.7M"); "230,000 MM/d" is a gas volume.
_MONEY_ABBREV = re.compile(r"([$£€])\s?(\d[\d,]*(?:\.\d+)?|\.\d+)\s?(k|mm|m|mil|bn|b)\b")
_MONEY_WORDS = {
    "k": "thousand",
    "m": "million",
    "mm": "million",
    "mil": "million",
    "b": "billion",
    "bn": "billion",
}
_STOPWORDS = frozenset(
    [
        "a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "by", "with", "and", "or", "but", "is",
        "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "as", "i",
        "me", "my", "we", "our", "you", "your", "he", "him", "his", "she", "her", "they", "them", "their",
        "there", "here", "what", "which", "who", "whom", "when", "where", "how", "did", "do", "does", "done",
        "has", "have", "had", "will", "would", "shall", "should", "can", "could", "may", "might", "must",
        "about", "into", "than", "then", "so", "if", "also", "just", "only", "very", "per", "dollar",
        "dollars", "usd", "us", "bucks", "st", "nd", "rd", "th", "am", "pm",
    ]
)  # fmt: skip

_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th)?"
_DATE_PATTERNS = (
    # 2000-08-28
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), ("y", "m", "d")),
    # 8/28/2000, 8/28/00
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b"), ("m", "d", "y")),
    # August 28, 2000 / Aug. 28th (2000) / August 28
    (
        re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}}){_ORD}\b(?:\s*,?\s*\(?(\d{{4}})\)?)?"),
        ("mon", "d", "y"),
    ),
    # 28 August 2000 / 28th of August
    (
        re.compile(rf"\b(\d{{1,2}}){_ORD}\s+(?:of\s+)?({_MONTH_RE})\b\.?(?:\s*,?\s*(\d{{4}}))?"),
        ("d", "mon", "y"),
    ),
    # 8/28
    (re.compile(r"\b(\d{1,2})/(\d{1,2})\b"), ("m", "d")),
)
_TIME_RE = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\b\.?|\b(\d{1,2}):(\d{2})\b")
_TOKEN_RE = re.compile(r"[dt]:[\d:-]+|\d+(?:[.,]\d+)*|\.\d+|[a-z]+")
_ORDINAL_SUFFIX = frozenset({"st", "nd", "rd", "th"})


def _date_token(parts: dict[str, str]) -> str | None:
    month = _MONTHS[parts["mon"].lower()] if "mon" in parts else int(parts["m"])
    day = int(parts["d"])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    year = parts.get("y")
    if year and len(year) == 2:
        year = ("19" if int(year) >= 50 else "20") + year
    return f"d:{year}-{month:02d}-{day:02d}" if year else f"d:{month:02d}-{day:02d}"


def _replace_dates(text: str) -> str:
    for pattern, names in _DATE_PATTERNS:

        def repl(m: re.Match[str], names: tuple[str, ...] = names) -> str:
            parts = {n: v for n, v in zip(names, m.groups(), strict=True) if v}
            token = _date_token(parts)
            return f" {token} " if token else m.group(0)

        text = pattern.sub(repl, text)
    return text


def _replace_times(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        hour, minute = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(5))
        h = int(hour) % 12 or 12
        return f" t:{h}:{int(minute or 0):02d} "

    return _TIME_RE.sub(repl, text)


def _number(text: str) -> float | None:
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.6g}"


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def tokens(text: str) -> list[str]:
    """Normalised tokens of a text: facts (numbers ``"1200"``, dates ``"d:2000-08-28"``, times
    ``"t:3:00"``) and stemmed content words.

    >>> tokens("Check #1178, mailed Aug 28, 2000.")
    ['check', '1178', 'mail', 'd:2000-08-28']
    >>> tokens("$1,200") == tokens("1200 dollars") == ['1200']
    True
    >>> tokens("$2.7 million at 3 pm") == tokens("2,700,000 at 15:00")
    True
    """
    text = text.lower().replace("\u2013", "-").replace("\u2014", "-").replace("'s", "")
    text = _MONEY_ABBREV.sub(lambda m: f"{m.group(1)}{m.group(2)} {_MONEY_WORDS[m.group(3)]}", text)
    text = _replace_times(_replace_dates(text))
    raw = _TOKEN_RE.findall(text)
    out: list[str] = []
    i = 0
    while i < len(raw):
        tok = raw[i]
        if tok[0].isdigit() or tok[0] == ".":
            parts = [tok] if _number(tok) is not None else [p for p in re.split(r"[.,]", tok) if p]
            for part in parts:
                value = _number(part)
                if value is None:
                    continue
                if i + 1 < len(raw) and raw[i + 1] in _MULTIPLIERS and part is parts[-1]:
                    value *= _MULTIPLIERS[raw[i + 1]]
                    i += 1
                out.append(_format_number(value))
            if i + 1 < len(raw) and raw[i + 1] in _ORDINAL_SUFFIX:
                i += 1
        elif tok in _NUMBER_WORDS:
            out.append(str(_NUMBER_WORDS[tok]))
        elif tok[:2] in ("d:", "t:"):
            out.append(tok)
        elif tok not in _STOPWORDS and len(tok) > 1:
            out.append(_stem(tok))
        i += 1
    return out


def is_fact(token: str) -> bool:
    """Numbers, dates and times are facts; words are not."""
    return token[0].isdigit() or token[:2] in ("d:", "t:")


def _align_dates(answer: list[str], gold: list[str]) -> list[str]:
    """Let a date with no year match a gold date with the same month and day (and vice versa)."""
    gold_dates = [g for g in gold if g.startswith("d:")]
    aligned = []
    for tok in answer:
        if tok.startswith("d:") and tok not in gold:
            same_day = [g for g in gold_dates if g[-5:] == tok[-5:] and (len(g) == 7 or len(tok) == 7)]
            tok = same_day[0] if same_day else tok
        aligned.append(tok)
    return aligned


@dataclass(frozen=True)
class Match:
    """How a candidate answer compares with the gold answer after normalisation."""

    exact: bool
    precision: float
    recall: float
    f1: float
    gold_facts: tuple[str, ...]
    answer_facts: tuple[str, ...]
    fact_recall: float | None
    fact_precision: float | None
    overlap: int

    @property
    def correct(self) -> bool:
        """The documented decision rule (module docstring)."""
        if self.exact:
            return True
        extra_facts = set(self.answer_facts) - set(self.gold_facts)
        on_facts = (
            bool(self.gold_facts)
            and self.fact_recall == 1.0
            and (self.fact_precision or 0.0) >= FACT_PRECISION_THRESHOLD
            and self.f1 >= FACT_F1_THRESHOLD
        )
        on_words = self.f1 >= F1_THRESHOLD and not extra_facts
        return on_facts or on_words

    def describe(self) -> str:
        """One line for a verdict's rationale."""
        facts = (
            f"; gold facts found {self.fact_recall:.0%}, answer facts that are gold {self.fact_precision:.0%}"
            if self.gold_facts and self.fact_precision is not None
            else ""
        )
        return f"token F1 {self.f1:.2f} (threshold {F1_THRESHOLD}){facts}"


def _f1(answer: list[str], gold: list[str]) -> tuple[float, float, float, int]:
    common = sum((Counter(answer) & Counter(gold)).values())
    if not common:
        return 0.0, 0.0, 0.0, 0
    precision, recall = common / len(answer), common / len(gold)
    return precision, recall, 2 * precision * recall / (precision + recall), common


def match(answer: str, gold: str, question: str = "") -> Match:
    """Compare a candidate answer with the gold answer (see the module docstring for the rules).

    >>> match("Check 1178, sent 8/28/2000", "Check #1178, mailed August 28 (2000).").correct
    True
    >>> match("Check #1179, mailed August 28", "Check #1178, mailed August 28 (2000).").correct
    False
    >>> match("about $193,000", "Almost $193,000 per duplex.").correct
    True
    """
    gold_tokens, answer_tokens = tokens(gold), tokens(answer)
    exact = bool(gold_tokens) and gold_tokens == answer_tokens
    asked = {t for t in tokens(question) if not is_fact(t)}
    kept_gold = [t for t in gold_tokens if is_fact(t) or t not in asked]
    if kept_gold:
        gold_tokens = kept_gold
        answer_tokens = [t for t in answer_tokens if is_fact(t) or t not in asked]
    answer_tokens = _align_dates(answer_tokens, gold_tokens)
    precision, recall, f1, overlap = _f1(answer_tokens, gold_tokens)
    gold_facts = tuple(dict.fromkeys(t for t in gold_tokens if is_fact(t)))
    answer_facts = tuple(dict.fromkeys(t for t in answer_tokens if is_fact(t)))
    fact_recall = sum(f in answer_facts for f in gold_facts) / len(gold_facts) if gold_facts else None
    fact_precision = sum(f in gold_facts for f in answer_facts) / len(answer_facts) if answer_facts else None
    return Match(
        exact=exact,
        precision=precision,
        recall=recall,
        f1=f1,
        gold_facts=gold_facts,
        answer_facts=answer_facts,
        fact_recall=fact_recall,
        fact_precision=fact_precision,
        overlap=overlap,
    )
