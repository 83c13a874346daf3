"""Bad input and limits of the HTTP server: UTF-8 bodies, HEAD, the limits in the OpenAPI
document, 503 bodies without connection details, connection limits and timeouts.

Real servers throughout: uvicorn in a thread (ThreadServer), ``flowrt serve`` processes,
and for the outage a TCP proxy in front of the real Postgres that the test cuts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import subprocess
import threading
import time
import typing
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from http_flows import ALL as HTTP_FLOWS
from http_helpers import REPO, SERVE, ThreadServer, free_port, read_answers, serve_process, thread_server

from flowrt.errors import InvalidInput
from flowrt.server import connections
from flowrt.server.outages import CLIENT_MESSAGE, OutageLog
from flowrt.server.runtime import Settings

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ThreadServer]:
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", drive=False) as server:
        yield server


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code"} and body["code"] == code, body
    return body


def start(c: httpx.Client) -> str:
    """A demo-support run, driven to its wait for a resume."""
    response = c.post("/v1/runs/start?wait=20", json={"flowId": "demo-support", "input": {"text": "hi"}})
    assert response.status_code == 200 and response.json()["status"] == "WAITING", response.text
    return str(response.json()["runId"])


# --------------------------------------------------------------------------- UTF-8


@pytest.mark.parametrize(
    ("path", "body", "offset", "byte"),
    [
        ("/v1/runs/start", b'{"flowId":"demo-fraud","input":{"a":"\xff"}}', 37, "0xff"),
        ("/v1/runs/start", b'{"flowId":"demo-\xc3("}', 16, "0xc3"),
        ("/v1/runs/start", b'{"flowId":"demo-fraud","input":"\xed\xa0\x80"}', 32, "0xed"),  # a UTF-8 surrogate
        ("/v1/runs/RUN/resume", b'{"payload":"caf\xe9"}', 15, "0xe9"),  # Latin-1, not UTF-8
        ("/v1/runs/RUN/cancel", b'{"reason":"\x80"}', 11, "0x80"),
    ],
)
def test_invalid_utf8_in_a_body_is_400_naming_the_byte(srv: ThreadServer, path: str, body: bytes, offset: int, byte: str) -> None:
    run_id = start(srv.client)
    response = srv.client.post(path.replace("RUN", run_id), content=body, headers={"content-type": "application/json"})
    message = assert_error(response, 400, "BAD_REQUEST")["error"]
    assert "not valid UTF-8" in message and f"offset {offset}" in message and byte in message, message
    # Nothing happened to the run: it still waits for its resume, not cancelled.
    assert srv.client.get(f"/v1/runs/{run_id}").json()["status"] == "WAITING"


def test_invalid_utf8_split_across_chunks_is_found_at_its_offset(srv: ThreadServer) -> None:
    """A streamed body: the bad sequence starts in one chunk and ends in the next."""
    chunks = [b'{"flowId":"demo-fraud","input":"ab\xe2\x82', b'Xcd"}']  # U+20AC cut, then not a continuation

    response = srv.client.post("/v1/runs/start", content=iter(chunks), headers={"content-type": "application/json"})
    message = assert_error(response, 400, "BAD_REQUEST")["error"]
    assert "offset 34" in message and "0xe2" in message, message
    # Valid multi-byte characters split across chunks are fine.
    chunks = [b'{"flowId":"demo-fraud","input":{"amount":5,"note":"\xe2\x82', b'\xac"}}']
    response = srv.client.post("/v1/runs/start?wait=10", content=iter(chunks))
    assert response.status_code == 200, response.text
    assert response.json()["inputJson"]["note"] == "\u20ac"


def test_valid_utf8_of_every_width_is_accepted(srv: ThreadServer) -> None:
    text = "a\u00e9\u20ac\U0001f600"
    response = srv.client.post("/v1/runs/start", content=f'{{"flowId":"demo-fraud","input":{{"t":"{text}"}}}}'.encode())
    assert response.status_code == 200, response.text
    assert srv.client.get(f"/v1/runs/{response.json()['runId']}").json()["inputJson"] == {"t": text}


# --------------------------------------------------------------------------- HEAD


def test_head_answers_like_get_without_a_body(srv: ThreadServer) -> None:
    run_id = start(srv.client)
    for path in ["/health", "/v1/runs", "/v1/flows", f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/timeline",
                 "/schema/openapi.json", "/v1/runs/nope", "/no/such/route"]:
        got, head = srv.client.get(path), srv.client.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert head.headers.get("content-type") == got.headers.get("content-type"), path
        if path == "/health":  # uptimeSeconds changes between the two calls, and its length with it
            assert abs(int(head.headers["content-length"]) - len(got.content)) <= 4
        else:
            assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content)), path


def test_head_on_the_wire_carries_no_body_bytes(srv: ThreadServer) -> None:
    """The next response on the connection follows the HEAD's head directly."""
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
            assert time.monotonic() < deadline, data
            data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head
    assert rest.startswith(b"HTTP/1.1 404"), rest[:80]


