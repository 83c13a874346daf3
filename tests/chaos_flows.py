"""The chaos test's flow: five nodes with short random sleeps, and an approval wait for some runs.

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

from flowrt import Flow, Retry, ok, wait

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


def create_side_table(target: str) -> None:
    os.environ["FLOWRT_CHAOS_SIDE"] = target
    old = getattr(_local, "conn", None)
    if old is not None:
        old.close()
        _local.conn = None
    _side().execute("CREATE TABLE IF NOT EXISTS chaos_side (run_id TEXT, node_id TEXT, attempt INTEGER, pid INTEGER)")


def record(ctx: Any) -> None:
    sql = "INSERT INTO chaos_side (run_id, node_id, attempt, pid) VALUES (%s, %s, %s, %s)"
    conn = _side()
    if isinstance(conn, sqlite3.Connection):
        sql = sql.replace("%s", "?")
    conn.execute(sql, (ctx.run_id, ctx.node_id, ctx.attempt, os.getpid()))


def executions() -> dict[tuple[str, str], int]:
    rows = _side().execute("SELECT run_id, node_id, COUNT(*) FROM chaos_side GROUP BY run_id, node_id").fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def _work(ctx: Any) -> Any:
    record(ctx)
    time.sleep(random.uniform(0, 0.03))
    return ok({"node": ctx.node_id, "pid": os.getpid()})


chaos = Flow("chaos", "1.0.0")
RETRY = Retry(max_attempts=10, base_delay_ms=10)
for name in ("a", "b", "c", "d", "e"):
    chaos.add_node(name, _work, entry=(name == "a"), retry=RETRY)


@chaos.node(retry=RETRY)
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
