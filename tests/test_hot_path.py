"""The hot path: one write transaction per step (parked leases) and group commit.

Counted, not timed: transactions are counted by the storage, batches by the group writer,
and batching is forced deterministically by holding the writer's flush lock while the
writes queue up, so these tests mean the same on a slow, loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from flowrt import Engine, Flow, ok
from flowrt.errors import RunBusy
from flowrt.schema import RUN_COLUMNS, run_values
from flowrt.storage import LeaseLost
from loop_watch import Heartbeat


def linear(nodes: int = 3, calls: list[str] | None = None) -> Flow:
    flow = Flow("lin")

    def handler(ctx: Any) -> Any:
        if calls is not None:
            calls.append(f"{ctx.run_id}:{ctx.node_id}")
        return ok({"n": ctx.node_id}, {"seen": {ctx.node_id: True}})

    for i in range(nodes):
        flow.add_node(f"n{i}", handler, entry=i == 0)
        if i:
            flow.edge(f"n{i - 1}", f"n{i}")
    return flow


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --------------------------------------------------------------------------- one write per step


def test_ticking_a_run_started_here_costs_one_write_transaction_per_step(make_engine: Any) -> None:
    engine = make_engine(linear(5))
    run = engine.start("lin", keep_lease=True)
    before = engine.storage.write_transactions
    steps = 0
    while run.status == "RUNNING":
        run = engine.tick(run.run_id)
        steps += 1
    assert run.status == "COMPLETED" and steps == 5
    assert engine.storage.write_transactions - before == 5  # no claims: each commit kept the lease
    assert engine.storage.get_run(run.run_id).lease_owner is None  # the last step handed it back
    assert engine.leases.parked() == 0


def test_a_tick_after_a_tick_needs_no_claim_but_a_tick_of_a_run_started_elsewhere_claims(make_engine: Any) -> None:
    engine = make_engine(linear(3))
    run_id = engine.start("lin").run_id  # not kept: the first tick claims
    before = engine.storage.write_transactions
    engine.tick(run_id)
    assert engine.storage.write_transactions - before == 2  # claim + commit
    engine.tick(run_id)
    assert engine.storage.write_transactions - before == 3  # commit only


def test_a_step_that_keeps_the_runs_status_and_timer_leaves_the_indexed_columns_alone(sqlite_url: str) -> None:
    """SQLite rewrites the index entries of every column an UPDATE sets: a run going on to its
    next node sets neither status nor wake_at; the step that ends it sets both."""
    with Engine(sqlite_url, flows=[linear(3)]) as engine:
        updates: list[str] = []
        run_id = engine.start("lin", keep_lease=True).run_id
        engine.storage.db.connection().set_trace_callback(
            lambda sql: updates.append(sql) if sql.startswith("UPDATE flowrt_runs SET") and "current_node_id" in sql else None
        )
        while engine.tick(run_id).status == "RUNNING":
            pass
        engine.storage.db.connection().set_trace_callback(None)
        assert len(updates) == 3
        assert [" status = " in sql or "SET status = " in sql for sql in updates] == [False, False, True]
        assert [" wake_at = " in sql for sql in updates] == [False, False, True]
        run = engine.get(run_id)
        assert run is not None and run.status == "COMPLETED" and run.current_node_id is None
        assert engine.list_runs(status="COMPLETED")[0][0].run_id == run_id  # its index entry moved
        assert engine.list_runs(status="RUNNING")[0] == []


def test_nulls_and_statuses_bind_through_registered_adapters_and_are_stored_as_before(sqlite_url: str) -> None:
    """The sqlite3 module binds only exact str/int/float directly; None and StrEnum members go
    through its adapters (flowrt.database registers the two: otherwise each costs a formatted
    AttributeError). What is stored must be what it was: NULL, and the status as plain text."""
    import sqlite3

    from flowrt.runs import EventType, RunStatus

    assert {(type(None), sqlite3.PrepareProtocol), (RunStatus, sqlite3.PrepareProtocol)} <= set(sqlite3.adapters)
    with Engine(sqlite_url, flows=[linear(2)]) as engine:
        run_id = engine.start("lin", keep_lease=True).run_id
        engine.tick(run_id)
        conn = engine.storage.db.connection()
        status, tenant = conn.execute(
            "SELECT typeof(status) || ':' || status, typeof(tenant_id) FROM flowrt_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        assert (status, tenant) == ("text:RUNNING", "null")
        types = conn.execute("SELECT DISTINCT typeof(type), typeof(node_id) FROM flowrt_events WHERE seq = 1").fetchall()
        assert types == [("text", "null")]
        # A user's own sqlite3 use sees the same values bound.
        mine = sqlite3.connect(":memory:")
        assert mine.execute("SELECT ?, typeof(?), ?", (RunStatus.WAITING, None, EventType.RUN_STARTED)).fetchone() == (
            "WAITING", "null", "RUN_STARTED",
        )  # fmt: skip


def test_run_until_blocked_from_a_kept_lease_writes_only_its_steps(make_engine: Any) -> None:
    engine = make_engine(linear(4))
    run = engine.start("lin", keep_lease=True)
    before = engine.storage.write_transactions
    assert engine.run_until_blocked(run.run_id).status == "COMPLETED"
    assert engine.storage.write_transactions - before == 4


def test_a_parked_lease_is_handed_back_soon_and_another_process_may_then_step_the_run(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear(3)]) as here, Engine(sqlite_url, flows=[linear(3)]) as there:
        here.leases.park_seconds = 0.3
        run_id = here.start("lin", keep_lease=True).run_id
        here.tick(run_id)  # parked here again after its step
        with pytest.raises(RunBusy):
            there.tick(run_id)  # held here: never two executors
        wait_until(lambda: here.leases.parked() == 0)
        assert here.storage.get_run(run_id).lease_owner is None
        assert there.tick(run_id).current_node_id == "n2"
        types = [e.type for e in there.timeline(run_id)]
        assert "NODE_FAILED" not in types  # a handed-back lease is no lost worker


def _hand_back_held(engine: Engine, *, then_fail: bool = False) -> tuple[str, threading.Event]:
    """A run ticked once, parked, and its hand-back's write now held until the event is set;
    then it goes through or, ``then_fail``, fails as if the database were away (later hand-backs
    go through)."""
    from flowrt.errors import StorageUnavailable

    engine.leases.park_seconds = 0.2
    entered, go_on = threading.Event(), threading.Event()
    release_many = engine.storage.release_many
    calls: list[int] = []

    def held_release_many(leases: Any) -> None:
        calls.append(len(leases))
        if len(calls) == 1:
            entered.set()
            assert go_on.wait(20)
            if then_fail:
                raise StorageUnavailable("database unavailable: gone for a moment")
        release_many(leases)

    engine.storage.release_many = held_release_many  # type: ignore[method-assign]
    idle = engine.start("lin", keep_lease=True).run_id
    engine.tick(idle)  # parked; handed back soon, and that write is held
    assert entered.wait(20)
    return idle, go_on


def test_handing_back_idle_leases_holds_up_no_other_runs_step(sqlite_url: str) -> None:
    """The hand-back writes outside the leases' lock: while it is stuck on the database, other
    runs step on, and a tick of a run being handed back waits for it and claims afresh."""
    with Engine(sqlite_url, flows=[linear(3)]) as engine:
        idle, go_on = _hand_back_held(engine)
        busy = engine.start("lin", keep_lease=True).run_id
        started = time.monotonic()
        assert engine.tick(busy).current_node_id == "n1"  # not held up by the stuck write
        assert time.monotonic() - started < 5
        outcome: list[Any] = []
        waiter = threading.Thread(target=lambda: outcome.append(engine.tick(idle)))
        waiter.start()
        time.sleep(0.2)
        assert outcome == []  # it waits for its hand-back
        go_on.set()
        waiter.join(20)
        assert outcome and outcome[0].current_node_id == "n2"  # then claimed afresh: no RUN_BUSY


def test_a_tick_on_the_event_loop_waits_for_its_runs_hand_back_without_blocking_the_loop(sqlite_url: str) -> None:
    """The server's steps run on its event loop: a tick that must wait for its run's hand-back
    sleeps as a step sleeps, and the loop goes on serving (found in review)."""
    with Engine(sqlite_url, flows=[linear(3)]) as engine:
        idle, go_on = _hand_back_held(engine)

        async def scenario() -> tuple[Any, float]:
            heartbeat = Heartbeat().start()
            threading.Timer(1.5, go_on.set).start()  # the hand-back's write ends in 1.5 s
            run = await engine.tick_async(idle)
            return run, heartbeat.stop()

        run, longest_gap = asyncio.run(scenario())
        assert run.current_node_id == "n2"  # claimed afresh once handed back
        assert longest_gap < 0.75  # the loop was never held for the write (it took 1.5 s)


def test_closing_while_a_hand_back_is_written_still_hands_that_lease_back(sqlite_url: str) -> None:
    """Close does not wait for the renewer's hand-back: it releases those leases itself, so a
    hand-back whose write then fails loses none (found in review)."""
    engine = Engine(sqlite_url, flows=[linear(3)])
    run_id, go_on = _hand_back_held(engine, then_fail=True)  # the renewer's hand-back: held, then "away"
    threading.Timer(0.5, go_on.set).start()
    engine.close()
    go_on.set()
    with Engine(sqlite_url, flows=[linear(3)]) as there:
        assert there.storage.get_run(run_id).lease_owner is None  # handed back at close
        assert there.tick(run_id).current_node_id == "n2"
        assert "NODE_FAILED" not in [e.type for e in there.timeline(run_id)]  # no lost worker


def test_closing_hands_parked_leases_back_at_once(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear(2)]) as here:
        run_id = here.start("lin", keep_lease=True).run_id
        assert here.leases.parked() == 1
    with Engine(sqlite_url, flows=[linear(2)]) as there:
        assert there.run_until_blocked(run_id).status == "COMPLETED"
        assert [e.type for e in there.timeline(run_id)].count("NODE_FAILED") == 0


def test_a_cancel_from_another_process_is_seen_before_the_next_parked_step_runs(sqlite_url: str) -> None:
    calls: list[str] = []
    with Engine(sqlite_url, flows=[linear(3, calls)]) as here, Engine(sqlite_url, flows=[linear(3, calls)]) as there:
        run_id = here.start("lin", keep_lease=True).run_id
        here.tick(run_id)
        there.cancel(run_id, "changed my mind")
        run = here.tick(run_id)
        assert run.status == "CANCELLED"
        assert calls == [f"{run_id}:n0"]  # n1 never ran
        assert here.leases.parked() == 0


def _run_reads(engine: Engine) -> list[str]:
    """The reads of a run's row by id on this thread's SQLite connection, from now on."""
    reads: list[str] = []
    engine.storage.db.connection().set_trace_callback(
        lambda sql: reads.append(sql) if sql.startswith("SELECT run_id, flow_id") and "WHERE run_id" in sql else None
    )
    return reads


def test_a_parked_step_starts_from_the_row_its_commit_stored_when_nothing_else_wrote(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear(3)]) as engine:
        run_id = engine.start("lin", keep_lease=True).run_id
        reads = _run_reads(engine)
        while engine.tick(run_id).status == "RUNNING":
            parked = engine.leases._parked[run_id].row  # noqa: SLF001 - what the next step starts from
            stored = engine.storage.db.connection().execute(f"select {', '.join(RUN_COLUMNS)} from flowrt_runs where run_id = ?", (run_id,)).fetchone()  # fmt: skip
            assert run_values(parked) == stored  # the row kept is exactly the stored one
        assert reads == []  # three steps, no read: each started from the row the last commit stored
        run = engine.get(run_id)
        assert run is not None and run.status == "COMPLETED"
        assert run.outputs == {"n0": {"n": "n0"}, "n1": {"n": "n1"}, "n2": {"n": "n2"}}


def test_a_commit_by_another_connection_makes_the_next_parked_step_read_first(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear(3)]) as here, Engine(sqlite_url, flows=[linear(3)]) as there:
        run_id = here.start("lin", keep_lease=True).run_id
        reads = _run_reads(here)
        here.tick(run_id)
        assert reads == []
        there.start("lin")  # another run, another process: here cannot know what it changed
        here.tick(run_id)
        assert len(reads) == 1
        here.tick(run_id)
        assert len(reads) == 1  # and nothing since: from the stored row again


def test_a_recovered_run_records_its_lost_worker_once_across_parked_steps(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear(3)]) as engine:
        run_id = engine.start("lin").run_id
        engine.storage.db.execute_sql(  # held by a worker that died
            "UPDATE flowrt_runs SET lease_owner = 'gone:1:dead', lease_expires_at = 1, lease_epoch = 1 WHERE run_id = ?",
            (run_id,),
        )
        while engine.tick(run_id).status == "RUNNING":
            pass
        lost = [e for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
        assert [e.payload["error"]["code"] for e in lost] == ["WORKER_LOST"]
        assert engine.storage.get_run(run_id).stale_owner is None


@pytest.mark.parametrize("url_kind", ["sqlite", "memory"])
def test_a_cancel_here_just_after_a_parked_steps_commit_is_seen_before_the_next_step(sqlite_url: str, url_kind: str) -> None:
    """The server's cancel runs on the loop thread, the connection of the ticks' commits, so
    SQLite's data_version cannot see it: the park must not outlive it (found in review)."""
    calls: list[str] = []
    url = sqlite_url if url_kind == "sqlite" else "memory://"

    async def scenario(engine: Engine) -> None:
        run, _ = await engine.start_async("lin", keep_lease=True)
        run_id = run.run_id
        await engine.tick_async(run_id)
        writer = engine.storage.writer
        flush = writer._flush_on_loop  # noqa: SLF001 - the cancel lands between a commit and its step's end

        def flush_then_cancel(loop: Any) -> None:
            flush(loop)
            engine.cancel(run_id, "now")

        writer._flush_on_loop = flush_then_cancel  # type: ignore[method-assign]  # noqa: SLF001
        await engine.tick_async(run_id)  # n1 commits, then the cancel
        writer._flush_on_loop = flush  # type: ignore[method-assign]  # noqa: SLF001
        assert (await engine.tick_async(run_id)).status == "CANCELLED"
        assert engine.retry(run_id).current_node_id == "n2"
        assert (await engine.tick_async(run_id)).current_node_id == "n3"

    with Engine(url, flows=[linear(4, calls)]) as engine:
        asyncio.run(scenario(engine))
    assert [c.split(":")[1] for c in calls] == ["n0", "n1", "n2"]  # n2 ran once, after the retry


