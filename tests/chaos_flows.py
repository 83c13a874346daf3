"""The chaos tests' flow: five nodes with random sleeps, and an approval wait for some runs.

Each node sleeps 0-30 ms unless the run's input says otherwise (``{"sleep": {"c": [1, 2]}}``
makes node c take 1-2 s), so a test can keep a step in flight when the fault lands.
Every node has the default ``Retry()`` (one attempt), as a new user writes it: a crash or
an outage must not fail the run on that account.

Every handler execution first appends a row to a side table (FLOWRT_CHAOS_SIDE: a
Postgres URL or an SQLite file path), committed at once and outside flowrt, so the
test can count real executions, including those a kill -9 cut short.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from typing import Any

from flowrt import Flow, ok, wait

_local = threading.local()


def _side() -> Any:
    conn = getattr(_local, "conn", None)
    if conn is None:
        target = os.environ["FLOWRT_CHAOS_SIDE"]
        if target.startswith("postgresql://"):
            import psycopg

            conn = psycopg.connect(target, autocommit=True)
        else:
            conn = sqlite3.connect(target, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=wal")
        _local.conn = conn
    return conn


def close_side() -> None:
    """Close this thread's side-table connection (the test's, at the end)."""
    old = getattr(_local, "conn", None)
    if old is not None:
        old.close()
        _local.conn = None


def create_side_table(target: str) -> None:
    os.environ["FLOWRT_CHAOS_SIDE"] = target
    close_side()
    _side().execute(
        "CREATE TABLE IF NOT EXISTS chaos_side (run_id TEXT, node_id TEXT, attempt INTEGER, pid INTEGER, at DOUBLE PRECISION)"
    )


def _sql(conn: Any, sql: str) -> str:
    return sql.replace("%s", "?") if isinstance(conn, sqlite3.Connection) else sql


def record(ctx: Any) -> None:
    conn = _side()
    sql = _sql(conn, "INSERT INTO chaos_side (run_id, node_id, attempt, pid, at) VALUES (%s, %s, %s, %s, %s)")
    conn.execute(sql, (ctx.run_id, ctx.node_id, ctx.attempt, os.getpid(), time.time()))


def executions() -> dict[tuple[str, str], int]:
    rows = _side().execute("SELECT run_id, node_id, COUNT(*) FROM chaos_side GROUP BY run_id, node_id").fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def executions_of(run_id: str) -> list[tuple[float, str, int, int]]:
    """``(unix time, node_id, attempt, pid)`` of each execution of one run's handlers, in order."""
    conn = _side()
    sql = _sql(conn, "SELECT at, node_id, attempt, pid FROM chaos_side WHERE run_id = %s ORDER BY at")
    return [(r[0], r[1], r[2], r[3]) for r in conn.execute(sql, (run_id,)).fetchall()]


def _work(ctx: Any) -> Any:
    record(ctx)
    low, high = ctx.input.get("sleep", {}).get(ctx.node_id, (0, 0.03))
    time.sleep(random.uniform(low, high))
    return ok({"node": ctx.node_id, "pid": os.getpid()})


chaos = Flow("chaos", "1.0.0")
for name in ("a", "b", "c", "d", "e"):
    chaos.add_node(name, _work, entry=(name == "a"))


@chaos.node
def approval(ctx: Any) -> Any:
    record(ctx)
    if ctx.resume_payload is None:
        return wait("needs a human")
    return ok({"approved": ctx.resume_payload.get("approved")})


chaos.edge("a", "approval", when=lambda ctx: bool(ctx.input.get("approval")), priority=1)
chaos.edge("a", "b")
chaos.edge("approval", "b")
chaos.edge("b", "c").edge("c", "d").edge("d", "e")
ALL = [chaos]
