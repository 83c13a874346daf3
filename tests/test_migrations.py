"""Schema migrations: a database written by an earlier flowrt opens, upgrades and runs on.

tests/fixtures/schema_v1.db was written by schema version 1 (tests/fixtures/make_schema_fixture.py,
at the commit that added it) and holds runs in every state, one of them held by a worker that died.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from flowrt import Engine
from flowrt.storage import SCHEMA_VERSION
from migration_flows import ALL

FIXTURES = Path(__file__).parent / "fixtures"


def _runs_by_n(engine: Engine) -> dict[int, Any]:
    return {run.input["n"]: run for run in engine.list_runs(limit=100)[0]}


def test_a_version_1_sqlite_database_upgrades_and_its_runs_go_on(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    shutil.copy(FIXTURES / "schema_v1.db", path)
    with Engine(f"sqlite:///{path}", flows=ALL, lease_ttl=0.2) as engine:
        assert engine.storage.schema_version() == SCHEMA_VERSION
        runs = _runs_by_n(engine)
        assert {n: r.status for n, r in runs.items()} == {
            1: "WAITING", 2: "RUNNING", 3: "COMPLETED", 4: "FAILED", 5: "CANCELLED", 6: "RUNNING",
        }  # fmt: skip
        # A waiting run resumes and completes with the state it had.
        engine.resume(runs[1].run_id, {"ok": True})
        done = engine.run_until_blocked(runs[1].run_id)
        assert done.status == "COMPLETED" and done.state == {"n": 1}
        assert done.outputs == {"prepare": {"prepared": 1}, "approve": {"ok": True}, "finish": {"done": True}}
        # A run never stepped starts; the idempotency records of version 1 still serve.
        assert engine.run_until_blocked(runs[2].run_id).status == "WAITING"
        # The run whose worker died is recovered, not failed: an interruption is not a failure.
        recovered = engine.run_until_blocked(runs[6].run_id)
        assert recovered.status == "WAITING", recovered
        lost = [e for e in engine.timeline(runs[6].run_id) if e.type == "NODE_FAILED"]
        assert [(e.payload["error"]["code"], e.payload["recovery"]) for e in lost] == [("WORKER_LOST", 1)]
        # Finished runs are untouched and an idempotent start works on the new table.
        assert engine.get(runs[3].run_id).outputs["finish"] == {"done": True}  # type: ignore[union-attr]
        first = engine.start("legacy", input={"n": 7}, idempotency_key="k-7")
        assert engine.start("legacy", input={"n": 7}, idempotency_key="k-7").run_id == first.run_id
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(flowrt_runs)")}
    assert "recoveries" in columns


def test_a_fresh_database_and_an_upgraded_one_have_the_same_tables(tmp_path: Path) -> None:
    upgraded = tmp_path / "v1.db"
    shutil.copy(FIXTURES / "schema_v1.db", upgraded)
    Engine(f"sqlite:///{upgraded}").close()
    fresh = tmp_path / "fresh.db"
    Engine(f"sqlite:///{fresh}").close()

    def shape(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        db = sqlite3.connect(path)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        # (name, type, notnull, default, pk) per column; column order may differ after ALTER TABLE
        return {t: sorted((r[1], r[2].upper(), r[3], r[4], r[5]) for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}

    assert shape(upgraded) == shape(fresh)


def test_version_1_upgrades_on_postgres(pg_url: str) -> None:
    """Postgres has no fixture file: make today's tables, take them back to version 1, reopen."""
    Engine(pg_url, flows=ALL).close()
    engine = Engine(pg_url, flows=ALL)
    db = engine.storage.db
    with engine.storage.session():
        db.execute_sql("ALTER TABLE flowrt_runs DROP COLUMN recoveries")
        db.execute_sql("DROP TABLE flowrt_start_keys")
        db.execute_sql("DELETE FROM flowrt_schema WHERE version > 1")
    engine.close()
    with Engine(pg_url, flows=ALL) as engine:
        assert engine.storage.schema_version() == SCHEMA_VERSION
        run = engine.run_until_blocked(engine.start("legacy", input={"n": 1}, idempotency_key="pg-1").run_id)
        assert run.status == "WAITING"
        assert engine.start("legacy", input={"n": 1}, idempotency_key="pg-1").run_id == run.run_id
