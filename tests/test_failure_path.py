"""The bad day, in-process: handlers that misbehave, starts that are retried, commits that fail.

Process-level faults (kill -9, SIGTERM, SIGINT, a Postgres cluster that stops, a full disk)
are in test_shutdown.py, test_outage.py, test_disk_full.py and test_chaos.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, Iterator

import pytest
from http_helpers import thread_server

from flowrt import Engine, Flow, Retry, StorageUnavailable, ok
from flowrt.errors import IdempotencyConflict, InvalidInput, PayloadTooLarge
from flowrt.storage import Storage

pytestmark = pytest.mark.timeout(90)


# --------------------------------------------------------------------------- handlers that misbehave


def raising_flow(exc: BaseException) -> Flow:
    f = Flow(f"raises-{type(exc).__name__}")

    @f.node(entry=True)
    def boom(ctx: Any) -> Any:
        raise type(exc)(*exc.args)

    return f


@pytest.mark.parametrize("exc", [SystemExit(2), KeyboardInterrupt(), GeneratorExit()], ids=type)
def test_any_base_exception_a_handler_raises_is_its_failure(make_engine: Any, exc: BaseException) -> None:
    f = raising_flow(exc)
    engine = make_engine(f)
    name = type(exc).__name__
    # From a driver-like thread, from the calling thread, and on the server's event loop.
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(engine.run_until_blocked(engine.start(f.flow_id).run_id)))
    worker.start()
    worker.join(30)
    if isinstance(exc, KeyboardInterrupt):
        # In the main thread under Python's default SIGINT handler a KeyboardInterrupt is
        # taken for a real Ctrl-C; elsewhere it is the handler's doing.
        pass
    else:
        results.append(engine.run_until_blocked(engine.start(f.flow_id).run_id))
    results.append(asyncio.run(engine.run_until_blocked_async(engine.start(f.flow_id).run_id)))
    for run in results:
        assert run.status == "FAILED" and run.error["code"] == name, run
        assert "in boom\n    raise type(exc)(*exc.args)" in run.error["traceback"]
        assert run.error["traceback"].rstrip().splitlines()[-1].startswith(name)


def test_a_real_ctrl_c_in_the_main_thread_still_stops_the_caller(make_engine: Any) -> None:
    f = raising_flow(KeyboardInterrupt())
    engine = make_engine(f, lease_ttl=0.2)
    run_id = engine.start(f.flow_id).run_id
    with pytest.raises(KeyboardInterrupt):
        engine.run_until_blocked(run_id)
    time.sleep(0.3)  # the interrupted attempt's lease was expired, not released
    with pytest.raises(KeyboardInterrupt):
        engine.run_until_blocked(run_id)
    events = [e for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
    assert [e.payload["error"]["code"] for e in events] == ["WORKER_LOST"]  # recovered, not failed
    assert engine.get(run_id).status == "RUNNING"


def test_async_handler_raising_system_exit_on_the_servers_loop_is_contained(tmp_path: Any) -> None:
    f = Flow("async-exit")

    @f.node(entry=True)
    async def leave(ctx: Any) -> Any:
        raise SystemExit("argparse says bye")

    with thread_server(f"sqlite:///{tmp_path / 'f.db'}", flows=[f], drive=False) as server:
        run_id = server.client.post("/v1/runs/start", json={"flowId": "async-exit"}).json()["runId"]
        response = server.client.post(f"/v1/runs/{run_id}/tick")
        assert response.status_code == 200, response.text
        assert response.json()["error"]["code"] == "SystemExit"
        assert "Traceback" not in server.client.get("/health").text
        assert server.client.get("/health").json()["storage"] == "sqlite"  # the server lives on


def test_hung_timed_handlers_never_starve_other_runs(make_engine: Any, caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    f = Flow("hangs")

    @f.node(entry=True, timeout_ms=50)
    def hang(ctx: Any) -> Any:
        release.wait(60)
        return ok()

    g = Flow("healthy")

    @g.node(entry=True, timeout_ms=5000)
    def fine(ctx: Any) -> Any:
        return ok({"fine": True})

    engine = make_engine(f, g, max_abandoned_threads=8)
    try:
        for _ in range(8):
            run = engine.run_until_blocked(engine.start("hangs").run_id)
            assert run.error["code"] == "TIMEOUT"
        assert engine.executor.status()["abandonedThreads"] == 8
        # Past the bound, a timed node fails fast (retryable) instead of adding threads ...
        run = engine.run_until_blocked(engine.start("hangs").run_id)
        assert run.error["code"] == "HANDLER_THREADS_EXHAUSTED" and run.error["retryable"] is True
        assert "8 handler threads that timed out are still running (limit 8)" in caplog.text
        # ... and a handler without a timeout still runs at once (it never waits behind them).
        h = Flow("untimed")
        h.add_node("n", lambda ctx: ok({"ran": True}), entry=True)
        engine.register(h)
        assert engine.run_until_blocked(engine.start("untimed").run_id).status == "COMPLETED"
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while engine.executor.status()["abandonedThreads"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert engine.run_until_blocked(engine.start("healthy").run_id).status == "COMPLETED"


def test_an_async_handler_blocking_the_loop_is_logged_with_its_run_and_node(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    f = Flow("blocks")

    @f.node(entry=True)
    async def sleepy(ctx: Any) -> Any:
        time.sleep(1.6)  # blocking call inside async def: the mistake being caught
        return ok()

    caplog.set_level(logging.WARNING, logger="flowrt.execution")
    with Engine(f"sqlite:///{tmp_path / 'f.db'}", flows=[f]) as engine:
        engine.executor.watchdog.threshold = 0.5
        run = asyncio.run(engine.run_until_blocked_async(engine.start("blocks").run_id))
        assert run.status == "COMPLETED"
    message = next(r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage())
    assert f"run {run.run_id}: async handler of node sleepy" in message
    assert "test_failure_path.py:" in message and "asyncio.to_thread" in message


# --------------------------------------------------------------------------- idempotent start


def test_idempotent_start_returns_the_same_run_and_refuses_a_different_start(make_engine: Any) -> None:
    f = Flow("idem")
    f.add_node("a", lambda ctx: ok(), entry=True)
    engine = make_engine(f)
    first = engine.start("idem", input={"x": 1}, idempotency_key="order-1")
    assert not first.replayed
    engine.run_until_blocked(first.run_id)
    again = engine.start("idem", input={"x": 1}, idempotency_key="order-1")
    assert again.run_id == first.run_id and again.status == "COMPLETED"  # as it is now
    assert again.replayed and engine.get(first.run_id).replayed is False  # the answer's, not the run's
    with pytest.raises(IdempotencyConflict, match="order-1"):
        engine.start("idem", input={"x": 2}, idempotency_key="order-1")
    with pytest.raises(InvalidInput):
        engine.start("idem", idempotency_key="")
    assert engine.start("idem", input={"x": 1}, idempotency_key="order-2").run_id != first.run_id
    assert engine.storage.count_runs() == {"COMPLETED": 1, "RUNNING": 1}


def test_concurrent_starts_with_one_key_make_one_run(make_engine: Any) -> None:
    f = Flow("idem")
    f.add_node("a", lambda ctx: ok(), entry=True)
    engine = make_engine(f)
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        ids.append(engine.start("idem", input={"x": 1}, idempotency_key="same").run_id)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert sum(engine.storage.count_runs().values()) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_idempotent_start_over_http(db_url: str) -> None:
    f = Flow("idem")
    f.add_node("a", lambda ctx: ok(), entry=True)
    with thread_server(db_url, flows=[f], drive=False) as server:
        c = server.client
        body = {"flowId": "idem", "input": {"x": 1}}
        first = c.post("/v1/runs/start", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 200 and "idempotent-replayed" not in first.headers
        again = c.post("/v1/runs/start", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json()["runId"] == first.json()["runId"]
        assert again.headers["idempotent-replayed"] == "true"
        by_body = c.post("/v1/runs/start", json={**body, "idempotencyKey": "k1"})
        assert by_body.json()["runId"] == first.json()["runId"]
        conflict = c.post("/v1/runs/start", json={"flowId": "idem", "input": {"x": 2}}, headers={"Idempotency-Key": "k1"})
        assert conflict.status_code == 409 and conflict.json()["code"] == "IDEMPOTENCY_CONFLICT"
        both = c.post("/v1/runs/start", json={**body, "idempotencyKey": "k2"}, headers={"Idempotency-Key": "k3"})
        assert both.status_code == 400 and both.json()["code"] == "BAD_REQUEST"
        assert c.post("/v1/runs/start", json=body, headers={"Idempotency-Key": "x" * 201}).status_code == 400
        assert len(c.get("/v1/runs").json()["runs"]) == 1


# --------------------------------------------------------------------------- limits


def test_values_over_the_size_limit_are_refused_and_nothing_is_stored(make_engine: Any) -> None:
    f = Flow("big")

    @f.node(entry=True)
    def big(ctx: Any) -> Any:
        return ok("x" * ctx.input["size"])

    engine = make_engine(f, max_value_bytes=1000)
    run = engine.run_until_blocked(engine.start("big", input={"size": 5000}).run_id)
    assert run.status == "FAILED" and run.error["code"] == "VALUE_TOO_LARGE" and run.outputs == {}
    assert "over the limit of 1000" in run.error["message"]
    assert engine.run_until_blocked(engine.start("big", input={"size": 10}).run_id).status == "COMPLETED"
    with pytest.raises(PayloadTooLarge):
        engine.start("big", input={"size": 1, "pad": "y" * 2000})


# --------------------------------------------------------------------------- commits while the database is away


class FlakyStorage(Storage):
    """Fails the next ``fail_commits`` step commits as the database being away would,
    optionally after the transaction landed (an answer lost on the way back)."""

    fail_commits = 0
    landed_then_lost = False
    _lose_answer = False

    def step_write(self, row: Any, epoch: int, events: Any, idempotency: Any = None, **options: Any) -> Any:
        real = super().step_write(row, epoch, events, idempotency, **options)

        def apply(cursor: Any) -> Any:
            if self.fail_commits <= 0:
                return real(cursor)
            self.fail_commits -= 1
            if not self.landed_then_lost:
                raise StorageUnavailable("database unavailable: connection lost")  # refused: rolled back
            self._lose_answer = True  # written; the answer is lost after COMMIT (see _write)
            return real(cursor)

        return apply

    @contextlib.contextmanager
    def _write(self, **kwargs: Any) -> Iterator[Any]:
        with super()._write(**kwargs) as cursor:
            yield cursor
        if self._lose_answer:
            self._lose_answer = False
            raise StorageUnavailable("database unavailable: connection lost after COMMIT")


@pytest.mark.parametrize("landed", [False, True], ids=["refused", "landed-answer-lost"])
def test_a_step_whose_commit_fails_keeps_its_result_and_commits_once(tmp_path: Any, landed: bool) -> None:
    calls = []
    f = Flow("outage")

    @f.node(entry=True)
    def once(ctx: Any) -> Any:
        calls.append(ctx.attempt)
        return ok({"done": True})

    storage = FlakyStorage(f"sqlite:///{tmp_path / 'f.db'}")
    storage.fail_commits, storage.landed_then_lost = 4, landed
    with Engine(storage=storage, flows=[f]) as engine:
        run = engine.run_until_blocked(engine.start("outage").run_id)
        assert run.status == "COMPLETED" and run.outputs == {"once": {"done": True}}
        assert calls == [1]  # the handler ran once; only its commit was tried again
        types = [e.type for e in engine.timeline(run.run_id)]
        assert types == ["RUN_STARTED", "NODE_STARTED", "NODE_FINISHED", "RUN_COMPLETED"]


# --------------------------------------------------------------------------- drivers


def test_a_driver_that_dies_anyway_is_replaced_and_runs_go_on(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing a handler does can kill a driver now; a bug in flowrt still might. Fault injected:
    the first claim raises SystemExit, as an escaped BaseException would."""
    from flowrt.driver import Drivers

    f = Flow("driven")
    f.add_node("a", lambda ctx: ok({"done": True}), entry=True)
    with Engine(f"sqlite:///{tmp_path / 'f.db'}", flows=[f]) as engine:
        real = engine.drive_next
        calls = {"n": 0}

        def flaky(**kwargs: Any) -> bool:
            calls["n"] += 1
            if calls["n"] == 1:
                raise SystemExit("escaped")
            return real(**kwargs)

        engine.drive_next = flaky  # type: ignore[method-assign]
        drivers = Drivers(engine, workers=2, poll_interval=0.05).start()
        try:
            run_id = engine.start("driven").run_id
            deadline = time.monotonic() + 20
            while engine.get(run_id).status != "COMPLETED":  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.05)
            while drivers.alive() < 2:  # the replacement starts after a short pause
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert drivers.replaced == 1
            assert "driver 0 died; replacing it" in caplog.text or "driver 1 died; replacing it" in caplog.text
        finally:
            drivers.stop(5)


