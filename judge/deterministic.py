"""A deterministic answer matcher: commitment checks, then exact match, token F1, numbers and dates.

It grades with no LLM (the offline default and the GRPO reward) and cross-checks the LLM judge on
every eval. It is strict on purpose: a false "correct" teaches the agent to hallucinate, a false
"incorrect" only costs some reward.

Normalisation (the same for the gold answer and the candidate):

- Unicode NFKC (full-width digits, ligatures), invisible characters dropped, lower case,
  contractions expanded (``wasn't`` -> ``was not``);
- dates in any common spelling become one token: ``Aug 28, 2000``, ``August 28 (2000)``,
  ``28 August 2000``, ``8/28/2000`` and ``2000-08-28`` all read ``d:2000-08-28`` (``d:08-28`` without
  a year, which matches a gold date with the same month and day);
- times become ``t:H:MM`` on a 12-hour clock (``3 pm`` == ``3:00`` == ``15:00``);
- numbers lose their formatting and take their multiplier: ``$1,200`` == ``1200 dollars``,
  ``$2.7 million`` == ``2,700,000`` == ``$2.7M`` (``k``/``M``/``MM`` only after a currency sign),
  ``4.70`` == ``4.7``, ``$.18`` == ``0.18``, ``nine`` == ``9``, ``33rd`` == ``33``; phone numbers
  split into their digit groups; each number keeps a *kind* (money, percent, id, year, number);
- punctuation, currency words and a short stop-word list are dropped, and words are lightly stemmed
  (``mailed`` == ``mail``, ``buildings`` == ``building``);
- words that also appear in the question are dropped from both sides (echoing the question earns
  nothing), unless that would leave the gold answer empty.

Numbers, dates and times are *facts*.

**Step 1: does the answer commit to one answer?** (:func:`commitment_problems`). Each of these
makes the answer incorrect, whatever it contains; each is measured *against the gold answer*, so
the gold answer's own wording ("not August 20", "possibly the 36-foot model", "X, or cell Y")
never counts against an answer that repeats it:

- *hedged*: a hedge the gold answer lacks (``maybe``, ``perhaps``, ``probably``, ``I think``,
  ``I guess``, ``not sure``, ``I don't know``, ``no idea``, ``might``, ``could be``, ``seems``, a
  question mark ...). An abstention followed by a guess ("I don't know, maybe X") is such a hedge;
- *candidates*: alternatives (``or``, ``either``, ``and/or``, ``alternatively``, ``1178/1179``)
  where the item on one side holds gold content and the item on the other side content the gold
  answer lacks; or a list (items split at ``,`` ``;`` ``and``, sentences, lines) with a gold item
  beside a bare candidate: 1-4 words or values that the gold answer lacks (question words aside,
  question values not), with no verb, pronoun or preposition ("T Bar M, Longhorn", "Bill Bradford.
  Rick Buy.", "$2.26, $2.20" when the question asks "our $2.20 or their figure?");
- *competing value*: a number, date or time the gold answer and the question lack, of a kind the
  gold answer has (another date beside the gold date, ``$205,000`` beside ``$193,000``); kinds
  compete with themselves, and a bare number with money and ids (``$1,200`` does not compete with
  ``check #1178``, nor a year with ``495``);
- *denial*: gold content inside a negation (``not $193,000``, ``it was definitely not check
  #1178``, ``never``, ``rather than``, ``instead of``), before ``is wrong``/``is incorrect``, or
  retracted by a later ``actually``/``I mean``/``correction``; and stating what the gold answer
  denies (``the GB 58`` for "..., not the GB 58");
- *polarity*: a yes/no gold answer ("No - it's a NERC holiday") met by the opposite yes/no word,
  or both;
- *too long*: more than :data:`MAX_ANSWER_WORDS` words.

A stated confidence ("confidence: 0.8", "I'm 90% sure") is removed first: the reward's calibration
term reads it, and it neither helps nor hurts here ("not 100% sure" stays a hedge).

**Step 2: is its content the gold answer's?** (:meth:`Match.correct`). Filler sentences (no facts,
no gold content, at least four words: "I hope this helps.", "Let me know if you need anything else.")
are left out, so padding neither helps nor hurts; on the rest, with denied text left out:

1. the normalised token sequences are equal; or
2. every gold fact is in the answer, at least half of the answer's facts (question facts aside) are
   gold facts and token F1 >= ``FACT_F1_THRESHOLD`` (0.3); or
3. token F1 >= ``F1_THRESHOLD`` (0.5) and the answer states no fact that the gold answer and the
   question lack (``Check #1179`` against ``Check #1178`` fails).

Limits (what this judge cannot see): it matches tokens and cue words, not meaning.

- A statement that keeps the gold tokens but changes their relation passes ("Kam paid Bob" for
  "Bob paid Kam"); so does a right answer followed by a contradicting sentence with no number and
  no gold word ("Check #1178. That check was never sent." drops the second sentence as filler).
- Negation is found by cue words within one clause: a denial without a cue ("that figure was
  superseded") or spread over clauses is missed.
- Names are not typed: a wrong extra name passes when it comes with a verb, pronoun or
  preposition ("Bill Bradford, with Rick Buy") or in a long clause.
- A paraphrase with other words ("no new hires" for "the estate isn't hiring") can fail, and the
  strict rules mark some right answers incorrect: a right answer with any hedge, any "or" whose
  neighbouring item adds words the gold answer lacks ("Check #1178 or the one after it"), an extra
  value of the gold's kind (a second date, a phone extension), a yes/no word opposite to the
  gold's, or over 250 words.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

#: Token F1 needed when the answer adds no fact the gold answer lacks.
F1_THRESHOLD = 0.5
#: Token F1 needed when every gold fact is present.
FACT_F1_THRESHOLD = 0.3
#: Share of the answer's facts that must be gold facts when matching on facts.
FACT_PRECISION_THRESHOLD = 0.5
#: An answer longer than this (in words) is not an answer: it is marked incorrect.
MAX_ANSWER_WORDS = 250
#: A filler sentence (left out of the match) has at least this many words.
FILLER_MIN_WORDS = 4

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


_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff]"
)
_CONTRACTIONS = (
    (re.compile(r"\bcan'?t\b"), "cannot"),
    (re.compile(r"\bwon'?t\b"), "will not"),
    (re.compile(r"\bain'?t\b"), "is not"),
    (
        re.compile(r"\b(do|does|did|could|would|should|is|are|was|were|have|has|had|must|need|might)n'?t\b"),
        r"\1 not",
    ),
    (re.compile(r"\bi'm\b"), "i am"),
    (re.compile(r"\b(it|that|there|what|he|she)'s\b"), r"\1 is"),
    (re.compile(r"\b(\w+)'ve\b"), r"\1 have"),
    (re.compile(r"\b(\w+)'ll\b"), r"\1 will"),
    (re.compile(r"\b(\w+)'re\b"), r"\1 are"),
    (re.compile(r"\b(i|you|he|she|we|they|it)'d\b"), r"\1 would"),
)
# A stated confidence ("confidence: 0.8", "I'm 90% sure") is for the reward's calibration term, not an answer.
_CONFIDENCE = re.compile(
    r"\(?\s*(?:\bconfidence(?: level)?\s*(?:[:=]|is|of)?\s*(?:\d{1,3}(?:\.\d+)?\s*(?:%|percent\b)?|0?\.\d+"
    r"|high|medium|moderate|low)\b|(?:\bi am |\bi'm )?(?<!not )(?<!n't )(?<![\d.])\d{1,3}(?:\.\d+)?\s*"
    r"(?:%|percent)\s*(?:confident|confidence|sure|certain)\b|\b(?:confident|sure|certain)\s*[:=]\s*(?:0?\.\d+|1\.0+|[01])\b)"
    r"\s*%?\)?",
    re.IGNORECASE,
)
_SLASH_ALTERNATIVE = re.compile(r"(?<=\d)\s*/\s*(?=[$#£€]?\d)")


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
        end = "." if m.group(0).endswith(".") else ""  # "at 9 a.m." may end a sentence
        return f" t:{h}:{int(minute or 0):02d}{end} "

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


def _prepare(text: str) -> str:
    """Lower-cased text with dates, times and money abbreviations rewritten (see the module docstring)."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2013", "-").replace("\u2014", " - ")
    for pattern, repl in _CONTRACTIONS:
        text = pattern.sub(repl, text)
    text = text.replace("'s", "")
    text = _MONEY_ABBREV.sub(lambda m: f"{m.group(1)}{m.group(2)} {_MONEY_WORDS[m.group(3)]}", text)
    text = _replace_times(_replace_dates(text))
    return _SLASH_ALTERNATIVE.sub(" or ", text)


