"""Postgres steps taken from an event loop (the server's): the hot statements go on the
loop's own async connections (flowrt.loop_connections), everything else to a database thread.

What is asserted is counted or forced: which threads ran, which connections exist, a hand-back
held behind a busy database thread, a commit held by a row lock. Waits are deadlines on clocks,
so a slow, loaded machine takes longer but means the same.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from flowrt import Engine, Flow, Retry, fail, ok, wait
from flowrt.errors import StorageUnavailable

from conftest import PG_URL
from loop_watch import Heartbeat


def _flow(calls: list[str], trouble: Any = None) -> Flow:
    """n0 -> n1 (waits for a resume) -> n2, async handlers; ``trouble(ctx)`` runs in n0 first."""
    flow = Flow("pgl")

    @flow.node(entry=True)
    async def n0(ctx: Any) -> Any:
        calls.append("n0")
        if trouble is not None:
            trouble(ctx)
        return ok({"n": 0})

    @flow.node
    async def n1(ctx: Any) -> Any:
        calls.append("n1")
        if ctx.resume_payload is None:
            return wait("approval")
        return ok({"n": 1})

    @flow.node
    async def n2(ctx: Any) -> Any:
        calls.append("n2")
        return ok({"n": 2})

    flow.edge("n0", "n1").edge("n1", "n2")
    return flow


def _loop_backends(engine: Engine) -> list[int]:
    """The Postgres backend pids of the loop connections this engine keeps idle."""
    connections = engine.runner.loop_connections
    assert connections is not None
    return [c.info.backend_pid for pool in connections._pools.values() for c, _, _ in pool.idle]


def _terminate(pids: list[int]) -> None:
    """Postgres closes these backends' connections; returns once they are gone."""
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    _gone(pids, "a terminated backend lived on")


