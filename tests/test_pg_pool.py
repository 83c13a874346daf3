"""The threads' Postgres connections: the pool checks a connection it hands out by its socket,
not by a round trip, and a connection the server closed -- pooled, or kept by a database
thread -- is replaced before the statement it would carry, not failed as a 503."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from flowrt import Engine, Flow, ok
from flowrt.database import CHECK_AFTER

from test_pg_loop import _terminate


def _flow() -> Flow:
    flow = Flow("pgp", "1")
    for i in range(4):
        flow.add_node(f"n{i}", lambda ctx: ok(), entry=(i == 0))
        if i:
            flow.edge(f"n{i - 1}", f"n{i}")
    return flow


def test_a_step_from_a_thread_checks_its_pooled_connections_without_a_round_trip(pg_url: str) -> None:
    # peewee's own check sends SELECT 1 each time a connection leaves the pool: a tick from a
    # thread (a read, then its commit, each on a pooled connection) paid two round trips more.
    with Engine(pg_url, flows=[_flow()]) as engine:
        db = engine.storage.db
        round_trips: list[Any] = []
        checks: list[Any] = []
        check = db._is_closed
        db._adapter.is_connection_closed = lambda conn: round_trips.append(conn) or False
        db._is_closed = lambda conn: checks.append(conn) or check(conn)
        run = engine.start("pgp", keep_lease=True)
        ticks = 0
        while engine.tick(run.run_id).status == "RUNNING":
            ticks += 1
        assert ticks == 3
        assert len(checks) >= ticks and round_trips == []  # checked every time, never by a query


def _backend(engine: Engine) -> int:
    """This thread's connection's backend pid (a session holds one)."""
    with engine.storage.session():
        pid: int = engine.storage.db.connection().info.backend_pid
        return pid


def test_a_pooled_connection_the_server_closed_is_not_handed_out(pg_url: str) -> None:
    with Engine(pg_url, flows=[_flow()]) as engine:
        run_id = engine.start("pgp").run_id
        idle = _backend(engine)  # back in the pool when the session ends
        _terminate([idle])
        assert engine.get(run_id) is not None  # on another connection, no 503
        assert _backend(engine) != idle


def _in_a_database_thread(engine: Engine, then: Callable[[], Any]) -> Any:
    """``then()`` in a thread that keeps its connection, as the server's database threads do:
    its value, or the exception it raised."""
    results: list[Any] = []

    def target() -> None:
        engine.storage.keep_connection()
        try:
            results.append(then())
        except Exception as exc:  # noqa: BLE001 - the test's answer
            results.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert results, "the database thread did not finish"
    return results[0]


def test_a_database_threads_kept_connection_the_server_closed_is_replaced_after_a_quiet_while(pg_url: str) -> None:
    with Engine(pg_url, flows=[_flow()]) as engine:
        run_id = engine.start("pgp").run_id

        def read_kill_wait_read() -> Any:
            first = _backend(engine)
            _terminate([first])  # as a restart of Postgres does to every connection
            time.sleep(CHECK_AFTER * 1.2)
            run = engine.storage.get_run(run_id)  # not a 503: the kept connection is replaced
            return first, _backend(engine), run

        result = _in_a_database_thread(engine, read_kill_wait_read)
        assert not isinstance(result, Exception), result
        first, second, run = result
        assert run is not None and run.run_id == run_id and second != first


def test_a_read_right_after_postgres_closed_the_connection_is_tried_again_on_a_new_one(pg_url: str) -> None:
    # In use a moment ago, so not checked before use (CHECK_AFTER): a listing, a count or a
    # timeline read fails on it, and is tried once more on a new connection -- no 503.
    with Engine(pg_url, flows=[_flow()]) as engine:
        run_id = engine.start("pgp").run_id

        def kill_then_read_each() -> list[Any]:
            results = []
            for read in (
                lambda: engine.list_runs(limit=5)[0],
                lambda: engine.storage.count_runs(),
                lambda: engine.timeline(run_id),
            ):
                first = _backend(engine)
                _terminate([first])
                results.append((read(), _backend(engine) != first))
            return results

        results = _in_a_database_thread(engine, kill_then_read_each)
        assert not isinstance(results, Exception), results
        assert len(results) == 3
        runs, counts, events = (value for value, _ in results)
        assert [r.run_id for r in runs] == [run_id] and counts == {"RUNNING": 1} and events
        assert all(replaced for _, replaced in results)