def strip_confidence(text: str) -> str:
    """Drop a stated confidence, which only the reward's calibration term reads.

    >>> strip_confidence("Check #1178 (confidence: 0.8)")
    'Check #1178  '
    """
    return _CONFIDENCE.sub(" ", text)


def _number_kind(text: str, start: int, end: int, value: float) -> str:
    before, after = text[max(0, start - 8) : start], text[end : end + 10]
    if re.search(r"[$£€]\s?$", before) or re.match(r"\s*(?:dollars?|usd|bucks)\b", after):
        return "money"
    if re.match(r"\s*(?:%|percent\b)", after):
        return "percent"
    if re.search(r"(?:#|\bno\.?|\bnumber|\bnum\.?)\s*$", before):
        return "id"
    if 1900 <= value <= 2099 and value == int(value) and re.fullmatch(r"\d{4}", text[start:end]):
        return "year"
    return "number"


def _tokenize(text: str) -> list[tuple[str, str]]:
    """``(token, kind)`` pairs of prepared text; kind is word, date, time or a number's kind."""
    raw = list(_TOKEN_RE.finditer(text))
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(raw):
        tok = raw[i].group()
        if tok[0].isdigit() or tok[0] == ".":
            kind = None
            parts = [tok] if _number(tok) is not None else [p for p in re.split(r"[.,]", tok) if p]
            for part in parts:
                value = _number(part)
                if value is None:
                    continue
                kind = kind or _number_kind(text, raw[i].start(), raw[i].end(), value)
                if i + 1 < len(raw) and raw[i + 1].group() in _MULTIPLIERS and part is parts[-1]:
                    value *= _MULTIPLIERS[raw[i + 1].group()]
                    i += 1
                out.append((_format_number(value), kind))
            if i + 1 < len(raw) and raw[i + 1].group() in _ORDINAL_SUFFIX:
                i += 1
        elif tok in _NUMBER_WORDS:
            out.append((str(_NUMBER_WORDS[tok]), "number"))
        elif tok[:2] in ("d:", "t:"):
            out.append((tok, "date" if tok[0] == "d" else "time"))
        elif tok not in _STOPWORDS and len(tok) > 1:
            out.append((_stem(tok), "word"))
        i += 1
    return out


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
    return [t for t, _ in _tokenize(_prepare(text))]


