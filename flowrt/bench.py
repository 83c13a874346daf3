"""`flowrt bench` in process: what durability costs on *your* database and machine.

Each engine mode is one way a caller moves runs, all through the same step core, and each
worker thread does what that caller does -- start a run, then step it to its end:

- ``tick``: ``start(keep_lease=True)``, then :meth:`Engine.tick` until the run leaves
  RUNNING (an API client's start + ticks; the kept lease means no tick needs a claim);
- ``until``: ``start(keep_lease=True)``, then :meth:`Engine.run_until_blocked`;
- ``drive``: ``start(keep_lease="drivers")`` (what the server does with a start its drivers
  will move), then :meth:`Engine.drive_next`, what a driver thread runs (it takes the
  parked run with no claim): a server's steady state;
- ``recover`` (:func:`bench_recovery`): N RUNNING runs nobody drives, as after a crash,
  continued by :func:`flowrt.driver.recover` on a fresh engine, with the drive mode of the
  same flow measured beside it.

``tick-async`` and ``until-async`` are ``tick`` and ``until`` as an asyncio application
embedding the engine makes them: ``concurrency`` tasks on one event loop (uvloop when it is
installed, as the server runs), ``async def`` handlers, :meth:`Engine.start_async` then
:meth:`Engine.tick_async` / :meth:`Engine.run_until_blocked_async` -- the server's path, with
no HTTP in front: steps commit through the loop's group commit on SQLite and on the loop's
own connections on Postgres, with no thread hop.

Every figure comes with its ceiling beside it: the raw step-commit rate (one transaction
that updates a ~200-byte row and inserts two event rows, the physical limit of a durable
step, one commit each), measured in the same call on the same database, by one thread
and by as many threads as the engine had, half before and half after the engine.

Write transactions are counted by kind (:class:`WriteTally`): the group writer commits a
start and steps of other runs in one transaction when they are ready together, so "per
step" counts every write transaction except those that held only starts (claims, lease
releases and renewals count against the steps), and "per run" counts them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
from typing import Any, Awaitable, Callable, Iterator

from .definitions import Flow, ok
from .driver import recover
from .engine import Engine
from .http_bench import ServerUnreachable, Unauthorized, bench_http, compare_http, percentile, preflight, timed_in_threads
from .runs import RunStatus
from .storage import Storage
from .writer import Write

THREAD_MODES = ("drive", "tick", "until")
LOOP_MODES = ("tick-async", "until-async")
ENGINE_MODES = (*THREAD_MODES, *LOOP_MODES)
MODES = (*ENGINE_MODES, "recover")

__all__ = [
    "ENGINE_MODES", "MODES", "ServerUnreachable", "Unauthorized", "WriteTally", "bench_engine", "bench_flow",
    "bench_http", "bench_recovery", "compare_http", "percentile", "preflight", "raw_commit_rate", "timed_in_threads",
]


class _Probe:
    """Step latency as the handlers see it: from one node's start to the next node's start
    in the same run (the commit, any claim, and the engine's own work in between)."""

    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}
        self.latencies: list[float] = []

    def reset(self) -> None:
        self.last_seen.clear()
        self.latencies = []

    def handler(self, ctx: Any) -> Any:
        now = time.perf_counter()
        previous = self.last_seen.get(ctx.run_id)
        if previous is not None:
            self.latencies.append(now - previous)
        self.last_seen[ctx.run_id] = now
        return ok()

    async def async_handler(self, ctx: Any) -> Any:
        return self.handler(ctx)


def bench_flow(nodes: int, probe: _Probe, *, asynchronous: bool = False) -> Flow:
    """A linear flow of ``nodes`` trivial nodes, with a version of its own, so the figures
    count (and the clean-up deletes) only this session's runs; ``asynchronous``: its
    handlers are ``async def`` (what an event loop awaits in place)."""
    flow = Flow("flowrt-bench", f"{nodes}.{os.getpid()}.{time.time_ns()}")
    handler = probe.async_handler if asynchronous else probe.handler
    for i in range(nodes):
        flow.add_node(f"n{i}", handler, entry=(i == 0))
        if i:
            flow.edge(f"n{i - 1}", f"n{i}")
    return flow