def test_drivers_take_parked_leases_only_when_offered(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear(3)]) as engine:
        run_id = engine.start("lin", keep_lease=True).run_id
        assert engine.drive_next() is False  # parked for its caller's next step, not for a driver
        engine.leases.offer_to_drivers(run_id)
        before = engine.storage.write_transactions
        assert engine.drive_next() is True
        assert engine.get(run_id).status == "COMPLETED"  # type: ignore[union-attr]
        assert engine.storage.write_transactions - before == 3  # no claim


def test_a_driver_claims_its_next_run_inside_the_current_runs_commit(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear(5)]) as engine:
        for _ in range(10):
            engine.start("lin")
        before = engine.storage.write_transactions
        while engine.drive_next():
            pass
        assert engine.storage.count_runs() == {"COMPLETED": 10}
        assert engine.storage.write_transactions - before == 1 + 50  # the first claim, then one per step


# --------------------------------------------------------------------------- group commit


def test_steps_of_many_runs_that_queue_up_commit_in_one_transaction(make_engine: Any) -> None:
    engine = make_engine(linear(2))
    writer = engine.storage.writer
    run_ids = [engine.start("lin", keep_lease=True).run_id for _ in range(6)]
    results: dict[str, str] = {}
    with writer.paused():  # every step queues behind the held flush
        threads = [
            threading.Thread(target=lambda r=r: results.__setitem__(r, engine.tick(r).current_node_id))
            for r in run_ids
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: writer.queued() == len(run_ids))
        before = writer.transactions
    for thread in threads:
        thread.join(20)
    assert writer.transactions - before == 1  # six steps, one transaction
    assert results == {r: "n1" for r in run_ids}
    for run_id in run_ids:
        events = engine.timeline(run_id)
        assert [e.type for e in events] == ["RUN_STARTED", "NODE_STARTED", "NODE_FINISHED"]