def is_fact(token: str) -> bool:
    """Numbers, dates and times are facts; words are not."""
    return token[0].isdigit() or token[:2] in ("d:", "t:")


def _same_day(a: str, b: str) -> bool:
    return a[-5:] == b[-5:] and (len(a) == 7 or len(b) == 7)


def _align_dates(answer: list[str], gold: list[str]) -> list[str]:
    """Let a date with no year match a gold date with the same month and day (and vice versa)."""
    gold_dates = [g for g in gold if g.startswith("d:")]
    aligned = []
    for tok in answer:
        if tok.startswith("d:") and tok not in gold:
            same_day = [g for g in gold_dates if _same_day(g, tok)]
            tok = same_day[0] if same_day else tok
        aligned.append(tok)
    return aligned


# ---------------------------------------------------------------------------------------------
# Step 1: does the answer commit to one answer?

_SENTENCE_END = re.compile(r"[.!?;]+(?=\s|$)|\n+")
_HEDGES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "maybe/probably": r"\b(?:maybe|mayhaps|perhaps|possibly|probably|presumably|conceivably"
        r"|(?:un)?likely)\b",
        "unconfirmed": r"\b(?:unconfirmed|unverified|tentative(?:ly)?|speculative|supposedly|allegedly"
        r"|to be confirmed|tbc|not confirmed|cannot (?:confirm|verify)|unable to (?:confirm|verify))\b",
        "I think": r"\bi (?:\w+ )?(?:think|believe|guess|suspect|assume|reckon|imagine|suppose|recall|feel)\b"
        r"|\bi would (?:guess|say|bet)\b|\bif i (?:remember|recall|had to)\b",
        "a guess": r"\b(?:my|best|educated|rough|wild|a) guess\b|\bguess(?:ing)?\b|\bhunch\b",
        "not sure": r"\bnot (?:\w+ )?(?:sure|certain|positive|confident|100)\b"
        r"|\b(?:unsure|uncertain|unclear)\b|\bcannot be (?:sure|certain)\b|\bdo not quote me\b",
        "I don't know": r"\b(?:i|we) (?:\w+ )?(?:do|did) not (?:\w+ )?know\b|\bno (?:idea|clue)\b"
        r"|\bnot a clue\b|\bdunno\b|\bidk\b|\bbeats me\b|\bhard to say\b",
        "might": r"\bmight\b|\bmay (?:be|have|also)\b|\bcould (?:be|have|also|possibly|well)\b",
        "seems": r"\b(?:seems?|seemingly|seemed|appears? to|apparently|looks like|sounds like)\b",
        "?": r"\?",
    }.items()
}
_ALTERNATIVE = re.compile(r"\bor\b(?! so\b)|\beither\b|\band/or\b|\balternatively\b|\botherwise\b")
_ITEM_SPLIT = re.compile(
    r",(?!\d)|[;/()\[\]|]|(?<![dt\d]):|\s-\s|\bor\b|\band/or\b|\band\b|\beither\b|\bnor\b"
    r"|\balternatively\b|\botherwise\b"
)
_CLAUSE_LIKE = re.compile(
    r"\b(?:i|you|he|she|it|we|they|his|her|their|its|my|your|our|is|are|was|were|be|been|has|have|had|will"
    r"|would|can|could|should|did|does|do|in|at|of|from|with|for|on|by|to|per|via|after|before|since)\b"
    r"|\b\w+(?:ed|ing)\b"
)
_NEUTRAL = frozenset(
    _stem(w)
    for w in (
        "thanks", "thank", "please", "hope", "helps", "help", "regards", "sorry", "cheers", "ok", "okay",
        "note", "fyi", "hi", "hello", "email", "emails", "mail", "message", "messages", "inbox",
        "according", "source", "sources", "search", "found", "answer", "sent", "dated", "wrote", "said",
        "say", "says", "told", "approximately", "approx", "around", "roughly", "almost", "nearly",
        "exactly", "total", "yes", "no", "correct", "right", "final", "good", "luck", "best", "great",
        "welcome", "glad", "happy", "anything", "else", "let", "know", "need", "further", "question",
        "more", "detail", "regard", "assistant", "based",
    )
)  # fmt: skip
_NEGATION = re.compile(
    r"\b(?:not|cannot|never|neither|nor|no longer|rather than|instead of|as opposed to|anything but)\b"
    r"(?! only\b| just\b| merely\b| until\b| till\b| (?:later|earlier|more|less|fewer|over|under) than\b)"
)
_SCOPE_END = re.compile(
    r",(?!\d)|(?<![dt\d]):|[;()\[\]]|\s-\s|\b(?:but|it is|it was|that is|this is|instead|rather|though"
    r"|although|while|whereas"
    r"|until|till|than|because|since)\b"
)
_REFUTED = re.compile(
    r"\b(?:is|was|are|were|seems|looks) (?:\w+ )?(?:wrong|incorrect|false|inaccurate|mistaken|a mistake"
    r"|an error|a typo|outdated|not right|not correct|not it|not the answer)\b"
)
_RETRACTION = re.compile(
    r"\b(?:actually|correction|scratch that|i mean|i meant|no wait|wait|on second thought|make that"
    r"|strike that)\b"
)
_POLARITY = re.compile(
    r"\b(yes|yeah|yep|yup|affirmative|no|nope|nah|negative)(?=\s*(?:[,.;:!?-]|\bor\b|\band\b|$))(?!\.?\s*\d)"
)
_YES = frozenset({"yes", "yeah", "yep", "yup", "affirmative"})


