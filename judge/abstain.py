"""Recognise an abstention ("I don't know" and its paraphrases) without depending on one exact string.

ART·E only accepted the literal "I don't know". Agents phrase it in many ways ("I could not find any
email about that", "No email mentions the amount", "Unable to determine from the inbox", or an
empty answer), and an answer that merely *contains* "not" or "don't" ("The deal was not approved")
is not an abstention.

How it decides, sentence by sentence:

1. An empty answer, or one that is only "unknown", "n/a", "none", "idk", "no results", "nothing
   found", "?" ... is an abstention.
2. A sentence is an *abstention sentence* when it matches one of :data:`ABSTAIN_PATTERNS` (plain
   language included: "Nothing found", "No relevant emails", "I have no clue", "That isn't in your
   mail", "Your inbox doesn't say") and it states no answer around the match:

   - nothing after the match pivots to an answer or a guess ("I couldn't find the exact figure,
     **but** it was about $193,000", "I don't know, **maybe** check #1179" are answers; "..., but you
     could ask Tori" is still an abstention);
   - no clause after the match's own clause states something ("I don't know, it was #1179");
   - no clause before the match's own clause states something ("Check #1179, but I'm not sure").

   An abstention that guesses is a committed guess: it is graded as an answer (and the judge marks
   the hedge incorrect, so it scores below a plain "I don't know").
3. Every other sentence must be *filler*: an apology, a description of the search, or a suggestion
   ("Sorry.", "I searched your inbox.", "Please check with Tori."), with no digits in it.
4. The answer is an abstention when it has at least one abstention sentence and only filler besides.
"""

from __future__ import annotations

import re
import unicodedata

from judge.deterministic import strip_confidence

_CONTRACTIONS = [
    (r"\bcan'?t\b", "cannot"),
    (r"\bwon'?t\b", "will not"),
    (r"\b(do|does|did|could|would|should|is|are|was|were|have|has|had)n'?t\b", r"\1 not"),
    (r"\bcan not\b", "cannot"),
    (r"\bi'?m\b", "i am"),
    (r"\bit'?s\b", "it is"),
    (r"\bthere'?s\b", "there is"),
]

_FIND = (
    r"(?:find|locate|determine|identify|confirm|tell|answer|verify|see|figure out|work out|pin down"
    r"|come up with|retrieve|discover|get (?:that|this|the|any))"
)
_SOURCE = (
    r"(?:emails?|e-mails?|messages?|mails?|inbox|mailbox|search(?:es)?(?: results?)?|records?|correspondence"
    r"|threads?|documents?|files?)"
)
_INFO = (
    r"(?:information|info|data|evidence|details?|mention|mentions|record|records|reference|answer|indication)"
)
_SAY = (
    r"(?:mention(?:s|ed)?|says?|said|specif(?:y|ies|ied)|states?|stated|contain(?:s|ed)?|include(?:s|d)?"
    r"|indicate(?:s|d)?|show(?:s|ed)?|reveal(?:s|ed)?|provide(?:s|d)?|give(?:s|n)?|gave|discuss(?:es|ed)?"
    r"|refer(?:s|red)?(?: to)?|reference(?:s|d)?|answer(?:s|ed)?|match(?:es|ed)?|talk(?:s|ed)? about)"
)

