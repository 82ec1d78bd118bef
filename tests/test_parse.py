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
