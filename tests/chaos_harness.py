"""The chaos tests' machinery: servers that die, a killer on the clock, a retrying client, the checks.

Faults follow wall time, never the client's pace: :class:`Killer` kill -9's a random
`flowrt serve` every 1.5-2.5 s for a fixed window and starts a replacement at once,
while :func:`drive_load` keeps starting and resuming runs against whichever servers
answer. A slow machine gets the same number of kills as a fast one; it only completes
the runs later, and the completion deadline is generous for that reason.

:func:`verify` then reads the database and the side table of real handler executions
(``chaos_flows.record``) and returns every problem it finds, each with the timeline of
one offending run interleaved with the faults, so a failure says what happened.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import httpx

import chaos_flows
from flowrt import Engine
from flowrt.errors import FlowrtError
from http_helpers import ServeProcess

_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
_VARIABLE = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}|vm:\d+:[0-9a-f]+|\d+")
KILL_INTERVAL = (1.5, 2.5)
"""Seconds of wall time between two kills."""
NODES = {"a", "b", "c", "d", "e"}


@dataclass
class Fault:
    """Something the harness did to the system, on the same clock as the run timelines."""

    at: float  # time.time()
    what: str


class ServerPool:
    """``size`` slots, each running one `flowrt serve`; a slot's process is replaced when killed.

    A replacement is started at once and becomes *ready* (in the background) when its
    /health answers. A process that exits on its own, rather than by our kill, is a
    harness failure: :attr:`start_failures` keeps its output.
    """

    def __init__(self, size: int, args: list[str], env: dict[str, str]) -> None:
        self.args, self.env = args, env
        self._lock = threading.Lock()
        self._slots: list[ServeProcess | None] = [None] * size
        self._ready: list[bool] = [False] * size
        self._born: list[float] = [0.0] * size
        self.retired: list[ServeProcess] = []
        self.start_failures: list[str] = []
        self.pids: dict[int, int] = {}  # pid -> slot, for reading timelines
        self._watchers: list[threading.Thread] = []
        self._closing = False
        for slot in range(size):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        proc = ServeProcess(self.args, self.env)
        with self._lock:
            self._slots[slot], self._ready[slot], self._born[slot] = proc, False, time.monotonic()
            self.pids[proc.proc.pid] = slot
        watcher = threading.Thread(target=self._watch, args=(slot, proc), name=f"chaos-ready-{slot}", daemon=True)
        self._watchers.append(watcher)
        watcher.start()

    def _watch(self, slot: int, proc: ServeProcess) -> None:
        try:
            proc.wait_ready(timeout=60)
        except Exception as exc:  # noqa: BLE001 - exited, or never ready: kept for the test to report
            with self._lock:
                if self._slots[slot] is proc and not self._closing:  # not one we killed while it started
                    self.start_failures.append(str(exc)[-3000:])
            return
        with self._lock:
            if self._slots[slot] is proc:
                self._ready[slot] = True

    def urls(self) -> list[str]:
        """Every current server's URL, in random order (some may be starting)."""
        with self._lock:
            urls = [p.url for p in self._slots if p is not None]
        return random.sample(urls, len(urls))

    def ready_count(self) -> int:
        with self._lock:
            return sum(self._ready)

    def kill_random(self) -> Fault:
        """kill -9 a ready server (any server if none is ready) and start its replacement."""
        with self._lock:
            ready = [i for i, ok in enumerate(self._ready) if ok]
            slot = random.choice(ready or range(len(self._slots)))
            victim, was_ready, uptime = self._slots[slot], self._ready[slot], time.monotonic() - self._born[slot]
            self._slots[slot], self._ready[slot] = None, False
        assert victim is not None
        victim.kill()
        self.retired.append(victim)
        if self._closing:
            raise RuntimeError("the pool is closing: no replacement started")
        fault = Fault(time.time(), f"kill -9 pid {victim.proc.pid} (slot {slot}, {'ready' if was_ready else 'starting'}, up {uptime:.1f}s)")
        self._spawn(slot)
        return fault

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.ready_count() < len(self._slots):
            assert not self.start_failures, self.start_failures
            assert time.monotonic() < deadline, f"only {self.ready_count()} of {len(self._slots)} servers ready"
            time.sleep(0.05)

    def log_lines(self, words: tuple[str, ...] = ("ERROR", "WARNING", "Traceback"), limit: int = 25) -> list[str]:
        """Warnings and errors of every server, killed ones included: each distinct message once,
        with how often it came (run ids and ports masked so repeats fold together)."""
        with self._lock:
            procs = [*self.retired, *(p for p in self._slots if p is not None)]
        seen: dict[str, list[Any]] = {}
        for proc in procs:
            for line in proc.output().splitlines():
                if not any(w in line for w in words):
                    continue
                message = _TIMESTAMP.sub("", line)
                key = _VARIABLE.sub("*", message)
                if key in seen:
                    seen[key][0] += 1
                else:
                    seen[key] = [1, f"[pid {proc.proc.pid}] {line[:300]}"]
        return [f"{count}x {first}" for count, first in list(seen.values())[:limit]]

    def close(self) -> None:
        """SIGTERM every live server (kill -9 past 20 s); logs are deleted only once no
        readiness watcher can still read them."""
        with self._lock:
            self._closing = True
            live = [p for p in self._slots if p is not None]
        for proc in live:
            try:
                proc.terminate(timeout=20)
            except Exception:  # noqa: BLE001 - a server that will not stop is killed below
                pass
        for proc in live:
            proc.kill()
        for watcher in self._watchers:
            watcher.join(10)
        for proc in [*live, *self.retired]:
            proc.close()


