"""Find the messages in a path: CMU maildir, mbox, .eml folders, Kaggle CSV, corbt Parquet/JSONL, tar.gz.

Each reader yields :class:`Item`s: one message with the key of its source (a file path, or
``container#member``), the mailbox it belongs to and its folder. Items carry either a file path
(the parsing worker reads it), raw bytes, or already-structured fields (corbt layout). Nothing here
parses a message; see ``env.parse``.

The mailbox of a message is where it is filed, never who it is addressed to: for a CMU tree
``maildir/<user>/<folder>/<n>.`` it is ``<user>``; for an mbox or a flat folder of .eml files it is
the file or folder name; ``inbox=`` overrides it.
"""

from __future__ import annotations

import csv
import json
import os
import re
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


class UnknownFormat(ValueError):
    """The path's format could not be recognized; pass ``--format``."""


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


def iter_items(path: str | Path, fmt: str | None = None, *, inbox: str | None = None) -> Iterator[Item]:
    """Every message under ``path`` in a stable order, read with ``fmt`` (detected when None)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
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
    yield from readers[fmt](path, fmt, inbox)


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
    children = sorted((p for p in root.iterdir() if p.is_dir() and _visible(p.name)), key=lambda p: p.name)
    single = root.name != "maildir" and (_has_files(root) or any(_has_files(c) for c in children))
    if single:
        return [(root.name, root)]
    return [(child.name, child) for child in children]


def _read_dir(root: Path, fmt: str, inbox: str | None) -> Iterator[Item]:
    if root.is_file():
        stat = root.stat()
        yield Item(str(root), inbox or root.parent.name, "", stat.st_size, stat.st_mtime, path=str(root))
        return
    for mailbox, folder_root in _mailbox_roots(root):
        for dirpath, dirnames, filenames in os.walk(folder_root):
            dirnames[:] = sorted((d for d in dirnames if _visible(d)), key=_natural_key)
            folder = Path(dirpath).relative_to(folder_root).as_posix()
            folder = "" if folder == "." else folder
            for name in sorted(filenames, key=_natural_key):
                if not _visible(name) or (fmt == "eml" and not name.lower().endswith(".eml")):
                    continue
                full = f"{dirpath}/{name}"
                yield Item(full, inbox or mailbox, folder, -1, -1.0, path=full)


# ---------------------------------------------------------------------------------------------
# Single files holding many messages


def _split_member(name: str, default_mailbox: str) -> tuple[str, str]:
    """``(mailbox, folder)`` from a CMU-style relative path ``[maildir/]user/folder/.../n.``."""
    parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
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


def _read_tar(path: Path, fmt: str, inbox: str | None) -> Iterator[Item]:
    stem = _container_stem(path)
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if not _visible(base):
                continue
            mailbox, folder = _split_member(member.name, stem)
            handle = archive.extractfile(member)
            data = handle.read() if handle else b""
            yield Item(
                f"{path}#{member.name}", inbox or mailbox, folder, member.size, member.mtime, data=data
            )


def _read_mbox(path: Path, fmt: str, inbox: str | None) -> Iterator[Item]:
    data = path.read_bytes()
    starts = [m.start() for m in _MBOX_FROM.finditer(data)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    mailbox = inbox or _container_stem(path)
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(data)
        chunk = data[start:end]
        if chunk.startswith(b"From "):
            chunk = chunk.split(b"\n", 1)[1] if b"\n" in chunk else b""
        if chunk.endswith(b"\r\n\r\n"):  # the empty line before the next "From " belongs to the mbox
            chunk = chunk[:-2]
        elif chunk.endswith(b"\n\n"):
            chunk = chunk[:-1]
        chunk = _MBOX_QUOTED_FROM.sub(rb"\1", chunk)
        yield Item(f"{path}#{index}", mailbox, _container_stem(path), len(chunk), 0.0, data=chunk)


def _read_csv(path: Path, fmt: str, inbox: str | None) -> Iterator[Item]:
    """Kaggle ``emails.csv``: columns ``file`` (``allen-p/_sent_mail/1.``) and ``message`` (raw text)."""
    csv.field_size_limit(sys.maxsize)
    stem = _container_stem(path)
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "message" not in reader.fieldnames:
            raise UnknownFormat(f"{path}: expected CSV columns file,message, got {reader.fieldnames}")
        for row_number, row in enumerate(reader):
            name = row.get("file") or str(row_number)
            mailbox, folder = _split_member(name, stem)
            data = (row.get("message") or "").encode("utf-8", "surrogateescape")
            yield Item(f"{path}#{name}", inbox or mailbox, folder, len(data), 0.0, data=data)


_CORBT_COLUMNS = ("message_id", "subject", "from", "to", "cc", "bcc", "date", "body", "file_name")


def _structured_item(path: Path, stem: str, row: dict, row_number: int, inbox: str | None) -> Item:
    name = row.get("file_name") or str(row_number)
    mailbox, folder = _split_member(str(name), stem)
    fields = {key: row.get(key) for key in _CORBT_COLUMNS}
    if fields["date"] is not None and not isinstance(fields["date"], str):
        fields["date"] = fields["date"].isoformat()
    size = len(fields.get("body") or "")
    return Item(f"{path}#{name}", inbox or mailbox, folder, size, 0.0, fields=fields)


def _read_parquet(path: Path, fmt: str, inbox: str | None) -> Iterator[Item]:
    """corbt/enron-emails Parquet: message_id, subject, from, to, cc, bcc, date, body, file_name."""
    import pyarrow.parquet as pq

    stem = _container_stem(path)
    table = pq.ParquetFile(path)
    missing = [c for c in ("body", "from") if c not in table.schema_arrow.names]
    if missing:
        raise UnknownFormat(f"{path}: not in the corbt/enron-emails layout (missing columns {missing})")
    row_number = 0
    for batch in table.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            yield _structured_item(path, stem, row, row_number, inbox)
            row_number += 1


def _read_jsonl(path: Path, fmt: str, inbox: str | None) -> Iterator[Item]:
    """JSON lines in the corbt/enron-emails layout; a bad line becomes a quarantined item."""
    stem = _container_stem(path)
    with path.open("rb") as f:
        for row_number, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                fields = {"error": f"bad JSON line {row_number + 1}: {e}"}
                yield Item(f"{path}#line{row_number + 1}", inbox or stem, "", len(line), 0.0, fields=fields)
                continue
            yield _structured_item(path, stem, row, row_number, inbox)
