"""The CLI in local mode: Typer's runner on a SQLite file, plus a few real processes.

Remote mode (against a real `flowrt serve`) is in test_cli_remote.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from rich.console import Console
from typer.main import get_command
from typer.testing import CliRunner, Result

from flowrt import Engine
from flowrt.cli import app
from flowrt.cli.output import Output
from flowrt.loader import load_all

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))  # examples.* and cli_flows, as `--flows` imports them

FLOWS = "examples.orders:ALL,examples.approval:ALL,examples.fraud:ALL,cli_flows:ALL"
ORDER = '{"orderId": "A1", "sku": "book", "qty": 2}'
COMMANDS = ["start", "resume", "tick", "cancel", "retry", "rewind", "status", "runs", "timeline", "flows", "recover",
            "prune", "serve"]

runner = CliRunner()
Cli = Callable[..., Result]


@pytest.fixture
def cli(sqlite_url: str) -> Cli:
    """``cli(*args, input=None, **env)``: flowrt in-process, on this test's SQLite file."""

    def invoke(*args: Any, input: str | None = None, **env: str | None) -> Result:  # noqa: A002
        full_env = {"DATABASE_URL": sqlite_url, "FLOWRT_FLOWS": FLOWS, **env}
        return runner.invoke(app, [str(a) for a in args], input=input, env=full_env)

    return invoke


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    """The same database, seen through the Python API."""
    with Engine(sqlite_url, flows=load_all([FLOWS])) as eng:
        yield eng


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)


