"""The fast path (flowrt/server/fastpath.py) answers exactly as Litestar does.

Every scenario runs against two real servers on loopback: one with the fast path and
one with it turned off (``fast_path=False``, all requests through Litestar). Their
answers must match -- status, JSON body (run ids and times aside) and every header but
``date`` -- and, on the fast server, a spy on the Litestar app behind the fast path
checks which path served each request: ordinary requests must not reach Litestar
(else these comparisons would prove nothing), unusual ones must.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import socket
import threading
import urllib.parse
from typing import Any, Callable, Iterator

import httpx
import pytest
from http_flows import ALL as HTTP_FLOWS
from http_helpers import ThreadServer, read_answers, thread_server, wait_for

from examples.demo import ALL as DEMO_FLOWS
from flowrt.server import connections
from flowrt.server.fastpath import FastPath

pytestmark = pytest.mark.timeout(120)

FAST, LITESTAR = "fast", "litestar"
try:  # the `fast` extra (httptools): ordinary requests are answered beneath ASGI
    from flowrt.server.direct import DirectAnswers

    DIRECT = issubclass(connections.protocol_class(), DirectAnswers)
except ImportError:
    DIRECT = False
MAX_BODY = 4096
FRAUD = {"flowId": "demo-fraud", "version": "1.0.0", "input": {"amount": 50, "userId": "u1"}}
SUPPORT = {"flowId": "demo-support", "version": "1.0.0", "input": {"message": "hi"}}
OPERATE = {"authorization": "Bearer ops-secret-1"}
READ = {"authorization": "Bearer viewer-secret-1"}
TOKENS = "ops:operate:ops-secret-1,viewer:read:viewer-secret-1"

_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_WORKER = re.compile(r"executed by \S+;")  # RUN_BUSY names the lease holder: host:pid:engine


class LitestarSpy:
    """Records the requests the fast path hands to the Litestar app behind it, and (in
    ``entered``) every request that came in through ASGI at all: with httptools, an ordinary
    one is answered beneath ASGI (flowrt/server/direct.py) and must not be there."""

    def __init__(self, server: ThreadServer, monkeypatch: pytest.MonkeyPatch) -> None:
        fast_path = server.runtime.app.asgi_handler
        assert isinstance(fast_path, FastPath), "the fast path is not installed"
        self.seen: list[tuple[str, str]] = []
        self.entered: list[tuple[str, str]] = []
        inner = fast_path.app
        asgi_entry = FastPath.__call__

        async def entry(this: FastPath, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and this is fast_path:
                self.entered.append((scope["method"], scope["path"]))
            await asgi_entry(this, scope, receive, send)

        monkeypatch.setattr(FastPath, "__call__", entry)

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.seen.append((scope["method"], scope["path"]))
            await inner(scope, receive, send)

        fast_path.app = spy


class Recorder:
    """Sends a scenario's requests to one server and keeps what came back, normalized."""

    def __init__(self, server: ThreadServer, spy: LitestarSpy | None) -> None:
        self.server = server
        self.spy = spy
        self.answers: list[tuple[str, str, Any]] = []
        self._ids: dict[str, str] = {}

    def __call__(self, expect: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        before = len(self.spy.seen) if self.spy else 0
        entered = len(self.spy.entered) if self.spy else 0
        response = self.server.client.request(method, url, **kwargs)
        if self.spy is not None:
            served = LITESTAR if len(self.spy.seen) > before else FAST
            assert served == expect, f"{method} {url}: served by {served}, expected {expect}"
            if served == FAST and DIRECT:
                assert len(self.spy.entered) == entered, f"{method} {url}: went through ASGI, not beneath it"
        self.answers.append((method, self._normalize(url), self._answer(response)))
        return response

    def _answer(self, response: httpx.Response) -> Any:
        if response.request.method != "HEAD":
            assert int(response.headers.get("content-length", len(response.content))) == len(response.content)
        headers = sorted((k, self._normalize(v)) for k, v in response.headers.multi_items() if k != "date")
        # Litestar lists a 405's methods in set order, which two apps in one process need not share.
        headers = [(k, ", ".join(sorted(v.split(", "))) if k == "allow" else v) for k, v in headers]
        text = self._normalize(response.text)
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return response.status_code, headers, body

    def _normalize(self, text: str) -> str:
        """Run ids as run1, run2... in order of first appearance; times as <time>; the lease holder."""

        def name(match: re.Match[str]) -> str:
            return self._ids.setdefault(match[0], f"run{len(self._ids) + 1}")

        return _WORKER.sub("executed by <worker>;", _TIME.sub("<time>", _RUN_ID.sub(name, text)))


def compare(scenario: Callable[[Recorder], None], fast: ThreadServer, spy: LitestarSpy, slow: ThreadServer) -> None:
    on_fast, on_litestar = Recorder(fast, spy), Recorder(slow, None)
    scenario(on_fast)
    scenario(on_litestar)
    assert len(on_fast.answers) == len(on_litestar.answers)
    for got, want in zip(on_fast.answers, on_litestar.answers, strict=True):
        assert got == want


@contextlib.contextmanager
def server_pair(make_url: Callable[[str], str], **settings: Any) -> Iterator[tuple[ThreadServer, LitestarSpy, ThreadServer]]:
    flows = [*DEMO_FLOWS, *HTTP_FLOWS]
    settings = {"drive": False, "max_body_bytes": MAX_BODY, **settings}
    with thread_server(make_url("fast"), flows=flows, **settings) as fast:
        with thread_server(make_url("litestar"), flows=flows, fast_path=False, **settings) as slow:
            assert not isinstance(slow.runtime.app.asgi_handler, FastPath)
            with pytest.MonkeyPatch.context() as monkeypatch:
                yield fast, LitestarSpy(fast, monkeypatch), slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, LitestarSpy, ThreadServer]]:
    root = tmp_path_factory.mktemp("fastpath")
    with server_pair(lambda name: f"sqlite:///{root / name}.db") as pair:
        yield pair


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, LitestarSpy, ThreadServer]]:
    root = tmp_path_factory.mktemp("fastpath-auth")
    with server_pair(lambda name: f"sqlite:///{root / name}.db", api_tokens=TOKENS) as pair:
        yield pair


