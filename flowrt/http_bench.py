"""`flowrt bench --url`: replay what a client of the reference runtime does, against any server.

Per run: start, then tick until the run leaves RUNNING (or, with ``driven``, one long-polled
``start?wait=`` while the server moves the run), over keep-alive connections, reporting
requests/s, runs/s and latency percentiles. The client speaks only the reference's API
(``POST /v1/runs/start`` with ``flowId``, ``version`` and ``input``; ``POST
/v1/runs/{id}/tick``; a run's ``status``), so the same client measures flowrt and the
reference runtime, and :func:`compare_http` alternates it between two servers (A B A B)
and reports their ratios from one run.

Nothing here loads the engine or Peewee: measuring a server costs the client little.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import threading
import time
import urllib.parse
from typing import Any, Callable

from .errors import FlowNotFound, FlowrtError


class ServerUnreachable(ConnectionError):
    """The server to benchmark does not answer."""


class Unauthorized(FlowrtError):
    """The server rejected the token."""

    code = "UNAUTHORIZED"
    http_status = 401


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def timed_in_threads(work: Callable[[int], None], count: int) -> float:
    """Seconds for ``count`` threads running ``work(index)`` to all finish."""
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


class _Client:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost less than the server.

    It reads Content-Length and chunked bodies (the reference answers chunked)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock = socket.create_connection((self.host, self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{self.auth}\r\n"
        )
        self.sock.sendall(head.encode() + payload)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        header, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding":
                chunked = "chunked" in value.lower()
        data = self._chunked() if chunked else self._take(length)
        return status, json.loads(data) if data else None

    def _take(self, length: int) -> bytes:
        while len(self.buffer) < length:
            self._fill()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self._line().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._take(size))
            self._take(2)  # the chunk's CRLF

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _status(obj: Any) -> str | None:
    """A run's status: top level, or in a nested ``run`` object (as the generic client reads it)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("status"), str):
            return str(obj["status"]).upper()
        if isinstance(obj.get("run"), dict):
            return _status(obj["run"])
    return None


def _run_id(obj: Any) -> str | None:
    if isinstance(obj, dict):
        for key in ("runId", "run_id", "id"):
            if isinstance(obj.get(key), (str, int)) and obj[key] != "":
                return str(obj[key])
        if isinstance(obj.get("run"), dict):
            return _run_id(obj["run"])
    return None


def preflight(url: str, token: str | None, flow_id: str) -> tuple[dict[str, Any], str | None]:
    """Check the server answers, accepts the token and has the flow: its /health and the
    flow's newest version (the reference requires a version in every start)."""
    try:
        client = _Client(url, token)
        try:
            _, health = client.request("GET", "/health")
            status, flows = client.request("GET", "/v1/flows")
        finally:
            client.close()
    except OSError as exc:
        raise ServerUnreachable(f"cannot reach {url}: {exc}") from exc
    if status == 401:
        raise Unauthorized(f"{url} rejected the token: pass --token or FLOWRT_API_TOKEN")
    if status != 200 or not isinstance(flows, list):
        raise ServerUnreachable(f"{url}/v1/flows answered HTTP {status}; is this a flowrt server?")
    versions = [f.get("version") for f in flows if isinstance(f, dict) and f.get("flowId") == flow_id]
    if not versions:
        raise FlowNotFound(f"the server at {url} does not serve flow {flow_id!r} (see --flow)")
    version = versions[-1] if isinstance(versions[-1], str) else None  # /v1/flows lists versions oldest first
    return (health if isinstance(health, dict) else {}), version


def bench_http(
    url: str,
    *,
    runs: int = 2000,
    concurrency: int = 1,
    flow_id: str = "demo-fraud",
    input_value: Any = None,
    driven: bool | None = None,
    token: str | None = None,
    wait_seconds: float = 30.0,
    warmup: int = 0,
) -> dict[str, Any]:
    """Start + tick-to-completion (or one long-polled start) per run, at a fixed concurrency.

    ``driven=None`` picks what fits the server: long-polled starts when its drivers move
    runs (ticks would race them for the lease), ticks when it runs ``--no-drive`` (or has
    no drivers at all, as the reference). ``warmup`` runs go first and are not counted.
    """
    health, version = preflight(url, token, flow_id)
    if driven is None:
        driven = bool(health.get("driving", False))
    input_value = {"amount": 50, "userId": "bench"} if input_value is None else input_value
    body: dict[str, Any] = {"flowId": flow_id, "input": input_value}
    if version is not None:
        body["version"] = version
    if warmup:
        _load(url, token, body, driven, wait_seconds, warmup, concurrency)
    return {
        "mode": "http/driven" if driven else "http/tick",
        "url": url,
        "flowId": flow_id,
        "runs": runs,
        **_load(url, token, body, driven, wait_seconds, runs, concurrency),
        "clientPid": os.getpid(),
    }