class WriteTally:
    """Counts write transactions, and which of them held starts or steps.

    It wraps this storage instance's ``run_insert`` and ``step_write`` (instance attributes
    shadow the methods; nothing else is touched), so each write notes the transaction it
    lands in: a number given to each cursor :meth:`Storage._write` makes (one a transaction;
    a batch's writes run one after another in its thread, so a cursor unlike the thread's
    last one is a new transaction; that last one is kept, so no new cursor can take its
    identity), or, for a write of one statement made alone (on an event loop, on Postgres),
    a number of its own. Not the writer's batch counter: on Postgres several transactions are
    in flight at once, and they share it.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        run_insert, step_write = storage.run_insert, storage.step_write
        storage.run_insert = lambda *a, **k: self._tagged(run_insert(*a, **k), step=False)  # type: ignore[method-assign]
        storage.step_write = lambda *a, **k: self._tagged(step_write(*a, **k), step=True)  # type: ignore[method-assign]
        self._numbers = itertools.count()
        self._last = threading.local()  # this thread's last cursor and its transaction's number
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._base = (self.storage.write_transactions, self.storage.writer.transactions, self.storage.writer.writes)
            self.start_batches: set[int] = set()
            self.step_batches: set[int] = set()
            self.step_writes = 0

    def _transaction_of(self, cursor: Any) -> int:
        last = self._last
        if getattr(last, "cursor", None) is not cursor:
            last.cursor, last.number = cursor, next(self._numbers)
        number: int = last.number
        return number

    def _tagged(self, apply: Callable[[Any], Any], *, step: bool) -> Write:
        """The write, noting its transaction and outcome however it is written: in a
        transaction (``apply(cursor)``) or as its one statement alone."""

        def noted(outcome: Any, transaction: int) -> Any:
            with self._lock:
                (self.step_batches if step else self.start_batches).add(transaction)
                if step and outcome is None:  # written (not a lost lease, not a duplicate)
                    self.step_writes += 1
            return outcome

        def tagged(cursor: Any, write: Write) -> Any:
            outcome = apply(cursor)
            # what the write leaves for the step core after it ran: the change mark a parked
            # lease's next step checks instead of reading the run (lost, every step would read)
            write.mark = getattr(apply, "mark", None)
            return noted(outcome, self._transaction_of(cursor))

        statement = getattr(apply, "statement", None)
        if statement is not None:
            sql, params, outcome_of = statement
            statement = (sql, params, lambda rowcount: noted(outcome_of(rowcount), next(self._numbers)))
        return Write(tagged, lock_key=getattr(apply, "lock_key", None), statement=statement)

    def figures(self, *, steps: int, runs: int) -> dict[str, Any]:
        with self._lock:
            total = self.storage.write_transactions - self._base[0]
            batches = self.storage.writer.transactions - self._base[1]
            batched_writes = self.storage.writer.writes - self._base[2]
            start_only = len(self.start_batches - self.step_batches)
            step_batches = len(self.step_batches)
            step_writes = self.step_writes
        step_transactions = total - start_only
        return {
            "writeTransactions": total,
            "stepTransactions": step_transactions,
            "startOnlyTransactions": start_only,
            "writeTransactionsPerStep": round(step_transactions / steps, 3) if steps else None,
            "writeTransactionsPerRun": round(total / runs, 3) if runs else None,
            "stepCommits": step_writes,
            "stepsPerTransaction": round(step_writes / step_batches, 2) if step_batches else None,
            "groupCommit": {"transactions": batches, "writes": batched_writes},
        }


def raw_commit_rate(storage: Storage, *, commits: int = 3000, concurrency: int = 1) -> float:
    """Commits/s of the bare step transaction, one commit each, through the same connection machinery."""
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


def _step_to_end(engine: Engine, mode: str, flow: Flow, input_value: Any) -> None:
    """One run the way ``mode``'s caller moves it: start holding the lease, then step it."""
    run = engine.start(flow.flow_id, flow.version, input_value, keep_lease="drivers" if mode == "drive" else True)
    if mode == "tick":
        while engine.tick(run.run_id).status == RunStatus.RUNNING:
            pass
    elif mode == "until":
        engine.run_until_blocked(run.run_id)
    else:  # drive: a driver's entry point takes the oldest run parked here (perhaps another worker's)
        engine.drive_next()


async def _step_to_end_async(engine: Engine, mode: str, flow: Flow, input_value: Any) -> None:
    """The same from an event loop: start holding the lease, then tick, or run until blocked."""
    run, _ = await engine.start_async(flow.flow_id, flow.version, input_value, keep_lease=True)
    if mode == "tick-async":
        while (await engine.tick_async(run.run_id)).status == RunStatus.RUNNING:
            pass
    else:
        await engine.run_until_blocked_async(run.run_id)