#: One regex per family of abstention phrasing (applied to lower-cased text with contractions expanded).
ABSTAIN_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # "I don't know", "I do not have that information"
        r"\bi (?:really |honestly |simply )?(?:do|did) not (?:know|have "
        r"(?:that|this|the|any|enough|sufficient) (?:information|info|answer|details?|data))",
        # "I could not find ...", "we were unable to determine ...", "... but could not locate ..."
        rf"\b(?:i|we|but|and|yet)(?: still| really| simply)? (?:could not|cannot|was not able to"
        rf"|were not able to|am not able to|am unable to|was unable to|were unable to|failed to|did not"
        rf"|do not) {_FIND}",
        rf"\bunable to {_FIND}",
        # "No email mentions ...", "no messages about ...", "none of the emails say ..."
        rf"\b(?:no|none of the|not a single|not one) (?:\w+ )?{_SOURCE}(?: \w+){{0,3}}? "
        rf"(?:{_SAY}|about|regarding|concerning|related to|relevant to|(?:were |was )?found"
        rf"|(?:were |was )?returned)",
        rf"\bno {_INFO} (?:of|about|regarding|concerning|on|for|in|related to|relevant to"
        rf"|was found|were found)",
        # "There is no information about ...", "there were no emails on that"
        rf"\bthere (?:is|are|was|were) no (?:\w+ ){{0,2}}?(?:{_INFO}|{_SOURCE})\b",
        # "The emails do not mention ...", "your inbox doesn't say"
        rf"\b{_SOURCE}(?: \w+){{0,3}}? (?:do|does|did) not (?:seem to |appear to )?"
        rf"(?:{_SAY}|have|has|hold|holds|cover|covers)",
        rf"\b(?:do|does|did) not (?:appear|show up|come up|turn up) (?:anywhere )?in (?:the|your|any)"
        rf"(?: \w+)? {_SOURCE}",
        rf"\b{_SOURCE} (?:has|have|had|holds?|contains?|shows?|showed) no\b",
        rf"\b{_SOURCE} (?:is|are|was|were) silent\b",
        # "That isn't in your mail", "not anywhere in the emails", "not in any of your messages"
        rf"\bnot (?:anywhere |included |covered |mentioned |available )?"
        rf"(?:in|within|among|in any of|anywhere in) (?:the|your|any|these|my|those|this)(?: \w+)? {_SOURCE}",
        # "... is not mentioned in the emails", "not found in your inbox"
        rf"\bnot (?:mentioned|specified|stated|found|available|included|given|provided|indicated|recorded"
        rf"|documented|discussed|listed|present) (?:anywhere )?(?:in|within|among) "
        rf"(?:the|your|any|these|my|those)(?: \w+)? {_SOURCE}",
        r"\b(?:the )?(?:answer|information|details?|amount|date|figure) (?:is|are|was|were) not (?:available"
        r"|mentioned|specified|stated|provided|given|known|in)",
        # "cannot be determined", "could not be confirmed"
        r"\b(?:cannot|could not|can not) be (?:determined|found|answered|confirmed|identified|verified"
        r"|located|established|ascertained)",
        r"\b(?:insufficient|not enough|no sufficient) (?:information|info|data|evidence|context|details)",
        r"\b(?:it is|it was|that is|this is) (?:unclear|not clear|unknown|uncertain)",
        r"\bunclear from\b",
        r"\bi am (?:not sure|unsure|not certain|uncertain)\b",
        r"\bnot sure\b",
        r"\bno (?:idea|clue)\b",
        r"\b(?:not a clue|clueless|beats me|dunno|hard to say|no way (?:to|of) (?:know|tell)(?:ing)?)\b",
        # "Nothing found", "Nothing relevant came up", "There's nothing about that"
        r"\bnothing (?:was |is )?(?:found|turned up|came up|showed up|relevant|useful|matching|matches"
        r"|mentions|about|regarding|on that|on this|in)\b",
        r"\bthere (?:is|was|are|were) nothing\b",
        rf"\bnone of (?:them|these|those) (?:{_SAY}|(?:is|are|was|were) about)",
        # "No relevant emails", "No results", "No such email exists", "Zero matches"
        r"\b(?:no|zero) (?:relevant |matching |related |pertinent |useful |such |search |applicable )?"
        r"(?:emails?|e-mails?|messages?|mails?|results?|matches|hits|records?|information|info|data|mentions?)"
        r"(?: (?:were |was )?(?:found|returned|turned up|came up|match|matched|available|exists?|at all))?$",
        # "My search turned up nothing", "I found no mention", "came up empty"
        r"\b(?:search(?:es)?|i|we|it|that|but|and) (?:found|returned|turned up|came up with|yielded|shows?"
        r"|showed) (?:nothing|no)\b",
        r"\bcame up (?:empty|short|with nothing)\b|\bempty-handed\b",
        # "Couldn't find it", "Can't tell from your emails", "Don't know"
        rf"^(?:still |really |simply )?(?:could not|cannot|was not able to|am unable to|failed to|did not)"
        rf" (?:{_FIND}|know|help)\b|^do not know\b",
        r"\b(?:i|we) (?:have|had) no (?:idea|information|info|way of knowing|record)",
        r"\bnothing (?:in|about|regarding|on|related to) (?:the|your|this|that|my|these)",
        r"\bi (?:do not|did not) (?:see|find) (?:any|an?|the)\b",
        r"\bi (?:cannot|could not|am unable to) (?:answer|say|tell)\b",
    )
)

_BARE = re.compile(
    r"(?:unknown|n/?a|none|null|nil|idk|no idea|no clue|not sure|dunno|no answer|unavailable|undetermined"
    r"|not (?:available|found|known|specified|mentioned|stated)|none found|nothing found"
    r"|no (?:results?|matches|hits|data|info|information|records?)|beats me|cannot say|cannot tell"
    r"|hard to say|-+|\?+)"
)

