"""env.parse on literal RFC 822 messages: encodings, charsets, HTML, multipart, bad input."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime
from email.utils import mktime_tz, parsedate_tz

import pytest

import env.ingest
import env.parse
import env.readers
import env.tools
from env.parse import ParseError, parse_date, parse_fields, parse_message


def msg(text: str) -> bytes:
    """A literal message with CRLF headers, as in the CMU corpus."""
    head, _, body = text.lstrip("\n").partition("\n\n")
    return head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body.encode("latin-1")


QP = msg("""
Message-ID: <qp-1@example.com>
Date: Mon, 14 May 2001 16:39:00 -0700 (PDT)
From: "Caf=?iso-8859-1?q?=E9?= Owner" <Owner@Example.com>
To: a@example.com,
\tb@example.com
Cc: "Smith, John" <john.smith@example.com>
Bcc: secret@example.com
Subject: =?utf-8?q?Men=C3=BC?= for Friday
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Caf=E9 au lait costs 3=80 and this line is soft=
ly wrapped.
""")


def test_quoted_printable_and_headers() -> None:
    r = parse_message(QP)
    assert r.message_id == "<qp-1@example.com>"
    assert r.date == "2001-05-14T23:39:00Z"
    assert r.subject == "Menü for Friday"
    assert (r.from_address, r.from_name) == ("owner@example.com", "Café Owner")
    assert "Café au lait" in r.body
    assert "softly wrapped" in r.body
    assert r.to == [("a@example.com", ""), ("b@example.com", "")]
    assert r.cc == [("john.smith@example.com", "Smith, John")]
    assert r.bcc == [("secret@example.com", "")]
    assert r.recipients() == [
        ("to", "a@example.com", ""),
        ("to", "b@example.com", ""),
        ("cc", "john.smith@example.com", "Smith, John"),
        ("bcc", "secret@example.com", ""),
    ]


def test_base64_utf8() -> None:
    raw = msg("""
Message-ID: <b64@example.com>
Date: Tue, 1 May 2001 08:00:00 +0000
From: x@example.com
Subject: b64
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: base64

R3LDvMOfZSBhdXMgWsO8cmljaCDinJM=
""")
    assert parse_message(raw).body == "Grüße aus Zürich ✓"


def test_non_utf8_charsets() -> None:
    cp1252 = msg("""
Message-ID: <cp@example.com>
Date: Tue, 1 May 2001 08:00:00 +0000
From: x@example.com
Subject: quotes
Content-Type: text/plain; charset=windows-1252
Content-Transfer-Encoding: 8bit

\x93Hello\x94 \x96 it costs \x80 5
""")
    assert parse_message(cp1252).body.strip() == "\u201cHello\u201d \u2013 it costs \u20ac 5"
    koi8 = msg("""
Message-ID: <koi@example.com>
From: x@example.com
Subject: =?koi8-r?b?8NLJ18XU?=
Content-Type: text/plain; charset=koi8-r
Content-Transfer-Encoding: base64

8NLJ18XUIMfB2g==
""")
    r = parse_message(koi8)
    assert (r.subject, r.body) == ("Привет", "Привет газ")


def test_mislabelled_and_unknown_charsets_fall_back() -> None:
    mislabelled = msg("""
Message-ID: <ascii@example.com>
From: x@example.com
Subject: s
Content-Type: text/plain; charset=us-ascii

na\xefve r\xe9sum\xe9
""")
    assert parse_message(mislabelled).body.strip() == "naïve résumé"
    unknown = msg("""
Message-ID: <unk@example.com>
From: x@example.com
Subject: s
Content-Type: text/plain; charset=x-no-such-charset

plain text
""")
    assert parse_message(unknown).body.strip() == "plain text"


def test_html_only() -> None:
    raw = msg("""
Message-ID: <html@example.com>
Date: Tue, 1 May 2001 08:00:00 +0000
From: news@example.com
Subject: News
Content-Type: text/html; charset=utf-8

<html><head><style>p {color: red}</style></head><body><p>Gas &amp; power</p>
<script>alert(1)</script><div>Price&nbsp;up <b>5%</b></div></body></html>
""")
    body = parse_message(raw).body
    assert body == "Gas & power\n\nPrice up 5%"


MULTIPART = msg("""
Message-ID: <multi@example.com>
Date: Tue, 1 May 2001 08:00:00 +0000
From: x@example.com
To: y@example.com
Subject: multi
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="OUTER"