def _sentences(prepared: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(prepared) if s.strip()]


def _split_denied(sentence: str) -> tuple[str, list[str]]:
    """(the sentence with denied text cut out, the denied pieces)."""
    denied: list[str] = []
    refuted = _REFUTED.search(sentence)
    if refuted:
        clause_start = max((m.end() for m in _SCOPE_END.finditer(sentence, 0, refuted.start())), default=0)
        denied.append(sentence[clause_start : refuted.start()])
        sentence = sentence[:clause_start] + " " + sentence[refuted.end() :]
    kept, pos = [], 0
    for cue in _NEGATION.finditer(sentence):
        if cue.start() < pos:
            continue
        end = _SCOPE_END.search(sentence, cue.end())
        stop = end.start() if end else len(sentence)
        kept.append(sentence[pos : cue.start()])
        denied.append(sentence[cue.end() : stop])
        pos = stop
    kept.append(sentence[pos:])
    return " ".join(kept), denied


@dataclass(frozen=True)
class _Part:
    """One sentence of an answer: what it asserts and what it denies."""

    text: str
    asserted: tuple[tuple[str, str], ...]
    denied: tuple[str, ...]


def _parts(prepared: str) -> list[_Part]:
    """Split into sentences; a retraction ("actually", "I mean") denies everything said before it."""
    parts: list[_Part] = []
    for sentence in _sentences(prepared):
        retraction = next(reversed(list(_RETRACTION.finditer(sentence))), None)
        if retraction is not None:
            before = sentence[: retraction.start()]
            parts = [_Part(p.text, (), p.denied + tuple(t for t, _ in p.asserted)) for p in parts]
            retracted = tuple(t for t, _ in _tokenize(before))
            sentence = sentence[retraction.end() :]
        else:
            retracted = ()
        kept, denied = _split_denied(sentence)
        denied_tokens = retracted + tuple(t for piece in denied for t, _ in _tokenize(piece))
        parts.append(_Part(sentence, tuple(_tokenize(kept)), denied_tokens))
    return parts


