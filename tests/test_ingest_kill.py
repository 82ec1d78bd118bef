"""``inboxrl ingest`` survives kill -9 and Ctrl-C (issue 14, items 3 and 4).

Real ``inboxrl ingest`` processes on the shipped default inbox (5,519 messages), each in its own
process group. Kill points are chosen with the ``INBOXRL_INGEST_CRASH`` hook (the ingest SIGKILLs
itself just before or just after its Nth commit); ``INBOXRL_INGEST_COMMIT_EVERY=1000`` gives a run
six data commits. After every kill or Ctrl-C the DB must be consistent (inbox rows included) and
the last rerun must leave a DB equal to a clean run's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import env.ingest as ingest_module
from env.db import open_db
from env.ingest import CRASH_ENV, default_inbox_archive, ingest, refresh_inbox

_SCRIPT = Path(sys.executable).with_name("inboxrl")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from app.entry import main; main()"]
ROOT = Path(__file__).resolve().parents[1]
SEARCHES = ("gas", "price", "meeting", "transport OR storage", "california", "enron NOT gas")
"""FTS5 queries whose ranked results (BM25 over the whole index) are part of the dump."""


def _dump(path: Path) -> dict[str, tuple[int, str]]:
    """A canonical dump: per table (and per FTS search) its row count and a digest of its rows."""
    queries = {
        "emails": "select * from emails order by id",
        "message_ids": "select * from message_ids order by inbox, message_id",
        "recipients": "select * from recipients order by email_id, kind, address, name",
        "inboxes": "select * from inboxes order by id",
        "inbox_origins": "select * from inbox_origins order by inbox, origin",
        "sources": "select * from sources order by path",
        "quarantine": "select source, inbox, reason from quarantine order by source",
    }
    conn = sqlite3.connect(path)
    schema = conn.execute("select type, name, tbl_name from sqlite_master order by name").fetchall()
    dump = {"schema": (len(schema), hashlib.sha256(repr(schema).encode()).hexdigest())}
    for name, sql in queries.items():
        rows = conn.execute(sql).fetchall()
        dump[name] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    for query in SEARCHES:
        rows = conn.execute(
            "select rowid, round(bm25(emails_fts), 6) from emails_fts where emails_fts match ?"
            " order by bm25(emails_fts), rowid",
            [query],
        ).fetchall()
        dump[f"search {query}"] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    conn.close()
    return dump


def _assert_consistent(path: Path) -> None:
    """Integrity, FTS in sync, no orphans, and every inbox row equal to its recomputation."""
    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.execute("insert into emails_fts(emails_fts) values('integrity-check')")  # raises if out of sync
    orphans = "select count(*) from message_ids where email_id not in (select id from emails)"
    assert conn.execute(orphans).fetchone() == (0,)
    stored = conn.execute("select * from inboxes order by id").fetchall()
    conn.close()
    db = open_db(":memory:")
    source = sqlite3.connect(path)
    source.backup(db.conn)
    source.close()
    for (inbox,) in db.execute("select id from inboxes").fetchall():
        refresh_inbox(db, inbox)
    assert db.execute("select * from inboxes order by id").fetchall() == stored, "stale inbox rows"
    db.close()


def _start(
    db_path: Path, log: Path, env: dict[str, str] | None = None, commit_every: int = 1000
) -> subprocess.Popen:
    """``inboxrl ingest`` (default inbox, 2 workers, commits of ``commit_every``) in a new process group.

    Its output goes to ``log`` (a pipe nobody reads while polling could fill up and block it).
    """
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*CLI, "ingest", "--db", str(db_path), "--workers", "2"],
            cwd=ROOT,
            env={**os.environ, "INBOXRL_INGEST_COMMIT_EVERY": str(commit_every), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_as_from_a_terminal,
        )


def _as_from_a_terminal() -> None:
    """In the child before exec: Ctrl-C handled by default and not blocked, as a terminal starts a
    command. A SIG_IGN or a blocked SIGINT in the test process (some library in the suite) would be
    inherited, and `inboxrl` rightly keeps ignoring a Ctrl-C its parent told it to ignore."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_masks(pid: int) -> str:
    """A process's SigBlk / SigIgn / SigCgt lines (for failure messages)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    wanted = ("SigBlk", "SigIgn", "SigCgt")
    return " ".join(line.replace("\t", "") for line in lines if line.startswith(wanted))


def _finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """Wait for the process (killing its group after ``timeout``); its output's tail."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running after {timeout} s:\n{log.read_text(errors='replace')[-2000:]}")
    return log.read_text(errors="replace")[-2000:]


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def _assert_group_gone(pgid: int, within: float) -> None:
    """Nothing of the ingest (workers, forkserver) outlives it by more than ``within`` seconds."""
    deadline = time.monotonic() + within
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _group(pgid)
    if left:
        os.killpg(pgid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def _sources(db_path: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)  # never creates it
        try:
            return conn.execute("select count(*) from sources").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet
        return -1


def _tables(db_path: Path) -> set[str]:
    if not db_path.exists():
        return set()
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def clean_dump(default_db_path: Path) -> dict[str, tuple[int, str]]:
    """The dump of a clean, uninterrupted ingest of the default inbox."""
    return _dump(default_db_path)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_kill_9_at_five_points_then_rerun(tmp_path: Path, clean_dump: dict) -> None:
    """Each run resumes the previous one's DB and is SIGKILLed at the next point; a last run completes it."""
    db_path = tmp_path / "inbox.db"
    points = [
        ("before-commit:1", 0),  # nothing committed yet
        ("after-commit:2", 2000),  # two batches committed
        ("before-commit:2", 3000),  # one more committed, the next killed inside its transaction
        ("after-commit:3", 5520),  # every message and the archive committed: nothing left to read
        ("before-commit:2", 5520),  # the rerun's end-of-run recompute (flush, then finish) killed
    ]
    log = tmp_path / "ingest.log"
    for point, committed in points:
        proc = _start(db_path, log, {CRASH_ENV: point})
        output = _finish(proc, log, 60)
        assert proc.returncode == -signal.SIGKILL, f"{point}: rc {proc.returncode}\n{output}"
        _assert_group_gone(proc.pid, within=5)  # no worker or forkserver outlives a kill -9
        assert _sources(db_path) == committed, point
        _assert_consistent(db_path)
        if committed == 5520:  # every message is in: the inbox rows are already the clean run's
            assert _dump(db_path)["inboxes"] == clean_dump["inboxes"], point
    proc = _start(db_path, log)
    output = _finish(proc, log, 60)
    assert proc.returncode == 0, output
    _assert_consistent(db_path)
    assert _dump(db_path) == clean_dump


def _locked(db_path: Path, since: float) -> bool:
    """Whether a run took the DB's ingest lock after ``since`` (opening the lock truncates it)."""
    lock = db_path.with_name(db_path.name + ".ingest-lock")
    try:
        return lock.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def _after_commits(n: int, delay: float = 0.0, pace: dict | None = None) -> Callable[[Path, int], bool]:
    """A moment: ``delay`` seconds after this run's ``n``-th commit is seen in the DB.

    With ``pace``, records there how long the run took from its lock to that commit ("batch").
    """
    started = time.time()
    seen: dict[str, float] = {}

    def due(db_path: Path, start: int) -> bool:
        if "lock" not in seen and _locked(db_path, started):
            seen["lock"] = time.monotonic()
        if "at" not in seen and _sources(db_path) > start + 1000 * (n - 1):
            seen["at"] = time.monotonic()
            if pace is not None and "lock" in seen:
                pace["batch"] = seen["at"] - seen["lock"]
        return "at" in seen and time.monotonic() >= seen["at"] + delay

    return due


def _importing(pid: int) -> bool:
    """Whether the CLI's imports have begun: an extension module from site-packages is mapped.

    ``app.entry`` sets its Ctrl-C handler before it imports the CLI (the first code to load one);
    a Ctrl-C before that falls to CPython's own start-up (site, .pth files), outside the product.
    """
    try:
        return "site-packages" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # exited
        return False


def _after_lock(delay: float | Callable[[], float]) -> Callable[[Path, int], bool]:
    """A moment: ``delay`` seconds (or ``delay()``, read when the lock is seen) after this run took
    the DB's ingest lock."""
    started = time.time()
    seen: dict[str, float] = {}

    def due(db_path: Path, start: int) -> bool:
        if "at" not in seen and _locked(db_path, started):
            seen["at"] = time.monotonic() + (delay() if callable(delay) else delay)
        return "at" in seen and time.monotonic() >= seen["at"]

    return due


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_ctrl_c_stops_within_seconds_then_rerun(tmp_path: Path, clean_dump: dict) -> None:
    """SIGINT to the process group (a terminal's Ctrl-C) at five moments; each run stops within 10 s."""
    db_path = tmp_path / "inbox.db"
    # "While parsing" is halfway from the lock to the first commit as the run before it took them:
    # a fixed 0.5 s let a fast machine (a whole run in 0.9 s) finish before the Ctrl-C landed.
    pace: dict[str, float] = {}
    moments = [
        ("during start-up", None, False),
        ("as the ingest starts", lambda proc: _after_lock(0.0), True),
        ("right after a commit", lambda proc: _after_commits(1, pace=pace), True),
        ("while parsing", lambda proc: _after_lock(lambda: pace.get("batch", 0.2) / 2), True),
        ("just after a commit", lambda proc: _after_commits(1, 0.1), True),
    ]
    # Commits of 500: at most two commits after a commit is seen and one before the next, so about
    # 3,000 of the 5,519 messages at most are in after the five runs (1,000 a commit once let the
    # fifth run finish before its Ctrl-C landed).
    log = tmp_path / "ingest.log"
    for name, moment, in_ingest in moments:
        start = max(_sources(db_path), 0)
        proc = _start(db_path, log, commit_every=500)
        if not in_ingest:
            proc = _frozen_while_importing(proc, db_path, log)
        else:
            due = moment(proc)
            while proc.poll() is None and not due(db_path, start):
                time.sleep(0.02)
        assert proc.poll() is None, f"{name}: the ingest finished before Ctrl-C"
        masks = f"child {_signal_masks(proc.pid)}; test {_signal_masks(os.getpid())}"
        os.killpg(proc.pid, signal.SIGINT)
        os.killpg(proc.pid, signal.SIGCONT)  # a no-op unless frozen above
        sent = time.monotonic()
        output = _finish(proc, log, 10)
        stopped = time.monotonic() - sent
        assert proc.returncode == 130, f"{name}: rc {proc.returncode} ({masks})\n{output}"
        if in_ingest:
            assert "run the same command again to resume" in output, f"{name}:\n{output}"
        else:
            assert "Interrupted." in output and _sources(db_path) <= 0, f"{name}:\n{output}"
        _assert_group_gone(proc.pid, within=10 - stopped)
        if _tables(db_path) >= {"emails", "emails_fts", "inboxes", "sources"}:
            _assert_consistent(db_path)
        else:  # stopped while creating the schema, before any mail: the rerun completes it
            assert _sources(db_path) <= 0, name
    assert 0 < _sources(db_path) < 5520
    proc = _start(db_path, log)
    output = _finish(proc, log, 60)
    assert proc.returncode == 0, output
    _assert_consistent(db_path)
    assert _dump(db_path) == clean_dump


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_a_dead_worker_stops_the_run_with_a_clear_error_and_the_rerun_completes(
    tmp_path: Path, clean_dump: dict
) -> None:
    """A parse worker SIGKILLed mid-run (as the OOM killer would): the ingest once waited forever for
    the batch it held; now it stops within seconds, says what happened, and a rerun completes."""
    db_path = tmp_path / "inbox.db"
    log = tmp_path / "ingest.log"
    proc = _start(db_path, log, commit_every=500)
    due = _after_lock(0.5)
    while proc.poll() is None and not due(db_path, 0):
        time.sleep(0.02)
    workers = [pid for pid in _group(proc.pid) if pid != proc.pid and _parent(pid) != proc.pid]
    assert proc.poll() is None and workers, "no pool worker found (the forkserver's children)"
    os.kill(workers[0], signal.SIGKILL)
    output = _finish(proc, log, 20)
    assert proc.returncode == 1, f"rc {proc.returncode}\n{output}"
    assert "A parsing worker died" in " ".join(output.split()), output
    _assert_group_gone(proc.pid, within=10)
    if _tables(db_path) >= {"emails", "emails_fts", "inboxes", "sources"}:
        _assert_consistent(db_path)
    proc = _start(db_path, log)
    output = _finish(proc, log, 60)
    assert proc.returncode == 0, output
    assert _dump(db_path) == clean_dump


def _parent(pid: int) -> int:
    """The parent of a process (0 once it is gone)."""
    try:
        return int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[1])
    except (OSError, IndexError, ValueError):
        return 0