# Words that pivot from "I couldn't find it" to an answer or a guess.
_PIVOT = re.compile(
    r"\b(?:but|however|although|though|except|nevertheless|nonetheless|that said|so|my (?:best )?guess"
    r"|i think|i believe|i suspect|i guess|i would (?:guess|say)|if i had to|probably|likely|presumably"
    r"|possibly|maybe|perhaps|might|may be|could be|guess|hunch)\b"
)
# Clause boundaries inside a sentence (not the comma of "193,000").
_CLAUSE = re.compile(r",(?!\d)|[:\u2014]|\s-\s")
_FILLER = re.compile(
    r"\b(?:sorry|apolog\w*|unfortunately|please|you (?:may|might|could|can|should)|try|ask|check with|contact"
    r"|consult|let me know|recommend|suggest|i (?:searched|looked|checked|tried|reviewed|went through)"
    r"|searched|after (?:searching|reviewing|looking)|based on|i am afraid)\b"
)
_SENTENCE_END = re.compile(r"[.!?;]+(?=\s|$)|\n+")
# Numbers that describe the search, not an answer: "emails from August 2000", "25 messages".
_SEARCHED = re.compile(
    r"\b(?:from|between|in|since|before|after|through|to|and|until)\s+(?:\w+\s+)?\d{1,4}(?:[/-]\d{1,4})*\b"
    r"|\b\d+\s+(?:emails?|e-mails?|messages?|results?|threads?|mails?|folders?)\b"
)
# Phrases that take a subject before them ("The amount is not mentioned in the emails").
_TAKES_SUBJECT = re.compile(
    r"(?:not (?:anywhere |included |covered |mentioned |available )?(?:mentioned|specified|stated|found"
    r"|available|included|given|provided|indicated|recorded|documented|discussed|listed|present|in|within"
    r"|among|covered)|(?:cannot|could not|can not) be)\b"
)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = re.sub("[\u00ad\u200b-\u200f\u2060-\u206f\ufeff]", "", text)
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    return re.sub(r"[ \t]+", " ", text).strip()


def _is_filler(text: str) -> bool:
    """No digits (but a searched range or count) and either empty, an apology, a search description or
    a suggestion."""
    words = re.sub(r"[^\w\s']", " ", _SEARCHED.sub(" ", text)).strip()
    if not words:
        return True
    return not re.search(r"\d", words) and bool(_FILLER.search(words))


def _is_abstention_sentence(sentence: str) -> bool | None:
    """True: abstains; False: abstains then pivots to an answer; None: no abstention phrase here."""
    matches = [m for m in (p.search(sentence) for p in ABSTAIN_PATTERNS) if m]
    if not matches:
        return None
    first = min(matches, key=lambda m: m.start())
    matched = max(matches, key=lambda m: m.end())
    before = re.split(rf"{_CLAUSE.pattern}|\b(?:but|though|although|however|so)\b", sentence[: first.start()])
    subject = before[-1]
    if (
        not _TAKES_SUBJECT.match(first.group())
        and not _is_filler(subject)
        and re.search(r"\d|(?:\w+\W+){3}", subject)
    ):
        return False  # "Check #1179 I'm not sure": only "... is not mentioned" phrases take a subject
    if not all(_is_filler(clause) for clause in before[:-1]):
        return False  # "Check #1179, but I'm not sure": a hedged answer
    rest = sentence[matched.end() :]
    pivot = _PIVOT.search(rest)
    if pivot is None:
        later = _CLAUSE.split(rest)[1:]
        return all(_is_filler(c) or _is_abstention_sentence(c) is True for c in later)
    after = rest[pivot.end() :]
    return _is_filler(after) or _is_abstention_sentence(after) is True


def is_abstention(text: str | None) -> bool:
    """Whether an answer declines to answer ("I don't know" or any paraphrase of it).

    >>> is_abstention("I could not find any email about that.")
    True
    >>> is_abstention("The deal was not approved; don't sign until Friday.")
    False
    >>> is_abstention("I couldn't find the exact figure, but it was about $193,000.")
    False
    >>> is_abstention("")
    True
    """
    if text is None:
        return True
    norm = _normalise(strip_confidence(text))
    if not norm or _BARE.fullmatch(re.sub(r"[^\w/?\-\s]", "", norm).strip()):
        return True
    found = False
    for sentence in (s.strip() for s in _SENTENCE_END.split(norm)):
        if not sentence:
            continue
        if _BARE.fullmatch(re.sub(r"[^\w/?\-\s]", "", sentence).strip()):
            found = True
            continue
        verdict = _is_abstention_sentence(sentence)
        if verdict is False:
            return False
        if verdict is None and not _is_filler(sentence):
            return False
        found = found or bool(verdict)
    return found