def _gone(pids: list[int], what: str) -> None:
    """Wait (a deadline, not a pace) until none of these backends is left."""
    deadline = time.monotonic() + 20
    while True:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone()
        assert row is not None
        if not row[0]:
            return
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_requests_steps_on_postgres_use_no_database_thread(pg_url: str) -> None:
    """A start, claims by id (a tick of a run nobody holds, a resume), the read of a parked
    run, one-statement commits and a GET's read: all on the loop's connections; no database
    thread starts."""
    calls: list[str] = []
    with Engine(pg_url, flows=[_flow(calls)]) as engine:
        on_the_loop: list[str] = []  # the storage's own (thread) connections used from the loop

        def watched(method: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    asyncio.get_running_loop()
                    on_the_loop.append(method.__name__)
                except RuntimeError:
                    pass
                return method(*args, **kwargs)

            return call

        engine.storage._read = watched(engine.storage._read)  # type: ignore[method-assign]
        engine.storage._write = watched(engine.storage._write)  # type: ignore[method-assign]

        async def main() -> Any:
            run, _ = await engine.start_async("pgl")  # no lease kept: the tick claims
            run = await engine.tick_async(run.run_id)  # claimed by id; n0, parked
            run = await engine.tick_async(run.run_id)  # the parked run read back; n1 waits
            assert run.status == "WAITING"
            run = await engine.resume_async(run.run_id, {"ok": True})  # claimed by id; n1 again
            run = await engine.tick_async(run.run_id)  # n2
            read = await engine.get_async(run.run_id)  # a GET's read (and a long-poll's, an SSE follow's)
            assert read is not None and read.status == run.status
            return run

        writes = engine.storage.writer.writes
        run = asyncio.run(main())
        assert (run.status, calls) == ("COMPLETED", ["n0", "n1", "n1", "n2"])
        assert engine.runner._db_threads is None  # noqa: SLF001 - no database thread was ever needed
        assert on_the_loop == []  # nor a blocking call on the loop instead
        assert _loop_backends(engine)  # the loop's own connections did the work
        assert engine.storage.writer.writes - writes == 6  # the start, the resume, four steps: counted
        types = [e.type for e in engine.timeline(run.run_id)]
        assert types.count("NODE_FINISHED") == 4 and types[-1] == "RUN_COMPLETED", types


def test_a_connection_postgres_drops_during_a_step_costs_a_retry_not_the_step(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop's connections are killed while a handler runs: the step's commit fails on a
    dead one, is tried again (in a thread: a retry is not one statement) and lands once; the
    next request's read finds only new connections."""
    calls: list[str] = []
    engine: Engine | None = None

    def kill_the_loop_connections(ctx: Any) -> None:
        assert engine is not None
        pids = _loop_backends(engine)
        assert pids, "the start and the read came through the loop's connections"
        _terminate(pids)

    with Engine(pg_url, flows=[_flow(calls, kill_the_loop_connections)]) as engine:

        async def main() -> Any:
            run, _ = await engine.start_async("pgl", keep_lease=True)
            run = await engine.tick_async(run.run_id)
            assert run.current_node_id == "n1", run
            return await engine.tick_async(run.run_id)  # the loop reconnects

        run = asyncio.run(main())
        assert run.status == "WAITING"
        assert calls == ["n0", "n1"]  # n0 ran once: its result was kept through the failed commit
        types = [e.type for e in engine.timeline(run.run_id)]
        assert types == ["RUN_STARTED", "NODE_STARTED", "NODE_FINISHED", "NODE_STARTED", "NODE_FINISHED", "RUN_WAITING"]
        assert engine.storage.write_error is None  # the trouble is over, and /health says so
        logged = [r.getMessage() for r in caplog.records]
        assert any("committing a step of node n0 failed" in m for m in logged), logged  # it did fail
        assert any("committed after" in m for m in logged), logged


def test_a_read_on_a_connection_killed_while_idle_is_tried_again_on_a_new_one(pg_url: str) -> None:
    with Engine(pg_url, flows=[_flow([])]) as engine:

        async def main() -> Any:
            run, _ = await engine.start_async("pgl", keep_lease=True)
            pids = _loop_backends(engine)
            assert pids  # the start's commit went on the loop's connection: the one killed now
            _terminate(pids)
            return await engine.tick_async(run.run_id)  # the parked run's read: retried, not a 503

        assert asyncio.run(main()).current_node_id == "n1"


def test_a_write_after_a_quiet_while_does_not_fail_on_a_connection_the_server_closed(pg_url: str) -> None:
    """Connections the server closed while they sat idle (a restart, pg_terminate_backend) are
    noticed before a write is sent on them: a claim, which is never repeated, does not fail."""
    from flowrt import loop_connections

    with Engine(pg_url, flows=[_flow([])]) as engine:
        run_id = engine.start("pgl").run_id  # nobody holds it: the tick claims

        async def main() -> Any:
            await engine.get_async(run_id)  # opens a loop connection, left idle
            pids = _loop_backends(engine)
            assert pids
            _terminate(pids)
            await asyncio.sleep(loop_connections.CHECK_AFTER * 1.2)
            return await engine.tick_async(run_id)  # the claim: on a new connection

        assert asyncio.run(main()).current_node_id == "n1"


def test_a_database_that_is_away_is_storage_unavailable_on_the_loop(pg_url: str) -> None:
    """Connecting fails (a port nobody listens on): a clear StorageUnavailable, as from a thread."""
    with Engine(pg_url, flows=[_flow([])]) as engine:
        run_id = engine.start("pgl").run_id
        good = engine.storage.db.database
        dead = good.replace("127.0.0.1:5432", "127.0.0.1:1")
        if dead == good:
            pytest.skip("the test database is not at 127.0.0.1:5432")
        engine.storage.db.database = dead  # what the loop's next connection dials
        try:
            with pytest.raises(StorageUnavailable, match="unavailable"):
                asyncio.run(engine.tick_async(run_id))
        finally:
            engine.storage.db.database = good
        assert asyncio.run(engine.tick_async(run_id)).current_node_id == "n1"  # and back


def test_a_hand_back_asked_for_on_the_loop_is_written_in_a_thread_and_answered_after_it(pg_url: str) -> None:
    """On Postgres the loop waits for no database call of a thread: a tick that leaves its run
    in a long backoff hands the lease back from a database thread, and answers once that has
    landed (another process may take the run next). Meanwhile the loop goes on, and another
    tick of the run waits for the hand-back, then claims it: never RUN_BUSY."""
    flow = Flow("backoff")

    @flow.node(entry=True, retry=Retry(max_attempts=3, base_delay_ms=60_000))
    async def flaky(ctx: Any) -> Any:
        return fail("RATE_LIMIT", "try later", retryable=True)

    with Engine(pg_url, flows=[flow], pool_size=1) as engine:
        run_id = engine.start("backoff").run_id
        busy = threading.Event()
        go_on = threading.Event()

        def hold_the_thread() -> None:
            busy.set()
            go_on.wait(20)

        engine.runner.db_pool().submit(hold_the_thread)  # the only database thread: busy
        assert busy.wait(10)

        async def scenario() -> tuple[Any, Any, float]:
            heartbeat = Heartbeat().start()
            first = asyncio.ensure_future(engine.tick_async(run_id))  # fails, parked for 60 s
            deadline = time.monotonic() + 20
            while not engine.leases.returning(run_id):  # its hand-back: queued behind the busy thread
                assert time.monotonic() < deadline and not first.done(), first
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(engine.tick_async(run_id))  # waits for the hand-back
            await asyncio.sleep(1.0)
            assert not first.done() and not second.done()  # no answer before the lease is back
            go_on.set()
            ran = await first
            assert not engine.leases.returning(run_id) or second.done()
            took = await second
            return ran, took, heartbeat.stop()

        first, second, longest_gap = asyncio.run(scenario())
        assert first.status == second.status == "RUNNING" and second.wake_at is not None
        assert longest_gap < 0.5  # the loop was never held for the hand-back (it took over 1 s)
        assert engine.storage.get_run(run_id).lease_owner is None  # type: ignore[union-attr]
        assert [e.type for e in engine.timeline(run_id)].count("NODE_FAILED") == 1


def test_closing_the_engine_closes_the_loops_connections(pg_url: str) -> None:
    engine = Engine(pg_url, flows=[_flow([])])
    try:
        asyncio.run(engine.start_async("pgl"))
        pids = _loop_backends(engine)
        assert pids
    finally:
        engine.close()
    _gone(pids, "a loop connection outlived its engine")


async def _locked_then_cut_off(engine: Engine, pg_url: str, run_id: str, statement: str) -> None:
    """Tick ``run_id`` while a transaction holds its row, so that ``statement`` waits in
    Postgres for the lock; cut the request off there, then let the statement land, and wait
    (on the same loop: the cut-off request's work goes on there) until the run is free."""

    def waits_for_the_lock() -> bool:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                (f"%{statement}%",),
            ).fetchone()
        return bool(row and row[0])

    before = engine.storage.get_run(run_id)
    assert before is not None
    locker = psycopg.connect(pg_url)  # a transaction holding the run's row
    try:
        locker.execute("SELECT 1 FROM flowrt_runs WHERE run_id = %s FOR UPDATE", (run_id,))
        tick = asyncio.ensure_future(engine.tick_async(run_id))
        deadline = time.monotonic() + 20
        while not await asyncio.to_thread(waits_for_the_lock):
            assert time.monotonic() < deadline, f"{statement!r} never reached the lock"
            assert not tick.done(), tick
            await asyncio.sleep(0.02)
        tick.cancel()
        done, _ = await asyncio.wait([tick], timeout=10)
        assert tick in done and tick.cancelled(), "the request did not end when cut off"
    finally:
        locker.rollback()  # the statement goes on, and lands
        locker.close()
    deadline = time.monotonic() + 20
    while True:  # the statement landed (a claim moves the epoch, a commit the last seq), then the lease went back
        now = await asyncio.to_thread(engine.storage.get_run, run_id)
        assert now is not None
        if (now.lease_epoch, now.last_seq) != (before.lease_epoch, before.last_seq) and now.lease_owner is None:
            break
        assert time.monotonic() < deadline, f"the run stayed held after its cut-off request: {now}"
        await asyncio.sleep(0.02)


def test_a_request_cut_off_during_its_commit_hands_the_lease_back_only_once_the_commit_landed(pg_url: str) -> None:
    """Shutdown cancels the requests still running. One cut off while its commit waits in
    Postgres (here for a row lock) lets the commit finish before its step is closed, so the
    lease goes back after the commit, not before it (where the commit would take it again,
    leaving the run held by nobody until the lease ran out)."""
    calls: list[str] = []
    with Engine(pg_url, flows=[_flow(calls)], lease_ttl=120) as engine:
        async def scenario() -> Any:
            run_id = (await engine.start_async("pgl", keep_lease=True))[0].run_id
            await _locked_then_cut_off(engine, pg_url, run_id, "INSERT INTO flowrt_events")
            return await engine.tick_async(run_id)  # free: claimed, n1 runs

        run = asyncio.run(scenario())
        run_id = run.run_id
        assert run.status == "WAITING" and calls == ["n0", "n1"]
        types = [e.type for e in engine.timeline(run_id)]
        assert types.count("NODE_FINISHED") == 2 and "NODE_FAILED" not in types, types  # landed once, no lost worker


def test_a_claim_that_lands_after_its_request_was_cut_off_is_handed_back(pg_url: str) -> None:
    """The claim finishes (shielded) but its step never sees the row: the lease it took is
    handed back anyway, instead of being held by nobody until it runs out."""
    calls: list[str] = []
    with Engine(pg_url, flows=[_flow(calls)], lease_ttl=120) as engine:
        run_id = engine.start("pgl").run_id  # no lease kept: the tick claims

        async def scenario() -> Any:
            await _locked_then_cut_off(engine, pg_url, run_id, "UPDATE flowrt_runs SET lease_owner")
            assert calls == []  # cut off before its node ran
            return await engine.tick_async(run_id)

        run = asyncio.run(scenario())
        assert run.current_node_id == "n1" and calls == ["n0"]
        assert "NODE_FAILED" not in [e.type for e in engine.timeline(run_id)]  # no lost worker recorded
