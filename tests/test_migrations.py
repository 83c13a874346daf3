"""Schema migrations: a database written by an earlier flowrt opens, upgrades and runs on.

tests/fixtures/schema_vN.db was written by schema version N (tests/fixtures/make_schema_fixture.py,
run with the flowrt of that version) and holds runs in every state, one of them held by a worker
that died. Version 3 records each step's changes for rewind: runs stored before can be rewound
to nodes started after their last finished node (the migration's snapshot), no further back.
Version 4 makes two indexes partial.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flowrt import Engine, RewindUnavailable
from flowrt.storage import SCHEMA_VERSION
from migration_flows import ALL

FIXTURES = Path(__file__).parent / "fixtures"


def _runs_by_n(engine: Engine) -> dict[int, Any]:
    return {run.input["n"]: run for run in engine.list_runs(limit=100)[0]}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_sqlite_database_upgrades_and_its_runs_go_on(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    shutil.copy(FIXTURES / f"schema_v{version}.db", path)
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


@pytest.mark.parametrize("version", [1, 2])
def test_runs_stored_before_version_3_rewind_as_far_as_their_data_allows(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    shutil.copy(FIXTURES / f"schema_v{version}.db", path)
    with Engine(f"sqlite:///{path}", flows=ALL) as engine:
        runs = _runs_by_n(engine)
        failed = runs[4]  # failed at finish, after prepare and approve
        # Its last finished node is approve: rewinding to finish (started after it) works...
        rewound = engine.rewind(failed.run_id, "finish", by="kim")
        assert (rewound.status, rewound.current_node_id) == ("RUNNING", "finish")
        assert rewound.state == failed.state == {"n": 4}
        assert rewound.outputs == failed.outputs
        assert engine.run_until_blocked(failed.run_id).status == "FAILED"  # asked to fail, again
        # ... and further back there is no record of what the state was: a clear error.
        with pytest.raises(RewindUnavailable, match=r"stored before flowrt kept each step's changes \(schema version 3\)"):
            engine.rewind(failed.run_id, "approve")
        # Retry needs no history at all.
        assert engine.retry(failed.run_id).current_node_id == "finish"
        # A run never stepped has its initial state as its snapshot: every node is reachable.
        fresh = engine.run_until_blocked(runs[2].run_id)
        assert fresh.status == "WAITING"
        back = engine.rewind(fresh.run_id, "prepare")
        assert (back.state, back.outputs) == ({}, {})
        # A waiting run's last finished node is its waiting node: nothing before it is reachable.
        with pytest.raises(RewindUnavailable, match="history can be rebuilt only from seq"):
            engine.rewind(runs[1].run_id, "approve")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_fresh_database_and_an_upgraded_one_have_the_same_tables(tmp_path: Path, version: int) -> None:
    upgraded = tmp_path / f"v{version}.db"
    shutil.copy(FIXTURES / f"schema_v{version}.db", upgraded)
    Engine(f"sqlite:///{upgraded}").close()
    fresh = tmp_path / "fresh.db"
    Engine(f"sqlite:///{fresh}").close()

    def shape(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        db = sqlite3.connect(path)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        # (name, type, notnull, default, pk) per column; column order may differ after ALTER TABLE
        return {t: sorted((r[1], r[2].upper(), r[3], r[4], r[5]) for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}

    def indexes(path: Path) -> dict[str, Any]:
        db = sqlite3.connect(path)
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))

    assert shape(upgraded) == shape(fresh)
    assert indexes(upgraded) == indexes(fresh)
    assert "WHERE wake_at IS NOT NULL" in indexes(fresh)["flowrt_runs_status_wake_at"]


def test_version_1_upgrades_on_postgres(pg_url: str) -> None:
    """Postgres has no fixture file: make today's tables, take them back to version 1, reopen."""
    Engine(pg_url, flows=ALL).close()
    engine = Engine(pg_url, flows=ALL)
    db = engine.storage.db
    with engine.storage.session():
        db.execute_sql("ALTER TABLE flowrt_runs DROP COLUMN recoveries")
        db.execute_sql("ALTER TABLE flowrt_events DROP COLUMN change_json")
        db.execute_sql("DROP TABLE flowrt_start_keys")
        db.execute_sql("DELETE FROM flowrt_schema WHERE version > 1")
    engine.close()
    with Engine(pg_url, flows=ALL) as engine:
        assert engine.storage.schema_version() == SCHEMA_VERSION
        run = engine.run_until_blocked(engine.start("legacy", input={"n": 1}, idempotency_key="pg-1").run_id)
        assert run.status == "WAITING"
        assert engine.start("legacy", input={"n": 1}, idempotency_key="pg-1").run_id == run.run_id


def test_version_2_upgrades_on_postgres_and_its_runs_rewind_from_the_snapshot(pg_url: str) -> None:
    """A run stepped under version 2 (no change records), then the schema moves to 3."""
    with Engine(pg_url, flows=ALL) as engine:
        run = engine.run_until_blocked(engine.start("legacy", input={"n": 4, "fail": True}).run_id)
        failed = engine.run_until_blocked(engine.resume(run.run_id, {"ok": True}).run_id)
        assert failed.status == "FAILED"
        db = engine.storage.db
        with engine.storage.session():
            db.execute_sql("ALTER TABLE flowrt_events DROP COLUMN change_json")
            db.execute_sql("DELETE FROM flowrt_schema WHERE version > 2")
    with Engine(pg_url, flows=ALL) as engine:
        assert engine.storage.schema_version() == SCHEMA_VERSION
        assert engine.rewind(failed.run_id, "finish").state == {"n": 4}
        with pytest.raises(RewindUnavailable):
            engine.rewind(failed.run_id, "prepare")


def test_version_3_upgrades_on_postgres_to_partial_indexes(pg_url: str) -> None:
    """Today's tables taken back to version 3 (full indexes), reopened: the indexes become partial."""
    Engine(pg_url, flows=ALL).close()
    engine = Engine(pg_url, flows=ALL)
    db = engine.storage.db
    with engine.storage.session():
        for name, columns in (("flowrt_runs_status_wake_at", "status, wake_at"), ("flowrt_runs_tenant_id_run_id", "tenant_id, run_id")):
            db.execute_sql(f"DROP INDEX {name}")
            db.execute_sql(f"CREATE INDEX {name} ON flowrt_runs ({columns})")
        db.execute_sql("DELETE FROM flowrt_schema WHERE version > 3")
    run = engine.run_until_blocked(engine.start("legacy", input={"n": 1}).run_id)
    engine.close()
    with Engine(pg_url, flows=ALL) as engine:
        assert engine.storage.schema_version() == SCHEMA_VERSION
        with engine.storage.session():
            found = dict(engine.storage.db.execute_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'flowrt_runs' AND indexname IN "
                "('flowrt_runs_status_wake_at', 'flowrt_runs_tenant_id_run_id')"
            ).fetchall())  # fmt: skip
        assert "WHERE (wake_at IS NOT NULL)" in found["flowrt_runs_status_wake_at"]
        assert "WHERE (tenant_id IS NOT NULL)" in found["flowrt_runs_tenant_id_run_id"]
        assert engine.resume(run.run_id, {"ok": True}).status == "RUNNING"
        assert engine.run_until_blocked(run.run_id).status == "COMPLETED"
