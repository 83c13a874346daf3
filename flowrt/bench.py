"""`flowrt bench`: measure what durability costs on *your* database and machine.

In-process mode drives N runs of a K-node flow of trivial nodes and, on the same
database in the same session, measures the raw step-commit rate (one transaction
that updates a ~200-byte row and inserts two event rows: the physical limit of a
durable step), so the engine's figure comes with its ceiling beside it.

HTTP mode replays what a client of the reference runtime does (start, then tick
until the run leaves RUNNING; or one long-polled start when the server drives) over
keep-alive connections, and reports requests/s and latency percentiles.
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

from .definitions import Flow, ok
from .engine import Engine
from .errors import FlowNotFound, FlowrtError
from .storage import Storage


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


def _bench_flow(nodes: int, last_seen: dict[str, float], latencies: list[float]) -> Flow:
    # A version of its own, so the figures count only this session's runs.
    flow = Flow("flowrt-bench", f"{nodes}.{os.getpid()}.{time.time_ns()}")

    def handler(ctx: Any) -> Any:
        now = time.perf_counter()
        previous = last_seen.get(ctx.run_id)
        if previous is not None:
            latencies.append(now - previous)
        last_seen[ctx.run_id] = now
        return ok()

    for i in range(nodes):
        flow.add_node(f"n{i}", handler, entry=(i == 0))
        if i:
            flow.edge(f"n{i - 1}", f"n{i}")
    return flow


def raw_commit_rate(storage: Storage, *, commits: int = 3000, concurrency: int = 1) -> float:
    """Commits/s of the bare step transaction, through the same connection machinery."""
    p = storage.db.param
    doc = json.dumps({"state": {"k": "v" * 120}, "outputs": {"n": 1}, "attempts": {"n": 1}})
    with storage._write() as cur:  # noqa: SLF001 - the benchmark measures storage's own transaction path
        cur.execute("CREATE TABLE IF NOT EXISTS flowrt_bench_raw (id INTEGER PRIMARY KEY, doc TEXT)")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS flowrt_bench_raw_events "
            "(run INTEGER, seq INTEGER, payload TEXT, PRIMARY KEY (run, seq))"
        )
        cur.execute("DELETE FROM flowrt_bench_raw")
        cur.execute("DELETE FROM flowrt_bench_raw_events")
        for worker in range(concurrency):
            cur.execute(f"INSERT INTO flowrt_bench_raw (id, doc) VALUES ({p}, {p})", (worker, doc))
    per_worker = max(1, commits // concurrency)

    def work(worker: int) -> None:
        for i in range(per_worker):
            with storage._write() as cur:  # noqa: SLF001
                cur.execute(f"UPDATE flowrt_bench_raw SET doc = {p} WHERE id = {p}", (doc, worker))
                cur.execute(
                    f"INSERT INTO flowrt_bench_raw_events (run, seq, payload) VALUES ({p}, {p}, {p}), ({p}, {p}, {p})",
                    (worker, 2 * i, "{}", worker, 2 * i + 1, "{}"),
                )

    elapsed = timed_in_threads(work, concurrency)
    with storage._write() as cur:  # noqa: SLF001
        cur.execute("DROP TABLE flowrt_bench_raw")
        cur.execute("DROP TABLE flowrt_bench_raw_events")
    return per_worker * concurrency / elapsed


def bench_engine(
    database_url: str,
    *,
    runs: int = 2000,
    nodes: int = 5,
    concurrency: int = 1,
    mode: str = "drive",
    raw: bool = True,
) -> dict[str, Any]:
    """Durable steps/s of the in-process engine, with the database's raw commit rate beside it."""
    if mode not in ("drive", "tick"):
        raise ValueError("mode must be 'drive' or 'tick'")
    last_seen: dict[str, float] = {}
    latencies: list[float] = []
    flow = _bench_flow(nodes, last_seen, latencies)
    engine = Engine(database_url, flows=[flow])
    try:
        run_ids = [engine.start("flowrt-bench").run_id for _ in range(runs)]
        writes_before = engine.storage.write_transactions
        queue = list(reversed(run_ids))
        lock = threading.Lock()
        errors: list[str] = []

        def work(_: int) -> None:
            try:
                if mode == "drive":
                    while engine.drive_next():
                        pass
                    return
                while True:
                    with lock:
                        if not queue:
                            return
                        run_id = queue.pop()
                    while not engine.tick(run_id).finished:
                        pass
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors.append(f"{type(exc).__name__}: {exc}")

        elapsed = timed_in_threads(work, concurrency)
        writes = engine.storage.write_transactions - writes_before
        completed = engine.storage.count_runs(flow_version=flow.version).get("COMPLETED", 0)
        raw_rate = raw_commit_rate(engine.storage, concurrency=concurrency) if raw else None
        steps = completed * nodes
        engine.storage.delete_runs(flow.flow_id, flow.version)  # leave the database as we found it
        result: dict[str, Any] = {
            "mode": f"engine/{mode}",
            "database": engine.storage.kind,
            "runs": runs,
            "completed": completed,
            "nodes": nodes,
            "concurrency": concurrency,
            "seconds": round(elapsed, 3),
            "stepsPerSecond": round(steps / elapsed, 1),
            "runsPerSecond": round(completed / elapsed, 1),
            "stepP50Ms": round(percentile(latencies, 50) * 1000, 3),
            "stepP99Ms": round(percentile(latencies, 99) * 1000, 3),
            "writeTransactionsPerStep": round(writes / steps, 3) if steps else None,
            "rawCommitsPerSecond": round(raw_rate, 1) if raw_rate else None,
            "engineVsRawPercent": round(100 * steps / elapsed / raw_rate, 1) if raw_rate else None,
            "errors": errors[:5],
        }
        return result
    finally:
        engine.close()


