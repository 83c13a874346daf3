"""Startup recovery's pace and its count: every runnable run is driven at once, by as many
workers as it has, each run counted once; a server's drivers work beside it and stop first at
shutdown; and the wakes that claims ahead send the drivers stay bounded."""

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


def test_a_shutdown_during_startup_recovery_stops_the_drivers_claiming_at_once(tmp_path: Any) -> None:
    """The drivers work beside recovery, so a shutdown must stop them first: not only once the
    recovery worker's (here longer) step is done, while they go on starting new nodes."""
    started: list[tuple[float, str]] = []
    flow = Flow("backlog", "1.0.0")

    def step(ctx: Context) -> Any:
        thread = threading.current_thread().name
        started.append((time.monotonic(), thread))
        time.sleep(1.5 if thread.startswith("flowrt-recover") else 0.2)
        return ok()

    flow.add_node("only", step, entry=True)
    settings = Settings.resolve(flows=[flow], database_url=f"sqlite:///{tmp_path / 'flowrt.db'}", port=0)
    settings.recovery_concurrency, settings.workers = 1, 2
    runtime = FlowRuntime(settings)
    for _ in range(30):
        runtime.engine.start("backlog")
    runtime.start()
    deadline = time.monotonic() + 20
    while not any(name.startswith("flowrt-recover") for _, name in started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(name.startswith("flowrt-recover") for _, name in started), started
    closing = time.monotonic()
    runtime.close(timeout=20)
    late = [(round(at - closing, 3), name) for at, name in started if at > closing + 0.05]
    assert late == [], f"nodes started after the shutdown began: {late}"


def test_the_wakes_of_claims_ahead_do_not_pile_up_into_empty_claims_once_the_work_is_done(make_engine: Any) -> None:
    """Each claim ahead wakes an idle driver; under load nobody is idle, and wakes counted up
    meanwhile must not send the drivers on one empty claim each once the backlog is gone."""
    from flowrt.driver import Drivers

    flow = Flow("many", "1.0.0")
    flow.add_node("only", lambda ctx: ok(), entry=True)
    engine = make_engine(flow)
    run_ids = [engine.start("many").run_id for _ in range(300)]
    empty = 0
    real = engine.storage.claim_next

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal empty
        row = real(*args, **kwargs)
        empty += row is None
        return row

    engine.storage.claim_next = counted
    drivers = Drivers(engine, workers=4, poll_interval=0.25).start()
    try:
        deadline = time.monotonic() + 60
        while engine.get(run_ids[-1]).status != "COMPLETED" or len(engine.list_runs(status="COMPLETED", limit=500)[0]) < 300:
            assert time.monotonic() < deadline, "the drivers never finished the backlog"
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        drivers.stop()
    assert empty <= 4 * 2 * (1.5 / 0.25 + 2), empty  # each idle driver: two probes a poll, and a wake or two


def test_runs_not_due_yet_are_not_counted_as_found(make_engine: Any, caplog: Any) -> None:
    """A run in a retry backoff is RUNNING but not runnable before its wakeAt: recovery's
    "found" is what it could drive now, and the log says how many are due later."""
    import logging  # noqa: PLC0415

    flow = Flow("backs-off", "1.0.0")
    flow.add_node("call", lambda ctx: fail("NETWORK_ERROR", "down"), entry=True, retry=Retry(max_attempts=3, base_delay_ms=60_000))
    engine = make_engine(flow)
    later = engine.tick(engine.start("backs-off").run_id)
    assert later.status == "RUNNING" and later.wake_at is not None
    with caplog.at_level(logging.INFO, logger="flowrt.driver"):
        report = recover(engine)
    assert (report.found, report.driven) == (0, 0)
    assert "recovery: 0 runnable run(s) found, 0 driven in" in caplog.text
    assert "(1 more due later: timers or retry backoffs)" in caplog.text
