"""Durability across processes: real subprocesses on one SQLite file or Postgres, and kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import logging

import pytest

from flowrt import Engine, Flow, Retry, RunBusy, StorageUnavailable, ok
from flowrt.driver import Drivers, recover

HERE = Path(__file__).parent
WORKER = [sys.executable, str(HERE / "engine_flows.py")]


@pytest.fixture(params=["sqlite_url", "pg_url"])
def shared_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(request.param)


@pytest.fixture
def side_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "executions.log"
    monkeypatch.setenv("FLOWRT_TEST_SIDE_FILE", str(path))
    monkeypatch.syspath_prepend(str(HERE))
    return path


def executions(path: Path) -> Counter[str]:
    return Counter(line.split()[1] for line in path.read_text().splitlines())


def test_a_run_another_process_holds_says_when_its_lease_runs_out(shared_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """After kill -9 and a restart inside the lease TTL, the dead process's runs wait for its
    lease: RUN_BUSY and the startup recovery's log say until when, not just "busy"."""
    flow = Flow("held-elsewhere", "1.0.0")
    flow.add_node("only", lambda ctx: ok(), entry=True)
    with Engine(shared_url, flows=[flow]) as engine:
        run_id = engine.start("held-elsewhere").run_id
        assert engine.storage.claim(run_id, "gone-host:4242:abc123", 600_000) is not None
        with pytest.raises(RunBusy, match=r"executed by gone-host:4242:abc123; its lease runs out in (599|600)s"):
            engine.tick(run_id)
        with caplog.at_level(logging.WARNING, logger="flowrt"):
            report = recover(engine)
        assert report.driven == 0
        assert "recovery: 1 run(s) held by other processes' leases (gone-host:4242:abc123) are left to them" in caplog.text
        assert re.search(r"the first in (599|600)s \(--lease-ttl\)", caplog.text)
        assert engine.get(run_id).status == "RUNNING"  # type: ignore[union-attr]


def _killed_mid_node(
    url: str, tmp_path: Path, *, kill: bool, ttl: str = "60", owner: str = ""
) -> tuple[str, subprocess.Popen[str]]:
    """A worker process driving a run of engine_flows' linear flow, in its slow middle node with
    a ``ttl`` lease; killed with SIGKILL there when ``kill``, else left running (its node sleeps 60 s)."""
    marker = tmp_path / "in-middle"
    proc = subprocess.Popen(
        [*WORKER, url, "start-and-drive"],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ, "FLOWRT_TEST_MARKER": str(marker), "FLOWRT_TEST_SLEEP": "60", "FLOWRT_TEST_TTL": ttl,
            "FLOWRT_TEST_OWNER": owner,
        },
    )  # fmt: skip
    try:
        run_id = json.loads(proc.stdout.readline())["runId"]  # type: ignore[union-attr]
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, "worker never reached the slow node"
            time.sleep(0.02)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    if kill:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return run_id, proc