def test_a_handlers_traceback_is_logged_with_its_run_and_node(make_engine: Any, caplog: pytest.LogCaptureFixture) -> None:
    f = Flow("logs")

    @f.node(entry=True)
    def explode(ctx: Any) -> Any:
        raise ValueError("bad row 7")

    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("logs").run_id)
    record = next(r for r in caplog.records if "raised ValueError" in r.getMessage())
    assert f"run {run.run_id}: node explode raised ValueError: bad row 7" in record.getMessage()
    assert 'raise ValueError("bad row 7")' in record.getMessage()


class AwayStorage(Storage):
    """The database away for ``seconds`` from :meth:`go_away`: step commits and lease renewals
    fail as they would (other statements work, so this process's own drivers keep claiming)."""

    away_until = 0.0

    def go_away(self, seconds: float) -> None:
        self.away_until = time.monotonic() + seconds

    def _check(self) -> None:
        if time.monotonic() < self.away_until:
            raise StorageUnavailable("database unavailable: connection lost")

    def step_write(self, row: Any, epoch: int, events: Any, idempotency: Any = None, **options: Any) -> Any:
        real = super().step_write(row, epoch, events, idempotency, **options)

        def apply(cursor: Any) -> Any:
            self._check()
            return real(cursor)

        return apply

    def renew(self, owner: str, run_ids: Any, ttl_ms: int) -> None:
        self._check()
        super().renew(owner, run_ids, ttl_ms)


