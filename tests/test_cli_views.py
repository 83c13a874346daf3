"""The CLI as a person sees it at 80 and 160 columns, and as a script uses it: real processes.

Layouts, honest reads in the wrong folder, one voice for errors and help, graph,
time filters and whole listings, watch modes, durations and bars, tracebacks, and
what a remote command imports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from flowrt import Engine
from flowrt.cli.output import Output
from flowrt.loader import load_all
from http_helpers import serve_process

REPO = Path(__file__).resolve().parent.parent
FLOWS = "examples.orders:ALL,examples.approval:ALL,cli_flows:ALL"
ORDER = {"orderId": "A1", "sku": "book", "qty": 2}
ISO_FULL = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
ISO_COMPACT = re.compile(r"(\d\d:\d\d:\d\d|\d\d-\d\d \d\d:\d\d)$")


def env_for(columns: int | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_") and k not in ("DATABASE_URL", "COLUMNS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return {**env, **extra}


def flowrt(*args: Any, cwd: Path = REPO, columns: int | None = 80, input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:  # noqa: A002
    return subprocess.run(
        [sys.executable, "-m", "flowrt.cli", *[str(a) for a in args]],
        capture_output=True, text=True, cwd=cwd, env=env_for(columns, **env), timeout=60, input=input,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def one_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> list[str]:
    """Exit ``code``; stderr is ``error: ...`` and at most one ``hint: ...`` line."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), done.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr)
    return lines


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'views.db'}"


@pytest.fixture
def engine(db: str) -> Any:
    with Engine(db, flows=load_all([FLOWS])) as eng:
        yield eng


def _fill(engine: Engine) -> list[str]:
    """A completed order (tenant acme), a waiting approval, and a run nobody drives."""
    done = engine.start("order-flow", input=ORDER, tenant_id="acme").run_id
    engine.run_until_blocked(done)
    waiting = engine.start("approval", input={"amount": 5}).run_id
    engine.run_until_blocked(waiting)
    idle = engine.start("order-flow", input=ORDER).run_id
    return [done, waiting, idle]


# --------------------------------------------------------------------------- layouts


def test_runs_keeps_id_flow_status_and_time_on_one_line_at_80_columns(engine: Engine, db: str) -> None:
    ids = _fill(engine)
    narrow = ok(flowrt("runs", "--db", db, columns=80)).splitlines()
    assert all(len(line) <= 80 for line in narrow), narrow
    for run_id, flow, status in zip(ids, ("order-flow@1.0.0", "approval@1.0.0", "order-flow@1.0.0"), ("COMPLETED", "WAITING", "RUNNING")):
        line = next(line for line in narrow if line.startswith(run_id))
        assert flow in line and status in line and ISO_COMPACT.search(line), line
    wide = ok(flowrt("runs", "--db", db, columns=160)).splitlines()
    assert all(h in wide[0] for h in ("RUN ID", "FLOW", "STATUS", "NODE", "TENANT", "DURATION", "UPDATED")), wide[0]
    line = next(line for line in wide if line.startswith(ids[0]))
    assert "acme" in line and ISO_FULL.search(line) and re.search(r"\d+(ms|\.\ds|s)\b", line), line


def test_recover_dry_run_reasons_read_as_sentences_at_80_columns(engine: Engine, db: str) -> None:
    idle = _fill(engine)[2]
    lines = ok(flowrt("recover", "--dry-run", "--db", db, columns=80)).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    row = next(i for i, line in enumerate(lines) if line.startswith(idle))
    assert "continue" in lines[row] and "RUNNING" in lines[row]
    assert lines[row + 1].strip() == "RUNNING at validate, and nobody is driving it"
    wide = ok(flowrt("recover", "--dry-run", "--db", db, columns=160)).splitlines()
    assert any(line.startswith(idle) and line.endswith("RUNNING at validate, and nobody is driving it") for line in wide), wide


