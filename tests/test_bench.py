"""`flowrt bench`: it measures, reports every figure, and leaves the database as it found it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flowrt import Engine
from flowrt.cli import app
from http_helpers import thread_server


def test_in_process_bench_reports_figures_and_cleans_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    result = CliRunner().invoke(app, ["bench", "--db", url, "-n", "50", "-k", "3", "-c", "1", "-c", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert [f["concurrency"] for f in figures] == [1, 2]
    for f in figures:
        assert f["completed"] == 50 and f["stepsPerSecond"] > 0 and f["rawCommitsPerSecond"] > 0
        assert 1.0 <= f["writeTransactionsPerStep"] <= 2.0 and not f["errors"]
    with Engine(url) as engine:
        assert engine.storage.count_runs() == {}  # its runs were deleted


def test_http_bench_picks_the_servers_mode_and_maps_errors(sqlite_url: str) -> None:
    runner = CliRunner()
    for drive, mode in ((True, "http/driven"), (False, "http/tick")):
        with thread_server(sqlite_url, drive=drive, api_token="t0k") as server:
            ok = runner.invoke(app, ["bench", "--url", server.url, "--token", "t0k", "-n", "20", "--json"])
            assert ok.exit_code == 0, ok.output
            figures = json.loads(ok.stdout)
            assert figures["mode"] == mode and figures["statuses"] == {"COMPLETED": 20}
            assert figures["requestsPerSecond"] > 0
            assert runner.invoke(app, ["bench", "--url", server.url, "-n", "5"]).exit_code == 2  # no token
            assert runner.invoke(app, ["bench", "--url", server.url, "--token", "t0k", "--flow", "nope"]).exit_code == 3
    assert runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9", "-n", "5"]).exit_code == 5