class Killer(threading.Thread):
    """Kills a random server every :data:`KILL_INTERVAL` seconds until ``window`` seconds have passed."""

    def __init__(self, pool: ServerPool, window: float, faults: list[Fault]) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.pool, self.window, self.faults = pool, window, faults
        self.kills = 0
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        next_at = started + random.uniform(*KILL_INTERVAL)
        while next_at < started + self.window:
            if self._stop_event.wait(max(0.0, next_at - time.monotonic())):
                return
            try:
                self.faults.append(self.pool.kill_random())
                self.kills += 1
            except Exception as exc:  # noqa: BLE001 - reported by the test, never a silent stop
                self.errors.append(repr(exc))
            next_at = max(next_at + random.uniform(*KILL_INTERVAL), time.monotonic())

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:  # started
            self.join(10)


@dataclass
class Start:
    """One logical start: retried until a server accepts it, always with the same Idempotency-Key."""

    index: int
    input: dict[str, Any]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    run_id: str | None = None
    failed_tries: list[str] = field(default_factory=list)  # "503 STORAGE_UNAVAILABLE", "RemoteProtocolError", ...
    error: str | None = None  # an answer that retrying cannot fix (4xx)

    @property
    def retried(self) -> bool:
        return bool(self.failed_tries)


class Client:
    """Starts and resumes runs on whichever server answers; never gives up before ``give_up_at``."""

    def __init__(self, pool: ServerPool, give_up_at: float) -> None:
        self.pool, self.give_up_at = pool, give_up_at
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self.resume_answers: Counter[int] = Counter()

    @property
    def http(self) -> httpx.Client:
        """One HTTP client per thread: starts run on several threads at once."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(timeout=10)
            with self._lock:
                self._clients.append(client)
        return client

    def start(self, start: Start) -> None:
        body = {"flowId": "chaos", "input": start.input}
        headers = {"Idempotency-Key": start.key}
        while time.monotonic() < self.give_up_at:
            for url in self.pool.urls():
                try:
                    resp = self.http.post(url + "/v1/runs/start", json=body, headers=headers)
                except httpx.TransportError as exc:
                    start.failed_tries.append(type(exc).__name__)  # dead, starting, or killed mid-request
                    continue
                if resp.status_code == 200:
                    start.run_id = resp.json()["runId"]
                    return
                if resp.status_code in (502, 503, 504):
                    start.failed_tries.append(f"{resp.status_code} {_code(resp)}")
                    continue
                start.error = f"{resp.status_code} {resp.text[:300]}"
                return
            time.sleep(0.2)
        start.error = f"no server accepted the start before the deadline ({len(start.failed_tries)} tries)"

    def resume(self, run_id: str) -> None:
        """One round over the servers; a 503 or a dead server means: the next loop tries again."""
        for url in self.pool.urls():
            try:
                resp = self.http.post(f"{url}/v1/runs/{run_id}/resume", json={"approved": True})
            except httpx.TransportError:
                continue
            self.resume_answers[resp.status_code] += 1
            return

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()


def _code(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("code"))
    except ValueError:
        return resp.text[:80]


def make_starts(count: int, sleep: dict[str, tuple[float, float]] | None = None) -> list[Start]:
    """``count`` starts; every fifth run waits for an approval that the client gives."""
    starts = []
    for i in range(count):
        data: dict[str, Any] = {"i": i, "approval": i % 5 == 0}
        if sleep:
            data["sleep"] = {node: list(span) for node, span in sleep.items()}
        start = Start(i, data)
        data["key"] = start.key
        starts.append(start)
    return starts


def drive_load(
    client: Client,
    reader: Engine,
    starts: list[Start],
    spread: float,
    deadline: float,
    senders: int = 4,
) -> str | None:
    """Send start ``i`` at ``spread * i / len(starts)`` s on one of ``senders`` threads (so a start
    that retries through an outage delays neither the others nor the resumes), resume waiting
    runs, and return when every accepted run has finished; else why not (the deadline)."""
    t0 = time.monotonic()
    pending = deque(starts)
    sent: list[Future[None]] = []
    with ThreadPoolExecutor(senders, thread_name_prefix="chaos-start") as pool:
        while True:
            while pending and time.monotonic() >= t0 + spread * pending[0].index / len(starts):
                sent.append(pool.submit(client.start, pending.popleft()))
            try:
                for run in reader.list_runs(status="WAITING", limit=1000)[0]:
                    client.resume(run.run_id)
                counts = reader.storage.count_runs()
            except FlowrtError:  # the database is away: the reader waits like everyone else
                counts = None
            if not pending and all(f.done() for f in sent) and counts is not None:
                unfinished = counts.get("RUNNING", 0) + counts.get("WAITING", 0)
                if unfinished == 0 and sum(counts.values()) >= sum(1 for s in starts if s.run_id):
                    return None
            if time.monotonic() > deadline:
                waiting = sum(not f.done() for f in sent)
                return f"deadline passed with runs unfinished: {counts}, {len(pending) + waiting} start(s) not accepted yet"
            time.sleep(0.1)


@dataclass
class Report:
    problems: dict[str, list[str]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # check -> timeline of one offending run
    shown: dict[str, str] = field(default_factory=dict)  # run id -> the check whose example shows it
    statuses: Counter[str] = field(default_factory=Counter)
    worker_lost: int = 0
    retried_starts: int = 0

    def add(self, check: str, detail: str, run_id: str | None = None, timeline: Callable[[], str] | None = None) -> None:
        self.problems.setdefault(check, []).append(detail)
        if run_id is None or timeline is None or check in self.examples:
            return
        if run_id in self.shown:
            self.examples[check] = f"    (run {run_id}: timeline under {self.shown[run_id]!r} above)"
        else:
            self.examples[check], self.shown[run_id] = timeline(), check

    def text(self) -> str:
        lines = [f"statuses {dict(self.statuses)}, {self.worker_lost} WORKER_LOST attempts, {self.retried_starts} retried starts"]
        for check, details in self.problems.items():
            lines.append(f"FAILED CHECK {check}: {len(details)} case(s), e.g.")
            lines.extend(f"    {d}" for d in details[:5])
            if check in self.examples:
                lines.append(self.examples[check])
        return "\n".join(lines)


def format_timeline(reader: Engine, run_id: str, faults: list[Fault], pids: dict[int, int]) -> str:
    """The run's events, its handler executions and the harness's faults, in wall-time order."""
    rows: list[tuple[float, str]] = []
    for e in reader.timeline(run_id):
        detail = ""
        if e.type == "NODE_FAILED":
            error = e.payload.get("error", {})
            detail = f" {error.get('code')}: {str(error.get('message'))[:160]}"
        rows.append((e.at.timestamp(), f"#{e.seq} {e.type} {e.node_id or ''} attempt={e.attempt}{detail}"))
    for at, node_id, attempt, pid in chaos_flows.executions_of(run_id):
        rows.append((at, f"   exec {node_id} attempt={attempt} pid {pid} (slot {pids.get(pid, '?')})"))
    if rows:
        first, last = min(r[0] for r in rows), max(r[0] for r in rows)
        rows.extend((f.at, f"   ** {f.what}") for f in faults if first - 3 <= f.at <= last + 1)
    rows.sort(key=lambda r: r[0])
    base = rows[0][0] if rows else 0.0
    stamp = datetime.fromtimestamp(base).strftime("%H:%M:%S.%f")[:-3] if rows else "-"
    body = "\n".join(f"      {at - base:+8.3f}s {text}" for at, text in rows)
    return f"    timeline of run {run_id} (t=0 at {stamp}):\n{body}"


def verify(
    reader: Engine,
    starts: list[Start],
    faults: list[Fault],
    pids: dict[int, int],
    *,
    worker_lost_allowed: bool,
) -> Report:
    """Every check on every run; an empty ``report.problems`` means the run of the test was clean."""
    report = Report(retried_starts=sum(s.retried for s in starts))
    executed = chaos_flows.executions()
    by_key: dict[str, list[str]] = {}
    cursor = None
    while True:
        page, cursor = reader.list_runs(limit=1000, cursor=cursor)
        for run in page:
            key = run.input.get("key") if isinstance(run.input, dict) else None
            by_key.setdefault(str(key), []).append(run.run_id)
        if cursor is None:
            break

    def timeline_of(run_id: str) -> Callable[[], str]:
        return lambda: format_timeline(reader, run_id, faults, pids)

    for start in starts:
        tries = f"{len(start.failed_tries)} failed tries {Counter(start.failed_tries).most_common(3)}"
        if start.run_id is None:
            report.add("start accepted", f"start {start.index}: {start.error}; {tries}")
            continue
        made = by_key.get(start.key, [])
        if start.run_id not in made:
            report.add("0 lost", f"start {start.index} answered run {start.run_id}, which does not exist")
        if len(made) > 1:
            report.add(
                "0 doubled starts", f"start {start.index} made {len(made)} runs {made}; {tries}", made[0], timeline_of(made[0])
            )
    for start in starts:
        if start.run_id is None:
            continue
        found = reader.get(start.run_id)
        if found is None:
            continue
        run = found
        report.statuses[str(run.status)] += 1
        events = reader.timeline(run.run_id)
        show = timeline_of(run.run_id)
        if run.status != "COMPLETED":
            error = run.error or {}
            report.add(f"every run COMPLETED (0 {run.status})", f"run {run.run_id}: {error.get('code')} {str(error.get('message'))[:200]}", run.run_id, show)
        if [e.seq for e in events] != list(range(1, len(events) + 1)):
            report.add("seq continuity", f"run {run.run_id}: seqs {[e.seq for e in events]}", run.run_id, show)
        # A NODE_FINISHED right before RUN_WAITING is a wait (a poll), not the node's completion.
        finished = Counter(
            e.node_id
            for e, after in zip(events, [*events[1:], None])
            if e.type == "NODE_FINISHED" and (after is None or after.type != "RUN_WAITING")
        )
        lost = Counter(
            e.node_id for e in events if e.type == "NODE_FAILED" and e.payload["error"]["code"] == "WORKER_LOST"
        )
        report.worker_lost += sum(lost.values())
        if lost and not worker_lost_allowed:
            report.add("0 WORKER_LOST (no process died)", f"run {run.run_id}: {dict(lost)}", run.run_id, show)
        others = [
            f"{e.node_id}: {e.payload['error'].get('code')}"
            for e in events
            if e.type == "NODE_FAILED" and e.payload["error"]["code"] != "WORKER_LOST"
        ]
        if others:
            report.add("no failure but WORKER_LOST", f"run {run.run_id}: {others}", run.run_id, show)
        doubled = {n: c for n, c in finished.items() if c > 1}
        if doubled:
            report.add("NODE_FINISHED exactly once", f"run {run.run_id}: {doubled}", run.run_id, show)
        expected = NODES | ({"approval"} if run.input.get("approval") else set())
        if run.status == "COMPLETED" and set(finished) != expected:
            report.add("every node finished", f"run {run.run_id}: finished {sorted(str(n) for n in finished)}", run.run_id, show)
        for node_id in expected:
            ran = executed.get((run.run_id, node_id), 0)
            polls = sum(1 for e in events if e.type == "RUN_WAITING" and e.node_id == node_id)
            if ran > 1 + lost[node_id] + polls:
                report.add(
                    "executions <= 1 + lost + polls",
                    f"run {run.run_id} node {node_id}: ran {ran}, {lost[node_id]} lost, {polls} polls",
                    run.run_id,
                    show,
                )
            if node_id in finished and ran < 1:
                report.add("finished nodes executed", f"run {run.run_id} node {node_id}: no execution recorded", run.run_id, show)
    return report
