"""`flowrt bench`: it measures, reports every figure, counts writes right, and leaves the
database as it found it. Never speed: only structure and counts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flowrt import Engine
from flowrt.bench import WriteTally, _Probe, bench_engine, bench_flow, bench_recovery
from flowrt.cli import app
from http_helpers import serve_process, thread_server
from reference_peer import running_reference


def _bench(*args: str) -> Any:
    result = CliRunner().invoke(app, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_each_engine_mode_on_one_thread_costs_one_write_transaction_per_step(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    figures = _bench("--db", url, "-n", "40", "-k", "3", "--mode", "tick", "--mode", "until", "--mode", "drive", "-c", "1")
    assert [f["mode"] for f in figures] == ["engine/tick", "engine/until", "engine/drive"]
    for f in figures:
        assert f["completed"] == 40 and f["steps"] == f["stepCommits"] == 120 and not f["errors"]
        # start(keep_lease=True) then steps: no claim, so each step is its commit, each start one write
        assert f["writeTransactionsPerStep"] == 1.0
        assert f["writeTransactions"] == 160 and f["startOnlyTransactions"] == 40
        assert f["writeTransactionsPerRun"] == 4.0 and f["stepsPerTransaction"] == 1.0
        assert f["groupCommit"] == {"transactions": 160, "writes": 160}
        # the raw rate, measured at one thread: the same figure twice, and the ratios from it
        assert f["rawCommitsPerSecond"] == f["rawCommitsPerSecondAtC1"] > 0
        assert f["engineVsRaw"] == f["engineVsRawAtC1"] == pytest.approx(f["stepsPerSecond"] / f["rawCommitsPerSecond"], abs=0.002)
        assert f["engineVsRawPercent"] == pytest.approx(100 * f["engineVsRaw"], abs=0.1)
        assert f["stepP99Ms"] >= f["stepP50Ms"] > 0
    with Engine(url) as engine:
        assert engine.storage.count_runs() == {}  # its runs were deleted
        tables = engine.storage._read("SELECT name FROM sqlite_master WHERE name LIKE 'flowrt_bench%'", ())  # noqa: SLF001
        assert tables == []  # and the raw measurement's tables


def test_several_threads_share_transactions_and_every_write_is_counted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    figures = _bench("--db", url, "-n", "60", "-k", "2", "--mode", "until", "-c", "1", "-c", "3")
    assert [f["concurrency"] for f in figures] == [1, 3]
    three = figures[1]
    assert three["completed"] == 60 and three["steps"] == 120 and not three["errors"]
    # every start and every step is one write of the group writer, whatever the batches
    assert three["groupCommit"]["writes"] == 180
    assert three["groupCommit"]["transactions"] <= 180 and three["stepsPerTransaction"] >= 1.0
    assert three["writeTransactions"] == three["stepTransactions"] + three["startOnlyTransactions"]
    # the raw rate by one thread and by three, both measured in this call
    assert three["rawCommitsPerSecondAtC1"] > 0 and three["rawCommitsPerSecond"] > 0
    assert three["engineVsRaw"] == pytest.approx(three["stepsPerSecond"] / three["rawCommitsPerSecond"], abs=0.002)
    assert three["engineVsRawAtC1"] == pytest.approx(three["stepsPerSecond"] / three["rawCommitsPerSecondAtC1"], abs=0.002)


def test_loop_modes_step_as_tasks_on_one_event_loop_and_share_its_group_commit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    figures = _bench("--db", url, "-n", "40", "-k", "3", "--mode", "tick-async", "--mode", "until-async", "-c", "1", "-c", "4")
    assert [(f["mode"], f["concurrency"]) for f in figures] == [
        ("engine/tick-async", 1), ("engine/tick-async", 4), ("engine/until-async", 1), ("engine/until-async", 4),
    ]  # fmt: skip
    for f in figures:
        assert f["completed"] == 40 and f["steps"] == f["stepCommits"] == 120 and not f["errors"]
        assert f["groupCommit"]["writes"] == 160  # every start and step went through the group writer
        assert f["rawCommitsPerSecond"] > 0 and f["stepP99Ms"] >= f["stepP50Ms"] > 0
    one, four = figures[0], figures[1]
    assert one["writeTransactionsPerStep"] == 1.0 and one["stepsPerTransaction"] == 1.0
    # four tasks reach their commits in the same turn of the loop: they share transactions
    assert four["groupCommit"]["transactions"] < 160 and four["stepsPerTransaction"] > 1.0
    with Engine(url) as engine:
        assert engine.storage.count_runs() == {}


def test_the_tally_leaves_the_engine_as_users_get_it_a_parked_tick_reads_nothing(tmp_path: Path) -> None:
    # The tally wraps the storage's writes; the step core reads a write's change mark after it
    # ran, and without it every tick of a parked lease would read the run back: the bench would
    # measure an engine slower than the one users have.
    flow = bench_flow(4, _Probe())
    with Engine(f"sqlite:///{tmp_path / 'b.db'}", flows=[flow]) as engine:
        WriteTally(engine.storage)
        reads: list[str] = []
        get_run = engine.storage.get_run
        engine.storage.get_run = lambda run_id: reads.append(run_id) or get_run(run_id)  # type: ignore[method-assign]
        run = engine.start(flow.flow_id, flow.version, keep_lease=True)
        ticks = 0
        while engine.tick(run.run_id).status == "RUNNING":
            ticks += 1
        assert ticks == 3 and reads == []


def test_recovery_continues_every_run_and_reports_drive_mode_beside_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    f = bench_recovery(url, runs=30, nodes=3, concurrency=1)
    assert f["mode"] == "recover" and not f["errors"]
    assert f["found"] == f["driven"] == f["completed"] == 30 and f["steps"] == 90
    # the first run needs a claim of its own; every later claim rides in the commit before it
    assert f["writeTransactions"] == 1 + 90 and f["startOnlyTransactions"] == 0
    assert f["writeTransactionsPerStep"] == round(91 / 90, 3)
    assert f["driveRunsPerSecond"] > 0 and f["driveWriteTransactionsPerStep"] == 1.0
    assert f["recoveryVsDrive"] == pytest.approx(f["runsPerSecond"] / f["driveRunsPerSecond"], rel=0.01)
    with Engine(url) as engine:
        assert engine.storage.count_runs() == {}


def test_recover_mode_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    f = _bench("--db", url, "-n", "20", "-k", "2", "--mode", "recover", "-c", "2")
    assert f["mode"] == "recover" and f["completed"] == 20 and f["steps"] == 40 and f["recoveryVsDrive"] > 0
    bad = CliRunner().invoke(app, ["bench", "--db", url, "--mode", "sideways"])
    assert bad.exit_code == 2 and "sideways" in bad.output


def test_engine_modes_on_postgres(pg_url: str) -> None:
    single = bench_engine(pg_url, runs=20, nodes=3, concurrency=1, mode="tick")
    assert single["database"] == "postgres" and single["completed"] == 20 and single["steps"] == 60
    assert single["writeTransactionsPerStep"] == 1.0 and single["writeTransactionsPerRun"] == 4.0
    assert single["rawCommitsPerSecond"] > 0 and not single["errors"]
    four = bench_engine(pg_url, runs=40, nodes=3, concurrency=4, mode="drive")
    assert four["completed"] == 40 and four["steps"] == 120 and four["groupCommit"]["writes"] == 160
    assert four["rawCommitsPerSecond"] > 0 and four["rawCommitsPerSecondAtC1"] > 0 and not four["errors"]
    # on the loop every start and every step is a statement of its own, each its own transaction,
    # several in flight at once: each is counted once, as a start or as a step
    tasks = bench_engine(pg_url, runs=40, nodes=3, concurrency=4, mode="tick-async")
    assert tasks["completed"] == 40 and tasks["steps"] == tasks["stepCommits"] == 120 and not tasks["errors"]
    assert tasks["startOnlyTransactions"] == 40 and tasks["stepTransactions"] == 120
    assert tasks["writeTransactionsPerStep"] == 1.0 and tasks["stepsPerTransaction"] == 1.0
    with Engine(pg_url) as engine:
        assert engine.storage.count_runs() == {}


def test_http_bench_picks_the_servers_mode_and_maps_errors(sqlite_url: str) -> None:
    runner = CliRunner()
    for drive, mode in ((True, "http/driven"), (False, "http/tick")):
        with thread_server(sqlite_url, drive=drive, api_token="t0k") as server:
            ok = runner.invoke(app, ["bench", "--url", server.url, "--token", "t0k", "-n", "20", "--json"])
            assert ok.exit_code == 0, ok.output
            figures = json.loads(ok.stdout)
            assert figures["mode"] == mode and figures["statuses"] == {"COMPLETED": 20}
            # demo-fraud approves 50: start + 2 ticks, or one long-polled start
            assert figures["requests"] == (20 if drive else 60) and figures["requestsPerSecond"] > 0
            assert runner.invoke(app, ["bench", "--url", server.url, "-n", "5"]).exit_code == 2  # no token
            assert runner.invoke(app, ["bench", "--url", server.url, "--token", "t0k", "--flow", "nope"]).exit_code == 3
    assert runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9", "-n", "5"]).exit_code == 5
    assert runner.invoke(app, ["bench", "--compare", "http://127.0.0.1:9"]).exit_code == 2  # needs --url


def _check_compare(f: dict[str, Any], runs: int) -> None:
    assert f["mode"] == "http/compare" and f["rounds"] == 2 and not f["errors"]
    pairs = f["measurements"]
    assert len(pairs) == 2 and all(p["a"]["finished"] == p["b"]["finished"] == runs for p in pairs)
    for key, ratio in (("requestsPerSecond", "requestsRatio"), ("runsPerSecond", "runsRatio")):
        assert f[ratio] == round(statistics.median(p["a"][key] / p["b"][key] for p in pairs), 3)
        assert f[key + "A"] == round(statistics.median(p["a"][key] for p in pairs), 3)
    assert f["p99MsA"] == round(statistics.median(p["a"]["p99Ms"] for p in pairs), 3) and f["p99MsB"] > 0


def test_compare_alternates_the_same_client_between_two_servers(tmp_path: Path) -> None:
    args = ["--flows", "examples.demo:ALL", "--no-drive"]
    with (
        serve_process([*args, "--db", f"sqlite:///{tmp_path / 'a.db'}"]) as a,
        serve_process([*args, "--db", f"sqlite:///{tmp_path / 'b.db'}"]) as b,
    ):
        ticks = _bench("--url", a.url, "--compare", b.url, "-n", "15", "-c", "1", "-c", "2", "--warmup", "2")
        assert [f["concurrency"] for f in ticks] == [1, 2]
        for f in ticks:
            _check_compare(f, 15)
            assert (f["modeA"], f["modeB"]) == ("http/tick", "http/tick")
            assert f["statusesA"] == f["statusesB"] == {"COMPLETED": 15}
            assert all(p["a"]["requests"] == p["b"]["requests"] == 45 for p in f["measurements"])
        # --driven is A's mode; B keeps the one that fits it (no drivers: start + ticks)
        driven = _bench("--url", a.url, "--compare", b.url, "-n", "10", "--driven", "--warmup", "0")
        _check_compare(driven, 10)
        assert (driven["modeA"], driven["modeB"]) == ("http/driven", "http/tick")
        assert all(p["a"]["requests"] == 10 and p["b"]["requests"] == 30 for p in driven["measurements"])


def test_the_client_speaks_the_reference_runtimes_api(sqlite_url: str) -> None:
    """The reference needs a version in each start and answers chunked; skips without node."""
    with running_reference() as reference, thread_server(sqlite_url, drive=False) as server:
        f = _bench("--url", server.url, "--compare", reference, "-n", "10", "--warmup", "0")
        _check_compare(f, 10)
        assert f["statusesB"] == {"COMPLETED": 10} and f["modeB"] == "http/tick"
        assert all(p["b"]["requests"] == 30 for p in f["measurements"])  # start + 2 ticks, as flowrt


def test_the_tables_legend_explains_only_the_modes_that_ran(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    ticks = CliRunner().invoke(app, ["bench", "--db", url, "-n", "10", "-k", "2", "--mode", "tick", "--no-raw"])
    assert ticks.exit_code == 0, ticks.output
    legend = " ".join(ticks.stdout.split())  # as rich wrapped it, unwrapped
    assert "write tx/step:" in legend and "recover:" not in legend and "event loop" not in legend
    both = CliRunner().invoke(app, ["bench", "--db", url, "-n", "10", "-k", "2", "--mode", "tick-async", "--mode", "recover", "--no-raw"])
    assert both.exit_code == 0, both.output
    legend = " ".join(both.stdout.split())
    assert "recover:" in legend and "event loop" in legend