def run_id_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["runId"])


# --------------------------------------------------------------------------- scenarios


def happy_paths(r: Recorder) -> None:
    run = run_id_of(r(FAST, "POST", "/v1/runs/start", json=FRAUD))
    r(FAST, "GET", f"/v1/runs/{run}")
    for _ in range(3):  # two steps, then a tick of the finished run
        r(FAST, "POST", f"/v1/runs/{run}/tick")
    r(FAST, "POST", "/v1/runs/start?wait=2", json=FRAUD)
    r(FAST, "POST", "/v1/runs/start?wait=0.5", json={**FRAUD, "tenantId": "t1", "initialState": {"a": 1}})
    r(FAST, "POST", "/v1/runs/start", json={**FRAUD, "unknownField": 1})  # ignored by both
    waiting = run_id_of(r(FAST, "POST", "/v1/runs/start?wait=2", json=SUPPORT))
    r(FAST, "POST", f"/v1/runs/{waiting}/resume?wait=2", json={"payload": {"ticketId": "T1"}})
    again = run_id_of(r(FAST, "POST", "/v1/runs/start?wait=2", json=SUPPORT))
    r(FAST, "POST", f"/v1/runs/{again}/resume")  # empty body: a null payload
    r(FAST, "POST", f"/v1/runs/{again}/resume", content=b"null", headers={"content-type": "application/json"})
    r(FAST, "GET", f"/v1/runs/{again}?wait=1")  # no drivers: at once
    r(LITESTAR, "GET", f"/v1/runs/{again}/timeline")
    r(FAST, "POST", "/v1/runs/start", content=json.dumps(FRAUD), headers={"content-type": "application/x-www-form-urlencoded"})


def chunked_body(r: Recorder) -> None:
    body = json.dumps(FRAUD).encode()
    chunks = lambda: iter([body[:10], body[10:30], body[30:]])  # noqa: E731 (no content-length: chunked)
    r(FAST, "POST", "/v1/runs/start", content=chunks())


def engine_errors(r: Recorder) -> None:
    r(FAST, "POST", "/v1/runs/start", json={"flowId": "no-such-flow"})
    r(FAST, "POST", "/v1/runs/start", json={"flowId": "demo-fraud", "version": "9.9.9"})
    r(FAST, "POST", "/v1/runs/no-such-run/tick")
    r(FAST, "GET", "/v1/runs/no-such-run")
    r(FAST, "POST", "/v1/runs/no-such-run/resume", json={"payload": 1})
    done = run_id_of(r(FAST, "POST", "/v1/runs/start?wait=2", json=FRAUD))
    r(FAST, "POST", f"/v1/runs/{done}/resume", json={"payload": 1})  # RUN_NOT_WAITING, with the hint
    r(FAST, "POST", "/v1/runs/start", json={"flowId": "demo-fraud", "input": "x" * 3000})  # in limits, fine
    r(FAST, "POST", "/v1/runs/start", json={"flowId": "demo-fraud", "idempotencyKey": "a"}, headers={"Idempotency-Key": "b"})