def test_a_batch_writes_its_unique_keys_in_one_order(make_engine: Any) -> None:
    """Two Postgres batches inserting the same idempotency keys in opposite orders would wait
    on each other (a deadlock): every batch writes keyed writes first, in key order."""
    engine = make_engine(linear(2))
    writer = engine.storage.writer
    order: list[str] = []

    def write(name: str, key: str | None = None) -> Any:
        def apply(cursor: Any) -> None:
            order.append(name)

        apply.lock_key = key  # type: ignore[attr-defined]
        return apply

    with writer.paused():
        for name, key in (("a", None), ("k3", "start:3"), ("b", None), ("k1", "start:1"), ("k2", "node:x")):
            writer.enqueue(write(name, key), lambda result, error: None)
    writer.write(write("last"))
    assert order == ["k2", "k1", "k3", "a", "b", "last"]
    # and the writes that carry keys name them: a start with a key, a step storing a node's result
    storage = engine.storage
    row = storage.get_run(engine.start("lin").run_id)
    assert row is not None
    assert storage.run_insert(row, [], ("key-1", "f")).lock_key == "start:key-1"  # type: ignore[attr-defined]
    assert storage.run_insert(row, []).lock_key is None  # type: ignore[attr-defined]
    idem = ("lin", "n0", "k", row.run_id, "{}", None, 0)
    assert storage.step_write(row, 0, [], idem).lock_key == "node:lin\x00n0\x00k"  # type: ignore[attr-defined]