--OUTER
Content-Type: multipart/alternative; boundary="INNER"

--INNER
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

The plain =E2=82=AC version.
--INNER
Content-Type: text/html; charset=utf-8

<p>The <b>HTML</b> version.</p>
--INNER--
--OUTER
Content-Type: text/plain; name="notes.txt"
Content-Disposition: attachment; filename="notes.txt"

attached file text
--OUTER--
""")


def test_multipart_prefers_plain_and_skips_attachments() -> None:
    r = parse_message(MULTIPART)
    assert r.body == "The plain € version."
    assert r.to == [("y@example.com", "")]


def test_multipart_html_only_is_converted() -> None:
    raw = msg("""
Message-ID: <multi-html@example.com>
From: x@example.com
Subject: multi
Content-Type: multipart/alternative; boundary="B"

--B
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<p>Caf=E9</p><p>menu</p>
--B--
""")
    assert parse_message(raw).body == "Café\n\nmenu"


def test_missing_date_and_message_id() -> None:
    raw = msg("""
From: x@example.com
Subject: no date

body
""")
    r = parse_message(raw)
    assert r.date is None
    assert r.message_id.endswith("@inboxrl.invalid>")
    assert parse_message(raw).message_id == r.message_id  # stable across runs
    assert parse_message(raw.replace(b"Subject: no date", b"Date: garbage\r\nSubject: no date")).date is None


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 14 May 2001 16:39:00 -0700 (PDT)",
        "Sun, 20 Nov 0001 08:05:56 -0800 (PST)",  # an Enron year that email.utils reads as 2001
        "Mon, 31 Dec 1979 16:00:00 -0800 (PST)",
        "1 Feb 2002 23:59:59 +0530",
        "Tue, 1 May 2001 08:00:00 GMT",
        "Wed, 02 Oct 2002 13:00:00 EST",
        "2 Oct 2002 13:00 -0000",
    ],
)
def test_dates_match_email_utils(value: str) -> None:
    expected = datetime.fromtimestamp(mktime_tz(parsedate_tz(value)), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_date(value) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02\xff\xfe binary \x00junk\n\nmore", "NUL"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL"),
        (b"just some text without any header\nsecond line\n", "header line"),
        (b"X-Foo: bar\r\nX-Bar: baz\r\n\r\nno key headers", "no Message-ID"),
    ],
)
def test_garbage_raises_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_message(raw)


def test_lotus_notes_copies_share_content_hash() -> None:
    copy = QP.replace(b"<qp-1@example.com>", b"<qp-2@example.com>").replace(b"soft=\n", b"soft=\r\n")
    a, b = parse_message(QP), parse_message(copy)
    assert a.message_id != b.message_id
    assert a.content_hash == b.content_hash
    other = parse_message(QP.replace(b"3=80", b"4=80"))
    assert other.content_hash != a.content_hash


def test_structured_fields() -> None:
    r = parse_fields(
        {
            "message_id": "<s@example.com>",
            "subject": "Hi",
            "from": "Jane Doe <Jane@Example.com>",
            "to": ["a@example.com", "b@example.com"],
            "cc": "c@example.com",
            "bcc": None,
            "date": "2001-05-14 16:39:00",
            "body": "hello\r\nthere",
        }
    )
    assert (r.from_address, r.from_name, r.date) == ("jane@example.com", "Jane Doe", "2001-05-14T16:39:00Z")
    assert r.body == "hello\nthere"
    assert [a for a, _ in r.to] == ["a@example.com", "b@example.com"]
    assert r.cc == [("c@example.com", "")] and r.bcc == []
    with pytest.raises(ParseError):
        parse_fields({"subject": "x", "body": None})


@pytest.mark.parametrize("module", [env.parse, env.ingest, env.readers, env.tools])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def _storable(record: env.parse.EmailRecord) -> bool:
    """Every text field encodes as UTF-8 (what SQLite stores) and holds no NUL (what length() stops at)."""
    texts = [record.message_id, record.subject, record.from_address, record.from_name, record.body]
    texts += [t for _kind, address, name in record.recipients() for t in (address, name)]
    return all("\x00" not in t and t.encode("utf-8") is not None for t in texts)


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"Subject: s\nContent-Type: text/plain; charset=utf-7\n\n+2D8- hello", "hello"),
        (b"Subject: =?utf-7?B?KzJEOC0=?= s\nFrom: =?utf-7?B?KzJEOC0=?= <a@b>\n\nbody", "body"),
        (b"Subject: s\n\nNUL\x00inside", "inside"),
        (b"Subject: s\nContent-Type: text/plain; charset=undefined\n\ncaf\xe9 \x81", "caf"),
    ],
)
def test_undecodable_text_is_replaced_and_counted(raw: bytes, kept: str) -> None:
    """Issue 14 item 1: text SQLite cannot store (lone surrogates) or measure (NUL) becomes U+FFFD."""
    record = parse_message(raw)
    assert _storable(record)
    assert kept in record.body and record.repaired >= 1
    assert "\ufffd" in record.body + record.subject + record.from_name


@pytest.mark.parametrize("charset", ["unicode-escape", "raw-unicode-escape", "punycode"])
def test_python_codecs_are_not_charsets(charset: str) -> None:
    """``charset=unicode-escape`` would turn the text ``\\ud800`` into a surrogate: the body stays as sent."""
    record = parse_message(f"Subject: s\nContent-Type: text/plain; charset={charset}\n\nx \\ud800 y".encode())
    assert record.body == "x \\ud800 y" and record.repaired == 0


def test_structured_surrogates_and_nuls_are_replaced() -> None:
    record = parse_fields(
        {
            "message_id": "<\ud800@x>",
            "subject": "a\udcffb",
            "from": "N\ud800 <n@x>",
            "body": "x \ud800 y\x00z",
        }
    )
    assert _storable(record) and record.repaired == 4
    assert record.body == "x \ufffd y\ufffdz" and record.message_id == "<\ufffd@x>"
    assert record.subject == "a\xffb"  # an escaped byte (\udcff) is decoded as the byte it stands for
    assert parse_message(b"Subject: s\n\nplain").repaired == 0


@pytest.mark.parametrize("message_id", ["<>", "< >", "", "  "])
def test_an_empty_message_id_is_no_id(message_id: str) -> None:
    """Issue 14 item 6: ``<>`` is no identity; each message gets its own stable synthetic id."""
    a = parse_message(f"Message-ID: {message_id}\nSubject: one\n\nfirst".encode())
    b = parse_message(f"Message-ID: {message_id}\nSubject: two\n\nsecond".encode())
    assert a.message_id.endswith("@inboxrl.invalid>") and a.message_id != b.message_id
    assert a.message_id == env.parse.synthetic_message_id(a.content_hash)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Fri, 31 Dec 9999 23:59:59 -1200", None),  # 10000-01-01 in UTC: no four-digit year
        ("Fri, 31 Dec 9999 10:00:00 -1200", "9999-12-31T22:00:00Z"),
        ("Mon, 1 Jan 0999 00:00:00 +0000", "0999-01-01T00:00:00Z"),
        ("Sat, 1 Jan 1000 00:30:00 +0100", "0999-12-31T23:30:00Z"),
        ("Sat, 1 Jan 0001 00:00:00 +0100", "2000-12-31T23:00:00Z"),  # two-digit years, as email.utils
        ("Tue, 1 Jan 10000 00:00:00 +0000", None),
        ("Thu, 1 Jan 1970 00:00:00 +1400", "1969-12-31T10:00:00Z"),
    ],
)
def test_dates_are_four_digit_utc_instants(value: str, expected: str | None) -> None:
    """Issue 14 item 7: stored dates sort as text in time order, or are None."""
    assert parse_date(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9999-12-31T23:59:59-12:00", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("0999-05-01", "0999-05-01T00:00:00Z"),
        ("2001-05-14T16:39:00-07:00", "2001-05-14T23:39:00Z"),
    ],
)
def test_structured_dates_are_four_digit_utc_instants(value: str, expected: str | None) -> None:
    record = parse_fields({"subject": "s", "from": "a@b", "body": "b", "date": value})
    assert record.date == expected
