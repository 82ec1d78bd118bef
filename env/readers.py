"""Find the messages in a path: CMU maildir, mbox, .eml folders, Kaggle CSV, corbt Parquet/JSONL, tar.gz.

Each reader yields :class:`Item`s: one message with the key of its source (a file path, or
``container#member``), the mailbox it belongs to and its folder. Items carry either a file path
(the parsing worker reads it), raw bytes, or already-structured fields (corbt layout). Nothing here
parses a message; see ``env.parse``.

The mailbox of a message is where it is filed, never who it is addressed to: for a CMU tree
``maildir/<user>/<folder>/<n>.`` it is ``<user>``; for an mbox or a flat folder of .eml files it is
the file or folder name; ``inbox=`` overrides it.

Hostile input: source keys, mailbox and folder names are made storable text (a non-UTF-8 name byte
``\\xff`` becomes the four characters ``\\xff``, see :func:`storable_name`). A symbolic link in a
folder is read only when it points inside the tree being ingested; a link out of it, or to a folder,
becomes a quarantined item. :class:`Limits` caps the bytes of one message and of one container
file: a message over its limit is quarantined unread (mbox and JSONL are streamed, tar members
and files are size-checked before reading); a container over its limit raises :class:`OverLimit`,
which ingestion records as a quarantined container.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("maildir", "eml", "mbox", "csv", "parquet", "jsonl", "tar")
"""Names accepted by ``--format``."""

CONTAINER_FORMATS = frozenset(("mbox", "csv", "parquet", "jsonl", "tar"))
"""Formats whose file holds many messages; the whole file is also recorded as a source."""

_DIGITS = re.compile(r"(\d+)")
_SKIP_NAMES = frozenset((".DS_Store", "Thumbs.db", "desktop.ini"))
_MBOX_FROM = re.compile(rb"^From [^\n]*\n", re.MULTILINE)
_MBOX_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_READ_CHUNK = 1 << 16


class UnknownFormat(ValueError):
    """The path's format could not be recognized; pass ``--format``."""


class OverLimit(ValueError):
    """A message or container file is larger than its :class:`Limits`."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits that keep one hostile file from filling memory; what is over them is quarantined."""

    message_bytes: int = 25 * 2**20
    """Largest raw message read (25 MiB: the common mail-server limit; the largest Enron body is 1.4 MB)."""
    container_bytes: int = 16 * 2**30
    """Largest mbox, CSV, JSONL or Parquet file, or bytes of tar members, read from one container."""


def storable_name(text: str) -> str:
    """A path or name as text SQLite can store: undecodable bytes and lone surrogates as ``\\xNN`` escapes.

    Names keep their UTF-8 characters; the same name always gives the same text (reruns match).

    >>> storable_name("4" + b"\\xff".decode("utf-8", "surrogateescape") + ".")
    '4\\\\xff.'
    """
    if text.isascii() and "\x00" not in text:
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (from JSON "\\ud800")
        data = text.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def read_message_file(path: str, limit: int) -> bytes:
    """The bytes of one message file: a regular file of at most ``limit`` bytes (0: no limit).

    Raises :class:`OverLimit` for a larger file and ``ValueError`` for a FIFO, device or folder
    (opened without blocking, so a named pipe cannot stall the run).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if limit and info.st_size > limit:
            raise OverLimit(_over(info.st_size, "bytes", limit))
        data = f.read(limit + 1) if limit else f.read()
    if limit and len(data) > limit:
        raise OverLimit(f"message over the {limit:,}-byte limit")
    return data


def _over(size: int, unit: str, limit: int) -> str:
    return f"message of {size:,} {unit} is over the {limit:,}-byte limit (Limits.message_bytes)"


def _rejected(source: str, mailbox: str, folder: str, reason: str) -> Item:
    """An item ingestion quarantines with ``reason`` without reading anything."""
    return Item(source, mailbox, folder, 0, 0.0, fields={"error": reason})


@dataclass(frozen=True, slots=True)
class Item:
    """One message to ingest, not yet parsed."""

    source: str
    """Unique key of the message's source: a file path, or ``container#member``."""
    mailbox: str
    folder: str
    size: int
    """Bytes, or -1 for a file not yet stat-ed (the parsing worker stats it)."""
    mtime: float
    path: str | None = None
    data: bytes | None = None
    fields: dict | None = None
    limit: int = 0
    """Largest file the parsing worker reads for ``path`` (0: no limit)."""