def idempotency(r: Recorder) -> None:
    key = {"Idempotency-Key": "order-1"}
    first = r(FAST, "POST", "/v1/runs/start", json=FRAUD, headers=key)
    assert "idempotent-replayed" not in first.headers
    replay = r(FAST, "POST", "/v1/runs/start", json=FRAUD, headers=key)
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == first.json()
    r(FAST, "POST", "/v1/runs/start?wait=1", json=FRAUD, headers=key)  # replayed, settled
    r(FAST, "POST", "/v1/runs/start", json={**FRAUD, "input": {"amount": 9}}, headers=key)  # 409 conflict
    r(FAST, "POST", "/v1/runs/start", json={**FRAUD, "idempotencyKey": "order-1"})  # the body's key
    r(LITESTAR, "POST", "/v1/runs/start", json=FRAUD, headers={"Idempotency-Key": ""})
    r(LITESTAR, "POST", "/v1/runs/start", json=FRAUD, headers={"Idempotency-Key": "k" * 201})
    r(LITESTAR, "POST", "/v1/runs/start", json=FRAUD, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])


def bad_bodies(r: Recorder) -> None:
    r(LITESTAR, "POST", "/v1/runs/start")  # no body
    r(LITESTAR, "POST", "/v1/runs/start", content=b'{"flowId": "demo-fraud",')  # not JSON
    r(LITESTAR, "POST", "/v1/runs/start", content=b"[1, 2]")
    r(LITESTAR, "POST", "/v1/runs/start", content=b"null")
    r(LITESTAR, "POST", "/v1/runs/start", json={"flowId": 5})  # wrong types
    r(LITESTAR, "POST", "/v1/runs/start", json={"flowId": "demo-fraud", "version": 1})
    r(LITESTAR, "POST", "/v1/runs/start", json={"flowId": "demo-fraud", "initialState": [1]})
    r(LITESTAR, "POST", "/v1/runs/start", json={"flowId": "demo-fraud\x00"})
    r(LITESTAR, "POST", "/v1/runs/start", json={"version": "1.0.0"})  # flowId missing
    r(LITESTAR, "POST", "/v1/runs/start", content=b'{"flowId": "demo-fraud", "input": "caf\xe9"}')  # not UTF-8
    r(LITESTAR, "POST", "/v1/runs/start", content=b'{"flowId": "\xff"}')
    r(LITESTAR, "POST", "/v1/runs/start", content=b"x" * (MAX_BODY + 1))  # announced: not even read
    big = json.dumps({**FRAUD, "input": "x" * MAX_BODY}).encode()
    r(LITESTAR, "POST", "/v1/runs/start", content=iter([big[:1000], big[1000:]]))  # chunked, over: replayed
    r(LITESTAR, "POST", "/v1/runs/start", content=json.dumps(FRAUD), headers={"content-type": "text/plain"})
    waiting = run_id_of(r(FAST, "POST", "/v1/runs/start?wait=2", json=SUPPORT))
    r(LITESTAR, "POST", f"/v1/runs/{waiting}/resume", content=b"{bad")
    r(LITESTAR, "POST", f"/v1/runs/{waiting}/resume", content=b'"\xc3"')
    r(LITESTAR, "POST", f"/v1/runs/{waiting}/resume", content=b"  ")
    r(LITESTAR, "POST", f"/v1/runs/{waiting}/resume", content=b"[" * 5000 + b"]" * 5000)
    r(FAST, "GET", f"/v1/runs/{waiting}")  # none of that moved it


