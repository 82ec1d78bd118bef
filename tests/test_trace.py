"""The trace store (SQLite beside the inbox DB) and the Langfuse mirror."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from env.trace import Tracer, TraceStore
from env.trajectory import ToolCall, Trajectory, Turn

REPO = Path(__file__).resolve().parents[1]


def make_trajectory(question: str = "When is the offsite?", **fields) -> Trajectory:
    now = time.time()
    turn = Turn(index=0, started=now, latency_s=0.5, prompt_tokens=120, completion_tokens=12, content=None)
    turn.tool_calls.append(
        ToolCall(id="call_1", name="return_final_answer", arguments={"answer": "Friday", "sources": ["m2"]})
    )
    values = {
        "question": question,
        "inbox": "alice-a",
        "query_date": "2001-05-01",
        "model": "smollm2-135m",
        "turns": [turn],
        "answer": "Friday",
        "sources": ["m2"],
        "ended": "answered",
        "trace_id": uuid.uuid4().hex,
        "started": now,
        "duration_s": 0.6,
    }
    return Trajectory(**{**values, **fields})


def record(tracer: Tracer, traj: Trajectory) -> None:
    """Trace a finished rollout the way the agent loop does: spans while it runs, then finish."""
    rollout = tracer.start(traj)
    rollout.span("model", "chat", {"messages": [{"role": "user", "content": traj.question}]}).end(
        output={"content": None}, tokens=(120, 12)
    )
    rollout.span("tool", "search_emails", {"keywords": ["x"]}).end(output="Error: boom", error="boom")
    rollout.finish(traj)


def test_store_round_trip_search_and_scores(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "inbox.traces.db")
    tracer = Tracer(store, session_id="s1", name="chat")
    first = make_trajectory("When is the offsite?")
    second = make_trajectory(
        "Who sent the gas forecast?", started=first.started + 1, ended="gave_up", answer=None
    )
    record(tracer, first)
    record(Tracer(store, session_id="s2", name="eval"), second)

    trace = store.get_trace(first.trace_id)
    assert trace["trajectory"] == first
    assert (trace["session_id"], trace["name"], trace["ended"], trace["answer"]) == (
        "s1",
        "chat",
        "answered",
        "Friday",
    )
    assert (trace["turns"], trace["tool_calls"], trace["prompt_tokens"], trace["sources"]) == (
        1,
        1,
        120,
        ["m2"],
    )
    model, tool = trace["spans"]
    assert (model["kind"], model["name"], model["prompt_tokens"], model["completion_tokens"]) == (
        "model",
        "chat",
        120,
        12,
    )
    assert (
        model["input"]["messages"][0]["content"] == "When is the offsite?" and model["end"] >= model["start"]
    )
    assert (tool["kind"], tool["error"], tool["input"]) == ("tool", "boom", {"keywords": ["x"]})

    assert [t["id"] for t in store.list_traces()] == [second.trace_id, first.trace_id]  # newest first
    assert [t["id"] for t in store.list_traces(search="gas")] == [second.trace_id]
    assert [t["id"] for t in store.list_traces(session_id="s1")] == [first.trace_id]
    assert [t["id"] for t in store.list_traces(limit=1, offset=1)] == [first.trace_id]
    assert "trajectory" not in store.list_traces()[0]
    assert store.get_trace("nope") is None

    tracer.add_score(first.trace_id, "correct", 1.0, "matches the gold answer")
    tracer.add_score(first.trace_id, "reward", 0.75)
    scores = store.get_trace(first.trace_id)["scores"]
    assert [(s["name"], s["value"], s["comment"]) for s in scores] == [
        ("correct", 1.0, "matches the gold answer"),
        ("reward", 0.75, None),
    ]

    # writing a trace again replaces it (and its spans) rather than duplicating it
    record(tracer, first)
    assert len(store.list_traces()) == 2 and len(store.get_trace(first.trace_id)["spans"]) == 2


def test_concurrent_writers_threads_and_processes(tmp_path: Path) -> None:
    """The UI's sessions (threads) and eval/training processes write one store at once."""
    path = tmp_path / "inbox.traces.db"
    store = TraceStore(path)
    script = textwrap.dedent(
        f"""
        import sys
        from tests.test_trace import make_trajectory, record
        from env.trace import Tracer, TraceStore
        tracer = Tracer(TraceStore({str(path)!r}), session_id=sys.argv[1])
        for i in range(25):
            record(tracer, make_trajectory(f"process question {{i}}"))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, f"p{n}"], cwd=REPO) for n in range(2)]

    def worker(n: int) -> None:
        tracer = Tracer(store, session_id=f"t{n}")
        for i in range(10):
            record(tracer, make_trajectory(f"thread {n} question {i}"))
            store.list_traces(limit=5)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    traces = store.list_traces(limit=1000)
    assert len(traces) == 4 * 10 + 2 * 25
    assert all(len(store.get_trace(t["id"])["spans"]) == 2 for t in traces[:10])


def test_no_langfuse_without_its_variables(tmp_path: Path) -> None:
    """Without LANGFUSE_* the SDK is never imported, so it costs nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
    script = textwrap.dedent(
        f"""
        import sys
        from tests.test_trace import make_trajectory, record
        from env.trace import Tracer, TraceStore, langfuse_configured
        tracer = Tracer(TraceStore({str(tmp_path / "t.db")!r}))
        record(tracer, make_trajectory())
        tracer.add_score(make_trajectory().trace_id, "x", 1.0)
        tracer.flush()
        assert not langfuse_configured() and not tracer.langfuse_enabled
        assert "langfuse" not in sys.modules, "langfuse was imported"
        """
    )
    subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, check=True, timeout=60)


