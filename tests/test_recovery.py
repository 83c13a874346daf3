"""Startup recovery's pace and its count: every runnable run is driven at once, by as many
workers as it has, each run counted once; and a server's drivers work beside it."""

from __future__ import annotations

import threading
import time
from typing import Any

from flowrt import Context, Flow, Retry, fail, ok
from flowrt.driver import recover
from flowrt.server.runtime import FlowRuntime, Settings


def test_recovery_drives_its_runs_side_by_side_not_one_behind_another(make_engine: Any) -> None:
    """Each run's node waits for the other two to be running too: a run left parked behind
    another one's long step (a claim ahead that no idle worker took) breaks the barrier."""
    together = threading.Barrier(3, timeout=15)
    flow = Flow("together", "1.0.0")
    flow.add_node("meet", lambda ctx: ok({"met": together.wait() >= 0}), entry=True, retry=Retry(max_attempts=1))
    engine = make_engine(flow)
    run_ids = [engine.start("together").run_id for _ in range(3)]
    for run_id in run_ids:  # as a process killed inside the node leaves them
        assert engine.storage.claim(run_id, "gone-host:4242:abc123", 1) is not None
    time.sleep(0.01)
    report = recover(engine, concurrency=4)
    assert [engine.get(run_id).status for run_id in run_ids] == ["COMPLETED"] * 3
    assert (report.found, report.driven) == (3, 3)


def test_a_run_handed_back_in_a_backoff_and_driven_again_is_counted_once(make_engine: Any) -> None:
    """A server's recovery waits out no backoff: the flaky run goes back RUNNING, and a worker
    that has nothing else to do (the other one is busy with the long run) drives it again."""
    flow = Flow("flaky-once", "1.0.0")

    def call(ctx: Context) -> Any:
        return fail("NETWORK_ERROR", "the first attempt fails") if ctx.attempt == 1 else ok()

    flow.add_node("call", call, entry=True, retry=Retry(max_attempts=2, base_delay_ms=300))
    long = Flow("long", "1.0.0")

    def until_flaky_done(ctx: Context) -> Any:
        deadline = time.monotonic() + 15
        while engine.get(flaky).status != "COMPLETED" and time.monotonic() < deadline:
            time.sleep(0.02)
        return ok()

    long.add_node("wait", until_flaky_done, entry=True, retry=Retry(max_attempts=1))
    engine = make_engine(flow, long)
    waiting = engine.start("long").run_id  # the oldest: the first worker takes it
    flaky = engine.start("flaky-once").run_id
    report = recover(engine, concurrency=2, max_sleep=0)
    assert engine.get(flaky).attempts == {"call": 2} and engine.get(flaky).status == "COMPLETED"
    assert engine.get(waiting).status == "COMPLETED"
    assert (report.found, report.driven) == (2, 2)


def test_a_servers_drivers_move_new_runs_while_startup_recovery_is_still_busy(tmp_path: Any) -> None:
    """A backlog that keeps recovery busy for minutes must not hold up a run started now."""
    release = threading.Event()
    slow = Flow("backlog", "1.0.0")
    slow.add_node("long", lambda ctx: ok({"released": release.wait(60)}), entry=True)
    quick = Flow("quick", "1.0.0")
    quick.add_node("only", lambda ctx: ok(), entry=True)
    url = f"sqlite:///{tmp_path / 'flowrt.db'}"
    settings = Settings.resolve(flows=[slow, quick], database_url=url, port=0)
    settings.recovery_concurrency = 1
    settings.workers = 3  # the backlog keeps two threads busy, recovery's or the drivers'
    runtime = FlowRuntime(settings)
    try:
        for _ in range(2):
            runtime.engine.start("backlog")
        runtime.start()
        deadline = time.monotonic() + 20
        while not runtime.engine.steps_in_flight() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runtime.engine.steps_in_flight(), "recovery never started the backlog"
        started = runtime.engine.start("quick", keep_lease="drivers").run_id
        runtime.engine.wake_drivers()
        while runtime.engine.get(started).status != "COMPLETED" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runtime.engine.get(started).status == "COMPLETED", "the new run waited for recovery"
    finally:
        release.set()
        runtime.close(timeout=20)
