"""`flowrt serve` as a real process: exit codes, the in-memory fallback, SIGTERM, kill -9 and recovery."""

from __future__ import annotations

import os
import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import REPO, SERVE, ServeProcess, serve_process, wait_for

from flowrt import Engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

DEAD_DB = "postgresql://postgres@127.0.0.1:1/nowhere"


def run_serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_") and k != "DATABASE_URL"}
    clean["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [*SERVE, *args], cwd=REPO, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--strict-db", "--db", DEAD_DB], {}), ([], {"DATABASE_URL": DEAD_DB, "FLOWRT_STRICT_DB": "1"})],
    ids=["flag", "env"],
)
def test_strict_db_refuses_to_start_with_exit_5(args: list[str], env: dict[str, str]) -> None:
    out = run_serve(["--flows", "examples.demo:ALL", "--port", "0", *args], env)
    assert out.returncode == 5, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "STORAGE_UNAVAILABLE" in lines[0] and "127.0.0.1" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_bad_flows_path_is_a_usage_error() -> None:
    out = run_serve(["--flows", "no_such_module:ALL", "--port", "0"])
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no_such_module" in out.stderr, out.stderr


def test_a_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = run_serve(["--flows", "examples.demo:ALL", "--db", "memory://", "--port", str(taken.getsockname()[1])])
    assert out.returncode == 2 and "CANNOT_LISTEN" in out.stderr.splitlines()[-1], out.stderr


def test_unreachable_database_falls_back_to_memory_loudly_and_sigterm_exits_cleanly() -> None:
    with serve_process(["--flows", "examples.demo:ALL"], {"DATABASE_URL": DEAD_DB}) as srv:
        health = httpx.get(srv.url + "/health").json()
        assert health["fallback"] is True and health["storage"] == "memory" and health["durable"] is False
        assert health["status"] == "alive" and health["condition"] == "degraded"
        # Why, without the database's host, port, user or name (the open probes show no
        # connection details; the log has them).
        assert health["fallbackReason"] and "127.0.0.1" not in health["fallbackReason"]
        assert "127.0.0.1:1" not in httpx.get(srv.url + "/ready").text
        run = httpx.post(srv.url + "/v1/runs/start?wait=5", json={"flowId": "demo-fraud", "input": {"amount": 9}})
        assert run.json()["status"] == "COMPLETED"  # it still works, just not durably
        assert srv.terminate() == 0
        log = srv.output()
        assert "FALLING BACK TO IN-MEMORY STORAGE" in log and "--strict-db" in log and "127.0.0.1:1" in log
        assert "runtime stopped" in log and "Traceback" not in log


def test_kill_9_mid_run_then_restart_finishes_every_run_exactly_once(tmp_path: Path) -> None:
    side = tmp_path / "executions.log"
    side.touch()
    env = {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": "0.3"}
    args = ["--flows", "http_flows:ALL", "--db", f"sqlite:///{tmp_path / 'flowrt.db'}", "--lease-ttl", "1",
            "--workers", "3"]
    with serve_process(args, env) as first:
        ids = [httpx.post(first.url + "/v1/runs/start", json={"flowId": "slow-http", "input": {"i": i}}).json()["runId"]
               for i in range(6)]
        wait_for(lambda: len(side.read_text().splitlines()) >= 4, 15, "the first nodes to start")
        first.kill()  # kill -9: in-flight nodes never commit, leases stay held until they expire

    with serve_process(args, env) as second:
        def all_done() -> list[dict[str, Any]] | None:
            runs = [httpx.get(f"{second.url}/v1/runs/{run_id}").json() for run_id in ids]
            return runs if all(r["status"] == "COMPLETED" for r in runs) else None

        wait_for(all_done, 40, "every run to complete after the restart")
        assert "recovery:" in second.output()
        assert second.terminate() == 0

    executed = Counter(tuple(line.split()[:2]) for line in side.read_text().splitlines())
    lost_total = 0
    with Engine(f"sqlite:///{tmp_path / 'flowrt.db'}") as engine:
        for run_id in ids:
            events = engine.timeline(run_id)
            finished = Counter(e.node_id for e in events if e.type == "NODE_FINISHED")
            assert finished == {"one": 1, "two": 1, "three": 1}, (run_id, events)  # each step committed once
            lost = Counter(e.node_id for e in events
                           if e.type == "NODE_FAILED" and e.payload["error"]["code"] == "WORKER_LOST")
            lost_total += sum(lost.values())
            for node in ("one", "two", "three"):
                # at least once; more only where a crash explains it
                assert 1 <= executed[(run_id, node)] <= 1 + lost[node], (run_id, node, executed, lost)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            row = engine.storage.get_run(run_id)
            assert row is not None and row.lease_owner is None
    assert lost_total >= 1  # the kill really landed mid-node


def test_sigterm_lets_the_step_in_flight_commit_and_releases_leases(tmp_path: Path) -> None:
    side = tmp_path / "executions.log"
    side.touch()
    env = {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": "0.4"}
    # No --db: the embedded default, flowrt.db in the working directory.
    proc = ServeProcess(["--flows", "http_flows:ALL"], env, cwd=tmp_path)
    try:
        proc.wait_ready()
        run_id = httpx.post(proc.url + "/v1/runs/start", json={"flowId": "slow-http"}).json()["runId"]
        wait_for(lambda: side.read_text().strip(), 10, "the first node to start")
        assert proc.terminate() == 0
        assert "runtime stopped" in proc.output()
    finally:
        proc.close()
    with Engine(f"sqlite:///{tmp_path / 'flowrt.db'}") as engine:
        events = engine.timeline(run_id)
        started = Counter(e.node_id for e in events if e.type == "NODE_STARTED")
        finished = Counter(e.node_id for e in events if e.type == "NODE_FINISHED")
        assert started == finished and finished["one"] == 1  # nothing cut off mid-step
        row = engine.storage.get_run(run_id)
        assert row is not None and row.lease_owner is None
