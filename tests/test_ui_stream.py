"""The server-sent event streams behind the dashboard and ``flowrt timeline --follow``.

Real servers on loopback (in a thread, or ``flowrt serve`` for signals), real SQLite
files, a second engine on the same file for "another process", real CLI subprocesses.
"""

from __future__ import annotations

import http.server
import json
import queue
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import httpx
import pytest

from flowrt import Engine, sse
from flowrt.server.app import api_state
from http_helpers import ServeProcess, serve_process, thread_server

from examples.demo import ALL as DEMO

import ui_flows

FLOWS = [*DEMO, *ui_flows.ALL]


def start(client: httpx.Client, flow_id: str, body: dict[str, Any] | None = None, **extra: Any) -> str:
    response = client.post("/v1/runs/start", json={"flowId": flow_id, "input": body or {}, **extra})
    assert response.status_code == 200, response.text
    return str(response.json()["runId"])


class Reader:
    """Reads one event stream in a thread; messages land in a queue, read with deadlines."""

    def __init__(self, url: str, path: str, headers: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> None:
        self.messages: queue.Queue[sse.Message | None] = queue.Queue()
        self.status: int | None = None
        self.comments: list[str] = []
        self.opened = threading.Event()
        self.response: httpx.Response | None = None
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=60))
        self.thread = threading.Thread(target=self._read, args=(path, headers or {}, params or {}), daemon=True)
        self.thread.start()

    def _read(self, path: str, headers: dict[str, str], params: dict[str, Any]) -> None:
        try:
            with self.client.stream("GET", path, headers=headers, params=params) as response:
                self.response = response
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")

                def lines() -> Iterator[str]:
                    for line in response.iter_lines():
                        if line.startswith(":"):
                            self.comments.append(line)
                            self.opened.set()
                        yield line

                self.opened.set()
                for message in sse.parse(lines()):
                    self.messages.put(message)
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.messages.put(None)

    def subscribed(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not any("subscribed" in c for c in self.comments):
            assert time.monotonic() < deadline, "no ': subscribed' comment"
            time.sleep(0.01)

    def until(self, predicate: Any, timeout: float = 15) -> list[sse.Message]:
        """Messages read until one satisfies ``predicate`` (inclusive), or fail at the deadline."""
        got: list[sse.Message] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; got {[(m.event, m.data[:80]) for m in got]}"
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            assert message is not None, f"stream closed; got {[m.event for m in got]}"
            got.append(message)
            if predicate(message):
                return got

    def closed(self, timeout: float = 10) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def close(self) -> None:
        """Hang up, as a browser tab does when it closes."""
        if self.response is not None:
            self.response.close()
        self.client.close()


@pytest.fixture
def server(sqlite_url: str) -> Iterator[Any]:
    with thread_server(sqlite_url, FLOWS) as srv:
        yield srv


def test_events_stream_sends_each_event_then_end_and_closes(server: Any) -> None:
    run_id = start(server.client, "demo-support")
    reader = Reader(server.url, f"/v1/runs/{run_id}/events")
    try:
        waiting = reader.until(lambda m: m.event == "RUN_WAITING")
        assert reader.status == 200 and reader.content_type.startswith("text/event-stream")
        server.client.post(f"/v1/runs/{run_id}/resume", json={"ticketId": "T-9"}).raise_for_status()
        rest = reader.until(lambda m: m.event == "end")
        assert reader.closed(), "the stream stays open after end"
    finally:
        reader.close()
    messages = waiting + rest
    events = [m for m in messages if m.event != "end"]
    timeline = server.client.get(f"/v1/runs/{run_id}/timeline").json()
    assert [m.json() for m in events] == timeline  # the same objects as /timeline
    assert [m.id for m in events] == [str(e["seq"]) for e in timeline]
    assert [m.event for m in events] == [e["type"] for e in timeline]
    end = messages[-1].json()
    assert end["status"] == "COMPLETED" and end["outputsJson"]["notify"]["ticketId"] == {"ticketId": "T-9"}


def test_events_stream_of_an_ended_run_replays_and_ends(server: Any) -> None:
    run_id = start(server.client, "demo-fraud", {"amount": 5000})
    server.client.get(f"/v1/runs/{run_id}").raise_for_status()
    deadline = time.monotonic() + 10
    while server.client.get(f"/v1/runs/{run_id}").json()["status"] != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        text = client.get(f"/v1/runs/{run_id}/events", params={"after": 2}).text
        resumed = client.get(f"/v1/runs/{run_id}/events", params={"after": 0}, headers={"Last-Event-ID": "4"}).text
    got = list(sse.parse(text.splitlines()))
    assert [m.id for m in got[:-1]] == ["3", "4", "5", "6"] and got[-1].event == "end"
    assert [m.id for m in sse.parse(resumed.splitlines())][:-1] == ["5", "6"]  # Last-Event-ID wins over ?after


def test_events_stream_errors(server: Any) -> None:
    c = server.client
    missing = c.get("/v1/runs/01a20e2f-d5d5-7000-b70b-7b0dd583a075/events")
    assert missing.status_code == 404 and missing.json()["code"] == "RUN_NOT_FOUND"
    run_id = start(c, "demo-support")
    bad = c.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "seven"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]
    assert c.get(f"/v1/runs/{run_id}/events", params={"after": -1}).status_code == 400
    assert c.get("/v1/runs/changes", params={"status": "ASLEEP"}).status_code == 400