# ---------------------------------------------------------------------- HTTP


class _Client:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost less than the server."""

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
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the bench client")
        while len(self.buffer) < length:
            self._fill()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, json.loads(data) if data else None

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def preflight(url: str, token: str | None, flow_id: str) -> dict[str, Any]:
    """Check the server answers, accepts the token and has the flow; returns its /health."""
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
    if flow_id not in {f.get("flowId") for f in flows}:
        raise FlowNotFound(f"the server at {url} does not serve flow {flow_id!r} (see --flow)")
    return health if isinstance(health, dict) else {}


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
) -> dict[str, Any]:
    """Start + tick-to-completion (or one long-polled start) per run, at a fixed concurrency.

    ``driven=None`` picks what fits the server: long-polled starts when its drivers move
    runs (ticks would race them for the lease), ticks when it runs ``--no-drive``.
    """
    health = preflight(url, token, flow_id)
    if driven is None:
        driven = bool(health.get("driving", False))
    input_value = {"amount": 50, "userId": "bench"} if input_value is None else input_value
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [runs]

    def one_run(client: _Client, mine: list[float]) -> str:
        body = {"flowId": flow_id, "input": input_value}
        t0 = time.perf_counter()
        if driven:
            code, run = client.request("POST", f"/v1/runs/start?wait={wait_seconds}", body)
            mine.append(time.perf_counter() - t0)
            if code != 200:
                raise RuntimeError(f"start?wait: HTTP {code} {run}")
            return str(run["status"])
        code, started = client.request("POST", "/v1/runs/start", body)
        mine.append(time.perf_counter() - t0)
        if code != 200:
            raise RuntimeError(f"start: HTTP {code} {started}")
        status, run_id = started["status"], started["runId"]
        for _ in range(1000):
            if status != "RUNNING":
                break
            t0 = time.perf_counter()
            code, run = client.request("POST", f"/v1/runs/{run_id}/tick")
            mine.append(time.perf_counter() - t0)
            if code == 409 and run.get("code") == "RUN_BUSY":  # a driver has it: look instead
                code, run = client.request("GET", f"/v1/runs/{run_id}")
            if code != 200:
                raise RuntimeError(f"tick: HTTP {code} {run}")
            status = run["status"]
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
        "mode": "http/driven" if driven else "http/tick",
        "url": url,
        "flowId": flow_id,
        "runs": runs,
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
        "clientPid": os.getpid(),
    }
