"""Ctrl-C in the CLI never fails a run: real `flowrt` subprocesses and real SIGINTs.

The first Ctrl-C during a local --wait lets the node in hand finish and commit, then says how
to continue; a second abandons it, and continuing the run recovers that attempt (an
interruption, not a failure). Remotely, Ctrl-C only stops watching.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from http_helpers import REPO

from flowrt import Engine
from engine_flows import ALL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _cli(tmp_path: Path, *args: str, sleep: str, marker: Path | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_")}
    env.update(PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}", FLOWRT_TEST_SLEEP=sleep, COLUMNS="100")
    if marker is not None:
        env["FLOWRT_TEST_MARKER"] = str(marker)
    return subprocess.Popen(
        [sys.executable, "-m", "flowrt.cli", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow node never started"
        time.sleep(0.02)


def _run_id_of(url: str) -> str:
    with Engine(url, flows=ALL) as engine:
        runs, _ = engine.list_runs()
        return runs[0].run_id


def _continue(tmp_path: Path, stderr: str) -> subprocess.CompletedProcess[str]:
    line = next(line for line in stderr.splitlines() if line.startswith("continue it with: flowrt "))
    args = line.removeprefix("continue it with: flowrt ").split()
    proc = _cli(tmp_path, *args, sleep="0")
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_first_ctrl_c_lets_the_node_finish_then_says_how_to_continue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    marker = tmp_path / "in-middle"
    proc = _cli(tmp_path, "start", "slow-flow", "--wait", "--flows", "engine_flows:ALL", "--db", url, sleep="2", marker=marker)
    _wait_for(marker, proc)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - began > 1  # it waited for the node
    assert "Ctrl-C: waiting for node middle of run" in err and "continue it with: flowrt tick " in err, err
    for noise in ("Traceback", "Task was destroyed", "KeyboardInterrupt"):
        assert noise not in err, err
    run_id = _run_id_of(url)
    with Engine(url, flows=ALL) as engine:
        run = engine.get(run_id)
        assert run is not None and run.status == "RUNNING" and run.current_node_id == "last"  # middle committed
        assert engine.storage.get_run(run_id).lease_owner is None  # type: ignore[union-attr]
    done = _continue(tmp_path, err)
    assert done.returncode == 0, done.stderr
    with Engine(url, flows=ALL) as engine:
        run = engine.get(run_id)
        assert run is not None and run.status == "COMPLETED" and run.attempts == {"first": 1, "middle": 1, "last": 1}


def test_a_second_ctrl_c_abandons_the_node_and_continuing_recovers_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    marker = tmp_path / "in-middle"
    proc = _cli(tmp_path, "start", "slow-flow", "--wait", "--flows", "engine_flows:ALL", "--db", url, sleep="60", marker=marker)
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while True:  # the first Ctrl-C is acknowledged before the second is sent
        time.sleep(0.2)
        assert time.monotonic() < deadline
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGINT)
        break
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "abandoned node middle of run" in err and "recovered (not failed)" in err, err
    assert "Traceback" not in err and "Task was destroyed" not in err, err
    run_id = _run_id_of(url)
    done = _continue(tmp_path, err)
    assert done.returncode == 0, done.stderr
    with Engine(url, flows=ALL) as engine:
        run = engine.get(run_id)
        assert run is not None and run.status == "COMPLETED"
        lost = [e.payload["error"]["code"] for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
        assert lost == ["WORKER_LOST"]


def test_ctrl_c_while_no_node_runs_stops_at_once(tmp_path: Path, monkeypatch: Any) -> None:
    """Sleeping through a backoff: nothing to wait for."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with Engine(url, flows=ALL) as engine:
        run_id = engine.start("slow-flow").run_id
        engine.storage.db.execute_sql("UPDATE flowrt_runs SET wake_at = ? WHERE run_id = ?", (engine.clock.now_ms() + 60_000, run_id))
    proc = _cli(tmp_path, "tick", run_id, "--wait", "--flows", "engine_flows:ALL", "--db", url, sleep="0")
    time.sleep(1.5)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - began < 5, err
    assert f"stopped: run {run_id} is RUNNING" in err and "continue it with: flowrt tick" in err, err


def test_remote_ctrl_c_stops_watching_and_says_how_to_watch(tmp_path: Path) -> None:
    from http_helpers import serve_process

    side = tmp_path / "side.log"
    side.touch()
    args = ["--flows", "http_flows:ALL", "--db", f"sqlite:///{tmp_path / 'f.db'}"]
    with serve_process(args, {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": "30"}) as server:
        proc = _cli(tmp_path, "start", "slow-http", "--wait", "--url", server.url, sleep="0")
        deadline = time.monotonic() + 30
        while not side.read_text().strip():  # the server is running the first node
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        run_id = side.read_text().split()[0]
        assert f"stopped watching run {run_id}; it goes on on the server" in err, err
        assert f"flowrt status {run_id} --watch --url {server.url}" in err and "Traceback" not in err


def test_ctrl_c_during_a_local_recover_says_what_it_waits_for_and_how_to_go_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with Engine(url, flows=ALL) as engine:
        run_id = engine.start("slow-flow").run_id  # RUNNING, nobody driving it
    marker = tmp_path / "in-middle"
    proc = _cli(tmp_path, "recover", "--flows", "engine_flows:ALL", "--db", url, sleep="2", marker=marker)
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"Ctrl-C: letting 1 step(s) in hand finish: run {run_id} at middle (Ctrl-C again abandons them" in err, err
    assert "recovery stopped by Ctrl-C: run 'flowrt recover' again, with the same options, to continue the rest" in err
    for noise in ("Traceback", "KeyboardInterrupt", "will be recovered at the next start"):
        assert noise not in err, err
    with Engine(url, flows=ALL) as engine:
        run = engine.get(run_id)
        assert run is not None and run.status == "RUNNING" and run.current_node_id == "last"  # middle committed


def test_a_second_ctrl_c_during_a_local_recover_abandons_the_step_and_the_next_recover_recovers_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with Engine(url, flows=ALL) as engine:
        run_id = engine.start("slow-flow").run_id
    marker = tmp_path / "in-middle"
    proc = _cli(tmp_path, "recover", "--flows", "engine_flows:ALL", "--db", url, sleep="30", marker=marker)
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "second Ctrl-C: abandoning the steps in hand" in err and "Traceback" not in err, err
    marker.unlink()
    again = _cli(tmp_path, "recover", "--flows", "engine_flows:ALL", "--db", url, sleep="0")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    with Engine(url, flows=ALL) as engine:
        run = engine.get(run_id)
        assert run is not None and run.status == "COMPLETED" and run.attempts["middle"] == 2
        lost = [e.payload["error"]["code"] for e in engine.timeline(run_id) if e.type == "NODE_FAILED"]
        assert lost == ["WORKER_LOST"]  # an interruption, not a failure