def test_an_outage_longer_than_the_lease_does_not_make_this_process_take_over_its_own_step(tmp_path: Any) -> None:
    """While a commit waits for the database, the lease runs out; this process's own drivers
    must not take the run over (a WORKER_LOST, the result thrown away, the handler run twice)."""
    from flowrt.driver import Drivers

    calls: list[int] = []
    f = Flow("long-outage")

    @f.node(entry=True)
    def once(ctx: Any) -> Any:
        calls.append(ctx.attempt)
        ctx.services["storage"].go_away(1.5)  # the database goes away as the handler returns
        return ok({"done": True})

    storage = AwayStorage(f"sqlite:///{tmp_path / 'f.db'}")
    with Engine(storage=storage, flows=[f], lease_ttl=0.3, services={"storage": storage}) as engine:
        drivers = Drivers(engine, workers=2, poll_interval=0.05).start()
        try:
            run_id = engine.start("long-outage").run_id
            deadline = time.monotonic() + 20
            while engine.get(run_id).status == "RUNNING":  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            drivers.stop(5)
        run = engine.get(run_id)
        assert run is not None and run.status == "COMPLETED" and calls == [1], (run, calls)
        assert [e.type for e in engine.timeline(run_id) if e.type == "NODE_FAILED"] == []


def test_a_ctrl_c_landing_in_a_key_function_is_a_stop_not_its_failure(make_engine: Any) -> None:
    """The CLI's Ctrl-C (CtrlC) may land in any user code of a step, not only the handler."""
    from flowrt.execution import CtrlC

    f = Flow("keyed")

    @f.node(entry=True, idempotency_key=lambda ctx: (_ for _ in ()).throw(CtrlC()))
    def a(ctx: Any) -> Any:
        return ok()

    engine = make_engine(f)
    run_id = engine.start("keyed").run_id
    with pytest.raises(KeyboardInterrupt):
        engine.run_until_blocked(run_id)
    assert engine.get(run_id).status == "RUNNING"  # type: ignore[union-attr]
    assert not [e for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