def test_a_lost_lease_in_a_batch_writes_nothing_for_that_step_and_the_rest_commit(make_engine: Any) -> None:
    engine = make_engine(linear(2))
    storage = engine.storage
    good, lost = (storage.get_run(engine.start("lin").run_id) for _ in range(2))
    assert good is not None and lost is not None
    writes = []
    for row in (good, lost):
        new = row.evolve(status="COMPLETED", last_seq=row.last_seq + 1, updated_at=row.updated_at + 1)
        event = (row.run_id, new.last_seq, new.updated_at, "RUN_COMPLETED", None, None, "{}", None)
        writes.append(storage.step_write(new, row.lease_epoch + (row is lost), [event]))
    outcomes: list[Any] = [None, None]
    with storage.writer.paused():
        threads = [
            threading.Thread(target=lambda i=i: outcomes.__setitem__(i, storage.writer.write(writes[i])))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: storage.writer.queued() == 2)
    for thread in threads:
        thread.join(20)
    assert outcomes[0] is None and isinstance(outcomes[1], LeaseLost), outcomes
    assert storage.get_run(good.run_id).status == "COMPLETED"
    assert storage.get_run(lost.run_id).status == "RUNNING"
    assert [e[3] for e in storage.events(lost.run_id)] == ["RUN_STARTED"]