def test_streams_need_the_token_when_the_server_has_one(sqlite_url: str) -> None:
    with thread_server(sqlite_url, FLOWS, api_token="s3cret") as srv:
        auth = {"Authorization": "Bearer s3cret"}
        run_id = start(httpx.Client(base_url=srv.url, headers=auth), "demo-support")
        for path in (f"/v1/runs/{run_id}/events", "/v1/runs/changes", "/v1/runs/counts"):
            assert srv.client.get(path).status_code == 401, path
        reader = Reader(srv.url, f"/v1/runs/{run_id}/events", headers=auth)
        try:
            assert reader.until(lambda m: m.event == "RUN_WAITING")
        finally:
            reader.close()


def test_changes_stream_filters_and_sees_other_processes(server: Any, sqlite_url: str) -> None:
    reader = Reader(server.url, "/v1/runs/changes", params={"flowId": "demo-support"})
    everything = Reader(server.url, "/v1/runs/changes", params={"status": "COMPLETED"})
    try:
        reader.subscribed()
        everything.subscribed()
        fraud = start(server.client, "demo-fraud", {"amount": 5})
        support = start(server.client, "demo-support")
        got = reader.until(lambda m: m.json()["runId"] == support and m.json()["status"] == "WAITING")
        assert all(m.event == "run" and m.json()["flowId"] == "demo-support" for m in got)
        done = everything.until(lambda m: m.json()["runId"] == fraud)
        assert all(m.json()["status"] == "COMPLETED" for m in done)

        # Another process on the same database: a run that starts and ends between two polls.
        with Engine(sqlite_url, flows=FLOWS) as other:
            elsewhere = other.start("demo-support", "1.0.0", {})
            other.run_until_blocked(elsewhere.run_id)
            other.resume(elsewhere.run_id, {"ticketId": "T-2"})
            other.run_until_blocked(elsewhere.run_id)
        seen = reader.until(lambda m: m.json()["runId"] == elsewhere.run_id)
        assert seen[-1].json()["status"] == "COMPLETED"
    finally:
        reader.close()
        everything.close()


_LISTEN = """
import sys, httpx
with httpx.stream("GET", sys.argv[1], timeout=60) as response:
    for line in response.iter_lines():
        print(line, flush=True)
"""