def unusual_requests(r: Recorder) -> None:
    run = run_id_of(r(FAST, "POST", "/v1/runs/start", json=FRAUD))
    for query in ("wait=-1", "wait=abc", "wait=301", "wait=", "wait=1e0", "wait=01", "wait=%31", "wait=1&wait=2", "x=1"):
        r(LITESTAR, "POST", f"/v1/runs/start?{query}", json=FRAUD)
        r(LITESTAR, "GET", f"/v1/runs/{run}?{query}")
    r(LITESTAR, "POST", f"/v1/runs/{run}/tick?wait=1")
    r(LITESTAR, "POST", f"/v1/runs/{run}/tick/")
    r(LITESTAR, "POST", "/v1/runs/start/", json=FRAUD)
    r(LITESTAR, "HEAD", f"/v1/runs/{run}")
    r(LITESTAR, "GET", "/v1/runs/start")  # 405: start is POST only
    r(LITESTAR, "PUT", f"/v1/runs/{run}/tick")
    r(LITESTAR, "GET", "/v1/runs/counts")
    r(LITESTAR, "GET", "/v1/runs?limit=2")
    for odd in ("a%20b", "caf%C3%A9", "a%2Fb", "x" * 65, "%00"):
        r(LITESTAR, "GET", f"/v1/runs/{odd}")
        r(LITESTAR, "POST", f"/v1/runs/{odd}/tick")
    r(FAST, "GET", f"/v1/runs/{'x' * 64}")  # the longest id that could exist: looked up, not found
    r(FAST, "POST", "/v1/runs/~!%40%23/tick")
    r(FAST, "GET", "/v1/runs/a%3Fb")  # a run id "a?b": could exist, so it is looked up


def test_happy_paths_answer_alike(servers: Any) -> None:
    compare(happy_paths, *servers)


def test_a_chunked_body_is_read_whole(servers: Any) -> None:
    compare(chunked_body, *servers)


def test_engine_errors_answer_alike(servers: Any) -> None:
    compare(engine_errors, *servers)


def test_idempotency_keys_answer_alike(servers: Any) -> None:
    compare(idempotency, *servers)


def test_bad_bodies_go_to_litestar_whole(servers: Any) -> None:
    compare(bad_bodies, *servers)


def test_unusual_requests_go_to_litestar(servers: Any) -> None:
    compare(unusual_requests, *servers)