def detect_format(path: str | Path) -> str:
    """Pick the reader for a path from its name and, for folders, their contents.

    Raises :class:`UnknownFormat` naming ``--format`` when nothing fits.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such file or folder: {path}")
    name = path.name.lower()
    if path.is_dir():
        for _root, _dirs, files in os.walk(path):
            if any(f.lower().endswith(".eml") for f in files):
                return "eml"
            if any(not f.startswith(".") for f in files):
                return "maildir"
        raise UnknownFormat(f"{path} holds no files")
    if name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        return "tar"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".eml"):
        return "eml"
    if name.endswith(".mbox") or name == "mbox":
        return "mbox"
    with path.open("rb") as f:
        head = f.read(5)
    if head == b"From ":
        return "mbox"
    raise UnknownFormat(f"Cannot tell the format of {path}; pass --format (one of {', '.join(FORMATS)})")


def iter_items(
    path: str | Path, fmt: str | None = None, *, inbox: str | None = None, limits: Limits | None = None
) -> Iterator[Item]:
    """Every message under ``path`` in a stable order, read with ``fmt`` (detected when None).

    :param limits: size limits (default :class:`Limits`); raises :class:`OverLimit` when a
        container is over its limit, before or while reading it.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    limits = limits or Limits()
    inbox = storable_name(inbox) if inbox else inbox
    readers = {
        "maildir": _read_dir,
        "eml": _read_dir,
        "mbox": _read_mbox,
        "csv": _read_csv,
        "parquet": _read_parquet,
        "jsonl": _read_jsonl,
        "tar": _read_tar,
    }
    if fmt not in readers:
        raise UnknownFormat(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt in CONTAINER_FORMATS and fmt != "tar" and path.is_file():
        size = path.stat().st_size
        if size > limits.container_bytes:
            raise OverLimit(f"{fmt} file of {size:,} bytes is over the {limits.container_bytes:,}-byte limit")
    yield from readers[fmt](path, fmt, inbox, limits)


# ---------------------------------------------------------------------------------------------
# Folders: CMU maildir trees and .eml folders


def _natural_key(name: str) -> tuple:
    """Sort ``2.`` before ``10.``; CMU message names take the fast path."""
    stem = name.rstrip(".")
    if stem.isdigit():
        return (0, int(stem), name)
    return (1, tuple(str(t).zfill(12) if t.isdigit() else t for t in _DIGITS.split(name)), name)


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in _SKIP_NAMES


def _has_files(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and _visible(e.name) for e in entries)


def _mailbox_roots(root: Path) -> list[tuple[str, Path]]:
    """``(mailbox key, folder)`` for each mailbox under root.

    ``.../maildir`` (or a folder holding ``maildir/``) is a tree of mailboxes, one per child.
    A folder whose files sit directly in it or in its children is one mailbox.
    """
    if (root / "maildir").is_dir():
        root = root / "maildir"
    children = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and _visible(p.name)),
        key=lambda p: p.name,
    )
    single = root.name != "maildir" and (_has_files(root) or any(_has_files(c) for c in children))
    if single:
        return [(root.name, root)]
    return [(child.name, child) for child in children]


def _walk(folder: str) -> Iterator[tuple[str, list[os.DirEntry]]]:
    """``(folder, entries that are not folders)`` top-down in natural order, like ``os.walk``.

    Never enters a linked folder: links (to files or folders) are listed with the files, and
    ``scandir`` entries tell them apart without a system call per file.
    """
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if _visible(e.name)), key=lambda e: _natural_key(e.name))
    dirs = [e for e in entries if e.is_dir(follow_symlinks=False)]
    files = [e for e in entries if not e.is_dir(follow_symlinks=False)]
    yield folder, files
    for entry in dirs:
        yield from _walk(entry.path)


def _inside(path: str, tree: str) -> bool:
    real = os.path.realpath(path)
    return real == tree or real.startswith(tree.rstrip("/") + "/")