def _load(
    url: str, token: str | None, body: dict[str, Any], driven: bool, wait_seconds: float, runs: int, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [runs]

    def one_run(client: _Client, mine: list[float]) -> str:
        t0 = time.perf_counter()
        if driven:
            code, run = client.request("POST", f"/v1/runs/start?wait={wait_seconds}", body)
            mine.append(time.perf_counter() - t0)
            if code != 200:
                raise RuntimeError(f"start?wait: HTTP {code} {run}")
            return str(_status(run))
        code, started = client.request("POST", "/v1/runs/start", body)
        mine.append(time.perf_counter() - t0)
        if code != 200:
            raise RuntimeError(f"start: HTTP {code} {started}")
        status, run_id = _status(started), _run_id(started)
        if run_id is None:
            raise RuntimeError(f"start answered no run id: {started}")
        for _ in range(1000):
            if status != "RUNNING":
                break
            t0 = time.perf_counter()
            code, run = client.request("POST", f"/v1/runs/{run_id}/tick")
            mine.append(time.perf_counter() - t0)
            if code == 409 and isinstance(run, dict) and run.get("code") == "RUN_BUSY":  # a driver has it: look
                code, run = client.request("GET", f"/v1/runs/{run_id}")
            if code != 200:
                raise RuntimeError(f"tick: HTTP {code} {run}")
            status = _status(run)
        return str(status)

    def work(_: int) -> None:
        client = _Client(url, token)
        mine: list[float] = []
        try:
            while True:
                with lock:
                    if remaining[0] <= 0:
                        break
                    remaining[0] -= 1
                status = one_run(client, mine)
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    elapsed = timed_in_threads(work, concurrency)
    finished = sum(statuses.values())
    return {
        "finished": finished,
        "statuses": statuses,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "requestsPerSecond": round(len(latencies) / elapsed, 1),
        "runsPerSecond": round(finished / elapsed, 1),
        "p50Ms": round(percentile(latencies, 50) * 1000, 3),
        "p90Ms": round(percentile(latencies, 90) * 1000, 3),
        "p99Ms": round(percentile(latencies, 99) * 1000, 3),
        "maxMs": round(max(latencies) * 1000, 3) if latencies else 0.0,
        "meanMs": round(statistics.fmean(latencies) * 1000, 3) if latencies else 0.0,
        "errors": errors[:5],
    }


def compare_http(
    url: str,
    other: str,
    *,
    rounds: int = 2,
    driven: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The same client against ``url`` (A) and ``other`` (B), alternating A B A B ``rounds``
    times; the medians of each side and of the per-round ratios A/B.

    ``driven`` is A's mode; B gets the mode that fits it (the reference: start + ticks), so
    ``driven=True`` compares A's long-polled starts with B's start + ticks, per run.
    """
    pairs = []
    for _ in range(max(1, rounds)):
        a = bench_http(url, driven=driven, **options)
        b = bench_http(other, driven=None, **options)
        pairs.append((a, b))

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    def ratio(key: str) -> float | None:
        values = [a[key] / b[key] for a, b in pairs if b[key]]
        return median(values) if values else None

    a_last, b_last = pairs[-1]
    return {
        "mode": "http/compare",
        "url": url,
        "compare": other,
        "modeA": a_last["mode"],
        "modeB": b_last["mode"],
        "concurrency": a_last["concurrency"],
        "rounds": len(pairs),
        "runs": a_last["runs"],
        "requestsPerSecondA": median([a["requestsPerSecond"] for a, _ in pairs]),
        "requestsPerSecondB": median([b["requestsPerSecond"] for _, b in pairs]),
        "requestsRatio": ratio("requestsPerSecond"),
        "runsPerSecondA": median([a["runsPerSecond"] for a, _ in pairs]),
        "runsPerSecondB": median([b["runsPerSecond"] for _, b in pairs]),
        "runsRatio": ratio("runsPerSecond"),
        "p99MsA": median([a["p99Ms"] for a, _ in pairs]),
        "p99MsB": median([b["p99Ms"] for _, b in pairs]),
        "p50MsA": median([a["p50Ms"] for a, _ in pairs]),
        "p50MsB": median([b["p50Ms"] for _, b in pairs]),
        "statusesA": a_last["statuses"],
        "statusesB": b_last["statuses"],
        "measurements": [{"a": a, "b": b} for a, b in pairs],
        "errors": [e for a, b in pairs for e in (*a["errors"], *b["errors"])][:5],
    }