def _frozen_while_importing(proc: subprocess.Popen, db_path: Path, log: Path) -> subprocess.Popen:
    """``proc`` (an ingest into a new DB) stopped, SIGSTOP to its group, while its CLI imports and
    before the ingest takes its lock.

    Polling can fall seconds behind on a loaded machine: the suite once sent its start-up Ctrl-C as
    the whole ingest (0.9 s) had ended and the interpreter was shutting down, where CPython drops a
    signal it has not handled yet. Frozen, the moment is checked without a race; a run that got
    past it first is killed (no ingest lock yet means no DB write) and started again.
    """
    lock = db_path.with_name(db_path.name + ".ingest-lock")  # a fresh DB: only this run makes it
    for _ in range(5):
        while proc.poll() is None and not _importing(proc.pid):
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGSTOP)
        if proc.poll() is None and not lock.exists():
            return proc
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for path in db_path.parent.glob(db_path.name + "*"):
            path.unlink()
        proc = _start(db_path, log, commit_every=500)
    pytest.fail("five runs got past their imports before the test could stop them")


def test_stale_inbox_rows_are_repaired(tmp_path: Path, default_db_path: Path) -> None:
    """Rows an older version left stale (mail committed, row not updated) are recomputed by any run."""
    db_path = tmp_path / "inbox.db"
    shutil.copy(default_db_path, db_path)
    conn = sqlite3.connect(db_path)
    clean = conn.execute("select * from inboxes order by id").fetchall()
    conn.execute(
        "update inboxes set addresses = '[]', message_count = 0, first_date = null, last_date = null"
        " where id != 'south-s'"
    )
    conn.commit()
    conn.close()
    report = ingest([default_inbox_archive()], db_path, progress=False, workers=1)
    assert (report.ingested, report.skipped_sources, report.inboxes) == (0, 1, [])  # nothing touched
    conn = sqlite3.connect(db_path)
    assert conn.execute("select * from inboxes order by id").fetchall() == clean
    conn.close()


