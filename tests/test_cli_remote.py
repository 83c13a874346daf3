"""The CLI in remote mode, against a real `flowrt serve` process.

One server for the module: SQLite file, a bearer token, and ``--no-drive`` so runs
stay where a test leaves them (long-polls and the CLI move them). The CLI runs
in-process through Typer's runner (it talks HTTP to the server all the same), plus a
few real processes. Every JSON document is compared with what the HTTP API answers,
and with local mode reading the server's own database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from flowrt import Engine
from flowrt.cli import app, remote
from flowrt.loader import load_all
from http_helpers import serve_process

# Shared with the local-mode tests (which also put examples/ and tests/ on sys.path).
from test_cli import (
    ORDER,
    Cli,
    _free_port,
    check_a_repeated_start_says_it_started_nothing,
    fails,
    flowrt_process,
    ok_json,
    runner,
)

SERVED = "examples.orders:ALL,examples.approval:ALL,examples.fraud:ALL"
TOKEN = "s3cret"


class Server:
    def __init__(self, url: str, db: str) -> None:
        self.url = url
        self.db = db
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    folder = tempfile.mkdtemp(prefix="flowrt-cli-remote-")
    db = f"sqlite:///{folder}/server.db"
    args = ["--flows", SERVED, "--db", db, "--token", TOKEN, "--no-drive", "--log-level", "warning"]
    with serve_process(args) as proc:
        srv = Server(proc.url, db)
        try:
            yield srv
        finally:
            srv.http.close()
            proc.terminate(20)


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Iterator[Cli]:
    """flowrt in-process, remote; DATABASE_URL points at a file that must never appear."""

    def invoke(*args: Any, input: str | None = None, **env: str | None) -> Any:  # noqa: A002
        full_env = {"FLOWRT_URL": server.url, "FLOWRT_API_TOKEN": TOKEN,
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}", "FLOWRT_FLOWS": None, **env}
        return runner.invoke(app, [str(a) for a in args], input=input, env=full_env)

    yield invoke
    assert not (tmp_path / "unused.db").exists()  # remote commands never open a local database


@pytest.fixture
def local(server: Server) -> Cli:
    """flowrt in local mode on the server's own database."""

    def invoke(*args: Any, **env: str | None) -> Any:
        return runner.invoke(app, [str(a) for a in args], env={"DATABASE_URL": server.db, "FLOWRT_FLOWS": SERVED, **env})

    return invoke


@pytest.fixture
def server_engine(server: Server) -> Iterator[Engine]:
    """Another process's view of the server's database (to hold a lease, or plant a run)."""
    with Engine(server.db, flows=load_all(["cli_flows:ALL"])) as engine:
        yield engine