def fails(result: Result, code: int, *fragments: str) -> str:
    """The result exited ``code`` with one clean error line (and maybe a hint line) naming ``fragments``."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr
    lines = err.splitlines()
    assert err.startswith("error: ") and err.endswith("\n"), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# --------------------------------------------------------------------------- help


def test_help_lists_every_command_and_every_option_has_an_env_var(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in result.stdout
    assert "Exit codes" in result.stdout
    group = get_command(app)
    for name in COMMANDS[:-1]:
        assert cli(name, "--help").exit_code == 0
        for param in group.commands[name].params:  # type: ignore[attr-defined]
            if param.param_type_name == "option" and param.name != "help":
                assert param.envvar, f"flowrt {name} {param.opts[0]} has no env var"
    assert cli("--version").stdout.startswith("flowrt 0.")


# --------------------------------------------------------------------------- start / tick / status


def test_start_wait_prints_a_readable_result_without_colour_when_piped(cli: Cli) -> None:
    result = cli("start", "order-flow", "--input", ORDER, "--wait")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "order-flow@1.0.0" in out and "COMPLETED" in out and "trackingId" in out
    assert "\x1b[" not in out  # stdout is not a terminal
    assert all(line == line.rstrip() for line in out.splitlines())


def test_start_wait_exits_1_when_the_run_fails(cli: Cli) -> None:
    declined = '{"orderId": "A2", "sku": "book", "qty": 1, "card": "declined"}'
    result = cli("start", "order-flow", "--input", declined, "--wait")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "PAYMENT_DECLINED" in result.stdout
    assert result.stderr == ""


def check_a_repeated_start_says_it_started_nothing(cli: Cli, key: str) -> None:
    """The same --idempotency-key twice: the second start answers the first run, and says so."""
    first = ok_json(cli("start", "order-flow", "--input", ORDER, "--idempotency-key", key, "--json"))
    assert first["replayed"] is False
    again = cli("start", "order-flow", "--input", ORDER, "--idempotency-key", key)
    assert again.exit_code == 0, again.stderr
    assert f"Run {first['runId']} was started earlier with this idempotency key" in again.stdout
    assert "Started run" not in again.stdout
    as_json = ok_json(cli("start", "order-flow", "--input", ORDER, "--idempotency-key", key, "--json"))
    assert as_json["runId"] == first["runId"] and as_json["replayed"] is True
    waited = cli("start", "order-flow", "--input", ORDER, "--idempotency-key", key, "--wait")
    assert waited.exit_code == 0, waited.stderr
    assert "was started earlier with this idempotency key; nothing new was started" in waited.stdout
    assert first["runId"] in waited.stdout and "COMPLETED" in waited.stdout
    fresh = cli("start", "order-flow", "--input", ORDER, "--idempotency-key", key + "-other", "--wait")
    assert "started earlier" not in fresh.stdout and "COMPLETED" in fresh.stdout


def test_a_repeated_idempotent_start_says_it_started_nothing(cli: Cli) -> None:
    check_a_repeated_start_says_it_started_nothing(cli, "cli-local-1")


def test_start_then_tick_to_the_end_and_json_is_the_engines(cli: Cli, engine: Engine) -> None:
    started = ok_json(cli("start", "order-flow", "--input", ORDER, "--json"))
    assert started == {"runId": started["runId"], "status": "RUNNING", "replayed": False}
    run_id = started["runId"]
    steps = 0
    run = started
    while run["status"] == "RUNNING":
        run = ok_json(cli("tick", run_id, "--json"))
        steps += 1
    assert run["status"] == "COMPLETED" and steps == 4
    assert run == engine.get(run_id).to_json()  # type: ignore[union-attr]
    assert ok_json(cli("status", run_id, "--json")) == run
    assert ok_json(cli("timeline", run_id, "--json")) == [e.to_json() for e in engine.timeline(run_id)]
    runs, cursor = engine.list_runs()
    assert ok_json(cli("runs", "--json")) == {"runs": [r.to_json() for r in runs], "nextCursor": cursor}
    assert ok_json(cli("flows", "--json")) == engine.list_flows()


def test_input_from_a_file_and_from_stdin(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "order.json").write_text('{"orderId": "F1", "sku": "mug", "qty": 3}')
    from_file = ok_json(cli("start", "order-flow", "--input", f"@{tmp_path / 'order.json'}", "--wait", "--json"))
    assert from_file["stateJson"]["total"] == 24
    from_stdin = ok_json(cli("start", "order-flow", "-i", "-", "--wait", "--json", input='{"orderId": "S1", "sku": "poster", "qty": 1}'))
    assert from_stdin["inputJson"]["orderId"] == "S1" and from_stdin["status"] == "COMPLETED"


def test_invalid_json_names_the_argument_and_the_parse_error(cli: Cli, tmp_path: Path) -> None:
    fails(cli("start", "approval", "--input", '{"amount":'), 2, "--input is not valid JSON", "Expecting value")
    fails(cli("resume", "some-run", "--payload", "yes"), 2, "--payload is not valid JSON")
    fails(cli("start", "approval", "--input", "-", input="{oops"), 2, "--input is not valid JSON (from stdin)")
    fails(cli("start", "approval", "--input", f"@{tmp_path / 'nope.json'}"), 2, "--input: cannot read", "nope.json")


def test_commands_that_run_nodes_need_flows_locally(cli: Cli, engine: Engine) -> None:
    fails(cli("start", "order-flow", FLOWRT_FLOWS=None), 2, "--flows", "FLOWRT_FLOWS", "--url")
    fails(cli("tick", "some-run", FLOWRT_FLOWS=None), 2, "--flows")
    assert cli("runs", FLOWRT_FLOWS=None).exit_code == 0  # reading needs no flows


# --------------------------------------------------------------------------- the approval example


def test_approval_is_driven_end_to_end_from_the_cli(cli: Cli, tmp_path: Path) -> None:
    request = '{"requestId": "R1", "amount": 250, "requester": "ana"}'
    first = ok_json(cli("start", "approval", "--input", request, "--wait", "--json"))
    second = ok_json(cli("start", "approval", "--input", request, "--wait", "--json"))
    assert first["status"] == second["status"] == "WAITING"
    human = cli("status", first["runId"])
    assert "awaiting a decision from the team-lead" in human.stdout and f"flowrt resume {first['runId']}" in human.stdout

    waiting = ok_json(cli("runs", "--status", "waiting", "--json"))
    assert {r["runId"] for r in waiting["runs"]} == {first["runId"], second["runId"]}

    (tmp_path / "yes.json").write_text('{"approved": true}')
    done = ok_json(cli("resume", first["runId"], "--payload", f"@{tmp_path / 'yes.json'}", "--wait", "--json"))
    assert done["status"] == "COMPLETED" and done["outputsJson"]["approved"]["status"] == "approved"
    no = ok_json(cli("resume", second["runId"], "--payload", "-", "--wait", "--json", input='{"approved": false}'))
    assert no["outputsJson"]["rejected"]["status"] == "rejected"

    fails(cli("resume", first["runId"], "--payload", '{"approved": true}'), 4, "not WAITING", "(RUN_NOT_WAITING)")
    assert ok_json(cli("runs", "--status", "WAITING", "--json"))["runs"] == []


# --------------------------------------------------------------------------- errors and exit codes


def test_every_error_class_has_its_exit_code(cli: Cli, engine: Engine) -> None:
    assert fails(cli("status", "nope"), 3) == "error: run nope not found (RUN_NOT_FOUND)\n"
    fails(cli("timeline", "nope"), 3, "RUN_NOT_FOUND")
    fails(cli("tick", "nope"), 3, "RUN_NOT_FOUND")
    fails(cli("start", "no-such-flow"), 3, "FLOW_NOT_FOUND")
    fails(cli("start", "order-flow", "--version", "9.9"), 3, "order-flow@9.9")

    run_id = ok_json(cli("start", "order-flow", "--input", ORDER, "--wait", "--json"))["runId"]
    fails(cli("cancel", run_id), 4, "already ended", "RUN_FINISHED")
    held = engine.start("approval", input={"amount": 1}).run_id
    engine.storage.claim(held, "another-worker", 60_000)
    fails(cli("tick", held), 4, "another-worker", "RUN_BUSY")
    fails(cli("resume", held, "--payload", "{}"), 4, "RUN_NOT_WAITING")

    fails(cli("runs", DATABASE_URL="sqlite:////nonexistent/dir/flowrt.db"), 3, "DATABASE_NOT_FOUND")
    fails(cli("start", "order-flow", DATABASE_URL="sqlite:////nonexistent/dir/flowrt.db"), 5, "STORAGE_UNAVAILABLE")
    fails(cli("runs", "--db", "postgresql://nobody@127.0.0.1:1/none"), 5, "STORAGE_UNAVAILABLE")

    fails(cli("runs", "--db", "ftp://example.com/db"), 2, "unsupported database URL")
    fails(cli("runs", "--status", "sleeping"), 2, "--status", "flowrt runs --help")
    fails(cli("runs", "--limit", "0"), 2, "--limit")
    fails(cli("start", "order-flow", "--frobnicate"), 2, "No such option")
    fails(cli("start"), 2, "Missing argument")
    fails(cli("start", "x", "--flows", "no_such_module:ALL"), 2, "cannot import flows module")


def test_debug_adds_the_traceback(cli: Cli, engine: Engine) -> None:
    result = cli("status", "nope", "--debug")
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and result.stderr.rstrip().endswith("(RUN_NOT_FOUND)")


def test_cancel_with_a_reason(cli: Cli) -> None:
    run_id = ok_json(cli("start", "approval", "--input", '{"amount": 5}', "--wait", "--json"))["runId"]
    run = ok_json(cli("cancel", run_id, "--reason", "duplicate request", "--json"))
    assert run["status"] == "CANCELLED"
    last = ok_json(cli("timeline", run_id, "--json"))[-1]
    assert last["type"] == "RUN_CANCELLED" and last["payloadJson"] == {"reason": "duplicate request", "by": "cli"}
    assert "duplicate request" in cli("timeline", run_id).stdout


def test_environment_variables_configure_commands(cli: Cli) -> None:
    run = ok_json(cli("start", "order-flow", FLOWRT_START_INPUT=ORDER, FLOWRT_WAIT="1", FLOWRT_JSON="true"))
    assert run["status"] == "COMPLETED"
    assert ok_json(cli("runs", FLOWRT_JSON="1", FLOWRT_RUNS_STATUS="COMPLETED"))["runs"][0]["runId"] == run["runId"]


# --------------------------------------------------------------------------- listing and timelines


def test_runs_filters_and_pages(cli: Cli) -> None:
    ids = [ok_json(cli("start", "order-flow", "--input", ORDER, "--tenant", t, "--json"))["runId"] for t in "aab"]
    page = ok_json(cli("runs", "--limit", "2", "--json"))
    assert [r["runId"] for r in page["runs"]] == ids[::-1][:2] and page["nextCursor"]
    rest = ok_json(cli("runs", "--limit", "2", "--cursor", page["nextCursor"], "--json"))
    assert [r["runId"] for r in rest["runs"]] == [ids[0]] and rest["nextCursor"] is None
    assert len(ok_json(cli("runs", "--tenant", "a", "--flow", "order-flow", "--json"))["runs"]) == 2
    human = cli("runs", "--limit", "2")
    assert "RUN ID" in human.stdout and "--cursor" in human.stdout and ids[2] in human.stdout


def test_timeline_for_people_shows_attempts_retries_and_cached_results(cli: Cli) -> None:
    flaky = '{"orderId": "T1", "sku": "book", "qty": 1, "gatewayFailures": 1}'
    run_id = ok_json(cli("start", "order-flow", "--input", flaky, "--wait", "--json"))["runId"]
    out = cli("timeline", run_id).stdout
    assert "NETWORK_ERROR: gateway unreachable (attempt 1) · retry in 100 ms" in out
    assert "#2" in out and "RUN_COMPLETED" in out
    # The same order again: the charge comes from its idempotency key.
    again = ok_json(cli("start", "order-flow", "--input", flaky, "--wait", "--json"))["runId"]
    assert "cached result (idempotency key)" in cli("timeline", again).stdout


def test_timeline_follow_streams_until_the_run_ends(cli: Cli, sqlite_url: str) -> None:
    run_id = ok_json(cli("start", "approval", "--input", '{"amount": 5}', "--wait", "--json"))["runId"]

    def decide_later() -> None:
        time.sleep(0.3)
        with Engine(sqlite_url, flows=load_all(["examples.approval:ALL"])) as other:
            other.resume(run_id, {"approved": True})
            other.run_until_blocked(run_id)

    thread = threading.Thread(target=decide_later)
    thread.start()
    result = cli("timeline", run_id, "--follow", "--interval", "0.05")
    thread.join()
    assert result.exit_code == 0, result.stderr
    assert result.stdout.index("RUN_WAITING") < result.stdout.index("RUN_RESUMED") < result.stdout.index("RUN_COMPLETED")
    lines = cli("timeline", run_id, "--follow", "--json").stdout.splitlines()
    events = [json.loads(line) for line in lines]  # one JSON document per line
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)) and events[-1]["type"] == "RUN_COMPLETED"


# --------------------------------------------------------------------------- recover


def test_recover_dry_run_says_why_each_run_is_stuck_then_recovers_them(cli: Cli, engine: Engine) -> None:
    never = engine.start("order-flow", input={"orderId": "N1", "sku": "book", "qty": 1}).run_id
    crashed = engine.start("flaky-fast").run_id
    engine.storage.claim(crashed, "dead-worker", 1)
    held = engine.start("flaky-fast").run_id
    engine.storage.claim(held, "busy-worker", 600_000)
    abandoned = engine.start("flaky-fast").run_id  # a step given up at shutdown: its lease ended (expiry 0)
    engine.storage.claim(abandoned, "stopped-worker", 600_000)
    engine.storage.expire_holder("stopped-worker")
    timer = engine.tick(engine.start("nap").run_id).run_id
    retry_due = engine.tick(engine.start("flaky-fast").run_id).run_id
    retry_later = engine.tick(engine.start("flaky-slow").run_id).run_id
    soon = engine.start("flaky-soon").run_id  # its first attempt fails during recover: 300 ms backoff
    backs_off = engine.start("flaky-later").run_id  # likewise, but 60 s: longer than a tick waits
    engine.run_until_blocked(engine.start("approval", input={"amount": 1}).run_id)  # waits for a person: not stuck
    time.sleep(0.01)

    dry = ok_json(cli("recover", "--dry-run", "--json", FLOWRT_FLOWS=None))  # a dry run needs no flows
    reasons = {r["runId"]: (r["reason"], r["action"]) for r in dry["runs"]}
    assert dry["dryRun"] is True
    assert reasons == {
        never: ("NOT_DRIVEN", "continue"),
        crashed: ("LEASE_EXPIRED", "continue"),
        abandoned: ("LEASE_EXPIRED", "continue"),
        held: ("LEASE_HELD", "skip"),
        timer: ("TIMER_DUE", "continue"),
        retry_due: ("RETRY_DUE", "continue"),
        retry_later: ("RETRY_PENDING", "skip"),
        soon: ("NOT_DRIVEN", "continue"),
        backs_off: ("NOT_DRIVEN", "continue"),
    }
    partial = ok_json(cli("recover", "--dry-run", "--json", FLOWRT_FLOWS="cli_flows:ALL"))
    skipped = {r["runId"]: r for r in partial["runs"] if r["action"] == "skip"}
    assert "order-flow@1.0.0 is not in --flows" in skipped[never]["detail"]
    details = {r["runId"]: r["detail"] for r in dry["runs"]}
    assert details[abandoned].startswith("lease of stopped-worker was ended (its process gave the step up")
    assert "1970" not in details[abandoned] and "expired at 20" in details[crashed]
    human = cli("recover", "--dry-run").stdout
    assert "dead-worker" in human and "busy-worker" in human and "7 run(s) would be continued, 2 skipped" in human
    assert "run without --dry-run to recover" in human
    flowless = cli("recover", "--dry-run", FLOWRT_FLOWS=None).stdout  # a recover would be refused without --flows
    assert "2 skipped; run 'flowrt recover --flows module:NAME' to recover" in flowless

    report_started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    report = ok_json(cli("recover", "--json"))
    assert {r["runId"]: (r["before"], r["status"]) for r in report["runs"]} == {
        never: ("RUNNING", "COMPLETED"),
        crashed: ("RUNNING", "COMPLETED"),
        abandoned: ("RUNNING", "COMPLETED"),
        timer: ("WAITING", "COMPLETED"),
        retry_due: ("RUNNING", "COMPLETED"),
        soon: ("RUNNING", "COMPLETED"),  # the backoff was waited out, as a tick waits it out
        backs_off: ("RUNNING", "RUNNING"),
    }
    later = next(r for r in report["runs"] if r["runId"] == backs_off)
    assert later["currentNodeId"] == "call" and later["wakeAt"] > report_started
    assert engine.get(crashed).attempts == {"call": 2}  # type: ignore[union-attr]  # the lost attempt counts
    assert "WORKER_LOST" in cli("timeline", crashed).stdout
    again = cli("recover").stdout
    assert "Recovered 0 run(s)" in again
    assert "3 run(s) skipped, not due yet or held by another process: 'flowrt recover --dry-run' says why" in again
    assert "nothing would be continued now; 3 skipped, each for the reason shown" in cli("recover", "--dry-run").stdout


def test_recover_says_when_a_run_it_moved_is_left_in_a_long_retry_backoff(cli: Cli, engine: Engine) -> None:
    run_id = engine.start("flaky-later").run_id
    result = cli("recover")
    assert result.exit_code == 0, result.stderr
    assert "1 run(s) left RUNNING in a retry backoff, the first due at " in result.stdout
    assert "run 'flowrt recover' again after that" in result.stdout
    run = engine.get(run_id)
    assert run is not None and run.status == "RUNNING" and run.attempts == {"call": 1} and run.wake_at is not None
    assert re.search(r"retrying\s+call at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cli("status", run_id).stdout)


def test_recover_shows_progress_only_on_a_terminal() -> None:
    out = Output(as_json=False)
    buffer = io.StringIO()
    out.console = Console(file=buffer, force_terminal=True, width=100)
    with out.progress("recovering runs") as update:
        update(3, 10)
    assert "recovering runs" in buffer.getvalue()
    piped = Output(as_json=False)
    piped.console = Console(file=io.StringIO(), force_terminal=False)
    with piped.progress("recovering runs") as update:
        update(3, 10)
    assert piped.console.file.getvalue() == ""  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- other backends, real processes


def test_local_mode_on_postgres(cli: Cli, pg_url: str) -> None:
    run = ok_json(cli("start", "order-flow", "--input", ORDER, "--wait", "--json", DATABASE_URL=pg_url))
    assert run["status"] == "COMPLETED"
    assert [r["runId"] for r in ok_json(cli("runs", "--json", DATABASE_URL=pg_url))["runs"]] == [run["runId"]]


def _process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_") and k not in ("DATABASE_URL", "PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    return {**env, **extra}


def flowrt_process(
    *args: str, input: str | None = None, cwd: Path = REPO, env: dict[str, str] | None = None  # noqa: A002
) -> subprocess.CompletedProcess[str]:
    """`python -m flowrt.cli ARGS` in a real process, with a clean environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "flowrt.cli", *args],
        input=input, capture_output=True, text=True, cwd=cwd, env=_process_env(**(env or {})), timeout=60,
    )