def test_stop_pool_does_not_wait_on_dead_workers() -> None:
    """Workers killed from outside can leave a queue lock held: ``Pool.terminate`` then never returns
    (checked here), and ``_stop_pool`` still stops the pool within its timeout."""
    pools = [ingest_module._pool(2) for _ in range(2)]
    for pool in pools:
        pool.apply(ingest_module._parse_batch, ([],))
        time.sleep(0.3)  # both workers back in the task queue's get(), one holding its lock
        for worker in list(pool._pool):
            os.kill(worker.pid, signal.SIGKILL)
    time.sleep(0.5)
    plain = threading.Thread(target=pools[0].terminate, daemon=True)
    plain.start()
    plain.join(2)
    started = time.monotonic()
    ingest_module._stop_pool(pools[1], timeout=1.0)
    assert time.monotonic() - started < 4
    assert not any(worker.is_alive() for worker in pools[1]._pool)
    assert plain.is_alive(), "Pool.terminate returned: this test no longer shows the hang it guards against"
    for worker in list(pools[0]._pool):  # the replacement workers of the hung pool
        worker.kill()
        worker.join()


def _ignores_sigint(pid: int) -> bool:
    """Whether a process ignores SIGINT (its ``SigIgn`` mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal masks from /proc")
def test_workers_ignore_sigint() -> None:
    """A terminal's Ctrl-C reaches the whole process group: the workers must leave it to the main process."""
    pool = ingest_module._pool(2)
    try:
        pids = [worker.pid for worker in pool._pool]
        deadline = time.monotonic() + 30
        while not all(_ignores_sigint(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)  # workers still starting (a SIGINT before their set-up kills them harmlessly)
        assert all(_ignores_sigint(pid) for pid in pids)
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert [worker.pid for worker in pool._pool if worker.is_alive()] == pids  # none died or was replaced
        assert pool.apply(ingest_module._parse_batch, ([],)) == []
    finally:
        ingest_module._stop_pool(pool)


def test_crash_hook_is_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A mistyped kill point fails loudly instead of silently not killing."""
    monkeypatch.setenv(CRASH_ENV, "after-comit:3")
    with pytest.raises(ValueError, match="after-commit:N"):
        ingest([default_inbox_archive()], tmp_path / "inbox.db", progress=False, workers=1)


def test_swallowed_ctrl_c_still_exits_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A Ctrl-C that library code catches (as some import code does at start-up) still stops with 130."""
    import app.cli
    import app.entry

    ran = []

    def command_that_swallows_ctrl_c() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here and raises
        except KeyboardInterrupt:
            pass
        ran.append(True)

    monkeypatch.setattr(app.cli, "main", command_that_swallows_ctrl_c)
    monkeypatch.setattr(app.entry, "_interrupted", False)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stopped:
            app.entry.main()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ran and stopped.value.code == 130
    assert "Interrupted." in capsys.readouterr().err
