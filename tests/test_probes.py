"""/health, /ready and /startup: the reference's bodies, and readiness that follows the database.

The database outage is real: the server reaches Postgres through a loopback TCP proxy
that the test closes (every connection cut, new ones refused) and reopens.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import PG_URL
from http_helpers import thread_server

pytestmark = pytest.mark.timeout(60)

HEALTH_FIELDS = {"status", "timestamp", "condition", "storage", "durable", "fallback", "version", "fallbackReason",
                 "schemaVersion", "driving", "workers", "flows", "uptimeSeconds",
                 # the failure path's (issue 9): drivers, writes, handlers
                 "workersAlive", "workersReplaced", "writable", "storageProblem", "storageErrorSeconds",
                 "stepsInFlight", "abandonedThreads", "abandonedThreadsLimit", "blockedEventLoops"}  # fmt: skip


class TcpProxy:
    """127.0.0.1:port -> target, which :meth:`cut` takes away and :meth:`restore` brings back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for sock in [listener, *conns]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close(), upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def proxied_pg(pg_url: str) -> Iterator[tuple[str, TcpProxy]]:
    parts = urlsplit(pg_url)
    base = urlsplit(PG_URL)
    proxy = TcpProxy((base.hostname or "127.0.0.1", base.port or 5432))
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
    try:
        yield urlunsplit(parts._replace(netloc=netloc)), proxy
    finally:
        proxy.cut()


def _until(predicate: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_bodies_carry_the_references_fields_then_flowrts(tmp_path: Any) -> None:
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", drive=False) as srv:
        health = srv.client.get("/health")
        assert health.status_code == 200 and set(health.json()) == HEALTH_FIELDS
        body = health.json()
        assert body["status"] == "alive" and body["condition"] == "ok" and body["timestamp"].endswith("Z")
        assert body["storage"] == "sqlite" and body["durable"] is True and body["schemaVersion"] >= 1

        ready = srv.client.get("/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert {"status", "timestamp", "uptime", "checks"} <= set(body) and body["status"] == "healthy"
        assert isinstance(body["uptime"], int) and body["uptime"] >= 0
        storage = body["checks"]["storage"]
        assert storage["status"] == "healthy" and "message" not in storage and storage["responseTime"] >= 0
        assert storage["details"]["kind"] == "sqlite" and storage["details"]["durable"] is True

        startup = srv.client.get("/startup")
        assert startup.status_code == 200 and set(startup.json()) == {"status", "uptime", "timestamp"}
        assert startup.json()["status"] == "started"


def test_probes_need_no_token(tmp_path: Any) -> None:
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", drive=False, api_token="s3cret") as srv:
        for path in ("/health", "/ready", "/startup"):
            response = srv.client.get(path)
            assert response.status_code == 200 and "s3cret" not in response.text, path


def test_ready_follows_the_database_and_health_stays_alive(pg_url: str) -> None:
    with proxied_pg(pg_url) as (url, proxy), thread_server(url, drive=False) as srv:
        assert srv.client.get("/ready").status_code == 200
        proxy.cut()
        ready = srv.client.get("/ready")
        assert ready.status_code == 503, ready.text
        storage = ready.json()["checks"]["storage"]
        assert ready.json()["status"] == "unhealthy" and storage["status"] == "unhealthy"
        assert "cannot be reached" in storage["message"]
        health = srv.client.get("/health")
        assert health.status_code == 200  # alive: restarting the process would not bring the database back
        assert health.json()["status"] == "alive" and health.json()["condition"] == "unavailable"
        assert srv.client.get("/startup").status_code == 200
        proxy.restore()
        _until(lambda: srv.client.get("/ready").status_code == 200, 15, "/ready to recover")
        assert srv.client.get("/health").json()["condition"] == "ok"


def test_fallback_to_memory_is_degraded_and_not_ready() -> None:
    with thread_server("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", drive=False) as srv:
        health = srv.client.get("/health").json()
        assert health["status"] == "alive" and health["condition"] == "degraded" and health["fallback"] is True
        ready = srv.client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "degraded"
        storage = ready.json()["checks"]["storage"]
        assert storage["status"] == "degraded" and "lost on restart" in storage["message"]
        assert storage["details"]["kind"] == "memory" and storage["details"]["durable"] is False


def test_not_ready_while_shutting_down(tmp_path: Any) -> None:
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", drive=False) as srv:
        srv.runtime.begin_shutdown()
        ready = srv.client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["server"]["status"] == "unhealthy"
        assert srv.client.get("/health").status_code == 200
