"""Retention (prune, serve --retention) and bulk actions by filter: engine, HTTP, CLI."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from flowrt import Engine, InvalidInput
from flowrt.repair import claim_for_repair
from flowrt.retention import Pruner, parse_age
from http_helpers import serve_process, thread_server
from repair_flows import ALL
from test_cli import flowrt_process

Make = Callable[..., Any]
FIXTURES = Path(__file__).parent / "fixtures"
MONTH = 30 * 86400


def _age(engine: Engine, run_ids: list[str], days: float) -> None:
    """Make runs look as if they ended ``days`` ago."""
    p = engine.storage.db.param
    then = engine.clock.now_ms() - int(days * 86400_000)
    with engine.storage._write() as cur:
        for run_id in run_ids:
            cur.execute(f"UPDATE flowrt_runs SET updated_at = {p} WHERE run_id = {p}", (then, run_id))


def _population(engine: Engine, tmp_path: Path) -> dict[str, list[str]]:
    """Old runs in every state (with idempotency and start keys), and fresh finished ones."""
    broken = tmp_path / "down"
    broken.write_text("x")
    runs: dict[str, list[str]] = {k: [] for k in ("COMPLETED", "FAILED", "CANCELLED", "WAITING", "RUNNING", "fresh")}
    for n in range(3):
        waiting = engine.run_until_blocked(engine.start("shop", input={"n": n}, idempotency_key=f"k{n}").run_id)
        done = engine.run_until_blocked(engine.resume(waiting.run_id, {"by": "x"}).run_id)
        runs["COMPLETED"].append(done.run_id)
        runs["FAILED"].append(engine.run_until_blocked(engine.start("shop", input={"brokenFile": str(broken)}).run_id).run_id)
        runs["CANCELLED"].append(engine.cancel(engine.start("shop").run_id).run_id)
        runs["WAITING"].append(engine.run_until_blocked(engine.start("shop").run_id).run_id)
        runs["RUNNING"].append(engine.start("shop").run_id)
    for ids in runs.values():
        _age(engine, ids, 40)
    runs["fresh"].append(engine.cancel(engine.start("shop").run_id).run_id)
    return runs


def test_prune_deletes_old_finished_runs_and_all_they_stored(make_engine: Make, tmp_path: Path, db_url: str) -> None:
    engine = make_engine(*ALL)
    runs = _population(engine, tmp_path)
    counted = engine.prune("30d", dry_run=True)
    assert (counted.runs, counted.dry_run) == (9, True)
    assert sum(engine.storage.count_runs().values()) == 16  # a dry run changes nothing

    only_failed = engine.prune(MONTH, ["FAILED"])
    assert only_failed.runs == 3 and all(engine.get(r) is None for r in runs["FAILED"])
    expected_events = sum(len(engine.timeline(r)) for kind in ("COMPLETED", "CANCELLED") for r in runs[kind])
    report = engine.prune("30d")
    assert (report.runs, report.events, report.idempotency_records, report.start_keys) == (6, expected_events, 0, 3)
    for kind in ("COMPLETED", "CANCELLED"):
        assert all(engine.get(r) is None for r in runs[kind])
        assert all(engine.storage.events(r) == [] for r in runs[kind])
    for kind in ("WAITING", "RUNNING", "fresh"):  # never touched: active, or too young
        assert all(engine.get(r) is not None for r in runs[kind])
    # A start key of a pruned run is gone: the same key starts a new run.
    again = engine.start("shop", input={"n": 0}, idempotency_key="k0")
    assert again.run_id not in runs["COMPLETED"]
    with pytest.raises(InvalidInput, match="WAITING runs are never pruned"):
        engine.prune("30d", ["WAITING"])
    with pytest.raises(InvalidInput, match="not a duration"):
        engine.prune("soon")
    if db_url.startswith("sqlite"):
        assert report.size_after is not None and report.size_before is not None


def test_idempotency_records_of_pruned_runs_go_too(make_engine: Make) -> None:
    from migration_flows import ALL as LEGACY

    engine = make_engine(*LEGACY)
    run = engine.run_until_blocked(engine.start("legacy", input={"n": 1}).run_id)
    engine.cancel(run.run_id)
    _age(engine, [run.run_id], 40)
    assert engine.storage.idempotent_result("legacy", "prepare", "prepare:1") is not None
    assert engine.prune("30d").idempotency_records == 1
    assert engine.storage.idempotent_result("legacy", "prepare", "prepare:1") is None


def test_sqlite_gives_the_space_back(tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'big.db'}", flows=ALL) as engine:
        ids = [engine.cancel(engine.start("shop", input={"pad": "x" * 4000}).run_id).run_id for _ in range(300)]
        _age(engine, ids, 40)
        report = engine.prune("30d")
        assert report.runs == 300 and report.space_note is None
        assert report.size_after is not None and report.size_before is not None
        assert report.size_after < report.size_before / 2, report


def test_an_older_sqlite_file_needs_one_vacuum_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    shutil.copy(FIXTURES / "schema_v2.db", path)
    from migration_flows import ALL as LEGACY

    with Engine(f"sqlite:///{path}", flows=LEGACY) as engine:
        _age(engine, [r.run_id for r in engine.list_runs()[0]], 40)
        report = engine.prune("30d")
        assert report.runs == 3 and "flowrt prune --vacuum" in (report.space_note or "")
        assert not engine.pruner.incremental()
        engine.prune("30d", vacuum=True)  # nothing left to delete: only the switch
        assert engine.pruner.incremental()
        assert {r.status for r in engine.list_runs()[0]} == {"WAITING", "RUNNING"}
    assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_pruning_goes_in_batches_and_steps_commit_between_them(tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'f.db'}", flows=ALL) as engine:
        ids = [engine.cancel(engine.start("shop").run_id).run_id for _ in range(400)]
        _age(engine, ids, 40)
        pruner = Pruner(engine.storage, batch=20, pause=0.01)
        stop = threading.Event()
        stepped: list[float] = []

        def steps() -> None:
            while not stop.is_set():
                engine.run_until_blocked(engine.start("shop").run_id)
                stepped.append(time.monotonic())

        worker = threading.Thread(target=steps)
        worker.start()
        try:
            began = time.monotonic()
            report = pruner.prune(MONTH)
            ended = time.monotonic()
        finally:
            stop.set()
            worker.join(30)
        assert report.runs == 400
        during = [t for t in stepped if began < t < ended]
        assert len(during) >= 2, (len(stepped), ended - began)  # live runs moved while it pruned


def test_parse_age() -> None:
    assert parse_age("30d") == MONTH and parse_age("1w2d") == 9 * 86400 and parse_age("90") == 90
    for bad in ("", "0s", "-5", "3 days", "5y"):
        with pytest.raises(InvalidInput):
            parse_age(bad)


# --------------------------------------------------------------------------- HTTP and serve


def test_prune_over_http_needs_the_admin_scope(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    tokens = "ops:operate:ops-secret-1,root:admin:root-secret-1"
    with thread_server(url, ALL, drive=False, api_tokens=tokens) as srv:
        runs = _population(srv.engine, tmp_path)
        c = srv.client
        body = {"olderThan": "30d", "dryRun": True}
        refused = c.post("/v1/admin/prune", json=body, headers={"Authorization": "Bearer ops-secret-1"})
        assert refused.status_code == 403 and "'admin' scope" in refused.json()["error"]
        root = {"Authorization": "Bearer root-secret-1"}
        assert c.post("/v1/admin/prune", json=body, headers=root).json()["runs"] == 9
        bad = c.post("/v1/admin/prune", json={"olderThan": "30d", "status": ["WAITING"]}, headers=root)
        assert bad.status_code == 400
        done = c.post("/v1/admin/prune", json={"olderThan": "30d", "status": ["CANCELLED"]}, headers=root).json()
        assert (done["runs"], done["dryRun"], done["startKeys"]) == (3, False, 0)
        assert done["sizeBefore"] >= done["sizeAfter"] > 0
        assert all(srv.engine.get(r) is None for r in runs["CANCELLED"])


def test_a_long_prune_over_http_answers_in_slices_and_the_cli_asks_until_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With maxSeconds the server answers after a batch or more, saying whether runs are left;
    the CLI's remote prune repeats until none are, and reports the whole prune."""
    from flowrt.cli import remote

    with thread_server(f"sqlite:///{tmp_path / 's.db'}", ALL, drive=False) as srv:
        runs = _population(srv.engine, tmp_path)
        srv.engine.pruner.batch = 2  # 9 old finished runs: five batches
        assert srv.client.post("/v1/admin/prune", json={"olderThan": "30d", "maxSeconds": 0}).status_code == 400
        body = {"olderThan": "30d", "status": ["COMPLETED"], "maxSeconds": 0.000001}
        first = srv.client.post("/v1/admin/prune", json=body).json()
        assert (first["runs"], first["more"]) == (2, True), first
        second = srv.client.post("/v1/admin/prune", json=body).json()
        assert (second["runs"], second["more"]) == (1, False), second  # a short batch: nothing left
        counted = srv.client.post("/v1/admin/prune", json={"olderThan": "30d", "dryRun": True, "maxSeconds": 0.000001})
        assert (counted.json()["runs"], counted.json()["more"]) == (6, False)  # a dry run is not sliced

        monkeypatch.setattr(remote, "PRUNE_SLICE_SECONDS", 0.000001)
        backend = remote.RemoteBackend(srv.url, None)
        try:
            report = backend.prune("30d", None, dry_run=False, vacuum=False)
        finally:
            backend.close()
        assert (report["runs"], report["more"], report["startKeys"]) == (6, False, 0), report
        assert report["events"] == counted.json()["events"] > 0 and report["spaceNote"] is None
        assert report["sizeBefore"] >= report["sizeAfter"]
        assert 0 < report["sizeAfter"] and srv.engine.pruner.free_pages() == 0  # the slices gave space back
        assert all(srv.engine.get(r) is None for key in ("COMPLETED", "FAILED", "CANCELLED") for r in runs[key])
        assert all(srv.engine.get(r) is not None for key in ("WAITING", "RUNNING", "fresh") for r in runs[key])