def test_idle_changes_stream_costs_one_scan_a_second_and_stops_with_its_last_subscriber(server: Any) -> None:
    watcher = api_state(server.runtime.app).run_watcher
    # A separate process, killed like a closed browser tab: the socket really goes away.
    listener = subprocess.Popen([sys.executable, "-c", _LISTEN, f"{server.url}/v1/runs/changes"], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().startswith(": subscribed")
        before, began = watcher.scans, time.monotonic()
        time.sleep(2.5)
        scans, elapsed = watcher.scans - before, time.monotonic() - began
        assert scans <= elapsed / 1.0 + 1, f"{scans} scans in {elapsed:.1f} s while idle"
        assert watcher.last_scan_seconds < 0.05
    finally:
        listener.kill()
        listener.wait()
    deadline = time.monotonic() + 5
    while watcher.task is not None:  # the server notices the hang-up at once
        assert time.monotonic() < deadline, "the watcher outlived its subscribers"
        time.sleep(0.02)
    assert not watcher.subscribers


def test_counts_and_index(server: Any) -> None:
    c = server.client
    start(c, "demo-support", tenantId="acme")
    start(c, "demo-support", tenantId="zeta")
    deadline = time.monotonic() + 10
    while c.get("/v1/runs/counts").json()["WAITING"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert c.get("/v1/runs/counts", params={"tenantId": "acme"}).json() == {
        "RUNNING": 0, "WAITING": 1, "COMPLETED": 0, "FAILED": 0, "CANCELLED": 0
    }
    index = c.get("/", headers={"Accept": "application/json"}).json()
    assert index["name"] == "flowrt" and index["links"]["ui"] == "/ui"
    browser = c.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 302 and browser.headers["location"] == "/ui"
    page = c.get("/ui/runs/whatever")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert c.get("/ui/static/app.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_sigterm_ends_open_streams_promptly() -> None:
    with serve_process(["--flows", "examples.demo:ALL", "--db", "memory://"]) as proc:
        run_id = start(httpx.Client(base_url=proc.url), "demo-support")
        events = Reader(proc.url, f"/v1/runs/{run_id}/events")
        changes = Reader(proc.url, "/v1/runs/changes")
        try:
            events.until(lambda m: m.event == "RUN_WAITING")
            changes.subscribed()
            began = time.monotonic()
            assert proc.terminate(timeout=15) == 0, proc.output()
            took = time.monotonic() - began
            assert events.closed() and changes.closed()
        finally:
            events.close()
            changes.close()
    assert took < 5, f"shutdown took {took:.1f} s with streams open"


# --------------------------------------------------------------------------- the CLI


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowrt.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_timeline_follow_reads_the_stream() -> None:
    with serve_process(["--flows", "examples.demo:ALL", "--db", "memory://"]) as proc:
        client = httpx.Client(base_url=proc.url)
        run_id = start(client, "demo-support")
        follower = subprocess.Popen(
            [sys.executable, "-m", "flowrt.cli", "timeline", run_id, "--follow", "--json", "--url", proc.url, "--interval", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # the stream is open and has sent RUN_STARTED
        assert first["type"] == "RUN_STARTED"
        client.post(f"/v1/runs/{run_id}/resume", json={"ticketId": "T-3"}).raise_for_status()
        began = time.monotonic()
        out, err = follower.communicate(timeout=30)
        # Polling every 60 s would still be asleep: only the stream ends this quickly.
        assert time.monotonic() - began < 20, "--follow did not use the event stream"
        assert follower.returncode == 0, err
        types = [first["type"]] + [json.loads(line)["type"] for line in out.splitlines()]
        assert types[-1] == "RUN_COMPLETED" and types.count("RUN_STARTED") == 1


class _NoStream(http.server.BaseHTTPRequestHandler):
    """A server that, like the reference runtime, has /timeline and /runs/{id} but no /events."""

    events = [
        {"runId": "r1", "seq": 1, "at": "2026-01-01T00:00:00.000Z", "type": "RUN_STARTED", "nodeId": None, "attempt": None, "payloadJson": {}},
        {"runId": "r1", "seq": 2, "at": "2026-01-01T00:00:00.001Z", "type": "RUN_COMPLETED", "nodeId": "a", "attempt": 1, "payloadJson": {}},
    ]
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.paths.append(self.path)
        if self.path.startswith("/v1/runs/r1/timeline"):
            after = int(self.path.partition("after=")[2] or 0) if "after=" in self.path else 0
            body: Any = [e for e in self.events if e["seq"] > after]
            status = 200
        elif self.path == "/v1/runs/r1":
            body, status = {"runId": "r1", "status": "COMPLETED"}, 200
        else:
            body, status = {"error": "Cannot GET", "code": "NOT_FOUND"}, 404
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


def test_timeline_follow_falls_back_to_polling_without_a_stream() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoStream)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        result = _cli("timeline", "r1", "--follow", "--json", "--url", url, "--interval", "0.05")
    finally:
        httpd.shutdown()
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2]
    assert any(p.startswith("/v1/runs/r1/events") for p in _NoStream.paths)  # it asked for the stream first
    assert any(p.startswith("/v1/runs/r1/timeline") for p in _NoStream.paths)