def _kinds_compete(a: str, b: str) -> bool:
    """Whether two facts' kinds are alternatives to each other (see the module docstring)."""
    return a == b or {a, b} in ({"number", "money"}, {"number", "id"})


@dataclass(frozen=True)
class _Gold:
    """The gold answer, read once: what it asserts and denies, its hedges and yes/no polarity."""

    tokens: tuple[str, ...]
    facts: dict[str, str]
    content: frozenset[str]
    denied: frozenset[str]
    denied_all: frozenset[str]
    hedges: frozenset[str]
    polarity: frozenset[str]
    asked: frozenset[str]
    question_facts: frozenset[str]


def _read_gold(gold: str, question: str) -> _Gold:
    prepared = _prepare(gold)
    parts = _parts(prepared)
    asserted = [tk for p in parts for tk in p.asserted]
    q_tokens = {t for t, _ in _tokenize(_prepare(question))}
    asked = {t for t in q_tokens if not is_fact(t)}
    if not any(is_fact(t) or t not in asked for t, _ in asserted):
        asked = set()
    kept = [(t, k) for t, k in asserted if is_fact(t) or t not in asked]
    denied_all = {t for p in parts for t in p.denied if is_fact(t) or t not in asked}
    return _Gold(
        tokens=tuple(t for t, _ in kept),
        facts={t: k for t, k in kept if is_fact(t)},
        content=frozenset(t for t, _ in kept),
        denied=frozenset(denied_all - {t for t, _ in kept}),
        denied_all=frozenset(denied_all),
        hedges=frozenset(name for name, p in _HEDGES.items() if p.search(prepared)),
        polarity=_polarity(prepared),
        asked=frozenset(asked),
        question_facts=frozenset(t for t in q_tokens if is_fact(t)),
    )