def test_serve_with_retention_prunes_in_the_background(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    with Engine(db, flows=ALL) as engine:
        runs = _population(engine, tmp_path)
    args = ["--flows", "repair_flows:ALL", "--db", db, "--retention", "30d", "--no-drive"]
    with serve_process(args) as server:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = httpx.get(f"{server.url}/v1/runs", params={"status": "COMPLETED"}).json()["runs"]
            if not left:
                break
            time.sleep(0.2)
        assert not left, server.output()
        for kind in ("WAITING", "RUNNING", "fresh"):
            for run_id in runs[kind]:
                assert httpx.get(f"{server.url}/v1/runs/{run_id}").status_code == 200
        assert "retention: pruned 9 run(s)" in server.output()


# --------------------------------------------------------------------------- CLI


def test_cli_prune_locally_and_remotely(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    with Engine(db, flows=ALL) as engine:
        _population(engine, tmp_path)
    env = {"DATABASE_URL": db}
    dry = flowrt_process("prune", "--older-than", "30d", "--dry-run", cwd=tmp_path, env=env)
    assert dry.returncode == 0 and "Would delete 9 run(s)" in dry.stdout, dry.stderr
    refused = flowrt_process("prune", "--older-than", "30d", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    one = flowrt_process("prune", "--older-than", "30d", "--status", "failed", "--yes", "--json", cwd=tmp_path, env=env)
    assert json.loads(one.stdout)["runs"] == 3, one.stderr
    with serve_process(["--flows", "repair_flows:ALL", "--db", db, "--tokens", "root:admin:root-secret-1"]) as server:
        remote = {"FLOWRT_URL": server.url, "FLOWRT_API_TOKEN": "root-secret-1"}
        done = flowrt_process("prune", "--older-than", "30d", "--yes", cwd=tmp_path, env=remote)
        assert done.returncode == 0 and "Deleted 6 run(s)" in done.stdout and "database size:" in done.stdout, done.stderr


def test_cli_bulk_actions_by_filter(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    broken = tmp_path / "down"
    broken.write_text("x")
    env = {"DATABASE_URL": db, "FLOWRT_FLOWS": "repair_flows:ALL"}
    with Engine(db, flows=ALL) as engine:
        failed = [engine.run_until_blocked(engine.start("shop", input={"brokenFile": str(broken)}).run_id).run_id
                  for _ in range(4)]
        waiting = [engine.run_until_blocked(engine.start("shop", tenant_id="t1").run_id).run_id for _ in range(3)]
        # One failed run is held by another process: its retry fails, the rest go on.
        assert claim_for_repair(engine.storage, failed[0], "someone-else", 600_000, ["FAILED"]) is not None
    broken.unlink()

    dry = flowrt_process("retry", "--status", "FAILED", "--dry-run", "--json", cwd=tmp_path, env=env)
    assert json.loads(dry.stdout)["matched"] == 4, dry.stderr
    refused = flowrt_process("retry", "--flow", "shop", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    both = flowrt_process("retry", failed[1], "--flow", "shop", cwd=tmp_path, env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    done = flowrt_process("retry", "--flow", "shop", "--yes", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 4, done.stderr  # one outcome was not a success
    summary = json.loads(done.stdout)
    assert summary["outcomes"] == {"retried": 3, "RUN_BUSY": 1}
    assert [r["runId"] for r in summary["runs"] if r["outcome"] == "RUN_BUSY"] == [failed[0]]

    with serve_process(["--flows", "repair_flows:ALL", "--db", db]) as server:
        remote = {"FLOWRT_URL": server.url}
        resumed = flowrt_process("resume", "--tenant", "t1", "--payload", '{"by": "bulk"}', "--yes", cwd=tmp_path, env=remote)
        assert resumed.returncode == 0 and "3 resumed" in resumed.stdout, resumed.stderr
        cancelled = flowrt_process("cancel", "--status", "RUNNING", "--yes", "--json", cwd=tmp_path, env=remote)
        outcomes = json.loads(cancelled.stdout)["outcomes"]
        # The retried runs are being driven by the server: each was cancelled, or had finished first.
        assert set(outcomes) <= {"cancelled", "RUN_FINISHED"}, cancelled.stdout
        for run_id in waiting:
            events = httpx.get(f"{server.url}/v1/runs/{run_id}/timeline").json()
            assert [e["payloadJson"]["by"] for e in events if e["type"] == "RUN_RESUMED"] == ["api"]