def _read_dir(root: Path, fmt: str, inbox: str | None, limits: Limits) -> Iterator[Item]:
    if root.is_file():
        info = root.stat()
        source, mailbox = storable_name(str(root)), inbox or storable_name(root.parent.name)
        yield Item(
            source, mailbox, "", info.st_size, info.st_mtime, path=str(root), limit=limits.message_bytes
        )
        return
    tree = os.path.realpath(root)
    for mailbox, folder_root in _mailbox_roots(root):
        mailbox = inbox or storable_name(mailbox)
        for dirpath, files in _walk(str(folder_root)):
            folder = os.path.relpath(dirpath, folder_root).replace(os.sep, "/")
            folder = "" if folder == "." else storable_name(folder)
            for entry in files:
                if fmt == "eml" and not entry.name.lower().endswith(".eml"):
                    continue
                source = storable_name(entry.path)
                if entry.is_symlink() and not _inside(entry.path, tree):
                    reason = "symbolic link out of the ingested tree: not followed"
                    yield _rejected(source, mailbox, folder, reason)
                    continue
                yield Item(source, mailbox, folder, -1, -1.0, path=entry.path, limit=limits.message_bytes)


# ---------------------------------------------------------------------------------------------
# Single files holding many messages


def _split_member(name: str, default_mailbox: str) -> tuple[str, str]:
    """``(mailbox, folder)`` from a CMU-style relative path ``[maildir/]user/folder/.../n.``, storable."""
    parts = [storable_name(p) for p in name.replace("\\", "/").split("/") if p and p != "."]
    if "maildir" in parts:
        parts = parts[parts.index("maildir") + 1 :]
    if len(parts) >= 3:
        return parts[0], "/".join(parts[1:-1])
    if len(parts) == 2:
        return default_mailbox, parts[0]
    return default_mailbox, ""


def _container_stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".mbox", ".csv", ".parquet", ".jsonl"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return path.stem or name


def _read_tar(path: Path, fmt: str, inbox: str | None, limits: Limits) -> Iterator[Item]:
    stem = storable_name(_container_stem(path))
    container = storable_name(str(path))
    total = 0
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            base = member.name.rsplit("/", 1)[-1]
            if member.isdir() or not _visible(base):
                continue
            mailbox, folder = _split_member(member.name, stem)
            source, mailbox = f"{container}#{storable_name(member.name)}", inbox or mailbox
            if not member.isfile():
                yield _rejected(source, mailbox, folder, "link or special file in the archive: not followed")
                continue
            if member.size > limits.message_bytes:
                reason = _over(member.size, "bytes", limits.message_bytes)
                yield _rejected(source, mailbox, folder, reason)
                continue
            total += member.size
            if total > limits.container_bytes:
                raise OverLimit(f"archive members over the {limits.container_bytes:,}-byte limit")
            handle = archive.extractfile(member)
            data = handle.read() if handle else b""
            yield Item(source, mailbox, folder, member.size, member.mtime, data=data)


def _mbox_item(source: str, mailbox: str, folder: str, chunk: bytearray, size: int, limit: int) -> Item:
    """One mbox message: its trailing separator line and ``>From`` quoting removed."""
    if size > limit:
        return _rejected(source, mailbox, folder, _over(size, "bytes", limit))
    data = bytes(chunk)
    if data.endswith(b"\r\n\r\n"):  # the empty line before the next "From " belongs to the mbox
        data = data[:-2]
    elif data.endswith(b"\n\n"):
        data = data[:-1]
    data = _MBOX_QUOTED_FROM.sub(rb"\1", data)
    return Item(source, mailbox, folder, len(data), 0.0, data=data)


def _read_mbox(path: Path, fmt: str, inbox: str | None, limits: Limits) -> Iterator[Item]:
    """Stream an mbox: messages start at ``From `` lines; only one message (up to its limit) is in memory.

    Text before the first ``From `` line is message 0, as is a first ``From `` line at byte 0.
    """
    mailbox = inbox or storable_name(_container_stem(path))
    folder = storable_name(_container_stem(path))
    container = storable_name(str(path))
    limit = limits.message_bytes
    index, chunk, size = 0, bytearray(), 0
    started = False  # whether message ``index`` has begun (a From line or any byte)
    line_start, in_separator = True, False
    with path.open("rb") as f:
        while piece := f.readline(_READ_CHUNK):
            if line_start and piece.startswith(b"From "):
                if started:
                    yield _mbox_item(f"{container}#{index}", mailbox, folder, chunk, size, limit)
                    index += 1
                chunk, size, started, in_separator = bytearray(), 0, True, True
            elif not in_separator:
                started = True
                size += len(piece)
                if size <= limit:
                    chunk += piece
            line_start = piece.endswith(b"\n")
            in_separator = in_separator and not line_start
    if started:
        yield _mbox_item(f"{container}#{index}", mailbox, folder, chunk, size, limit)