def _polarity(prepared: str) -> frozenset[str]:
    return frozenset("yes" if m.group(1) in _YES else "no" for m in _POLARITY.finditer(prepared))


def _in_gold(token: str, gold: _Gold) -> bool:
    return token in gold.content or (token.startswith("d:") and any(_same_day(token, g) for g in gold.facts))


def _foreign(token: str, gold: _Gold, *, question_facts_count: bool) -> bool:
    """Content the gold answer lacks (question words and filler words are neutral)."""
    if _in_gold(token, gold):
        return False
    if is_fact(token):
        return question_facts_count or token not in gold.question_facts
    return token not in gold.asked and token not in _NEUTRAL


def _candidate_problem(sentences: list[str], gold: _Gold) -> str | None:
    """Alternatives within a sentence, or a bare candidate item anywhere beside a gold item."""
    items: list[tuple[str, list[str], bool]] = []
    for sentence in sentences:
        split = [i.strip() for i in _ITEM_SPLIT.split(sentence) if i and i.strip()]
        toks = [[t for t, _ in _tokenize(i)] for i in split]
        has_gold = [any(_in_gold(t, gold) for t in tk) for tk in toks]
        items += zip(split, toks, has_gold, strict=True)
        for marker in _ALTERNATIVE.finditer(sentence):
            left = [i for i in _ITEM_SPLIT.split(sentence[: marker.start()]) if i and i.strip()][-1:]
            right = [i for i in _ITEM_SPLIT.split(sentence[marker.end() :]) if i and i.strip()][:1]
            sides = [[t for t, _ in _tokenize(i)] for i in left + right]
            gold_side = any(any(_in_gold(t, gold) for t in side) for side in sides)
            foreign_side = any(
                not any(_in_gold(t, gold) for t in side)
                and any(_foreign(t, gold, question_facts_count=True) for t in side)
                for side in sides
            )
            if gold_side and foreign_side:
                return "offers alternatives to the gold answer"
    if not any(gold_item for _, _, gold_item in items):
        return None
    for item, toks, gold_item in items:
        content = [t for t in toks if is_fact(t) or (t not in gold.asked and t not in _NEUTRAL)]
        if (
            not gold_item
            and 1 <= len(content) <= 4
            and all(_foreign(t, gold, question_facts_count=True) for t in content)
            and not _CLAUSE_LIKE.search(item)
        ):
            return f"lists another candidate ({item!r}) beside the gold answer"
    return None


def commitment_problems(answer: str, gold: str, question: str = "") -> list[str]:
    """Why an answer does not commit to the gold answer (empty: it does). See the module docstring.

    >>> commitment_problems("Check #1178 or #1179.", "Check #1178.")
    ['offers alternatives to the gold answer', 'states a competing id (1179)']
    >>> commitment_problems("Not $193,000 - it works out to $205,000.", "Almost $193,000 per duplex.")
    ['denies the gold answer (193000)', 'states a competing money (205000)']
    >>> commitment_problems("I don't know, maybe check #1178.", "Check #1178.")
    ["hedged (maybe/probably, I don't know)"]
    >>> commitment_problems("Check #1178, not #1179.", "Check #1178.")
    []
    """
    prepared = _prepare(strip_confidence(answer))
    return _problems(prepared, _parts(prepared), _read_gold(gold, question), answer)