@pytest.fixture
def fake_langfuse() -> Iterator[tuple[str, list]]:
    """A local HTTP endpoint that accepts and records what the Langfuse SDK sends."""
    received: list[tuple[str, str | None, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append((self.path, self.headers.get("Content-Encoding"), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_traces_and_scores_are_mirrored_to_langfuse(tmp_path: Path, fake_langfuse: tuple[str, list]) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    host, received = fake_langfuse
    env = {
        **os.environ,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "LANGFUSE_SECRET_KEY": "sk-lf-test",
        "LANGFUSE_HOST": host,
    }
    trace_id = uuid.uuid4().hex
    script = textwrap.dedent(
        f"""
        from tests.test_trace import make_trajectory, record
        from env.trace import Tracer, TraceStore
        tracer = Tracer(TraceStore({str(tmp_path / "t.db")!r}), session_id="session-1", name="ask")
        assert tracer.langfuse_enabled
        record(tracer, make_trajectory(trace_id={trace_id!r}))
        tracer.add_score({trace_id!r}, "correct", 1.0, "judge")
        tracer.flush()
        """
    )
    subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, check=True, timeout=120)

    spans = {}
    for path, encoding, body in received:
        if path.endswith("/otel/v1/traces"):
            request = ExportTraceServiceRequest.FromString(
                gzip.decompress(body) if encoding == "gzip" else body
            )
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attrs = {a.key: a.value.string_value for a in span.attributes}
                        spans[span.name] = (span.trace_id.hex(), attrs)
    assert set(spans) == {"ask", "chat", "search_emails"}
    assert {trace for trace, _ in spans.values()} == {trace_id}  # same id as the local trace
    assert spans["chat"][1]["langfuse.observation.type"] == "generation"
    assert json.loads(spans["chat"][1]["langfuse.observation.usage_details"]) == {"input": 120, "output": 12}
    assert spans["search_emails"][1]["langfuse.observation.level"] == "ERROR"
    assert all(attrs["session.id"] == "session-1" for _, attrs in spans.values())
    scores = [s for path, _, body in received if path.endswith("/scores") for s in json.loads(body)]
    assert [(s["traceId"], s["name"], s["value"]) for s in scores] == [(trace_id, "correct", 1.0)]
