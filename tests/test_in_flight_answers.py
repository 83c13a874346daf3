"""A tick in flight when its client goes away, or when the server is told to stop.

On ``--no-drive`` a tick runs its step inside the request. With the fast path on, uvicorn's
httptools connections answer it beneath ASGI (flowrt/server/direct.py), which mirrors what
uvicorn's ``send`` does on a disconnect and at shutdown; with ``FLOWRT_FAST_PATH=0`` Litestar
answers. Both must behave alike, so each test runs on both: the step commits whether or not
anyone is left to hear of it, its lease is given back, and the server goes on (or stops)
without an error. Real ``flowrt serve`` processes, raw sockets, real signals.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from http_helpers import ServeProcess, wait_for

from flowrt import Engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PATHS = pytest.mark.parametrize("fast_path", ["1", "0"], ids=["fast-path", "litestar"])


def _serve(tmp_path: Path, fast_path: str, sleep: str) -> tuple[ServeProcess, Path, str]:
    side = tmp_path / "side.log"
    side.touch()
    db = f"sqlite:///{tmp_path / 'f.db'}"
    env = {"HTTP_TEST_SIDE_FILE": str(side), "HTTP_TEST_SLEEP": sleep, "FLOWRT_FAST_PATH": fast_path}
    args = ["--flows", "http_flows:ALL", "--db", db, "--no-drive", "--shutdown-grace", "20"]
    return ServeProcess(args, env).wait_ready(), side, db


def _send_tick(server: ServeProcess, run_id: str, side: Path) -> socket.socket:
    """A keep-alive tick on a raw connection, once its node has started (the request is in flight)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"POST /v1/runs/{run_id}/tick HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode())
    wait_for(lambda: f"{run_id} one" in side.read_text(), 20, "the tick's node to start")
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@PATHS
def test_a_client_that_goes_away_mid_tick_still_gets_its_step_committed(tmp_path: Path, fast_path: str) -> None:
    server, side, db = _serve(tmp_path, fast_path, "1")
    try:
        run_id = httpx.post(server.url + "/v1/runs/start", json={"flowId": "slow-http"}).json()["runId"]
        _send_tick(server, run_id, side).close()  # gone before the node's second is up
        # The step finishes and commits all the same, and its lease is given back: the next
        # tick runs node two at once, with no RUN_BUSY.
        wait_for(
            lambda: httpx.get(f"{server.url}/v1/runs/{run_id}").json()["currentNodeId"] == "two",
            20, "the abandoned tick's step to commit",
        )  # fmt: skip
        again = httpx.post(f"{server.url}/v1/runs/{run_id}/tick", timeout=30)
        assert again.status_code == 200, again.text
        assert again.json()["currentNodeId"] == "three"
        assert "Traceback" not in server.output() and "ERROR" not in server.output()
    finally:
        server.close()
    with Engine(db) as engine:
        types = [(e.type, e.node_id) for e in engine.timeline(run_id)]
        assert types.count(("NODE_FINISHED", "one")) == 1 and ("NODE_FINISHED", "two") in types
        assert side.read_text().count(f"{run_id} one") == 1  # run once, not again for the lost answer


@PATHS
def test_sigterm_with_a_tick_in_flight_answers_it_then_closes(tmp_path: Path, fast_path: str) -> None:
    server, side, db = _serve(tmp_path, fast_path, "2")
    try:
        run_id = httpx.post(server.url + "/v1/runs/start", json={"flowId": "slow-http"}).json()["runId"]
        sock = _send_tick(server, run_id, side)
        began = time.monotonic()
        server.proc.terminate()
        answer = _read_until_closed(sock)  # the whole answer, then the server closes the connection
        sock.close()
        assert server.proc.wait(30) == 0
        assert time.monotonic() - began < 15  # it waited for the step, not the whole grace
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        assert re.search(rb"\r\nconnection: close(\r\n|$)", head), head  # keep-alive is over
        assert int(re.search(rb"\r\ncontent-length: (\d+)", head)[1]) == len(body)  # type: ignore[index]
        assert json.loads(body)["currentNodeId"] == "two"
        log = server.output()
        assert "runtime stopped" in log and "Traceback" not in log
    finally:
        server.close()
    with Engine(db) as engine:
        row = engine.storage.get_run(run_id)
        assert row is not None and row.current_node_id == "two" and row.lease_owner is None