@contextlib.contextmanager
def _loop_for(mode: str) -> Iterator[asyncio.Runner | None]:
    """The event loop a loop mode's measurements share (so its connections and caches carry
    over from the warm-up, as in a long-running application); None for a thread mode."""
    if mode not in LOOP_MODES:
        yield None
        return
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # flowrt[fast] not installed: asyncio's own loop
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner


def _timed_on_loop(runner: asyncio.Runner, work: Callable[[int], Awaitable[None]], concurrency: int) -> float:
    """Seconds for ``concurrency`` tasks of ``work`` on the runner's loop, all started together."""

    async def timed() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(work(i) for i in range(concurrency)))
        return time.perf_counter() - started

    return runner.run(timed())


def _measure(
    engine: Engine, flow: Flow, tally: WriteTally, probe: _Probe, *, mode: str, runs: int, concurrency: int,
    input_value: Any, loop: asyncio.Runner | None = None,
) -> dict[str, Any]:
    """Timed: ``concurrency`` threads (or, for a loop mode, tasks on ``loop``) each start and
    step runs until ``runs`` have been started."""
    remaining = [runs]
    lock = threading.Lock()
    errors: list[str] = []
    before = _not_running(engine, flow)
    probe.reset()
    tally.reset()

    def take() -> bool:
        with lock:
            remaining[0] -= 1
            return remaining[0] >= 0

    def work(_: int) -> None:
        try:
            while take():
                _step_to_end(engine, mode, flow, input_value)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            errors.append(f"{type(exc).__name__}: {exc}")

    async def work_async(_: int) -> None:
        try:
            while take():
                await _step_to_end_async(engine, mode, flow, input_value)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            errors.append(f"{type(exc).__name__}: {exc}")

    if not runs:
        elapsed = 0.0
    elif loop is not None:
        elapsed = _timed_on_loop(loop, work_async, concurrency)
    else:
        elapsed = timed_in_threads(work, concurrency)
    finished = _not_running(engine, flow) - before
    return _figures(f"engine/{mode}", engine, flow, tally, probe, elapsed, runs, finished, concurrency, errors)


def _not_running(engine: Engine, flow: Flow) -> int:
    counts = engine.storage.count_runs(flow_version=flow.version)
    return sum(n for status, n in counts.items() if status != RunStatus.RUNNING)


def _figures(
    mode: str, engine: Engine, flow: Flow, tally: WriteTally, probe: _Probe, elapsed: float, runs: int,
    finished: int, concurrency: int, errors: list[str],
) -> dict[str, Any]:
    steps = tally.step_writes
    return {
        "mode": mode,
        "database": engine.storage.kind,
        "runs": runs,
        "completed": finished,
        "nodes": len(flow.nodes),
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "steps": steps,
        "stepsPerSecond": round(steps / elapsed, 1) if elapsed else 0.0,
        "runsPerSecond": round(finished / elapsed, 1) if elapsed else 0.0,
        "stepP50Ms": round(percentile(probe.latencies, 50) * 1000, 3),
        "stepP99Ms": round(percentile(probe.latencies, 99) * 1000, 3),
        **tally.figures(steps=steps, runs=finished),
        "errors": errors[:5],
    }