def api(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    response = server.http.request(method, path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


# --------------------------------------------------------------------------- same JSON three ways


def test_json_is_the_http_apis_and_local_modes(cli: Cli, local: Cli, server: Server) -> None:
    run = ok_json(cli("start", "order-flow", "--input", ORDER, "--wait", "--json"))
    run_id = run["runId"]
    assert run["status"] == "COMPLETED"
    assert run == api(server, "GET", f"/v1/runs/{run_id}") == ok_json(local("status", run_id, "--json"))
    assert ok_json(cli("status", run_id, "--json")) == run

    timeline = ok_json(cli("timeline", run_id, "--json"))
    assert timeline == api(server, "GET", f"/v1/runs/{run_id}/timeline") == ok_json(local("timeline", run_id, "--json"))
    assert ok_json(cli("timeline", run_id, "--after", "3", "--limit", "2", "--json")) == timeline[3:5]

    query = {"flowId": "order-flow", "status": "COMPLETED", "limit": 3}
    page = ok_json(cli("runs", "--flow", "order-flow", "--status", "completed", "--limit", "3", "--json"))
    assert page == api(server, "GET", "/v1/runs", params=query)
    assert page == ok_json(local("runs", "--flow", "order-flow", "--status", "completed", "--limit", "3", "--json"))

    flows = ok_json(cli("flows", "--json"))
    assert flows == api(server, "GET", "/v1/flows") == ok_json(local("flows", "--json"))


def test_human_output_is_the_same_as_local(cli: Cli, local: Cli) -> None:
    run_id = ok_json(cli("start", "order-flow", "--input", ORDER, "--wait", "--json"))["runId"]
    for command in (["status", run_id], ["timeline", run_id], ["flows"]):
        remote_out = cli(*command)
        assert remote_out.exit_code == 0 and remote_out.stdout == local(*command).stdout


# --------------------------------------------------------------------------- commands


def test_start_without_wait_then_tick(cli: Cli) -> None:
    started = ok_json(cli("start", "order-flow", "--input", ORDER, "--tenant", "acme", "--json"))
    assert set(started) == {"runId", "status", "replayed"} and started["status"] == "RUNNING"
    run = ok_json(cli("tick", started["runId"], "--json"))
    assert run["status"] == "RUNNING" and run["currentNodeId"] == "reserve" and run["tenantId"] == "acme"
    assert "Started run" in cli("start", "order-flow", "--input", ORDER).stdout


def test_a_repeated_idempotent_start_says_it_started_nothing(cli: Cli) -> None:
    check_a_repeated_start_says_it_started_nothing(cli, "cli-remote-1")


def test_start_wait_keeps_going_after_the_long_poll_runs_out(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "LONG_POLL_SECONDS", 0)  # the server answers RUNNING at once
    run = ok_json(cli("start", "order-flow", "--input", ORDER, "--wait", "--json"))
    assert run["status"] == "COMPLETED"


def test_start_wait_exits_1_when_the_run_fails(cli: Cli) -> None:
    declined = '{"orderId": "D1", "sku": "book", "qty": 1, "card": "declined"}'
    result = cli("start", "order-flow", "--input", declined, "--wait")
    assert result.exit_code == 1 and "PAYMENT_DECLINED" in result.stdout


def test_approval_resume_from_file_and_stdin(cli: Cli, tmp_path: Path) -> None:
    ids = [ok_json(cli("start", "approval", "--input", '{"amount": 9}', "--wait", "--json"))["runId"] for _ in range(2)]
    waiting = {r["runId"] for r in ok_json(cli("runs", "--status", "WAITING", "--flow", "approval", "--json"))["runs"]}
    assert set(ids) <= waiting
    (tmp_path / "yes.json").write_text('{"approved": true}')
    yes = ok_json(cli("resume", ids[0], "--payload", f"@{tmp_path / 'yes.json'}", "--wait", "--json"))
    assert yes["status"] == "COMPLETED" and yes["stateJson"]["approved"] is True
    no = ok_json(cli("resume", ids[1], "--payload", "-", "--wait", "--json", input='{"approved": false}'))
    assert no["stateJson"]["approved"] is False
    fails(cli("resume", ids[0], "--payload", '{"approved": true}'), 4, "RUN_NOT_WAITING")


def test_a_payload_that_looks_wrapped_arrives_unchanged(cli: Cli) -> None:
    run_id = ok_json(cli("start", "fraud-detection", "--input", '{"amount": 700, "accountAgeDays": 3}', "--wait", "--json"))["runId"]
    run = ok_json(cli("resume", run_id, "--payload", '{"payload": 1}', "--json"))
    assert run["status"] == "WAITING"  # the node saw {"payload": 1}, not 1: no verdict, ask again
    events = ok_json(cli("timeline", run_id, "--json"))
    assert [e["payloadJson"]["payload"] for e in events if e["type"] == "RUN_RESUMED"] == [{"payload": 1}]


def test_cancel_with_a_reason(cli: Cli) -> None:
    run_id = ok_json(cli("start", "approval", "--input", '{"amount": 9}', "--wait", "--json"))["runId"]
    assert ok_json(cli("cancel", run_id, "--reason", "dup", "--json"))["status"] == "CANCELLED"
    fails(cli("cancel", run_id), 4, "RUN_FINISHED")


def test_timeline_follow_ends_when_the_run_ends(cli: Cli, server: Server) -> None:
    run_id = ok_json(cli("start", "approval", "--input", '{"amount": 9}', "--wait", "--json"))["runId"]

    def decide_later() -> None:
        time.sleep(0.3)
        api(server, "POST", f"/v1/runs/{run_id}/resume", params={"wait": 10}, json={"approved": True})

    thread = threading.Thread(target=decide_later)
    thread.start()
    result = cli("timeline", run_id, "--follow", "--json", "--interval", "0.05")
    thread.join()
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events == api(server, "GET", f"/v1/runs/{run_id}/timeline") and events[-1]["type"] == "RUN_COMPLETED"


def test_recover_through_the_api(cli: Cli) -> None:
    running = ok_json(cli("start", "order-flow", "--input", ORDER, "--json"))["runId"]
    timer = ok_json(cli("start", "approval", "--input", '{"amount": 9, "escalateAfterSeconds": 0.3}', "--wait", "--json"))
    time.sleep(0.35)
    dry = ok_json(cli("recover", "--dry-run", "--json"))
    reasons = {r["runId"]: r["reason"] for r in dry["runs"]}
    assert reasons[running] == "RUNNING" and reasons[timer["runId"]] == "TIMER_DUE"
    report = {r["runId"]: r for r in ok_json(cli("recover", "--json"))["runs"]}
    assert report[running]["status"] == "COMPLETED"
    escalated = ok_json(cli("status", timer["runId"], "--json"))
    assert escalated["status"] == "WAITING" and escalated["stateJson"]["escalated"] is True


# --------------------------------------------------------------------------- errors


def test_every_error_class_has_the_same_exit_code_as_locally(cli: Cli, local: Cli, server_engine: Engine) -> None:
    assert fails(cli("status", "nope"), 3) == fails(local("status", "nope"), 3)
    fails(cli("start", "no-such-flow"), 3, "FLOW_NOT_FOUND")
    planted = server_engine.start("nap").run_id  # a flow the server does not load
    fails(cli("tick", planted), 3, "FLOW_NOT_REGISTERED")

    held = ok_json(cli("start", "approval", "--input", '{"amount": 9}', "--wait", "--json"))["runId"]
    server_engine.storage.claim(held, "another-worker", 60_000)
    fails(cli("tick", held), 4, "RUN_BUSY")
    fails(local("tick", held), 4, "RUN_BUSY")

    fails(cli("start", "order-flow", "--tenant", "t" * 300), 2, "tenantId", "BAD_REQUEST")
    fails(cli("runs", FLOWRT_API_TOKEN="wrong"), 2, "--token", "UNAUTHORIZED")
    fails(cli("runs", FLOWRT_API_TOKEN=None), 2, "UNAUTHORIZED")
    fails(cli("runs", FLOWRT_URL=f"http://127.0.0.1:{_free_port()}"), 5, "cannot reach", "UNREACHABLE")
    fails(cli("runs", FLOWRT_URL="localhost:3000"), 2, "--url must start with http")
    fails(cli("start", "approval", "--input", "{"), 2, "--input is not valid JSON")


def test_real_processes_against_the_server(server: Server) -> None:
    remote = {"FLOWRT_URL": server.url, "FLOWRT_API_TOKEN": TOKEN}
    done = flowrt_process("start", "order-flow", "--wait", "--input", "-", input=ORDER, env=remote)
    assert done.returncode == 0, done.stderr
    assert "COMPLETED" in done.stdout and "\x1b[" not in done.stdout
    missing = flowrt_process("status", "nope", "--json", env=remote)
    assert (missing.returncode, missing.stdout, missing.stderr) == (3, "", "error: run nope not found (RUN_NOT_FOUND)\n")


def test_start_wait_goes_on_through_a_server_restart(tmp_path: Path) -> None:
    """The run is started: a server killed and restarted meanwhile (a deploy) must not turn
    `start --wait` into a failure that a script would answer by starting the run again."""
    from http_helpers import ServeProcess  # noqa: PLC0415
    from test_cli import _process_env  # noqa: PLC0415

    args = ["--flows", "http_flows:ALL", "--db", f"sqlite:///{tmp_path / 'flowrt.db'}"]
    env = {"HTTP_TEST_SLEEP": "1.5"}
    first = ServeProcess(args, env).wait_ready()
    waiting = subprocess.Popen(
        [sys.executable, "-m", "flowrt.cli", "start", "slow-http", "--wait", "--json", "--url", first.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_process_env(),
    )  # fmt: skip
    second = None
    try:
        deadline = time.monotonic() + 20
        while not httpx.get(first.url + "/v1/runs").json().get("runs"):
            assert time.monotonic() < deadline, "the run was never started"
            time.sleep(0.05)
        first.kill()
        time.sleep(1.5)  # the CLI meets a refused connection
        second = ServeProcess(args, env, port=first.port).wait_ready()
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
        first.close()
        if second is not None:
            second.close()
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"] == "COMPLETED"
    assert "still waiting for run" in err and "which goes on there" in err


def test_remote_recover_says_which_runs_it_left_to_the_servers_drivers(tmp_path: Path) -> None:
    from test_cli import _process_env  # noqa: PLC0415

    args = ["--flows", "http_flows:ALL", "--db", f"sqlite:///{tmp_path / 'flowrt.db'}"]
    side = tmp_path / "executions.log"
    with serve_process(args, {"HTTP_TEST_SLEEP": "3", "HTTP_TEST_SIDE_FILE": str(side)}) as srv:
        httpx.post(srv.url + "/v1/runs/start", json={"flowId": "slow-http"}).raise_for_status()
        deadline = time.monotonic() + 20
        while not side.exists():  # a driver is inside the first node now
            assert time.monotonic() < deadline, "no driver took the run"
            time.sleep(0.05)
        done = subprocess.run(
            [sys.executable, "-m", "flowrt.cli", "recover", "--url", srv.url],
            capture_output=True, text=True, env=_process_env(), timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Recovered 0 run(s)" in done.stdout, done.stdout
    assert "1 run(s) left as they are: another executor is moving it (the server's drivers)" in done.stderr + done.stdout


@pytest.mark.parametrize("where", ["local", "remote"])
def test_tick_wait_watches_a_run_the_servers_drivers_hold(tmp_path: Path, where: str) -> None:
    """`tick --wait` goes on as `start --wait` does: a run another executor holds is watched
    until it waits or ends, not answered RUN_BUSY (the command Ctrl-C prints must work)."""
    from test_cli import _process_env  # noqa: PLC0415

    db = f"sqlite:///{tmp_path / 'flowrt.db'}"
    side = tmp_path / "executions.log"
    with serve_process(["--flows", "http_flows:ALL", "--db", db], {"HTTP_TEST_SLEEP": "1", "HTTP_TEST_SIDE_FILE": str(side)}) as srv:
        run_id = httpx.post(srv.url + "/v1/runs/start", json={"flowId": "slow-http"}).json()["runId"]
        deadline = time.monotonic() + 20
        while not side.exists():
            assert time.monotonic() < deadline, "no driver took the run"
            time.sleep(0.05)
        target = ["--url", srv.url] if where == "remote" else ["--db", db, "--flows", "http_flows:ALL"]
        done = subprocess.run(
            [sys.executable, "-m", "flowrt.cli", "tick", run_id, "--wait", "--json", *target],
            capture_output=True, text=True, env=_process_env(HTTP_TEST_SLEEP="1"), timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "COMPLETED"


def test_each_outage_during_a_remote_wait_gets_its_own_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short restart early in a long wait must not use up the allowance of a deploy an hour later."""
    from flowrt.errors import ServerUnreachable  # noqa: PLC0415
    from flowrt.runs import Run  # noqa: PLC0415

    clock = {"now": 0.0}

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return clock["now"]

        @staticmethod
        def sleep(seconds: float) -> None:
            clock["now"] += seconds

    def run(status: str) -> Run:
        return Run.from_json({"runId": "r1", "flowId": "f", "flowVersion": "1", "status": status,
                              "createdAt": "2026-12-04T00:00:00.000Z", "updatedAt": "2026-12-04T00:00:00.000Z"})

    answers: list[Any] = [ServerUnreachable("refused"), run("RUNNING"), "an hour", ServerUnreachable("refused"),
                          run("COMPLETED")]  # fmt: skip

    class FakeClient:
        def wait(self, run_id: str, timeout: float | None = None) -> Run:
            answer = answers.pop(0)
            if answer == "an hour":
                clock["now"] += 3600
                answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[no-any-return]

    monkeypatch.setattr(remote, "time", FakeTime)
    backend = remote.RemoteBackend("http://127.0.0.1:9", None)
    backend.client = FakeClient()  # type: ignore[assignment]
    assert backend.settle("r1")["status"] == "COMPLETED"
    answers[:] = [ServerUnreachable("refused")] * 40
    with pytest.raises(ServerUnreachable, match="run r1 was started and goes on there"):
        backend.settle("r1")
    assert len(answers) == 40 - 31  # one call a second, for 30 s
