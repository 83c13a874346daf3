"""The client's ``follow`` on the server's event stream, its fallbacks, and its plain-http TLS context."""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Iterator

import pytest

from client_helpers import FLOWRT_HEALTH, run_json
from examples.demo import ALL as DEMO
from flowrt import Event, RunNotFound
from flowrt.client import AsyncClient, Client
from flowrt.client.transport import Settings
from http_helpers import thread_server


@pytest.fixture(scope="module")
def driving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('stream') / 'driving.db'}"
    with thread_server(url, DEMO, workers=2) as srv:
        yield srv


def test_follow_is_pushed_by_the_stream_not_polled(driving: Any) -> None:
    # Polling every 60 s would still be asleep when the run ends: only the stream is this quick.
    with Client(driving.url, poll_interval=60) as client:
        run = client.start("demo-support", wait=True)
        seen: list[Event] = []
        watcher = threading.Thread(target=lambda: seen.extend(client.follow(run.run_id)))
        watcher.start()
        deadline = time.monotonic() + 30
        while not any(e.type == "RUN_WAITING" for e in seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        client.resume(run.run_id, {"ticketId": "S"})
        watcher.join(20)
        assert not watcher.is_alive(), "follow did not use the event stream"
        assert seen == client.timeline(run.run_id) and seen[-1].type == "RUN_COMPLETED"


def test_async_follow_is_pushed_by_the_stream(driving: Any) -> None:
    async def main() -> list[Event]:
        async with AsyncClient(driving.url, poll_interval=60) as client:
            run = await client.start("demo-support", wait=True)
            seen: list[Event] = []

            async def watch() -> None:
                async for event in client.follow(run.run_id, after=1):
                    seen.append(event)

            task = asyncio.create_task(watch())
            while not seen:
                await asyncio.sleep(0.01)
            await client.resume(run.run_id, {"ticketId": "A"})
            await asyncio.wait_for(task, 20)
            assert seen == (await client.timeline(run.run_id))[1:]
            return seen

    assert asyncio.run(main())[-1].type == "RUN_COMPLETED"


def test_a_missing_run_is_run_not_found_not_a_fallback(driving: Any) -> None:
    with Client(driving.url) as client, pytest.raises(RunNotFound):
        list(client.follow("no-such-run"))


def test_runs_since_and_until_bound_the_start_time(driving: Any) -> None:
    with Client(driving.url) as client:
        before = datetime.now(UTC) - timedelta(seconds=1)
        run = client.start("demo-fraud", {"amount": 1, "userId": "u"}, tenant_id="t-since")
        assert [r.run_id for r in client.runs(tenant_id="t-since", since=before)] == [run.run_id]
        assert list(client.runs(tenant_id="t-since", until=before)) == []
        naive = before.replace(tzinfo=None)  # a naive datetime is UTC
        assert client.runs_page(tenant_id="t-since", since=naive).runs[0].run_id == run.run_id


class _DroppingStream(http.server.BaseHTTPRequestHandler):
    """Streams one event, then the connection drops before ``end``; the timeline has two."""

    events = [
        {"runId": "r1", "seq": 1, "at": "2026-01-01T00:00:00.000Z", "type": "RUN_STARTED", "nodeId": None, "attempt": None, "payloadJson": {}},
        {"runId": "r1", "seq": 2, "at": "2026-01-01T00:00:00.001Z", "type": "RUN_COMPLETED", "nodeId": None, "attempt": None, "payloadJson": {}},
    ]
    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.asked.append(self.path)
        if self.path.startswith("/v1/runs/r1/events"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(f"id: 1\nevent: RUN_STARTED\ndata: {json.dumps(self.events[0])}\n\n".encode())
            self.wfile.flush()
            self.close_connection = True  # no `event: end`: the stream dropped
            return
        if self.path.startswith("/v1/runs/r1/timeline"):
            after = int(self.path.partition("after=")[2] or 0)
            body: Any = [e for e in self.events if e["seq"] > after]
        elif self.path == "/v1/runs/r1":
            body = run_json()
        else:
            body = FLOWRT_HEALTH
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def dropping() -> Iterator[str]:
    _DroppingStream.asked = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DroppingStream)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_dropped_stream_is_continued_by_polling_from_the_last_event(dropping: str) -> None:
    with Client(dropping, poll_interval=0.05) as client:
        assert [e.seq for e in client.follow("r1")] == [1, 2]
    assert any(p.startswith("/v1/runs/r1/timeline?after=1") for p in _DroppingStream.asked)

    async def main() -> list[int]:
        async with AsyncClient(dropping, poll_interval=0.05) as client:
            return [e.seq async for e in client.follow("r1")]

    assert asyncio.run(main()) == [1, 2]


def test_plain_http_never_loads_the_ca_bundle_but_https_and_proxies_do(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    context = Settings("http://127.0.0.1:3000").client_options()["verify"]
    assert isinstance(context, ssl.SSLContext)
    # Fails closed: should TLS ever happen, nothing is trusted and hostnames are checked.
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname and context.get_ca_certs() == []
    assert "verify" not in Settings("https://flows.example").client_options()
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.example:3128")
    assert "verify" not in Settings("http://127.0.0.1:3000").client_options()