class _RawRates:
    """The raw commit rate by one thread and by ``concurrency`` threads, measured half before
    and half after the engine's figure and combined (commits over seconds), so a machine
    that speeds up or slows down meanwhile moves both sides of the ratio alike."""

    def __init__(self, storage: Storage, commits: int, concurrency: int, loop: asyncio.Runner | None = None) -> None:
        self.storage, self.commits, self.concurrency = storage, max(2, commits // 2), concurrency
        self.loop = loop
        self.seconds: dict[int, float] = {1: 0.0, concurrency: 0.0}
        self.done: dict[int, int] = {1: 0, concurrency: 0}

    def measure(self) -> None:
        """A loop mode's loop keeps running meanwhile (the raw commits run in a thread): a
        stopped loop that ran async handlers would be reported blocked by the engine's watchdog."""
        if self.loop is not None:
            self.loop.run(asyncio.to_thread(self._measure))
        else:
            self._measure()

    def _measure(self) -> None:
        for threads in self.seconds:
            rate = raw_commit_rate(self.storage, commits=self.commits, concurrency=threads)
            done = max(1, self.commits // threads) * threads
            self.seconds[threads] += done / rate
            self.done[threads] += done

    def add_to(self, result: dict[str, Any]) -> dict[str, Any]:
        single = self.done[1] / self.seconds[1]
        same = self.done[self.concurrency] / self.seconds[self.concurrency]
        steps_per_second = result["stepsPerSecond"]
        result.update(
            rawCommitsPerSecond=round(same, 1),
            rawCommitsPerSecondAtC1=round(single, 1),
            engineVsRaw=round(steps_per_second / same, 3),
            engineVsRawAtC1=round(steps_per_second / single, 3),
            engineVsRawPercent=round(100 * steps_per_second / same, 1),
        )
        return result


def bench_engine(
    database_url: str,
    *,
    runs: int = 2000,
    nodes: int = 5,
    concurrency: int = 1,
    mode: str = "drive",
    raw: bool = True,
) -> dict[str, Any]:
    """Durable steps/s of one engine mode, with the database's raw commit rate beside it."""
    if mode not in ENGINE_MODES:
        raise ValueError(f"mode must be one of {', '.join(ENGINE_MODES)}")
    probe = _Probe()
    flow = bench_flow(nodes, probe, asynchronous=mode in LOOP_MODES)
    engine = Engine(database_url, flows=[flow])
    try:
        with _loop_for(mode) as loop:
            tally = WriteTally(engine.storage)
            options: dict[str, Any] = dict(mode=mode, concurrency=concurrency, input_value=None, loop=loop)
            # Untimed first: a new database file grows its WAL, and caches are cold.
            warm = _measure(engine, flow, tally, probe, runs=min(200, runs // 10), **options)
            rates = _RawRates(engine.storage, max(300, runs * nodes), concurrency, loop) if raw else None
            if rates:
                rates.measure()
            result = _measure(engine, flow, tally, probe, runs=runs, **options)
            result["errors"] = (warm["errors"] + result["errors"])[:5]
            if rates:
                rates.measure()
                result = rates.add_to(result)
        engine.storage.delete_runs(flow.flow_id, flow.version)  # leave the database as we found it
        return result
    finally:
        engine.close()


def bench_recovery(
    database_url: str,
    *,
    runs: int = 2000,
    nodes: int = 5,
    concurrency: int = 8,
    flows: list[Any] | None = None,
    flow_id: str | None = None,
    input_value: Any = None,
    drive: bool = True,
) -> dict[str, Any]:
    """Startup recovery: ``runs`` RUNNING runs nobody drives, continued by ``recover()`` on a
    fresh engine (a restarted process); then, on the same database, drive mode of the same
    flow at the same concurrency, and recovery/drive.

    By default the flow is :func:`bench_flow` (its runs are deleted afterwards). With
    ``flows`` and ``flow_id`` (e.g. the demo flows), its runs stay: use a scratch database.
    """
    probe = _Probe()
    own = flows is None
    flow = bench_flow(nodes, probe) if own else None
    registered: list[Any] = [flow] if own else list(flows or [])

    errors: list[str] = []
    with Engine(database_url, flows=registered) as setup:
        target = flow or setup.flow(flow_id or "")
        left = [runs]
        lock = threading.Lock()

        def start_backlog(_: int) -> None:
            try:
                while True:
                    with lock:
                        if left[0] <= 0:
                            return
                        left[0] -= 1
                    setup.start(target.flow_id, target.version, input_value)  # RUNNING, never driven
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors.append(f"starting the backlog: {type(exc).__name__}: {exc}")

        timed_in_threads(start_backlog, max(1, concurrency))
    engine = Engine(database_url, flows=registered)  # a new engine, as a restarted process would have
    try:
        target = flow or engine.flow(flow_id or "")
        tally = WriteTally(engine.storage)
        before = _not_running(engine, target)
        probe.reset()
        started = time.perf_counter()
        try:
            report = recover(engine, concurrency=concurrency)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            errors.append(f"{type(exc).__name__}: {exc}")
            report = None
        elapsed = time.perf_counter() - started
        finished = _not_running(engine, target) - before
        result = _figures("recover", engine, target, tally, probe, elapsed, runs, finished, concurrency, errors)
        result.update(flowId=target.flow_id, found=report.found if report else None, driven=report.driven if report else None)
        if drive:
            steady = _measure(
                engine, target, tally, probe, mode="drive", runs=runs, concurrency=concurrency, input_value=input_value
            )
            result.update(
                driveRunsPerSecond=steady["runsPerSecond"],
                driveStepsPerSecond=steady["stepsPerSecond"],
                driveWriteTransactionsPerStep=steady["writeTransactionsPerStep"],
                recoveryVsDrive=round(result["runsPerSecond"] / steady["runsPerSecond"], 3)
                if steady["runsPerSecond"]
                else None,
            )
            result["errors"] = (errors + steady["errors"])[:5]
        if own:
            engine.storage.delete_runs(target.flow_id, target.version)
        return result
    finally:
        engine.close()