def test_real_process_reads_stdin_prints_plain_text_and_exit_codes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'flowrt.db'}"
    done = flowrt_process("start", "order-flow", "--wait", "--input", "-", "--flows", "examples.orders:ALL",
                          input=ORDER, cwd=tmp_path, env={"DATABASE_URL": db})
    assert done.returncode == 0, done.stderr
    assert "COMPLETED" in done.stdout and "\x1b[" not in done.stdout
    missing = flowrt_process("status", "nope", cwd=tmp_path, env={"DATABASE_URL": db})
    assert (missing.returncode, missing.stderr, missing.stdout) == (3, "error: run nope not found (RUN_NOT_FOUND)\n", "")


def test_quickstart_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py")], cwd=tmp_path,
                          capture_output=True, text=True, env=_process_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "COMPLETED: welcome, ada!" in done.stdout and (tmp_path / "flowrt.db").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="automate.sh needs bash and jq")
def test_automate_sh_runs_green() -> None:
    env = _process_env(FLOWRT=f"{sys.executable} -m flowrt.cli", PORT=str(_free_port()))
    done = subprocess.run(["bash", str(REPO / "examples" / "automate.sh")], capture_output=True, text=True, env=env, timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("== all good")


def test_deeply_nested_json_input_is_a_usage_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(
        app, ["start", "anything", "--db", "memory://", "--flows", "examples.demo:ALL", "--input", f"@{deep}"]
    )
    assert result.exit_code == 2, result.output
    assert "nested too deeply" in result.output


def test_waiting_hint_can_be_pasted_and_status_errors_read_well(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hint.db'}"
    runner = CliRunner()
    started = runner.invoke(app, ["start", "demo-support", "--wait", "--flows", "examples.demo:ALL", "--db", db])
    assert started.exit_code == 0, started.output
    hint = next(line for line in started.output.splitlines() if "resume it with" in line)
    assert "--flows examples.demo:ALL" in hint and f"--db {db}" in hint
    bad = runner.invoke(app, ["runs", "--status", "DONE", "--db", db])
    assert bad.exit_code == 2
    assert "RUNNING, WAITING, COMPLETED, FAILED, CANCELLED" in bad.output and "Value error" not in bad.output
    assert runner.invoke(app, ["runs", "--status", "waiting", "--db", db, "--json"]).exit_code == 0


def test_a_failing_nodes_traceback_is_printed_once(tmp_path: Path) -> None:
    """The engine logs it (servers want it in their log) and the run shows it: locally, once."""
    (tmp_path / "boom_flows.py").write_text(
        "from flowrt import Flow\n"
        "boom = Flow('boom', '1.0.0')\n"
        "@boom.node(entry=True)\n"
        "def explode(ctx):\n"
        "    raise ValueError('kaboom')\n"
        "ALL = [boom]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}"}
    env.pop("FLOWRT_FLOWS", None)
    done = subprocess.run(
        [sys.executable, "-m", "flowrt.cli", "start", "boom", "--flows", "boom_flows:ALL", "--wait"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "node explode raised ValueError: kaboom" in done.stderr  # the engine's warning, one line
    assert (done.stdout + done.stderr).count("Traceback (most recent call last)") == 1
    assert "raise ValueError('kaboom')" in done.stdout  # in the run's view


def test_a_local_wait_says_when_it_sleeps_through_a_retry_backoff(tmp_path: Path) -> None:
    """A silent wait of seconds reads as a hung command: the backoff is announced, once."""
    (tmp_path / "backoff_flows.py").write_text(
        "from flowrt import Flow, Retry, fail, ok\n"
        "flow = Flow('backs-off', '1.0.0')\n"
        "flow.add_node('call', lambda ctx: fail('RATE_LIMIT', 'slow down') if ctx.attempt == 1 else ok(), entry=True,\n"
        "              retry=Retry(max_attempts=2, base_delay_ms=3000))\n"
        "ALL = [flow]\n"
    )
    done = flowrt_process("start", "backs-off", "--wait", "--flows", "backoff_flows:ALL", cwd=tmp_path,
                          env={"DATABASE_URL": f"sqlite:///{tmp_path / 'flowrt.db'}"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "COMPLETED" in done.stdout
    said = [line for line in done.stderr.splitlines() if "retrying at" in line]
    assert len(said) == 1 and said[0].startswith("node call failed (RATE_LIMIT: slow down); retrying at 20"), done.stderr