def test_a_write_that_raises_in_a_batch_is_retried_alone_and_takes_no_other_with_it(make_engine: Any) -> None:
    engine = make_engine(linear(2))
    storage = engine.storage
    row = storage.get_run(engine.start("lin").run_id)
    assert row is not None
    duplicate = (row.run_id, 1, 0, "RUN_STARTED", None, None, "{}", None)  # seq 1 is stored already
    bad = storage.step_write(row, row.lease_epoch, [duplicate])
    new = row.evolve(status="COMPLETED", last_seq=2)
    good = storage.step_write(new, row.lease_epoch, [(row.run_id, 2, 0, "RUN_COMPLETED", None, None, "{}", None)])
    outcomes: list[Any] = [None, None]

    def write(i: int, apply: Any) -> None:
        try:
            outcomes[i] = storage.writer.write(apply)
        except Exception as exc:  # noqa: BLE001 - the write's own error
            outcomes[i] = exc

    with storage.writer.paused():
        threads = [threading.Thread(target=write, args=(0, bad)), threading.Thread(target=write, args=(1, good))]
        for thread in threads:
            thread.start()
        wait_until(lambda: storage.writer.queued() == 2)
    for thread in threads:
        thread.join(20)
    assert isinstance(outcomes[0], Exception) and "UNIQUE" in str(outcomes[0]).upper() or "duplicate" in str(outcomes[0])
    assert outcomes[1] is None
    assert storage.get_run(row.run_id).status == "COMPLETED"
    assert [e[3] for e in storage.events(row.run_id)] == ["RUN_STARTED", "RUN_COMPLETED"]


