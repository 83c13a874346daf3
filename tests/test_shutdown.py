"""Stopping on purpose: SIGTERM and Ctrl-C on `flowrt serve`, a second Ctrl-C, a flows module
that does not import; and a restart after kill -9. Real `flowrt serve` processes and real signals.

A deploy is a SIGTERM: steps that finish within --shutdown-grace commit; a step still running
at the deadline is abandoned with its lease expired, and the next start recovers it (an
interruption is not the node's failure, so with the default Retry() the run still completes).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from http_helpers import REPO, ServeProcess, serve_process, wait_for

from flowrt import Engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _start_slow(server: ServeProcess, side: Path) -> str:
    run_id = httpx.post(server.url + "/v1/runs/start", json={"flowId": "slow-http"}).json()["runId"]
    wait_for(lambda: side.read_text().strip(), 20, "the first node to start")
    return str(run_id)


def test_sigterm_waits_for_the_step_in_flight_and_says_so(tmp_path: Path) -> None:
    side = tmp_path / "side.log"
    side.touch()
    db = f"sqlite:///{tmp_path / 'f.db'}"
    env = {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": "2"}
    server = ServeProcess(["--flows", "http_flows:ALL", "--db", db, "--shutdown-grace", "20"], env).wait_ready()
    try:
        run_id = _start_slow(server, side)
        began = time.monotonic()
        assert server.terminate(30) == 0
        assert time.monotonic() - began < 15  # it waited for the step, not for the whole grace
        log = server.output()
        assert f"waiting up to 20s for 1 step(s): run {run_id} at one" in log
        assert "runtime stopped" in log and "Traceback" not in log
    finally:
        server.close()
    with Engine(db) as engine:
        types = [(e.type, e.node_id) for e in engine.timeline(run_id)]
        assert ("NODE_FINISHED", "one") in types  # the step in flight committed
        assert not [t for t in types if t[0] == "NODE_FAILED"]
        assert engine.storage.get_run(run_id).lease_owner is None  # type: ignore[union-attr]


def _slow_run_stopped(tmp_path: Path, option: str, value: str, stop: Callable[[ServeProcess], None]) -> tuple[list[str], Path, str]:
    """A server with ``option value`` whose run is in its slow node when ``stop`` stops it:
    ``(args, side file, run id)``, for the restart."""
    side = tmp_path / "side.log"
    side.touch()
    args = ["--flows", "http_flows:ALL", "--db", f"sqlite:///{tmp_path / 'f.db'}", option, value]
    server = ServeProcess(args, {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": "60"}).wait_ready()
    try:
        run_id = _start_slow(server, side)
        stop(server)
    finally:
        server.close()
    return args, side, run_id


def _recovered_after_restart(args: list[str], side: Path, run_id: str) -> tuple[dict[str, Any], str]:
    """Restart; the run completes with its interrupted attempt as the one WORKER_LOST: ``(run, log)``."""
    with serve_process(args, {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": "0"}) as again:
        run = wait_for(
            lambda: (r := httpx.get(f"{again.url}/v1/runs/{run_id}").json())["status"] == "COMPLETED" and r,
            30, "the run to complete after the restart",
        )  # fmt: skip
        assert run["attempts"]["one"] == 2
        events = httpx.get(f"{again.url}/v1/runs/{run_id}/timeline").json()
        lost = [e for e in events if e["type"] == "NODE_FAILED"]
        assert [e["payloadJson"]["error"]["code"] for e in lost] == ["WORKER_LOST"]
        assert lost[0]["payloadJson"]["recovery"] == 1
        return run, again.output()


def test_a_step_past_the_grace_is_recovered_at_the_next_start_not_failed(tmp_path: Path) -> None:
    def sigterm(server: ServeProcess) -> None:
        began = time.monotonic()
        assert server.terminate(30) == 0
        assert time.monotonic() - began < 10
        assert "will be recovered at the next start" in server.output()

    _recovered_after_restart(*_slow_run_stopped(tmp_path, "--shutdown-grace", "1", sigterm))


def test_after_kill_9_the_restarted_server_recovers_the_run_at_once_not_after_the_lease(tmp_path: Path) -> None:
    """The crash, not the deploy: kill -9 mid-node with a 60 s lease, then a restart. On SQLite the
    new server sees that the killed one is gone (its liveness lock is free) and continues the run
    at once, counting the lost attempt as WORKER_LOST."""
    stopped = _slow_run_stopped(tmp_path, "--lease-ttl", "60", ServeProcess.kill)
    began = time.monotonic()
    _, log = _recovered_after_restart(*stopped)
    assert time.monotonic() - began < 30  # not the 60 s the lease had left
    assert "is gone (no process holds its liveness lock): its 1 run(s) are recovered now" in log


def test_a_second_ctrl_c_abandons_at_once(tmp_path: Path) -> None:
    side = tmp_path / "side.log"
    side.touch()
    db = f"sqlite:///{tmp_path / 'f.db'}"
    env = {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": "60"}
    server = ServeProcess(["--flows", "http_flows:ALL", "--db", db, "--shutdown-grace", "60"], env).wait_ready()
    try:
        run_id = _start_slow(server, side)
        server.proc.send_signal(signal.SIGINT)
        wait_for(lambda: "waiting up to" in server.output(), 10, "the first Ctrl-C to be acknowledged")
        # The HTTP server has stopped by now (no request was in flight): the second Ctrl-C
        # reaches a process that is only waiting for its drivers' steps.
        wait_for(lambda: "Finished server process" in server.output(), 10, "uvicorn to stop")
        time.sleep(0.5)
        began = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(20) == 0
        assert time.monotonic() - began < 10
        log = server.output()
        assert "second signal: abandoning the steps in flight now" in log and run_id in log
    finally:
        server.close()
    with Engine(db) as engine:
        row = engine.storage.get_run(run_id)
        assert row is not None and row.status == "RUNNING" and row.lease_expires_at is not None
        assert row.lease_expires_at <= engine.clock.now_ms()  # expired: the next start takes it at once


def test_a_flows_module_that_does_not_import_is_a_usage_error_with_the_users_line(tmp_path: Path) -> None:
    (tmp_path / "broken_flows.py").write_text("from flowrt import Flow\n\nflow = Flow('x')\ndef node(:\n    pass\n")
    (tmp_path / "raising_flows.py").write_text("import os\n\nTOKEN = os.environ['NO_SUCH_SETTING']\n")
    for command in (["serve", "--port", "0"], ["flows"]):
        for module, line, what in (("broken_flows", 4, "SyntaxError"), ("raising_flows", 3, "KeyError")):
            done = subprocess.run(
                [sys.executable, "-m", "flowrt.cli", *command, "--flows", f"{module}:ALL"],
                cwd=tmp_path, capture_output=True, text=True, timeout=60,
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert f"{tmp_path / module}.py, line {line}" in done.stderr, done.stderr
            assert what in done.stderr and "FLOW_LOAD_ERROR" in done.stderr and "internal error" not in done.stderr


def test_a_stuck_sync_handler_of_an_http_tick_does_not_keep_the_server_from_exiting(tmp_path: Path) -> None:
    (tmp_path / "stuck_flows.py").write_text(
        "import time\nfrom flowrt import Flow, ok\n\nstuck = Flow('stuck')\n\n"
        "@stuck.node(entry=True)\ndef hang(ctx):\n    time.sleep(300)\n    return ok()\n\nALL = [stuck]\n"
    )
    args = ["--flows", "stuck_flows:ALL", "--no-drive", "--db", f"sqlite:///{tmp_path / 'f.db'}", "--shutdown-grace", "1"]
    server = ServeProcess(args, {"PYTHONPATH": str(tmp_path)}).wait_ready()
    try:
        run_id = httpx.post(server.url + "/v1/runs/start", json={"flowId": "stuck"}).json()["runId"]
        import threading  # noqa: PLC0415

        threading.Thread(target=lambda: httpx.post(f"{server.url}/v1/runs/{run_id}/tick", timeout=60), daemon=True).start()
        wait_for(lambda: "stepsInFlight\":1" in httpx.get(server.url + "/health").text, 20, "the tick's handler to run")
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
        assert time.monotonic() - began < 15, "a stuck handler kept the process alive"
    finally:
        server.close()
