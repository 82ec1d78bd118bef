"""Untrusted text (email content, model output) shown as literal Markdown: in the UI and in reports."""

from __future__ import annotations

import string

_MARKDOWN_ESCAPES = str.maketrans({c: "\\" + c for c in string.punctuation})


def escape_markdown(text: str) -> str:
    r"""``text`` as literal Markdown: a backslash before every ASCII punctuation character.

    CommonMark (and Streamlit's ``:color[...]``, ``:material/...:`` and ``$math$``) reads any escaped
    punctuation as itself, so links, images, emphasis, headings, tables, HTML and directives all show
    as the characters they are made of.

    >>> print(escape_markdown("![x](http://e.vil) **hi** :red[no]"))
    \!\[x\]\(http\:\/\/e\.vil\) \*\*hi\*\* \:red\[no\]
    """
    return text.translate(_MARKDOWN_ESCAPES)