def test_concurrent_requests_on_an_event_loop_share_transactions(make_engine: Any) -> None:
    engine = make_engine(linear(3))

    async def main() -> list[Any]:
        started = await asyncio.gather(*(engine.start_async("lin", keep_lease=True) for _ in range(20)))
        runs = [run for run, _ in started]
        for _ in range(3):
            runs = await asyncio.gather(*(engine.tick_async(run.run_id) for run in runs))
        return runs

    writer = engine.storage.writer
    before = (writer.transactions, writer.writes)
    runs = asyncio.run(main())
    assert {run.status for run in runs} == {"COMPLETED"}
    transactions, writes = writer.transactions - before[0], writer.writes - before[1]
    assert writes == 20 * 4
    if engine.storage.kind != "postgres":  # on the loop; Postgres commits from its database threads
        assert transactions < writes / 2


# --------------------------------------------------------------------------- garbage


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[Any]]:
    """flowrt's objects the block left that only the cyclic garbage collector frees (in
    reference cycles), in the list yielded, filled when the block ends. Only flowrt's: the
    collector sees the whole process, and a thread another test left running may make
    cycles of its own meanwhile. (A write that referred to itself left its function and the
    run's row, both flowrt's, among the cells and tuples of its closure.)"""
    found: list[Any] = []
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(o for o in gc.garbage if _of_flowrt(o))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _of_flowrt(thing: Any) -> bool:
    module = getattr(thing, "__module__", None)  # a function's or class's own, else its type's
    if not isinstance(module, str):
        module = type(thing).__module__
    return module == "flowrt" or module.startswith("flowrt.")


def _kinds(objects: list[Any]) -> list[str]:
    return sorted({getattr(o, "__qualname__", type(o).__name__) for o in objects})


def test_steps_leave_no_reference_cycles_behind(make_engine: Any) -> None:
    """A start's or a step's write is freed once it is committed. Each used to be a function
    that set its own ``mark``, so referred to itself: ~50 objects a run (its row, events and
    parameters) waited for the cyclic collector, a generation-0 collection every dozen runs,
    ~10% of the HTTP server's CPU at c=16 (docs/performance.md, "No reference cycles")."""
    engine = make_engine(linear(3))

    def runs() -> None:
        for _ in range(5):
            run = engine.start("lin", keep_lease=True)
            while run.status == "RUNNING":
                run = engine.tick(run.run_id)
            engine.run_until_blocked(engine.start("lin", keep_lease=True).run_id)
        for _ in range(5):  # parked for drivers: a driver's claim rides in the commit before it
            engine.start("lin", keep_lease="drivers")
        while engine.drive_next():
            pass

    async def runs_on_a_loop() -> None:
        for _ in range(5):
            run, _ = await engine.start_async("lin", keep_lease=True)
            while run.status == "RUNNING":
                run = await engine.tick_async(run.run_id)
            await engine.run_until_blocked_async((await engine.start_async("lin", keep_lease=True))[0].run_id)

    async def on_a_loop() -> list[Any]:
        await runs_on_a_loop()  # the loop's own first-use objects are made before the count
        with cyclic_garbage() as garbage:
            await runs_on_a_loop()
        return garbage

    runs()  # first use: caches, statements, pooled connections
    with cyclic_garbage() as garbage:
        runs()
    assert garbage == [], f"left for the cyclic collector: {_kinds(garbage)}"
    garbage = asyncio.run(on_a_loop())
    assert garbage == [], f"left for the cyclic collector on an event loop: {_kinds(garbage)}"
    assert engine.storage.get_run(engine.start("lin").run_id) is not None


# --------------------------------------------------------------------------- real servers


def _ticked_once(url: str) -> str:
    import httpx

    run_id = httpx.post(f"{url}/v1/runs/start", json={"flowId": "demo-fraud", "input": {"amount": 5}}).json()["runId"]
    assert httpx.post(f"{url}/v1/runs/{run_id}/tick").json()["currentNodeId"] == "approve"  # kept here now
    return run_id


def test_a_server_stopped_with_kept_leases_hands_them_back_and_another_continues_at_once(tmp_path: Any) -> None:
    from http_helpers import ServeProcess

    db = f"sqlite:///{tmp_path / 'k.db'}"
    server = ServeProcess(["--flows", "examples.demo:ALL", "--db", db, "--no-drive"]).wait_ready()
    try:
        run_id = _ticked_once(server.url)
        assert server.terminate(30) == 0
    finally:
        server.close()
    with Engine(db, flows=_demo()) as engine:
        assert engine.storage.get_run(run_id).lease_owner is None  # type: ignore[union-attr]
        run = engine.tick(run_id)  # no RUN_BUSY, no lease to wait for
        assert run.status == "COMPLETED"
        assert "NODE_FAILED" not in [e.type for e in engine.timeline(run_id)]