def test_timeline_shows_durations_and_wraps_details_under_the_row(engine: Engine, db: str) -> None:
    run_id = engine.start("flaky-fast", input={}).run_id
    engine.run_until_blocked(run_id)
    narrow = ok(flowrt("timeline", run_id, "--db", db, columns=80)).splitlines()
    assert all(len(line) <= 80 for line in narrow), narrow
    failed = next(i for i, line in enumerate(narrow) if "NODE_FAILED" in line)
    assert re.search(r"#1\s+\d+ms$", narrow[failed]), narrow[failed]  # the attempt's duration
    assert narrow[failed + 1].startswith("      NETWORK_ERROR: first attempt always fails · retry in")
    wide = ok(flowrt("timeline", run_id, "--db", db, columns=160)).splitlines()
    assert any("NODE_FAILED" in line and "NETWORK_ERROR" in line for line in wide), wide
    bars = ok(flowrt("timeline", run_id, "--bars", "--db", db, columns=80)).splitlines()
    assert bars[0].startswith(f"run {run_id}") and bars[1].startswith("call #1") and bars[2].startswith("call #2")
    assert "█" in bars[1] and all(len(line) <= 80 for line in bars)
    spans = json.loads(ok(flowrt("timeline", run_id, "--bars", "--json", "--db", db)))["spans"]
    assert [(s["nodeId"], s["attempt"], s["outcome"]) for s in spans] == [("call", 1, "failed"), ("call", 2, "finished")]


def test_status_and_timeline_show_a_failures_traceback(engine: Engine, db: str, tmp_path: Path) -> None:
    run_id = engine.start("order-flow", input=ORDER).run_id
    trace = 'Traceback (most recent call last):\n  File "shop/payments.py", line 42, in charge\n    gateway.charge(order)\nConnectionError: gateway unreachable\n'
    error = {"code": "HANDLER_ERROR", "message": "ConnectionError: gateway unreachable", "traceback": trace}
    path = db[len("sqlite:///"):]
    with sqlite3.connect(path) as conn:  # as the lead's failure path will record it (issue 9)
        conn.execute("UPDATE flowrt_runs SET status='FAILED', error_json=? WHERE run_id=?", (json.dumps(error), run_id))
        conn.execute(
            "INSERT INTO flowrt_events (run_id, seq, at, type, node_id, attempt, payload_json) VALUES (?, 2, ?, 'NODE_FAILED', 'charge', 1, ?)",
            (run_id, int(time.time() * 1000), json.dumps({"nodeId": "charge", "attempt": 1, "error": error})),
        )
    shown = ok(flowrt("status", run_id, "--db", db, columns=80))
    assert "HANDLER_ERROR: ConnectionError: gateway unreachable" in shown
    section = shown[shown.index("traceback"):].splitlines()
    assert section[1] == "  Traceback (most recent call last):" and section[-1] == "  ConnectionError: gateway unreachable"
    assert all(len(line) <= 80 for line in shown.splitlines())
    detail = ok(flowrt("timeline", run_id, "--seq", 2, "--db", db, columns=80))
    assert detail.startswith("event 2  NODE_FAILED  charge #1")
    assert '"traceback": "(below)"' in detail and '  File "shop/payments.py", line 42, in charge' in detail
    one_error(flowrt("timeline", run_id, "--seq", 99, "--db", db), 2, "has no event 99")


def test_the_traceback_renders_from_any_run_object_at_80_columns() -> None:
    out = Output(False)
    out.console = Console(width=80, record=True, color_system=None)
    trace = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n" + "    " + "y" * 120 + "\nValueError: bad\n"
    out.console.print(out.run_renderable({"runId": "r1", "flowId": "f", "flowVersion": "1", "status": "FAILED",
                                          "error": {"code": "HANDLER_ERROR", "message": "ValueError: bad", "traceback": trace}}))
    text = out.console.export_text()
    assert "traceback\n  Traceback (most recent call last):" in text and "  ValueError: bad" in text
    assert all(len(line) <= 80 for line in text.splitlines())


# --------------------------------------------------------------------------- honest reads


def test_reads_in_an_empty_folder_say_so_and_create_nothing(tmp_path: Path) -> None:
    for args in (["runs"], ["status", "r1"], ["timeline", "r1"], ["recover", "--dry-run"], ["cancel", "r1"]):
        lines = one_error(flowrt(*args, cwd=tmp_path), 3, "DATABASE_NOT_FOUND", str(tmp_path / "flowrt.db"))
        assert lines[1].startswith("hint: ") and "--db" in lines[1]
    assert ok(flowrt("flows", "--flows", "examples.orders:ALL", cwd=tmp_path)).startswith("FLOW")
    assert list(tmp_path.iterdir()) == []