def test_after_kill_9_a_restart_recovers_the_dead_process_runs_without_waiting_for_its_lease(
    sqlite_url: str, side_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite: the kernel drops a killed process's liveness lock, so the next recovery knows it is
    gone and ends its 60 s lease at once (WORKER_LOST), instead of every message saying it is busy."""
    run_id, _ = _killed_mid_node(sqlite_url, tmp_path, kill=True)
    monkeypatch.setenv("FLOWRT_TEST_SLEEP", "0")
    from engine_flows import ALL  # noqa: PLC0415 - needs the tests folder on sys.path

    with Engine(sqlite_url, flows=ALL, lease_ttl=60) as engine:
        row = engine.storage.get_run(run_id)
        assert row is not None and row.lease_owner is not None
        assert (row.lease_expires_at or 0) > engine.clock.now_ms() + 30_000  # the lease has most of a minute left
        assert dry_run(sqlite_url)[run_id] == ("HOLDER_GONE", "continue")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="flowrt"):
            report = recover(engine)
        assert report.driven == 1 and time.monotonic() - started < 20
        assert f"{row.lease_owner} is gone (no process holds its liveness lock): its 1 run(s) are recovered now" in caplog.text
        run = engine.get(run_id)
        assert run is not None and run.status == "COMPLETED"
        lost = [e for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
        assert len(lost) == 1 and lost[0].payload["error"]["code"] == "WORKER_LOST" and lost[0].node_id == "middle"
        assert executions(side_file) == {"first": 1, "middle": 2, "last": 1}
        folder = Path(sqlite_url[len("sqlite:///") :] + "-owners")
        assert [p.read_text() for p in folder.iterdir()] == [engine.owner]  # the dead one's file is gone
    assert not folder.exists()  # and ours at close, with the folder it leaves empty


@pytest.mark.parametrize("owner", ["", "worker-7"], ids=["own-owner", "same-explicit-owner"])
def test_after_kill_9_a_tick_takes_the_dead_process_run_at_once(
    sqlite_url: str, side_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: str
) -> None:
    """No recovery first: the tick itself finds the holder gone (its lock free) and ends its 60 s
    lease, instead of answering RUN_BUSY for a process that no longer exists. An engine reopened
    with the dead one's explicit owner id ends that id's leases when it takes the lock."""
    run_id, _ = _killed_mid_node(sqlite_url, tmp_path, kill=True, owner=owner)
    monkeypatch.setenv("FLOWRT_TEST_SLEEP", "0")
    from engine_flows import ALL  # noqa: PLC0415

    with Engine(sqlite_url, flows=ALL, lease_ttl=60, owner=owner or None) as engine:
        run = engine.run_until_blocked(run_id)
        assert run.status == "COMPLETED" and run.attempts == {"first": 1, "middle": 2, "last": 1}
        lost = [e.payload["error"] for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
        assert [e["code"] for e in lost] == ["WORKER_LOST"]
        assert "its lease ended before the step committed" in lost[0]["message"]


def test_a_surviving_process_drivers_take_over_a_killed_ones_run_at_once(
    sqlite_url: str, side_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes on one SQLite file: the one that survives a kill -9 beside it does not wait
    out the dead one's 60 s lease; its drivers' sweep (every 2 s) ends it."""
    monkeypatch.setenv("FLOWRT_TEST_SLEEP", "0")
    from engine_flows import ALL  # noqa: PLC0415

    with Engine(sqlite_url, flows=ALL, lease_ttl=60) as engine:  # up before the crash: no startup recovery
        drivers = Drivers(engine, workers=1).start()
        try:
            run_id, _ = _killed_mid_node(sqlite_url, tmp_path, kill=True)
            killed = time.monotonic()
            while (run := engine.get(run_id)) is None or run.status != "COMPLETED":
                assert time.monotonic() - killed < 20, "the surviving process never took the run over"
                time.sleep(0.05)
        finally:
            drivers.stop()
        assert run.attempts == {"first": 1, "middle": 2, "last": 1}
        assert [e.payload["error"]["code"] for e in engine.timeline(run_id) if e.type == "NODE_FAILED"] == ["WORKER_LOST"]


def test_a_live_process_keeps_its_runs_whatever_a_recovery_elsewhere_does(
    sqlite_url: str, side_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run_id, proc = _killed_mid_node(sqlite_url, tmp_path, kill=False)
    try:
        monkeypatch.setenv("FLOWRT_TEST_SLEEP", "0")
        from engine_flows import ALL  # noqa: PLC0415

        with Engine(sqlite_url, flows=ALL, lease_ttl=60) as engine:
            assert dry_run(sqlite_url)[run_id] == ("LEASE_HELD", "skip")
            with caplog.at_level(logging.INFO, logger="flowrt"):
                assert recover(engine).driven == 0
            assert "recovery: 1 run(s) held by other live processes" in caplog.text  # no lease to wait out
            assert "--lease-ttl" not in caplog.text
            with pytest.raises(RunBusy, match="a live process; retry once its step has committed"):
                engine.tick(run_id)
            row = engine.storage.get_run(run_id)
            assert row is not None and row.lease_owner != engine.owner and row.status == "RUNNING"
        assert executions(side_file) == {"first": 1, "middle": 1}  # nothing ran the node a second time
    finally:
        proc.kill()
        proc.wait(10)


def test_liveness_locks_of_engines_alive_in_this_process_are_not_taken_for_gone(sqlite_url: str) -> None:
    from flowrt import liveness  # noqa: PLC0415

    flow = Flow("held-here", "1.0.0")
    flow.add_node("only", lambda ctx: ok(), entry=True)
    first = Engine(sqlite_url, flows=[flow])
    run_id = first.start("held-here").run_id
    assert first.storage.claim(run_id, first.owner, 600_000) is not None  # held by the first engine
    folder = Path(sqlite_url[len("sqlite:///") :] + "-owners")
    try:
        with Engine(sqlite_url, flows=[flow]) as second:
            assert second.liveness is not None and not liveness.gone(str(folder), first.owner)
            assert recover(second).driven == 0  # the first engine lives: its run stays with it
            assert sorted(p.read_text() for p in folder.iterdir()) == sorted([first.owner, second.owner])
        assert [p.read_text() for p in folder.iterdir()] == [first.owner]
        assert first.storage.get_run(run_id).lease_owner == first.owner  # type: ignore[union-attr]
    finally:
        first.close()
    assert not folder.exists()


def test_an_engine_reopened_with_a_dead_ones_owner_id_ends_its_leases_even_after_a_failed_try(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease of an engine's own id that ran out is never free to it, so a restart with the
    explicit owner of an engine that died must end that id's leases itself; and if that fails,
    the dead engine's file must stay for the next try."""
    from flowrt import liveness  # noqa: PLC0415

    flow = Flow("reopened", "1.0.0")
    flow.add_node("only", lambda ctx: ok(), entry=True)
    with Engine(sqlite_url, flows=[flow]) as setup:
        run_id = setup.start("reopened").run_id
        assert setup.storage.claim(run_id, "worker-7", 600_000) is not None
    folder = Path(sqlite_url[len("sqlite:///") :] + "-owners")
    folder.mkdir()
    (folder / Path(liveness._path(str(folder), "worker-7")).name).write_text("worker-7")  # as it died: unlocked

    def outage(self: Any, owner: str) -> int:
        raise StorageUnavailable("database is locked")

    with monkeypatch.context() as patched:
        patched.setattr("flowrt.lease_bookkeeping.LeaseBookkeeping.expire_holder", outage)
        with pytest.raises(StorageUnavailable):
            Engine(sqlite_url, flows=[flow], owner="worker-7")
    assert [p.read_text() for p in folder.iterdir()] == ["worker-7"]  # kept, for the next start
    with Engine(sqlite_url, flows=[flow], owner="worker-7") as engine:
        run = engine.run_until_blocked(run_id)
        assert run.status == "COMPLETED"
        assert [e.payload["error"]["code"] for e in engine.timeline(run_id) if e.type == "NODE_FAILED"] == ["WORKER_LOST"]


def test_an_engine_with_a_dead_engines_explicit_owner_recovers_its_leases_once_they_run_out(shared_url: str) -> None:
    """Postgres has no liveness proof, and a lease of one's own id that ran out is never free to
    oneself: without this, the runs an engine with owner "worker-9" held when it died would stay
    stuck for good after a restart with the same id (at start, and while it runs with drivers)."""
    flow = Flow("same-id", "1.0.0")
    flow.add_node("only", lambda ctx: ok(), entry=True)
    with Engine(shared_url, flows=[flow]) as setup:
        lapsed = setup.start("same-id").run_id
        later = setup.start("same-id").run_id
        assert setup.storage.claim(lapsed, "worker-9", 1) is not None  # ran out before the restart
        assert setup.storage.claim(later, "worker-9", 4000) is not None  # runs out after it
    time.sleep(0.01)
    with Engine(shared_url, flows=[flow], owner="worker-9") as engine:
        assert engine.storage.get_run(later).lease_expires_at > 0 and later in engine.leases.earlier  # type: ignore[union-attr]
        run = engine.run_until_blocked(lapsed)
        assert run.status == "COMPLETED"
        assert [e.payload["error"]["code"] for e in engine.timeline(lapsed) if e.type == "NODE_FAILED"] == ["WORKER_LOST"]
        drivers = Drivers(engine, workers=1, poll_interval=0.05).start()
        try:
            deadline = time.monotonic() + 20
            while (row := engine.get(later)) is None or row.status != "COMPLETED":
                assert time.monotonic() < deadline, "the earlier engine's lease was never taken over"
                time.sleep(0.05)
        finally:
            drivers.stop()
        assert [e.payload["error"]["code"] for e in engine.timeline(later) if e.type == "NODE_FAILED"] == ["WORKER_LOST"]


def test_a_live_engines_own_lease_it_lost_track_of_is_handed_back_not_taken_for_a_dead_ones(shared_url: str) -> None:
    """Only the leases an earlier engine with the same explicit id held when this one started are
    ended as lost work: one of this engine's own (a claim ahead whose answer was lost, say) is
    handed back by the renewer, and no WORKER_LOST is made up for a node that never ran."""
    flow = Flow("lost-track", "1.0.0")
    flow.add_node("only", lambda ctx: ok(), entry=True, retry=Retry(max_recoveries=0))
    with Engine(shared_url, flows=[flow], owner="worker-9", lease_ttl=12) as engine:  # renewer every 4 s, sweep 2 s
        run_id = engine.start("lost-track").run_id
        assert engine.storage.claim(run_id, "worker-9", 300) is not None  # ours in the database, tracked nowhere
        engine.start("lost-track", keep_lease=True)  # a lease this engine does track: its renewer runs
        drivers = Drivers(engine, workers=1, poll_interval=0.05).start()
        try:
            deadline = time.monotonic() + 20
            while (run := engine.get(run_id)) is None or run.status == "RUNNING":
                assert time.monotonic() < deadline, "the lost lease was never handed back"
                time.sleep(0.05)
        finally:
            drivers.stop()
        assert run.status == "COMPLETED", run.error
        assert [e.type for e in engine.timeline(run_id) if e.type == "NODE_FAILED"] == []


def test_an_owner_id_a_live_engine_holds_is_refused_not_shared(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two live engines with one owner id could not tell their leases apart, and the first one's
    death would end the second's: the second is refused (after a wait, see the next test)."""
    from flowrt import InvalidInput, liveness  # noqa: PLC0415

    monkeypatch.setattr(liveness, "HOLD_WAIT", 0.3)
    with Engine(sqlite_url, owner="worker-1"):
        with pytest.raises(InvalidInput, match="owner 'worker-1' is in use by another live engine"):
            Engine(sqlite_url, owner="worker-1")
    Engine(sqlite_url, owner="worker-1").close()  # once the first has closed, it is free again


def test_a_sweep_holds_a_gone_holders_lock_until_its_leases_are_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine restarted with the same owner id cannot take its lock (and so claim nothing)
    while a recovery elsewhere is still ending the leases of the one that died."""
    from flowrt import InvalidInput, liveness  # noqa: PLC0415

    monkeypatch.setattr(liveness, "HOLD_WAIT", 0.3)
    folder = str(tmp_path / "db-owners")
    dead = liveness.LivenessLock(folder, "worker-1")
    dead.hold()
    os.close(dead._fd)  # type: ignore[arg-type]  # the process dies: its lock goes, its file stays
    seen: list[str] = []

    def end(holder: str) -> None:
        seen.append(holder)
        with pytest.raises(InvalidInput):
            liveness.LivenessLock(folder, "worker-1").hold()  # the restart waits, then gives up

    liveness.sweep(folder, keep="recoverer", end=end)
    assert seen == ["worker-1"] and os.listdir(folder) == []
    again = liveness.LivenessLock(folder, "worker-1")
    again.hold()  # after the sweep: free
    assert again._fd is not None and not liveness.gone(folder, "worker-1")
    again.release()

    dead = liveness.LivenessLock(folder, "worker-2")
    dead.hold()
    os.close(dead._fd)  # type: ignore[arg-type]

    def failing(holder: str) -> None:
        raise StorageUnavailable("the database is away")

    with pytest.raises(StorageUnavailable):
        liveness.sweep(folder, keep="recoverer", end=failing)
    assert liveness.gone(folder, "worker-2")  # its file stays: the next recovery finds it again


def dry_run(url: str) -> dict[str, tuple[str, str]]:
    """What `flowrt recover --dry-run` (a real CLI process) says of each run: ``{run_id: (reason, action)}``."""
    out = subprocess.run(
        [sys.executable, "-m", "flowrt.cli", "recover", "--dry-run", "--json", "--db", url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {e["runId"]: (e["reason"], e["action"]) for e in json.loads(out.stdout)["runs"]}


def run_worker(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [*WORKER, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_run_started_in_one_process_is_finished_in_another(shared_url: str, side_file: Path) -> None:
    first = run_worker(shared_url, "start-and-tick")
    assert first["status"] == "RUNNING" and first["currentNodeId"] == "middle"
    second = run_worker(shared_url, "continue", first["runId"])
    assert second["status"] == "COMPLETED"
    assert second["attempts"] == {"first": 1, "middle": 1, "last": 1}
    assert executions(side_file) == {"first": 1, "middle": 1, "last": 1}


def test_kill_9_mid_node_counts_the_attempt_and_commits_nothing_twice(
    shared_url: str, side_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, _ = _killed_mid_node(shared_url, tmp_path, kill=True, ttl="1")
    monkeypatch.setenv("FLOWRT_TEST_SLEEP", "0")
    from engine_flows import ALL  # noqa: PLC0415 - needs the tests folder on sys.path

    engine = Engine(shared_url, flows=ALL, lease_ttl=1)
    try:
        if engine.liveness is None:  # Postgres; on SQLite the tick finds the worker gone and goes on
            with pytest.raises(RunBusy, match="its lease runs out"):  # the dead worker's lease has not expired yet
                engine.tick(run_id)
        deadline = time.monotonic() + 10
        while True:
            try:
                run = engine.run_until_blocked(run_id)
                break
            except RunBusy:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert run.status == "COMPLETED"
        assert run.attempts == {"first": 1, "middle": 2, "last": 1}
        events = engine.timeline(run_id)
        lost = [e for e in events if e.type == "NODE_FAILED"]
        assert len(lost) == 1 and lost[0].payload["error"]["code"] == "WORKER_LOST"
        assert lost[0].node_id == "middle" and lost[0].attempt == 1
        finished = Counter(e.node_id for e in events if e.type == "NODE_FINISHED")
        assert finished == {"first": 1, "middle": 1, "last": 1}
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        # at-least-once handlers: the killed attempt ran, then the retry
        assert executions(side_file) == {"first": 1, "middle": 2, "last": 1}
    finally:
        engine.close()


def test_attempts_survive_restarts_and_the_recovery_budget_holds(shared_url: str, side_file: Path, tmp_path: Path) -> None:
    """A node that kills its process every time fails the run once its recovery budget
    (max_recoveries=2) is used up; its max_attempts (1) was never what stopped it."""
    from engine_flows import ALL  # noqa: PLC0415

    engine = Engine(shared_url, flows=ALL, lease_ttl=0.5)
    run_id = engine.tick(engine.start("slow-flow").run_id).run_id  # past `first`
    engine.close()
    for _ in range(3):
        marker = tmp_path / f"m{time.monotonic_ns()}"
        proc = subprocess.Popen(
            [*WORKER, shared_url, "continue", run_id],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "FLOWRT_TEST_MARKER": str(marker), "FLOWRT_TEST_SLEEP": "60", "FLOWRT_TEST_TTL": "0.5"},
        )
        deadline = time.monotonic() + 20
        while not marker.exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.kill()
        proc.wait(10)
        time.sleep(0.6)  # let the lease expire
    engine = Engine(shared_url, flows=ALL, lease_ttl=0.5)
    try:
        run = engine.run_until_blocked(run_id)
        assert run.status == "FAILED" and run.error["code"] == "WORKER_LOST"
        assert "interrupted 3 times in a row, past its recovery budget of 2" in run.error["message"]
        assert run.attempts["middle"] == 3
        assert executions(side_file)["middle"] == 3  # the third loss exhausted the budget: no fourth run
        lost = [e.payload for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
        assert [p.get("recovery") for p in lost] == [1, 2, 3]
    finally:
        engine.close()