def _problems(prepared: str, parts: list[_Part], gold: _Gold, answer: str) -> list[str]:
    problems = []
    hedges = [name for name, p in _HEDGES.items() if name not in gold.hedges and p.search(prepared)]
    if hedges:
        problems.append(f"hedged ({', '.join(hedges)})")
    polarity = _polarity(prepared)
    if len(polarity) > 1 or (gold.polarity and polarity and polarity != gold.polarity):
        problems.append(
            f"says {'/'.join(sorted(polarity))} where the gold answer says {'/'.join(gold.polarity)}"
        )
    problem = _candidate_problem([_split_denied(p.text)[0] for p in parts if not _is_filler(p, gold)], gold)
    if problem:
        problems.append(problem)
    gold_facts = list(gold.facts)
    denied = {t for p in parts for t in _align_dates(list(p.denied), gold_facts)}
    denied_gold = sorted(t for t in denied if t in gold.content and t not in gold.denied_all)
    if denied_gold:
        problems.append(f"denies the gold answer ({', '.join(denied_gold)})")
    asserted = [
        (t, k)
        for p in parts
        for t, k in zip(
            _align_dates([t for t, _ in p.asserted], gold_facts), (k for _, k in p.asserted), strict=True
        )
    ]
    ruled_out = sorted({t for t, _ in asserted if t in gold.denied and t not in gold.asked})
    if ruled_out:
        problems.append(f"states what the gold answer rules out ({', '.join(ruled_out)})")
    competing = {
        (t, k)
        for t, k in asserted
        if is_fact(t)
        and t not in gold.facts
        and t not in gold.question_facts
        and t not in denied
        and any(_kinds_compete(k, gk) for gk in gold.facts.values())
    }
    for t, k in sorted(competing):
        problems.append(f"states a competing {k} ({t})")
    words = len(answer.split())
    if words > MAX_ANSWER_WORDS:
        problems.append(f"too long ({words} words > {MAX_ANSWER_WORDS})")
    return problems


# ---------------------------------------------------------------------------------------------
# Step 2: is its content the gold answer's?


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
    problems: tuple[str, ...] = ()

    @property
    def correct(self) -> bool:
        """The documented decision rule (module docstring)."""
        if self.problems:
            return False
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
        problems = f"; not committed: {'; '.join(self.problems)}" if self.problems else ""
        return f"token F1 {self.f1:.2f} (threshold {F1_THRESHOLD}){facts}{problems}"


def _f1(answer: list[str], gold: list[str]) -> tuple[float, float, float, int]:
    common = sum((Counter(answer) & Counter(gold)).values())
    if not common:
        return 0.0, 0.0, 0.0, 0
    precision, recall = common / len(answer), common / len(gold)
    return precision, recall, 2 * precision * recall / (precision + recall), common


def _is_filler(part: _Part, gold: _Gold) -> bool:
    """No facts, no gold content, and a sentence of its own (at least FILLER_MIN_WORDS words)."""
    toks = [t for t, _ in part.asserted] + list(part.denied)
    return (
        len(part.text.split()) >= FILLER_MIN_WORDS
        and not any(is_fact(t) for t in toks)
        and not any(_in_gold(t, gold) for t in toks)
    )


def match(answer: str, gold: str, question: str = "") -> Match:
    """Compare a candidate answer with the gold answer (see the module docstring for the rules).

    >>> match("Check 1178, sent 8/28/2000", "Check #1178, mailed August 28 (2000).").correct
    True
    >>> match("Check #1179, mailed August 28", "Check #1178, mailed August 28 (2000).").correct
    False
    >>> match("about $193,000", "Almost $193,000 per duplex.").correct
    True
    >>> match("Check #1178 or #1179", "Check #1178, mailed August 28 (2000).").correct
    False
    """
    g = _read_gold(gold, question)
    answer = strip_confidence(answer)
    prepared = _prepare(answer)
    parts = _parts(prepared)
    problems = _problems(prepared, parts, g, answer)
    exact = bool(g.tokens) and tokens(gold) == tokens(answer)
    core = [p for p in parts if not _is_filler(p, g)]
    gold_tokens = list(g.tokens)
    answer_tokens = [t for p in core for t, _ in p.asserted if is_fact(t) or t not in g.asked]
    answer_tokens = _align_dates(answer_tokens, gold_tokens)
    precision, recall, f1, overlap = _f1(answer_tokens, gold_tokens)
    gold_facts = tuple(g.facts)
    answer_facts = tuple(
        dict.fromkeys(t for t in answer_tokens if is_fact(t) and (t in g.facts or t not in g.question_facts))
    )
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
        problems=tuple(problems),
    )
