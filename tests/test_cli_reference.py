"""flowrt's CLI as a client of the reference runtime (@hazeljs/flow-runtime, ../shared/peer).

Every command the reference's API supports works against it (flows, start, tick,
resume, status, timeline in all its views, graph); those it has no endpoint for (runs,
cancel, recover) say so in one line. Skipped, with the reason, when node or npm are
missing. The reference's npm install is cached in one fixed folder, so it happens once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from reference_peer import running_reference

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def peer() -> Iterator[str]:
    with running_reference() as url:
        yield url


def flowrt(peer: str, *args: Any, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_") and k != "DATABASE_URL"}
    env.update(COLUMNS=str(columns), FLOWRT_URL=peer)
    return subprocess.run([sys.executable, "-m", "flowrt.cli", *[str(a) for a in args]],
                          capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def test_flows_start_tick_status_and_resume(peer: str) -> None:
    listed = json.loads(ok(flowrt(peer, "flows", "--json")))
    assert {f["flowId"] for f in listed} >= {"demo-fraud", "demo-support"}
    assert "demo-support" in ok(flowrt(peer, "flows"))
    # The reference requires a version on start; the CLI picks the highest, as flowrt does.
    run = json.loads(ok(flowrt(peer, "start", "demo-support", "--json")))
    assert run["status"] == "RUNNING"
    ticked = ok(flowrt(peer, "tick", run["runId"]))
    assert ticked.startswith(f"run {run['runId']}  demo-support@1.0.0  WAITING") and "created  —" not in ticked
    assert "resume it with: flowrt resume" in ok(flowrt(peer, "status", run["runId"]))
    resumed = json.loads(ok(flowrt(peer, "resume", run["runId"], "--payload", '{"approved": true}', "--wait", "--json")))
    assert resumed["status"] == "COMPLETED"
    waited = json.loads(ok(flowrt(peer, "start", "demo-fraud", "--wait", "--json", "--input", '{"amount": 10}')))
    assert waited["status"] in ("COMPLETED", "WAITING", "FAILED") and "createdAt" in waited


def test_every_timeline_view_works_without_seq(peer: str) -> None:
    run_id = json.loads(ok(flowrt(peer, "start", "demo-support", "--wait", "--json")))["runId"]
    events = json.loads(ok(flowrt(peer, "timeline", run_id, "--json")))
    assert events and all("seq" not in e for e in events)  # the reference's events
    rows = ok(flowrt(peer, "timeline", run_id)).splitlines()
    numbered = [line.split()[0] for line in rows if re.match(r"\s*\d+\s+\d\d:\d\d:", line)]
    assert numbered == [str(i) for i in range(1, len(events) + 1)]  # positions stand in for seq
    assert any("RUN_WAITING" in line for line in rows) and all(len(line) <= 80 for line in rows)
    later = json.loads(ok(flowrt(peer, "timeline", run_id, "--after", 2, "--limit", 1, "--json")))
    assert later == events[2:3]
    detail = ok(flowrt(peer, "timeline", run_id, "--seq", 2))
    assert detail.startswith(f"event 2  {events[1]['type']}")
    assert "█" in ok(flowrt(peer, "timeline", run_id, "--bars"))
    followed = ok(flowrt(peer, "resume", run_id, "--payload", '{"approved": true}', "--wait"))
    assert "COMPLETED" in followed
    tail = ok(flowrt(peer, "timeline", run_id, "--follow", "--interval", "0.05", "--json")).splitlines()
    assert json.loads(tail[-1])["type"] == "RUN_COMPLETED"
    graph = ok(flowrt(peer, "graph", "--run", run_id, columns=160)).splitlines()
    assert graph[1] == f"run {run_id}  COMPLETED" and "✓ notify" in graph


def test_commands_the_reference_does_not_offer_say_so_in_one_line(peer: str) -> None:
    run_id = json.loads(ok(flowrt(peer, "start", "demo-support", "--json")))["runId"]
    for args, endpoint in ((["runs"], "GET /v1/runs"), (["runs", "--count"], "GET /v1/runs"),
                           (["cancel", run_id], "POST /v1/runs/{runId}/cancel"), (["recover", "--dry-run"], "GET /v1/runs")):
        done = flowrt(peer, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: the server at {peer} does not offer ")
        assert endpoint in done.stderr and "(NOT_OFFERED)" in done.stderr and done.stdout == ""
    missing = flowrt(peer, "status", "no-such-run")
    assert missing.returncode == 3 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    unknown = flowrt(peer, "start", "no-such-flow")
    assert unknown.returncode == 3 and "demo-fraud, demo-support" in unknown.stderr