def test_head_where_get_is_not_allowed_is_405_and_allow_lists_head(srv: ThreadServer) -> None:
    response = srv.client.head("/v1/runs/start")
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    response = srv.client.delete("/health")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "HEAD"} <= allowed


def test_head_needs_the_token_like_get(tmp_path: Path) -> None:
    with thread_server(f"sqlite:///{tmp_path / 'f.db'}", drive=False, api_token="s3cret") as server:
        assert server.client.head("/v1/runs").status_code == 401
        assert server.client.head("/v1/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert server.client.head("/health").status_code == 200


# --------------------------------------------------------------------------- OpenAPI states the limits


def test_openapi_states_the_limits_the_server_enforces(tmp_path: Path) -> None:
    with thread_server(f"sqlite:///{tmp_path / 'f.db'}", drive=False, max_body_bytes=5000) as server:
        c = server.client
        doc = c.get("/schema/openapi.json").json()
        paths = doc["paths"]
        params = {p["name"]: p["schema"] for p in paths["/v1/runs/{run_id}/timeline"]["get"]["parameters"]}
        assert params["run_id"]["maxLength"] == 64
        assert params["after"]["minimum"] == 0 and params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 10000
        listing = {p["name"]: p["schema"] for p in paths["/v1/runs"]["get"]["parameters"]}
        assert listing["limit"]["minimum"] == 1 and listing["limit"]["maximum"] == 1000
        assert listing["flowId"]["maxLength"] == 200 and listing["cursor"]["maxLength"] == 64
        for path in ("/v1/runs/start", "/v1/runs/{run_id}/resume"):
            wait = {p["name"]: p["schema"] for p in paths[path]["post"]["parameters"]}["wait"]
            assert wait["minimum"] == 0 and wait["maximum"] == 300
        for path in ("/v1/runs/start", "/v1/runs/{run_id}/resume", "/v1/runs/{run_id}/cancel"):
            schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            assert "5000 bytes" in schema["description"], (path, schema)
        assert "5000 bytes" in doc["info"]["description"]
        start = doc["components"]["schemas"]["StartRequest"]["properties"]
        assert start["flowId"]["maxLength"] == 200 and start["version"]["maxLength"] == 100
        assert start["tenantId"]["maxLength"] == 200

        # ... and enforces each of them.
        for body in ({"flowId": "f" * 201}, {"flowId": "demo-fraud", "version": "1" * 101},
                     {"flowId": "demo-fraud", "tenantId": "t" * 201}):
            assert_error(c.post("/v1/runs/start", json=body), 400, "BAD_REQUEST")
        for wait in ("-1", "300.5"):
            assert_error(c.post(f"/v1/runs/start?wait={wait}", json={"flowId": "demo-fraud"}), 400, "BAD_REQUEST")
        for query in ("limit=0", "limit=1001", "flowId=" + "f" * 201, "cursor=" + "c" * 65):
            assert_error(c.get(f"/v1/runs?{query}"), 400, "BAD_REQUEST")
        assert_error(c.get("/v1/runs/x/timeline?limit=10001"), 400, "BAD_REQUEST")
        assert_error(c.get("/v1/runs/x/timeline?after=-1"), 400, "BAD_REQUEST")
        assert_error(c.get("/v1/runs/" + "r" * 65), 404, "RUN_NOT_FOUND")
        big = {"flowId": "demo-fraud", "input": "x" * 5000}
        assert_error(c.post("/v1/runs/start", json=big), 413, "PAYLOAD_TOO_LARGE")


# --------------------------------------------------------------------------- 503 bodies


class TcpProxy:
    """Forwards 127.0.0.1:port to Postgres; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def open(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                return
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            try:  # wakes the accept() blocked in the other thread (close alone does not, on Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_503_storage_unavailable_tells_clients_nothing_about_the_database(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urllib.parse.urlsplit(pg_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).open()
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    database = parts.path.lstrip("/")
    try:
        with thread_server(url, drive=False) as server:
            c = server.client
            run_id = start(c)
            caplog.clear()
            caplog.set_level(logging.ERROR, logger="flowrt.server")
            proxy.cut()
            bodies = []
            for _ in range(20):
                for response in (c.get(f"/v1/runs/{run_id}"), c.post("/v1/runs/start", json={"flowId": "demo-fraud"})):
                    body = assert_error(response, 503, "STORAGE_UNAVAILABLE")
                    assert body["error"] == CLIENT_MESSAGE
                    bodies.append(response.text)
            assert c.get("/ready").status_code == 503 and c.get("/health").json()["condition"] == "unavailable"
            for text in bodies:
                for secret in ("127.0.0.1", str(proxy.port), f"/{database}", "postgres", "psycopg", "refused"):
                    assert secret not in text, (secret, text)
            # The operator gets the details, once for the whole burst of 40 failures.
            lines = [r.getMessage() for r in caplog.records if "storage" in r.getMessage()]
            assert len(lines) == 1, lines
            assert f"127.0.0.1:{proxy.port}" in lines[0] and f"GET /v1/runs/{run_id}" in lines[0], lines[0]
            # The database comes back: so do the answers.
            proxy.open()
            deadline = time.monotonic() + 30
            while c.get(f"/v1/runs/{run_id}").status_code != 200:
                assert time.monotonic() < deadline, "the server did not reconnect"
                time.sleep(0.2)
    finally:
        proxy.cut()


def test_outage_log_logs_each_episode_once_then_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outages = OutageLog(interval=60, clock=lambda: now[0])
    caplog.set_level(logging.ERROR, logger="flowrt.server")

    def fail(times: int, step: float) -> None:
        for _ in range(times):
            outages.failed("GET", "/v1/runs", "database postgresql://u@h:5/db unavailable: boom")
            now[0] += step

    fail(50, 1.0)  # 50 s of failures, one a second: the first line only
    assert [r.getMessage() for r in caplog.records] == [
        "storage unavailable (GET /v1/runs answered 503): database postgresql://u@h:5/db unavailable: boom"
    ]
    fail(20, 1.0)  # past 60 s since that line: one summary with the count
    assert len(caplog.records) == 2 and "still unavailable: 60 more request(s)" in caplog.records[1].getMessage()
    caplog.clear()
    fail(5, 1.0)  # five more, then the outage ends: counted (with the 9 since the summary), not logged
    assert caplog.records == []
    now[0] += 120  # quiet for two minutes: the next failure starts a new episode, logged at once,
    fail(1, 1.0)  # after the last one's tail
    assert [r.getMessage() for r in caplog.records] == [
        "storage was unavailable: 14 more request(s) answered 503 before it came back",
        "storage unavailable (GET /v1/runs answered 503): database postgresql://u@h:5/db unavailable: boom",
    ]
    caplog.clear()
    fail(3, 1.0)
    outages.flush()  # at shutdown: the three counted since are logged, once
    outages.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "storage was unavailable: 3 more request(s) answered 503 before it came back"
    ]


# --------------------------------------------------------------------------- connection limits


def test_connection_settings_come_from_options_or_env() -> None:
    default = Settings.resolve(env={})
    assert (default.max_connections, default.keep_alive, default.read_timeout) == (1000, 5.0, 30.0)
    env = Settings.resolve(env={"FLOWRT_MAX_CONNECTIONS": "50", "FLOWRT_KEEP_ALIVE": "2.5", "FLOWRT_READ_TIMEOUT": "9"})
    assert (env.max_connections, env.keep_alive, env.read_timeout) == (50, 2.5, 9)
    explicit = Settings.resolve(max_connections=7, keep_alive=1, read_timeout=3, env={"FLOWRT_MAX_CONNECTIONS": "50"})
    assert (explicit.max_connections, explicit.keep_alive, explicit.read_timeout) == (7, 1, 3)
    for bad in (
        {"FLOWRT_MAX_CONNECTIONS": "0"}, {"FLOWRT_MAX_CONNECTIONS": "many"}, {"FLOWRT_KEEP_ALIVE": "-1"},
        {"FLOWRT_READ_TIMEOUT": "0"}, {"FLOWRT_READ_TIMEOUT": "soon"},
    ):  # fmt: skip
        with pytest.raises(InvalidInput):
            Settings.resolve(env=bad)


def test_cli_refuses_a_bad_connection_limit() -> None:
    result = subprocess.run([*SERVE, "--max-connections", "0"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2 and "--max-connections" in result.stderr


def test_settings_that_get_past_the_options_checks_are_usage_errors_naming_the_option() -> None:
    # NaN passes click's ranges, and environment variables are read by Settings; both used to
    # come out as "read timeout must be ... (BAD_REQUEST)", an API error code on a command line.
    cases = [
        (["--keep-alive", "nan"], {}, "--keep-alive / FLOWRT_KEEP_ALIVE"),
        (["--read-timeout", "nan"], {}, "--read-timeout / FLOWRT_READ_TIMEOUT"),
        (["--shutdown-grace", "nan"], {}, "--shutdown-grace / FLOWRT_SHUTDOWN_GRACE"),
        (["--busy-poll", "nan"], {}, "--busy-poll / FLOWRT_BUSY_POLL"),
        (["--log-level", "loud"], {}, "--log-level / FLOWRT_LOG_LEVEL"),
        (["--retention", "0"], {}, "--retention / FLOWRT_RETENTION"),
        ([], {"FLOWRT_READ_TIMEOUT": "nan"}, "--read-timeout / FLOWRT_READ_TIMEOUT"),
    ]
    for args, env, named in cases:
        result = subprocess.run(
            [*SERVE, *args], capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, **env}
        )
        assert result.returncode == 2, (args, env, result.stderr)
        assert named in result.stderr and "BAD_REQUEST" not in result.stderr, result.stderr
        assert "flowrt serve --help" in result.stderr
    for env, named in (
        ({"FLOWRT_WORKERS": "0"}, "--workers / FLOWRT_WORKERS"),
        ({"FLOWRT_MAX_BODY_BYTES": "0"}, "--max-body-bytes / FLOWRT_MAX_BODY_BYTES"),
        ({"FLOWRT_MAX_VALUE_BYTES": "0"}, "--max-value-bytes / FLOWRT_MAX_VALUE_BYTES"),
    ):
        with pytest.raises(InvalidInput, match=named):
            Settings.resolve(env=env)


def test_a_lease_ttl_out_of_range_is_refused_with_the_option_named() -> None:
    # `--lease-ttl inf` was an internal error (OverflowError) once the server started.
    for bad in ("inf", "1e9", "0"):
        result = subprocess.run([*SERVE, "--lease-ttl", bad], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.returncode == 2 and "--lease-ttl" in result.stderr, result.stderr
    for env in ({"FLOWRT_LEASE_TTL": "inf"}, {"FLOWRT_LEASE_TTL": "nan"}, {"FLOWRT_LEASE_TTL": "0"}):
        with pytest.raises(InvalidInput, match="--lease-ttl / FLOWRT_LEASE_TTL"):
            Settings.resolve(env=env)
    assert Settings.resolve(env={"FLOWRT_LEASE_TTL": "86400"}).lease_ttl == 86_400
    from flowrt.cli.serve import serve  # its bound is written out there, not imported
    from flowrt.leases import MAX_LEASE_TTL

    assert typing.get_type_hints(serve, include_extras=True)["lease_ttl"].__metadata__[0].max == MAX_LEASE_TTL


def _recv_all(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open: {data[:200]!r}")


def test_over_the_connection_limit_requests_get_503_and_idle_connections_are_closed() -> None:
    env = {"FLOWRT_MAX_CONNECTIONS": "4", "FLOWRT_KEEP_ALIVE": "1"}
    with serve_process(["--flows", "examples.demo:ALL", "--db", "memory://"], env=env) as proc:
        assert httpx.get(proc.url + "/health").status_code == 200
        idle = [socket.create_connection(("127.0.0.1", proc.port), timeout=15) for _ in range(4)]
        opened = time.monotonic()
        try:
            # Four connections that send nothing fill the limit: a fifth's request is refused.
            response = httpx.get(proc.url + "/health", headers={"Connection": "close"})
            assert response.status_code == 503 and response.text == "Service Unavailable"
            assert response.headers["connection"] == "close"
            # A connection that sends no request is closed after the keep-alive timeout ...
            for sock in idle:
                assert _recv_all(sock, time.monotonic() + 15) == b""
            assert time.monotonic() - opened >= 0.9  # ... not before
            # ... which frees the slots.
            assert httpx.get(proc.url + "/health").status_code == 200
        finally:
            for sock in idle:
                sock.close()
        assert "Exceeded concurrency limit" in proc.output()


def test_a_request_head_over_the_limit_is_refused_and_the_connection_closed(srv: ThreadServer) -> None:
    host, port = srv.url.removeprefix("http://").split(":")
    for size, status in ((connections.MAX_HEAD_BYTES - 1024, b"200"), (connections.MAX_HEAD_BYTES + 1, b"400")):
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
            data = _recv_all(sock, time.monotonic() + 15)
        assert data.startswith(b"HTTP/1.1 " + status), data[:100]


# A request must arrive within --read-timeout of its first byte, on either of uvicorn's parsers.
READ_TIMEOUT = 1.5
PROTOCOLS = pytest.mark.parametrize(
    "protocol",
    [connections.protocol_class(), connections.GuardedH11Protocol],
    ids=lambda cls: "h11" if issubclass(cls, connections.GuardedH11Protocol) else "httptools",
)


@contextlib.contextmanager
def timed_server(tmp_path: Path, protocol: type, **settings: Any) -> Iterator[tuple[ThreadServer, socket.socket]]:
    http = type(protocol.__name__, (protocol,), {"read_timeout": READ_TIMEOUT})
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", http=http, **settings) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            yield server, sock


def _trickle_until_closed(sock: socket.socket, data: bytes, deadline: float) -> bytes:
    """Send ``data`` a byte every 0.2 s until the server closes the connection; what it sent."""
    sock.settimeout(0.2)
    answer = b""
    for byte in data:
        if time.monotonic() > deadline:
            break
        with contextlib.suppress(OSError):  # the server may close the connection under us
            sock.sendall(bytes([byte]))
        try:
            while chunk := sock.recv(65536):
                answer += chunk
            return answer  # closed
        except TimeoutError:
            continue
        except ConnectionResetError:
            return answer
    raise AssertionError(f"connection still open after {len(data)} bytes: {answer[:200]!r}")


_START_HEAD = b"POST /v1/runs/start HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n"


@PROTOCOLS
@pytest.mark.parametrize(
    ("at_once", "trickled"),
    [
        (b"", b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: a\r\n" * 200),  # a head trickling in
        (_START_HEAD, b" " * 5000),  # its head at once, its body trickling in
    ],
    ids=["head", "body"],
)
def test_a_request_that_trickles_in_gets_408_and_its_connection_closed(
    tmp_path: Path, protocol: type, at_once: bytes, trickled: bytes
) -> None:
    with timed_server(tmp_path, protocol, drive=False) as (server, sock):
        began = time.monotonic()
        sock.sendall(at_once)
        answer = _trickle_until_closed(sock, trickled, began + 15)
        took = time.monotonic() - began
        assert READ_TIMEOUT <= took < READ_TIMEOUT + 5, took
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert b"\r\nconnection: close" in head and body == b"Request Timeout"
        assert server.engine.list_runs()[0] == []  # nothing was started from half a request
        assert server.client.get("/health").status_code == 200  # the server goes on


@PROTOCOLS
@pytest.mark.parametrize("case", ["blank lines", "the rest of a body answered early"])
def test_stray_bytes_do_not_keep_an_idle_connection_open(tmp_path: Path, protocol: type, case: str) -> None:
    """Bytes cancel uvicorn's keep-alive timer; a connection with no request under way is
    closed after the keep-alive timeout (1 s here) all the same."""
    with timed_server(tmp_path, protocol, keep_alive=1, api_token="secret") as (server, sock):
        began = time.monotonic()
        if case == "blank lines":
            answer = _trickle_until_closed(sock, b"\r\n" * 200, began + 15)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer  # h11 refuses them at once
        else:  # no token: the guard answers 401 before the body is read
            sock.sendall(_START_HEAD)
            answer = _trickle_until_closed(sock, b" " * 5000, began + 15)
            assert answer.startswith(b"HTTP/1.1 401 "), answer
            assert time.monotonic() - began >= 1  # the keep-alive timeout, not at once
        assert time.monotonic() - began < 1 + 5
        assert b"408" not in answer  # the request that was there did arrive
        assert server.client.get("/health").status_code == 200


@PROTOCOLS
def test_a_slow_answer_is_not_a_slow_request(tmp_path: Path, protocol: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-poll outlasting the read timeout; pipelined behind it, a request with a body too
    big to be taken in before its turn (uvicorn pauses reading: not the client's time); then
    keep-alive requests on the same connection. All answered, none cut."""
    monkeypatch.setenv("HTTP_TEST_SLEEP", "4")  # slow-http's first node: RUNNING past the wait
    body = b'{"flowId":"slow-http","input":{"pad":"' + b"x" * 600_000 + b'"}}'
    requests = (
        b"POST /v1/runs/start?wait=3 HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 22\r\n\r\n{"flowId":"slow-http"}'
        b"POST /v1/runs/start HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    with timed_server(tmp_path, protocol, flows=HTTP_FLOWS) as (server, sock):
        sender = threading.Thread(target=sock.sendall, args=(requests,))  # blocks while the server is not reading
        began = time.monotonic()
        sender.start()
        answers = _read_answers(sock, 2, began + 30)
        sender.join(10)
        assert time.monotonic() - began >= 3 > READ_TIMEOUT + 1
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2, answers
        for _ in range(3):  # then quick requests, more than a read timeout apart in all
            time.sleep(READ_TIMEOUT * 0.6)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_answers(sock, 1, time.monotonic() + 10)[0].startswith(b"HTTP/1.1 200 OK")


def _read_answers(sock: socket.socket, count: int, deadline: float) -> list[bytes]:
    """``count`` whole answers, read by ``deadline``."""
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    return read_answers(sock, count)


def test_serve_raises_a_low_open_files_limit_to_fit_the_connections(tmp_path: Path) -> None:
    if not Path("/proc/self/limits").exists():
        pytest.skip("needs /proc to read the server's limits")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard open-files limit ({hard}) is too low to show the raise")
    port = free_port()

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.Popen(
        [*SERVE, "--port", str(port), "--db", "memory://", "--flows", "examples.demo:ALL", "--max-connections", "1000"],
        cwd=REPO, env=env, preexec_fn=low_limit, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert int(line.split()[3]) >= 1000 + 128, line
    finally:
        proc.kill()
        proc.wait(10)