def _read_csv(path: Path, fmt: str, inbox: str | None, limits: Limits) -> Iterator[Item]:
    """Kaggle ``emails.csv``: columns ``file`` (``allen-p/_sent_mail/1.``) and ``message`` (raw text).

    A field over the message limit stops the reader (the csv module cannot skip it): the rest of
    the file is quarantined with the reason.
    """
    csv.field_size_limit(min(limits.message_bytes, sys.maxsize))
    stem = storable_name(_container_stem(path))
    container = storable_name(str(path))
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "message" not in reader.fieldnames:
            raise UnknownFormat(f"{path}: expected CSV columns file,message, got {reader.fieldnames}")
        for row_number, row in enumerate(reader):
            name = row.get("file") or str(row_number)
            mailbox, folder = _split_member(name, stem)
            data = (row.get("message") or "").encode("utf-8", "surrogateescape")
            source = f"{container}#{storable_name(name)}"
            yield Item(source, inbox or mailbox, folder, len(data), 0.0, data=data)


_CORBT_COLUMNS = ("message_id", "subject", "from", "to", "cc", "bcc", "date", "body", "file_name")


def _structured_item(
    path: Path, stem: str, row: dict, row_number: int, inbox: str | None, limit: int
) -> Item:
    name = str(row.get("file_name") or row_number)
    mailbox, folder = _split_member(name, stem)
    source, mailbox = f"{storable_name(str(path))}#{storable_name(name)}", inbox or mailbox
    fields = {key: row.get(key) for key in _CORBT_COLUMNS}
    if fields["date"] is not None and not isinstance(fields["date"], str):
        fields["date"] = fields["date"].isoformat()
    body = fields.get("body")
    size = len(body) if isinstance(body, str) else 0
    if size > limit:
        return _rejected(source, mailbox, folder, _over(size, "characters", limit))
    return Item(source, mailbox, folder, size, 0.0, fields=fields)


def _read_parquet(path: Path, fmt: str, inbox: str | None, limits: Limits) -> Iterator[Item]:
    """corbt/enron-emails Parquet: message_id, subject, from, to, cc, bcc, date, body, file_name."""
    import pyarrow.parquet as pq

    stem = storable_name(_container_stem(path))
    table = pq.ParquetFile(path)
    missing = [c for c in ("body", "from") if c not in table.schema_arrow.names]
    if missing:
        raise UnknownFormat(f"{path}: not in the corbt/enron-emails layout (missing columns {missing})")
    row_number = 0
    for batch in table.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            yield _structured_item(path, stem, row, row_number, inbox, limits.message_bytes)
            row_number += 1


def _read_jsonl(path: Path, fmt: str, inbox: str | None, limits: Limits) -> Iterator[Item]:
    """JSON lines in the corbt/enron-emails layout; a bad or oversized line becomes a quarantined item."""
    stem = storable_name(_container_stem(path))
    container = storable_name(str(path))
    limit = limits.message_bytes
    with path.open("rb") as f:
        row_number = -1
        while line := f.readline(limit + 1):
            row_number += 1
            source = f"{container}#line{row_number + 1}"
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := f.readline(_READ_CHUNK)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the line unread
                reason = (
                    f"line {row_number + 1}: message over the {limit:,}-byte limit (Limits.message_bytes)"
                )
                yield _rejected(source, inbox or stem, "", reason)
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                fields = {"error": f"bad JSON line {row_number + 1}: {e}"}
                yield Item(source, inbox or stem, "", len(line), 0.0, fields=fields)
                continue
            yield _structured_item(path, stem, row, row_number, inbox, limit)