def test_a_local_start_without_wait_says_nothing_drives_the_run(tmp_path: Path) -> None:
    out = ok(flowrt("start", "order-flow", "--flows", "examples.orders:ALL", "--input", json.dumps(ORDER), cwd=tmp_path, columns=200))
    run_id = out.split()[2]
    assert f"nothing drives this run yet: move it with `flowrt tick {run_id} --flows examples.orders:ALL`" in out
    assert "--wait" in out and "flowrt serve" in out
    assert json.loads(ok(flowrt("start", "order-flow", "--flows", "examples.orders:ALL", "--json", cwd=tmp_path)))["status"] == "RUNNING"


# --------------------------------------------------------------------------- one voice


def test_help_has_no_type_placeholders_and_shows_env_vars_the_same_way() -> None:
    top = ok(flowrt("--help", columns=160))
    assert "--install-completion" in top and "--show-completion" in top
    for command in ("start", "resume", "tick", "cancel", "status", "runs", "timeline", "flows", "graph", "recover", "serve", "bench"):
        text = ok(flowrt(command, "--help", columns=160))
        for placeholder in ("<bool>", "<str>", "<int>", "<float>", "<list", "{"):
            assert placeholder not in text, (command, placeholder)
        assert "Env:" not in text and ("[env var:" in text or command == "bench"), command
    completion = subprocess.run([sys.executable, "-m", "flowrt.cli", "--show-completion", "bash"], capture_output=True,
                                text=True, env=env_for(None, SHELL="/bin/bash"), timeout=60)
    assert completion.returncode == 0 and "complete" in completion.stdout, completion.stderr


def test_usage_errors_read_the_same_at_the_top_level_and_in_subcommands() -> None:
    assert one_error(flowrt("--bogus"), 2, "No such option: --bogus")[1] == "hint: see 'flowrt --help'"
    assert one_error(flowrt("start", "x", "--version"), 2, "requires an argument")[1] == "hint: see 'flowrt start --help'"
    assert one_error(flowrt("serve", "--port", "x"), 2, "'x' is not an integer")[1] == "hint: see 'flowrt serve --help'"
    one_error(flowrt("runs", "--limit", "0"), 2, "below the minimum 1")
    one_error(flowrt("runs", "--since", "yesterday"), 2, "--since 'yesterday' is neither a duration")


# --------------------------------------------------------------------------- graph


