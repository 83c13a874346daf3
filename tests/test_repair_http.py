"""Retry, rewind and scoped tokens over HTTP (SQLite and Postgres) and through the CLI,
locally and against a real `flowrt serve` process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from http_helpers import ThreadServer, serve_process, thread_server
from repair_flows import ALL
from test_cli import Cli, fails, flowrt_process, ok_json, runner  # noqa: F401 - runner: shared CliRunner

TOKENS = "alice:operate:alice-secret-1,dash:read:dash-secret-1,root:admin:root-secret-1"


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ThreadServer]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'f.db'}"
    with thread_server(url, ALL, drive=False, api_token="legacy-admin", api_tokens=TOKENS) as server:
        yield server


def _failed(c: httpx.Client, switch: Path) -> str:
    run = c.post("/v1/runs/start?wait=10", json={"flowId": "shop", "input": {"brokenFile": str(switch)}},
                 headers=_h("alice-secret-1")).json()
    assert run["status"] == "FAILED", run
    return str(run["runId"])


def test_retry_and_rewind_over_http_record_who_did_them(srv: ThreadServer, tmp_path: Path) -> None:
    c, switch = srv.client, tmp_path / "down"
    switch.write_text("x")
    run_id = _failed(c, switch)
    switch.unlink()
    retried = c.post(f"/v1/runs/{run_id}/retry?wait=10", headers=_h("alice-secret-1"))
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["currentNodeId"]) == ("WAITING", "approve")
    rewound = c.post(f"/v1/runs/{run_id}/rewind", json={"toNode": "charge"}, headers=_h("legacy-admin")).json()
    assert (rewound["status"], rewound["currentNodeId"], rewound["outputsJson"]) == (
        "RUNNING", "charge", {"prepare": {"prepared": None}},
    )
    c.post(f"/v1/runs/{run_id}/cancel", json={"reason": "enough"}, headers=_h("root-secret-1"))
    events = c.get(f"/v1/runs/{run_id}/timeline", headers=_h("dash-secret-1")).json()
    marks = [(e["type"], e["payloadJson"]) for e in events if e["type"] in ("RUN_RETRIED", "RUN_REWOUND", "RUN_CANCELLED")]
    charge_start = max(e["seq"] for e in events if e["type"] == "NODE_STARTED" and e["nodeId"] == "charge")
    assert marks == [
        ("RUN_RETRIED", {"by": "alice", "fromNode": "charge"}),
        ("RUN_REWOUND", {"by": "api", "toNode": "charge", "seq": charge_start}),
        ("RUN_CANCELLED", {"reason": "enough", "by": "root"}),
    ]


def test_repair_errors_over_http(srv: ThreadServer, tmp_path: Path) -> None:
    c, h = srv.client, _h("alice-secret-1")
    done = c.post("/v1/runs/start?wait=10", json={"flowId": "shop"}, headers=h).json()
    assert done["status"] == "WAITING"
    answer = c.post(f"/v1/runs/{done['runId']}/retry", headers=h)
    assert answer.status_code == 409 and answer.json()["code"] == "RUN_NOT_REPAIRABLE"
    assert "only a FAILED or CANCELLED run can be retried" in answer.json()["error"]
    answer = c.post(f"/v1/runs/{done['runId']}/rewind", json={"toNode": "ship"}, headers=h)
    assert (answer.status_code, answer.json()["code"]) == (409, "REWIND_UNAVAILABLE")
    answer = c.post(f"/v1/runs/{done['runId']}/rewind", json={"toNode": "nope"}, headers=h)
    assert (answer.status_code, answer.json()["code"]) == (400, "BAD_REQUEST")
    answer = c.post(f"/v1/runs/{done['runId']}/rewind", json={}, headers=h)
    assert answer.status_code == 400 and "toNode" in answer.json()["error"]
    assert c.post("/v1/runs/nope/retry", headers=h).status_code == 404
    assert c.post("/v1/runs/nope/rewind", json={"toNode": "x"}, headers=h).status_code == 404


def test_scopes(srv: ThreadServer) -> None:
    c = srv.client
    run_id = c.post("/v1/runs/start", json={"flowId": "shop"}, headers=_h("alice-secret-1")).json()["runId"]
    # read: GETs (and the event streams), nothing that moves a run
    assert c.get(f"/v1/runs/{run_id}", headers=_h("dash-secret-1")).status_code == 200
    with c.stream("GET", "/v1/runs/changes", headers=_h("dash-secret-1")) as stream:
        assert stream.status_code == 200
    for path in ("start", f"{run_id}/tick", f"{run_id}/cancel", f"{run_id}/retry"):
        answer = c.post(f"/v1/runs/{path}", json={"flowId": "shop"}, headers=_h("dash-secret-1"))
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json() == {
            "error": "this needs a token with the 'operate' scope; token 'dash' has 'read'", "code": "FORBIDDEN",
        }
    # no token, a wrong one, a wrong scheme: 401; the probes and the UI stay open
    assert c.get("/v1/runs").status_code == 401
    assert c.get("/v1/runs", headers=_h("alice-secret-2")).status_code == 401
    assert c.get("/v1/runs", headers={"Authorization": "Basic alice-secret-1"}).status_code == 401
    with c.stream("GET", "/v1/runs/changes") as stream:
        assert stream.status_code == 401
    assert c.get("/health").status_code == 200 and c.get("/ui").status_code == 200
    # the schema lists the new routes and the bearer scheme
    schema = c.get("/schema/openapi.json").json()
    assert {"/v1/runs/{run_id}/retry", "/v1/runs/{run_id}/rewind"} <= set(schema["paths"])


def test_bad_token_settings_are_refused_without_echoing_a_secret(tmp_path: Path) -> None:
    from flowrt import InvalidInput
    from flowrt.server.runtime import Settings

    for text, fragment in (
        ("alice:write:long-enough-1", "scope 'write' is not one of read, operate, admin"),
        ("alice:read", "expected name:scope:token"),
        ("alice:read:short", "at least 8 characters"),
        ("a:read:long-enough-1,a:admin:long-enough-2", "repeated: a"),
        ("a:read:long-enough-1,b:admin:long-enough-1", "same secret"),
    ):
        with pytest.raises(InvalidInput, match=fragment) as caught:
            Settings.resolve(api_tokens=text, env={})
        assert "long-enough" not in caught.value.message
    file = tmp_path / "tokens"
    file.write_text("# ops\nops:operate:ops:with,commas\n\nviewer:read:viewer-secret\n")
    tokens = Settings.resolve(tokens_file=str(file), env={}).tokens
    assert [(t.name, t.scope, t.secret) for t in tokens] == [
        ("ops", "operate", b"ops:with,commas"), ("viewer", "read", b"viewer-secret"),
    ]
    assert "secret" not in repr(tokens)


# --------------------------------------------------------------------------- CLI


def test_cli_retry_and_rewind_locally(tmp_path: Path) -> None:
    db, switch = f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "down"
    switch.write_text("x")
    env = {"DATABASE_URL": db, "FLOWRT_FLOWS": "repair_flows:ALL"}
    started = json.loads(flowrt_process("start", "shop", "--wait", "--json", "--input", json.dumps({"brokenFile": str(switch)}),
                                        cwd=tmp_path, env=env).stdout)
    run_id = started["runId"]
    assert started["status"] == "FAILED"
    again = flowrt_process("retry", run_id, "--wait", cwd=tmp_path, env=env)
    assert again.returncode == 1 and "FAILED" in again.stdout  # still down: --wait says so
    switch.unlink()
    done = flowrt_process("retry", run_id, "--wait", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "WAITING"
    conflict = flowrt_process("retry", run_id, cwd=tmp_path, env=env)
    assert conflict.returncode == 4 and "RUN_NOT_REPAIRABLE" in conflict.stderr
    rewound = flowrt_process("rewind", run_id, "--to", "prepare", "--json", cwd=tmp_path, env=env)
    assert rewound.returncode == 0, rewound.stderr
    assert json.loads(rewound.stdout)["outputsJson"] == {}
    bad = flowrt_process("rewind", run_id, "--to", "nope", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "has no node 'nope'" in bad.stderr
    timeline = flowrt_process("timeline", run_id, cwd=tmp_path, env={"DATABASE_URL": db})
    assert "RUN_RETRIED" in timeline.stdout and "by cli · from charge" in timeline.stdout
    assert "by cli · to prepare" in timeline.stdout


def test_cli_retry_and_rewind_against_a_server_with_scoped_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:operate:alice-secret-1\ndash:read:dash-secret-1\n")
    switch = tmp_path / "down"
    switch.write_text("x")
    args = ["--flows", "repair_flows:ALL", "--db", f"sqlite:///{tmp_path / 's.db'}", "--tokens-file", str(tokens)]
    with serve_process(args) as server:
        env = {"FLOWRT_URL": server.url, "FLOWRT_API_TOKEN": "alice-secret-1"}
        started = flowrt_process("start", "shop", "--wait", "--json", "--input", json.dumps({"brokenFile": str(switch)}),
                                 cwd=tmp_path, env=env)
        run_id = json.loads(started.stdout)["runId"]
        switch.unlink()
        refused = flowrt_process("retry", run_id, cwd=tmp_path, env={**env, "FLOWRT_API_TOKEN": "dash-secret-1"})
        assert refused.returncode == 2 and "needs a token with the 'operate' scope" in refused.stderr
        done = flowrt_process("retry", run_id, "--wait", "--json", cwd=tmp_path, env=env)
        assert done.returncode == 0 and json.loads(done.stdout)["status"] == "WAITING", done.stderr
        rewound = flowrt_process("rewind", run_id, "--to", "charge", "--wait", "--json", cwd=tmp_path, env=env)
        assert json.loads(rewound.stdout)["status"] == "WAITING", rewound.stderr
        events = httpx.get(f"{server.url}/v1/runs/{run_id}/timeline", headers=_h("dash-secret-1")).json()
        bys = [e["payloadJson"]["by"] for e in events if e["type"] in ("RUN_RETRIED", "RUN_REWOUND")]
        assert bys == ["alice", "alice"]
        log = server.output()
        assert "alice (operate)" in log and "alice-secret-1" not in log and "dash-secret-1" not in log


def test_the_python_client_retries_and_rewinds(srv: ThreadServer, tmp_path: Path) -> None:
    import asyncio

    from flowrt import AsyncClient, Client, RewindUnavailable, RunNotRepairable

    switch = tmp_path / "down"
    switch.write_text("x")
    run_id = _failed(srv.client, switch)
    switch.unlink()
    with Client(srv.url, token="alice-secret-1") as client:
        with pytest.raises(RunNotRepairable):
            client.retry(client.start("shop", wait=True).run_id)
        retried = client.retry(run_id, wait=True)
        assert (retried.status, retried.current_node_id) == ("WAITING", "approve")
        with pytest.raises(RewindUnavailable):
            client.rewind(run_id, "ship")

    async def rewind() -> Any:
        async with AsyncClient(srv.url, token="alice-secret-1") as client:
            return await client.rewind(run_id, "prepare", wait=True)

    back = asyncio.run(rewind())
    assert back.status == "WAITING" and back.state["count"] == 2
    events = srv.client.get(f"/v1/runs/{run_id}/timeline", headers=_h("dash-secret-1")).json()
    assert [e["payloadJson"]["by"] for e in events if e["type"] in ("RUN_RETRIED", "RUN_REWOUND")] == ["alice", "alice"]


def test_cli_repairs_and_prunes_on_postgres(pg_url: str, tmp_path: Path) -> None:
    switch = tmp_path / "down"
    switch.write_text("x")
    env = {"DATABASE_URL": pg_url, "FLOWRT_FLOWS": "repair_flows:ALL"}
    started = flowrt_process("start", "shop", "--wait", "--json", "--input", json.dumps({"brokenFile": str(switch)}),
                             cwd=tmp_path, env=env)
    run_id = json.loads(started.stdout)["runId"]
    switch.unlink()
    done = flowrt_process("retry", run_id, "--wait", "--json", cwd=tmp_path, env=env)
    assert json.loads(done.stdout)["status"] == "WAITING", done.stderr
    back = flowrt_process("rewind", run_id, "--to", "charge", "--json", cwd=tmp_path, env=env)
    assert json.loads(back.stdout)["outputsJson"] == {"prepare": {"prepared": None}}, back.stderr
    cancelled = flowrt_process("cancel", "--flow", "shop", "--yes", "--json", cwd=tmp_path, env=env)
    assert json.loads(cancelled.stdout)["outcomes"] == {"cancelled": 1}, cancelled.stderr
    pruned = flowrt_process("prune", "--older-than", "1s", "--dry-run", "--json", cwd=tmp_path, env=env)
    report = json.loads(pruned.stdout)
    assert report["dryRun"] and report["sizeBefore"] > 0, pruned.stderr