def test_a_server_killed_with_kept_leases_leaves_them_to_expire_and_the_node_runs_again(tmp_path: Any) -> None:
    from http_helpers import ServeProcess

    db = f"sqlite:///{tmp_path / 'k.db'}"
    server = ServeProcess(["--flows", "examples.demo:ALL", "--db", db, "--no-drive", "--lease-ttl", "1"]).wait_ready()
    try:
        run_id = _ticked_once(server.url)
        server.kill()
    finally:
        server.close()
    with Engine(db, flows=_demo()) as engine:
        # on the engine's own clock (whole milliseconds), as its claim compares
        wait_until(lambda: (engine.storage.get_run(run_id).lease_expires_at or 0) < engine.clock.now_ms())  # type: ignore[union-attr]
        run = engine.tick(run_id)
        assert run.status == "COMPLETED" and run.attempts == {"score": 1, "approve": 2}
        failed = [e.payload["error"]["code"] for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
        assert failed == ["WORKER_LOST"]  # it cannot tell a kept lease from a step in flight


def _demo() -> Any:
    from examples.demo import ALL

    return ALL


def test_a_get_that_long_polls_never_moves_a_run_parked_for_a_clients_next_tick(tmp_path: Any) -> None:
    from http_helpers import thread_server

    with thread_server(f"sqlite:///{tmp_path / 'g.db'}", drive=True) as srv:
        srv.engine.leases.park_seconds = 30.0  # nothing is handed back to the drivers during the test
        run_id = srv.engine.start("demo-fraud", input={"amount": 5}, keep_lease=True).run_id  # the caller's
        ticked = srv.engine.tick(run_id).to_json()  # this caller's step, which keeps the lease for its next
        assert ticked["currentNodeId"] == "approve" and srv.engine.leases.is_parked(run_id)
        began = time.monotonic()
        polled = srv.client.get(f"/v1/runs/{run_id}", params={"wait": 0.3}).json()
        assert time.monotonic() - began >= 0.3  # it watched for the whole wait
        assert (polled["status"], polled["currentNodeId"]) == ("RUNNING", "approve")  # and moved nothing
        assert srv.engine.tick(run_id).status == "COMPLETED"  # the caller's next step needs no claim


def test_with_drivers_a_run_an_http_tick_or_resume_leaves_running_is_theirs_at_once(tmp_path: Any) -> None:
    from http_helpers import thread_server

    with thread_server(f"sqlite:///{tmp_path / 'h.db'}", drive=True) as srv:
        srv.engine.leases.park_seconds = 30.0  # a lease kept for a next tick would stall the run for the test
        run_id = srv.engine.start("demo-support", input={}).run_id
        wait_until(lambda: srv.client.get(f"/v1/runs/{run_id}").json()["status"] == "WAITING")
        resumed = srv.client.post(f"/v1/runs/{run_id}/resume", json={"payload": {"ticketId": "T-1"}})
        assert resumed.status_code == 200
        began = time.monotonic()
        wait_until(lambda: srv.client.get(f"/v1/runs/{run_id}").json()["status"] == "COMPLETED", 10)
        assert time.monotonic() - began < 5  # the drivers took it from the park, not after a hand-back



def test_a_start_as_stored_is_the_start_undecoded_and_says_when_it_was_replayed(sqlite_url: str) -> None:
    """``start_stored_async`` (what the HTTP server answers ``{runId, status}`` from) is the run
    ``start_async`` makes, as stored, and the same replay flag."""

    async def scenario(engine: Engine) -> None:
        row, replayed = await engine.start_stored_async("lin", None, {"n": 1}, idempotency_key="k1", keep_lease=True)
        assert not replayed and row.status == "RUNNING" and row.input_json == '{"n":1}'
        again, replayed = await engine.start_stored_async("lin", None, {"n": 1}, idempotency_key="k1")
        assert replayed and again.run_id == row.run_id
        run, replayed = await engine.start_async("lin", None, {"n": 1}, idempotency_key="k1")
        assert replayed and run.run_id == row.run_id and run.input == {"n": 1}

    with Engine(sqlite_url, flows=[linear()]) as engine:
        asyncio.run(scenario(engine))