def test_a_busy_run_is_409_on_both_paths(servers: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    side = tmp_path / "side.log"
    monkeypatch.setenv("HTTP_TEST_SIDE_FILE", str(side))
    monkeypatch.setenv("HTTP_TEST_SLEEP", "1.5")

    def busy(r: Recorder) -> None:
        run = run_id_of(r(FAST, "POST", "/v1/runs/start", json={"flowId": "slow-http"}))
        with httpx.Client(base_url=r.server.url, timeout=30) as other:
            first = threading.Thread(target=other.post, args=(f"/v1/runs/{run}/tick",))
            first.start()  # holds the run while its step sleeps
            wait_for(lambda: side.exists() and run in side.read_text(), 10, "the first tick's step to start")
            r(FAST, "POST", f"/v1/runs/{run}/tick")  # meanwhile: RUN_BUSY, with the hint
            first.join(10)
        r(FAST, "GET", f"/v1/runs/{run}")

    compare(busy, *servers)


def test_auth_answers_alike(guarded: Any) -> None:
    def auth(r: Recorder) -> None:
        r(LITESTAR, "POST", "/v1/runs/start", json=FRAUD)  # no token: 401 with WWW-Authenticate
        r(LITESTAR, "POST", "/v1/runs/start", json=FRAUD, headers={"authorization": "Bearer wrong-token"})
        r(LITESTAR, "POST", "/v1/runs/start", json=FRAUD, headers={"authorization": "Basic ops-secret-1"})
        r(LITESTAR, "POST", "/v1/runs/start", json=FRAUD, headers=READ)  # read-only: 403
        run = run_id_of(r(FAST, "POST", "/v1/runs/start?wait=2", json=SUPPORT, headers=OPERATE))
        r(LITESTAR, "POST", f"/v1/runs/{run}/tick", headers=READ)
        r(LITESTAR, "POST", f"/v1/runs/{run}/resume", json={"payload": {"ticketId": "T"}}, headers=READ)
        r(LITESTAR, "GET", f"/v1/runs/{run}")
        r(FAST, "GET", f"/v1/runs/{run}", headers=READ)
        r(FAST, "GET", f"/v1/runs/{run}", headers=OPERATE)
        r(LITESTAR, "GET", f"/v1/runs/{run}", headers=[*READ.items(), *READ.items()])  # Litestar picks one
        r(FAST, "POST", f"/v1/runs/{run}/resume", json={"payload": {"ticketId": "T"}}, headers=OPERATE)
        r(FAST, "POST", f"/v1/runs/{run}/tick", headers=OPERATE)
        timeline = r(LITESTAR, "GET", f"/v1/runs/{run}/timeline", headers=READ).json()
        assert [e["payloadJson"]["by"] for e in timeline if e["type"] == "RUN_RESUMED"] == ["ops"]  # who resumed

    compare(auth, *guarded)


def test_an_unexpected_error_is_the_same_logged_500(
    servers: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fast, spy, slow = servers

    async def broken(run_id: str) -> Any:
        raise RuntimeError("boom")

    for server in (fast, slow):
        monkeypatch.setattr(server.engine, "tick_stored_async", broken)
    caplog.set_level(logging.ERROR, logger="flowrt.server")

    def tick(r: Recorder) -> None:
        r(FAST, "POST", "/v1/runs/some-run/tick")

    compare(tick, fast, spy, slow)
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error in POST /v1/runs/some-run/tick"]
    assert len(logged) == 2 and all(r.exc_info and "boom" in str(r.exc_info[1]) for r in logged)


def test_a_database_outage_is_the_same_503_and_one_log(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from test_http_limits import TcpProxy

    parts = urllib.parse.urlsplit(pg_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).open()
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    try:
        with server_pair(lambda _name: url) as (fast, spy, slow):
            runs = {s.url: run_id_of(s.client.post("/v1/runs/start", json=FRAUD)) for s in (fast, slow)}
            caplog.set_level(logging.ERROR, logger="flowrt.server")
            proxy.cut()

            def outage(r: Recorder) -> None:
                run = runs[r.server.url]
                for _ in range(5):
                    assert r(FAST, "GET", f"/v1/runs/{run}").status_code == 503
                    assert r(FAST, "POST", "/v1/runs/start", json=FRAUD).headers["retry-after"] == "1"
                    r(FAST, "POST", f"/v1/runs/{run}/tick")
                    r(LITESTAR, "GET", "/v1/runs")

            caplog.clear()
            compare(outage, fast, spy, slow)
            # One outage log per app, whichever path met the failure: one line for 20 failures each.
            lines = [rec.getMessage() for rec in caplog.records if "storage" in rec.getMessage()]
            assert len(lines) == 2 and all("answered 503" in line for line in lines), lines
    finally:
        proxy.cut()


def test_flowrt_fast_path_0_turns_it_off() -> None:
    from flowrt.errors import InvalidInput
    from flowrt.server.runtime import Settings

    assert Settings.resolve(env={}).fast_path is True
    assert Settings.resolve(env={"FLOWRT_FAST_PATH": "0"}).fast_path is False
    assert Settings.resolve(env={"FLOWRT_FAST_PATH": "0"}, fast_path=True).fast_path is True
    with pytest.raises(InvalidInput, match="FLOWRT_FAST_PATH"):
        Settings.resolve(env={"FLOWRT_FAST_PATH": "maybe"})


# --------------------------------------------------------------------------- the bytes on the wire

_DATE = re.compile(rb"\r\ndate: [^\r]*")


def raw_exchange(server: ThreadServer, requests: bytes, answers: int) -> list[bytes]:
    """Send ``requests`` in one write on a fresh connection; read ``answers`` whole responses
    (an interim ``100 Continue`` counts as one)."""
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(requests)
        found = read_answers(sock, answers)
        if answers and b"connection: close" in found[-1]:
            assert sock.recv(1) == b"", "a connection: close answer leaves the connection open"
        return [_DATE.sub(b"\r\ndate: <date>", answer) for answer in found]


def test_answers_beneath_asgi_are_byte_for_byte_uvicorns(servers: Any) -> None:
    """Pipelined requests, answered in order; an error answer; Connection: close -- the same
    bytes, head and body, as uvicorn sends for Litestar (date aside)."""
    fast, spy, slow = servers
    missing = "nope-" + "0" * 8
    requests = (
        f"POST /v1/runs/{missing}/tick HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        f"GET /v1/runs/{missing} HTTP/1.1\r\nhost: x\r\n\r\n"
        f"POST /v1/runs/{missing}/resume HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: 4\r\nconnection: close\r\n\r\nnull"
    ).encode()
    entered = len(spy.entered)
    on_fast = raw_exchange(fast, requests, 3)
    assert len(spy.entered) == entered or not DIRECT, "answered through ASGI"
    assert on_fast == raw_exchange(slow, requests, 3)
    assert on_fast[0].startswith(b"HTTP/1.1 404 Not Found\r\ndate: <date>\r\ncontent-type: application/json\r\n")
    assert b"\r\nconnection: close\r\n" in on_fast[2] and b"connection" not in on_fast[0]
    # HTTP/1.0 without keep-alive: closed after the answer, on both.
    old = f"GET /v1/runs/{missing} HTTP/1.0\r\n\r\n".encode()
    assert raw_exchange(fast, old, 1) == raw_exchange(slow, old, 1)


def test_a_body_declined_beneath_asgi_reaches_litestar_once(servers: Any) -> None:
    """Not JSON: read once beneath ASGI, replayed to Litestar, which answers the 400."""
    fast, spy, slow = servers
    bad = b"POST /v1/runs/start HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n{bad!"
    seen, entered = len(spy.seen), len(spy.entered)
    on_fast = raw_exchange(fast, bad, 1)
    assert on_fast == raw_exchange(slow, bad, 1) and on_fast[0].startswith(b"HTTP/1.1 400 ")
    assert len(spy.seen) == seen + 1 and len(spy.entered) == entered + 1


def test_the_access_log_line_is_uvicorns_beneath_asgi_too(servers: Any) -> None:
    """uvicorn logs access lines when its access logger has a handler (looked at as a
    connection opens); the direct path writes the same line."""
    fast, spy, slow = servers
    access = logging.getLogger("uvicorn.access")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(re.sub(r":\d+ - ", ":<port> - ", record.getMessage()))  # type: ignore[method-assign]
    level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        seen = []
        for server in (fast, slow):
            lines.clear()
            raw_exchange(server, b"POST /v1/runs/nope/tick?x HTTP/1.1\r\nhost: x\r\n\r\n", 1)  # Litestar: a query
            entered = len(spy.entered)
            raw_exchange(server, b"GET /v1/runs/nope HTTP/1.1\r\nhost: x\r\n\r\n", 1)  # fast: beneath ASGI
            assert len(spy.entered) == entered or not DIRECT
            seen.append(list(lines))
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert seen[0] == seen[1] == [
        '127.0.0.1:<port> - "POST /v1/runs/nope/tick?x HTTP/1.1" 404',
        '127.0.0.1:<port> - "GET /v1/runs/nope HTTP/1.1" 404',
    ]


def test_successes_beneath_asgi_are_uvicorns_bytes_too(servers: Any) -> None:
    """A start, its idempotent replay (an extra header), and a start that asks to be told to
    continue (Expect: 100-continue) before it sends its body: the same bytes on both servers,
    run ids and times aside."""
    fast, spy, slow = servers
    body = json.dumps(FRAUD).encode()

    def start(key: str, extra: str = "") -> bytes:
        return (
            f"POST /v1/runs/start HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"idempotency-key: {key}\r\n{extra}content-length: {len(body)}\r\n\r\n"
        ).encode() + body

    def normalized(answers: list[bytes]) -> list[bytes]:
        return [re.sub(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", b"<run>", a) for a in answers]

    answers = []
    for server in (fast, slow):
        key = f"bytes-{server.url.rsplit(':', 1)[1]}"
        entered = len(spy.entered)
        got = raw_exchange(server, start(key) + start(key), 2)
        got += raw_exchange(server, start(key + "-2", "expect: 100-continue\r\n"), 2)
        assert server is slow or len(spy.entered) == entered or not DIRECT
        answers.append(normalized(got))
    assert answers[0] == answers[1]
    first, replay, interim, continued = answers[0]
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert first.startswith(b"HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-type: application/json\r\n")
    assert b"\r\nidempotent-replayed: true\r\n" in replay and b"idempotent-replayed" not in first
    assert b'"status":"RUNNING"' in continued


def test_the_pinned_uvicorn_is_one_the_direct_answers_were_checked_with() -> None:
    """direct.py reaches into uvicorn's private protocol parts; on a uvicorn it was not checked
    with, requests go through ASGI (slower, never wrong). Bumping the pin means checking them."""
    if not DIRECT and importlib.util.find_spec("httptools") is None:
        pytest.skip("httptools (the `fast` extra) is not installed")
    import uvicorn

    from flowrt.server import direct

    assert direct.supported(uvicorn.__version__), f"check direct.py against uvicorn {uvicorn.__version__}"
    assert not direct.supported("0.55.0") and not direct.supported("0.5.4")
    assert DIRECT