def test_graph_shows_entry_edges_priorities_conditions_retry_and_timeout(tmp_path: Path, engine: Engine, db: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    lines = ok(flowrt("graph", "order-flow", "--flows", FLOWS, cwd=empty)).splitlines()
    assert lines[0].startswith("order-flow@1.0.0") and lines[1] == "entry validate"
    charge = next(line for line in lines if line.startswith("charge"))
    assert "retry ×3 exponential 100–2000 ms" in charge and "timeout 2000 ms" in charge and "idempotent" in charge
    assert any(re.fullmatch(r'\s+→ ship\s+priority 1 · if ctx.state\["paid"\]', line) for line in lines), lines
    assert "    (end: the run completes here)" in lines
    doc = json.loads(ok(flowrt("graph", "order-flow", "--json", "--flows", FLOWS, cwd=empty)))
    assert doc["definitionJson"]["entry"] == "validate" and {"from": "validate", "to": "reserve", "priority": 0, "hasCondition": False, "condition": None} in doc["definitionJson"]["edges"]
    assert list(empty.iterdir()) == []  # the shape of a flow needs no database
    one_error(flowrt("graph", "nope", "--flows", FLOWS), 3, "FLOW_NOT_FOUND", "order-flow@1.0.0")

    waiting = _fill(engine)[1]
    path = ok(flowrt("graph", "--run", waiting, "--flows", FLOWS, "--db", db, columns=160)).splitlines()
    assert path[1] == f"run {waiting}  WAITING at decide"
    assert "✓ submit" in path and any(line.startswith("⏸ decide") and "◀ waiting here" in line for line in path), path
    visited = json.loads(ok(flowrt("graph", "--run", waiting, "--json", "--flows", FLOWS, "--db", db)))["visited"]
    assert visited == [{"nodeId": "submit", "attempts": 1, "outcome": "finished"}, {"nodeId": "decide", "attempts": 1, "outcome": "waited"}]


def test_graph_says_retry_delays_as_people_would() -> None:
    from flowrt.cli.graph_view import _node_marks  # noqa: PLC0415 - the one formatting rule tested

    def marks(**retry: Any) -> str:
        return _node_marks({"retry": {"maxAttempts": 3, **retry}})

    assert marks(backoff="exponential", baseDelayMs=100, maxDelayMs=2000) == "retry ×3 exponential 100–2000 ms"
    assert marks(backoff="exponential", baseDelayMs=200, maxDelayMs=None) == "retry ×3 exponential from 200 ms"
    assert marks(backoff="fixed", baseDelayMs=200, maxDelayMs=None) == "retry ×3 fixed 200 ms"
    assert marks(backoff="fixed", baseDelayMs=0, maxDelayMs=None) == "retry ×3 fixed at once"
    assert "None" not in marks(backoff="exponential", baseDelayMs=5, maxDelayMs=None)


# --------------------------------------------------------------------------- lists that answer questions


def test_runs_since_until_all_and_count(engine: Engine, db: str) -> None:
    ids = []
    for _ in range(5):
        ids.append(engine.start("order-flow", input=ORDER).run_id)
        time.sleep(0.005)  # distinct milliseconds, so the bounds below fall between runs
    created = [engine.get(i).created_at for i in ids]  # type: ignore[union-attr]
    since = created[2].astimezone(UTC).isoformat()  # type: ignore[union-attr]
    got = [r["runId"] for r in json.loads(ok(flowrt("runs", "--since", since, "--json", "--db", db)))["runs"]]
    assert got == ids[:1:-1]  # newest first, the third run included
    got = [r["runId"] for r in json.loads(ok(flowrt("runs", "--until", since, "--json", "--db", db)))["runs"]]
    assert got == ids[1::-1]
    assert json.loads(ok(flowrt("runs", "--since", "1h", "--count", "--json", "--db", db))) == {"count": 5}
    assert ok(flowrt("runs", "--until", "1h", "--count", "--db", db)).strip() == "0"
    streamed = ok(flowrt("runs", "--all", "--limit", 2, "--json", "--db", db)).splitlines()
    assert [json.loads(line)["runId"] for line in streamed] == ids[::-1]
    people = ok(flowrt("runs", "--all", "--limit", 2, "--db", db, columns=80)).splitlines()
    assert sum(line.startswith("RUN ID") for line in people) == 1 and people[-1] == "5 run(s)"
    assert [line.split()[0] for line in people if line[:8] in {i[:8] for i in ids}] == ids[::-1]
    one_error(flowrt("runs", "--all", "--count", "--db", db), 2, "pick one")


def test_runs_since_and_until_through_the_server(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'served.db'}"
    with serve_process(["--flows", "examples.orders:ALL", "--db", db, "--no-drive"]) as server:
        first = json.loads(ok(flowrt("start", "order-flow", "--json", "--url", server.url)))["runId"]
        time.sleep(0.01)
        middle = datetime.now(UTC)
        time.sleep(0.01)
        second = json.loads(ok(flowrt("start", "order-flow", "--json", "--url", server.url)))["runId"]
        listed = lambda *a: [r["runId"] for r in json.loads(ok(flowrt("runs", "--json", "--url", server.url, *a)))["runs"]]  # noqa: E731
        assert listed("--since", middle.isoformat()) == [second]
        assert listed("--until", middle.isoformat()) == [first]
        assert listed("--since", "1d") == [second, first]


def test_status_watch_prints_each_change_until_the_run_waits(engine: Engine, db: str) -> None:
    run_id = engine.start("approval", input={"amount": 5}).run_id
    watcher = subprocess.Popen([sys.executable, "-m", "flowrt.cli", "status", run_id, "--watch", "--interval", "0.05", "--db", db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(80), cwd=REPO)
    try:
        assert watcher.stdout is not None
        seen = ""
        deadline = time.monotonic() + 30
        while "RUNNING" not in seen and time.monotonic() < deadline:
            seen += watcher.stdout.readline()
        engine.run_until_blocked(run_id)
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    views = (seen + out).split("── ")
    assert "RUNNING" in views[1] and "WAITING" in views[-1] and "resume it with" in views[-1]
    # "took" is how long a run took once it ended; a waiting run has not taken anything yet
    assert "took" not in views[-1] and "updated" in views[-1]


def test_runs_watch_repeats_when_piped_and_ends_cleanly_on_ctrl_c(engine: Engine, db: str) -> None:
    _fill(engine)
    watcher = subprocess.Popen([sys.executable, "-m", "flowrt.cli", "runs", "--watch", "--interval", "0.05", "--db", db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(80), cwd=REPO)
    try:
        assert watcher.stdout is not None
        headers, deadline = 0, time.monotonic() + 30
        while headers < 2 and time.monotonic() < deadline:
            headers += watcher.stdout.readline().startswith("RUN ID")
        watcher.send_signal(signal.SIGINT)
        watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert headers == 2 and watcher.returncode == 0


def test_local_time_shows_this_machines_zone(engine: Engine, db: str) -> None:
    run_id = _fill(engine)[0]
    utc = ok(flowrt("status", run_id, "--db", db))
    local = ok(flowrt("status", run_id, "--db", db, "--local-time", TZ="Asia/Kolkata"))
    stamp = re.search(r"created\s+(\S+ \S+)", local).group(1)  # type: ignore[union-attr]
    assert stamp.endswith("+05:30") and re.search(r"created\s+\S+ \S+Z", utc)
    moment = datetime.fromisoformat(stamp.replace(" ", "T"))
    assert abs(moment - engine.get(run_id).created_at) < timedelta(seconds=1)  # type: ignore[operator, union-attr]
    assert "+05:30" in ok(flowrt("runs", "--db", db, columns=160, FLOWRT_LOCAL_TIME="1", TZ="Asia/Kolkata"))


# --------------------------------------------------------------------------- start-up


def test_remote_commands_load_neither_the_engine_nor_pydantic(tmp_path: Path, engine: Engine, db: str) -> None:
    probe = (
        "import sys\nfrom flowrt.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = ('peewee', 'psycopg', 'pydantic', 'litestar', 'flowrt.engine', 'flowrt.storage')\n"
        "print(sorted({m.split('.')[0] if not m.startswith('flowrt') else m for m in sys.modules if m.startswith(heavy)}))\n"
    )
    run_id = _fill(engine)[0]
    with serve_process(["--flows", "examples.orders:ALL", "--db", db, "--no-drive"]) as server:
        remote = subprocess.run([sys.executable, "-c", probe, "status", run_id, "--json", "--url", server.url],
                                capture_output=True, text=True, env=env_for(80), timeout=60)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout.strip().splitlines()[-1] == "[]"
    local = subprocess.run([sys.executable, "-c", probe, "status", run_id, "--json", "--db", db],
                           capture_output=True, text=True, env=env_for(80), timeout=60)
    loaded = local.stdout.strip().splitlines()[-1]
    assert "peewee" in loaded and "pydantic" not in loaded and "litestar" not in loaded, loaded


def test_a_failure_its_retry_policy_did_not_retry_says_why_in_the_timeline() -> None:
    from flowrt.cli.timeline_view import describe_payload

    payload = {"error": {"code": "FLAKY", "message": "boom"}, "notRetried": "FLAKY is not retryable"}
    assert describe_payload("NODE_FAILED", payload) == "FLAKY: boom · not retried: FLAKY is not retryable"


def test_status_of_a_failed_run_says_why_its_retry_policy_did_not_retry() -> None:
    out = Output(False)
    out.console = Console(width=100, record=True, color_system=None)
    error = {"code": "FLAKY", "message": "boom", "retryable": False, "notRetried": "FLAKY is not retryable (by default ...)"}
    out.console.print(out.run_renderable({"runId": "r1", "flowId": "f", "flowVersion": "1", "status": "FAILED", "error": error}))
    text = out.console.export_text()
    assert "error        FLAKY: boom" in text and "not retried  FLAKY is not retryable (by default ...)" in text
