"""The HTTP API (SPEC 5) against a real uvicorn server, on a SQLite file and on Postgres."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterator

import httpx
import pytest
from http_helpers import ThreadServer, thread_server

from flowrt import Engine, Flow, Retry, fail, ok
from flowrt.server.app import EventOut, RunOut

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'flowrt.db'}"


@pytest.fixture
def srv(url: str) -> Iterator[ThreadServer]:
    """The reference's behaviour: no drivers, only tick/resume move runs."""
    with thread_server(url, drive=False) as server:
        yield server


def ok_json(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def start(c: httpx.Client, flow_id: str, **body: Any) -> str:
    started = ok_json(c.post("/v1/runs/start", json={"flowId": flow_id, **body}))
    assert set(started) == {"runId", "status"} and started["status"] == "RUNNING"
    return str(started["runId"])


def tick_to_end(c: httpx.Client, run_id: str) -> dict[str, Any]:
    for _ in range(10):
        run = ok_json(c.post(f"/v1/runs/{run_id}/tick"))
        if run["status"] != "RUNNING":
            return run  # type: ignore[no-any-return]
    raise AssertionError("run did not settle")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"} and body["code"] == code and body["error"], body
    assert "Traceback" not in response.text


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize(("amount", "branch", "decision"), [(50, "approve", "approved"), (5000, "reject", "rejected")])
def test_demo_fraud_start_tick_to_completion(srv: ThreadServer, amount: int, branch: str, decision: str) -> None:
    c = srv.client
    run_id = start(c, "demo-fraud", version="1.0.0", input={"amount": amount, "userId": "u1"})
    run = ok_json(c.post(f"/v1/runs/{run_id}/tick"))
    assert run["status"] == "RUNNING" and run["currentNodeId"] == branch
    assert run["stateJson"] == {"riskScore": 80 if amount > 1000 else 20}
    run = tick_to_end(c, run_id)
    assert run["status"] == "COMPLETED" and run["currentNodeId"] is None
    assert run["outputsJson"][branch] == {"decision": decision}
    assert run["attempts"] == {"score": 1, branch: 1} and run["error"] is None
    assert ok_json(c.get(f"/v1/runs/{run_id}")) == run
    # A finished run ticks to itself, as the reference does.
    assert ok_json(c.post(f"/v1/runs/{run_id}/tick")) == run


def test_run_object_keeps_the_reference_fields(srv: ThreadServer) -> None:
    run_id = start(srv.client, "demo-fraud", input={"amount": 1}, tenantId="t-1", initialState={"seed": 1})
    run = ok_json(srv.client.get(f"/v1/runs/{run_id}"))
    reference = {"runId", "flowId", "flowVersion", "tenantId", "status", "currentNodeId", "inputJson",
                 "stateJson", "outputsJson", "createdAt", "updatedAt"}
    assert reference <= set(run)
    assert set(run) == set(RunOut.__struct_encode_fields__)  # the OpenAPI model matches the wire
    assert run["flowVersion"] == "1.0.0" and run["tenantId"] == "t-1" and run["stateJson"] == {"seed": 1}
    assert run["createdAt"].endswith("Z") and run["inputJson"] == {"amount": 1}


@pytest.mark.parametrize("form", ["raw", "wrapped"])
def test_demo_support_waits_then_resumes(srv: ThreadServer, form: str) -> None:
    c = srv.client
    run_id = start(c, "demo-support")
    run = ok_json(c.post(f"/v1/runs/{run_id}/tick"))
    assert run["status"] == "WAITING" and run["waitReason"] == "awaiting_ticket_creation"
    payload = {"ticketId": "T-42"}
    body = payload if form == "raw" else {"payload": payload}
    run = ok_json(c.post(f"/v1/runs/{run_id}/resume", json=body))
    assert run["status"] == "RUNNING" and run["currentNodeId"] == "notify"
    assert run["outputsJson"]["create"] == payload
    run = tick_to_end(c, run_id)
    assert run["status"] == "COMPLETED"
    assert run["outputsJson"]["notify"] == {"notified": True, "ticketId": {"ticketId": "T-42"}}  # as the reference
    resumed = [e for e in ok_json(c.get(f"/v1/runs/{run_id}/timeline")) if e["type"] == "RUN_RESUMED"]
    assert [e["payloadJson"] for e in resumed] == [{"by": "api", "payload": payload}]


def test_resume_body_rule_is_the_references(srv: ThreadServer) -> None:
    """An object with a "payload" key is unwrapped (other keys ignored); anything else is the payload."""
    c = srv.client
    cases: list[tuple[Any, Any]] = [
        ({"payload": {"ticketId": "T-7"}, "note": "x"}, {"ticketId": "T-7"}),
        ({"payload": {"ticketId": "T-8"}}, {"ticketId": "T-8"}),
        ({"payload": None, "ticketId": "ignored"}, None),
        ({"payload": {"payload": 1}}, {"payload": 1}),
        ({"ticketId": "T-9"}, {"ticketId": "T-9"}),
        ({}, {}),
        ([{"payload": 1}], [{"payload": 1}]),
        ("T-10", "T-10"),
        (5, 5),
    ]
    for body, payload in cases:
        run_id = start(c, "demo-support")
        ok_json(c.post(f"/v1/runs/{run_id}/tick"))
        ok_json(c.post(f"/v1/runs/{run_id}/resume", json=body))
        resumed = [e for e in ok_json(c.get(f"/v1/runs/{run_id}/timeline")) if e["type"] == "RUN_RESUMED"]
        assert [e["payloadJson"] for e in resumed] == [{"by": "api", "payload": payload}], body


def test_resume_with_an_empty_body_is_a_null_payload(srv: ThreadServer) -> None:
    c = srv.client
    run_id = start(c, "demo-support")
    ok_json(c.post(f"/v1/runs/{run_id}/tick"))
    run = ok_json(c.post(f"/v1/runs/{run_id}/resume"))
    assert run["status"] == "WAITING"  # resumed with null, the node waits again
    events = ok_json(c.get(f"/v1/runs/{run_id}/timeline"))
    assert [e["type"] for e in events[-4:]] == ["RUN_RESUMED", "NODE_STARTED", "NODE_FINISHED", "RUN_WAITING"]
    assert events[-4]["payloadJson"] == {"by": "api", "payload": None}


def test_timeline_contents_order_and_paging(srv: ThreadServer) -> None:
    c = srv.client
    run_id = start(c, "demo-fraud", input={"amount": 5000})
    tick_to_end(c, run_id)
    events = ok_json(c.get(f"/v1/runs/{run_id}/timeline"))
    assert [(e["type"], e["nodeId"]) for e in events] == [
        ("RUN_STARTED", None),
        ("NODE_STARTED", "score"),
        ("NODE_FINISHED", "score"),
        ("NODE_STARTED", "reject"),
        ("NODE_FINISHED", "reject"),
        ("RUN_COMPLETED", None),
    ]
    assert [e["seq"] for e in events] == list(range(1, 7))
    assert all(set(e) == set(EventOut.__struct_encode_fields__) and e["runId"] == run_id for e in events)
    assert events[1]["payloadJson"] == {"nodeId": "score", "attempt": 1} and events[1]["attempt"] == 1
    assert events[2]["payloadJson"] == {"nodeId": "score", "attempt": 1, "cached": False}
    assert events[5]["attempt"] is None and events[5]["payloadJson"] == {}
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    page = ok_json(c.get(f"/v1/runs/{run_id}/timeline", params={"after": 2, "limit": 3}))
    assert [e["seq"] for e in page] == [3, 4, 5]
    assert ok_json(c.get(f"/v1/runs/{run_id}/timeline", params={"after": 6})) == []


def test_list_paginates_filters_and_cancel(srv: ThreadServer) -> None:
    c = srv.client
    ids = [start(c, "demo-support", tenantId="tenant-list") for _ in range(5)]
    start(c, "demo-support", tenantId="someone-else")
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"tenantId": "tenant-list", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = ok_json(c.get("/v1/runs", params=params))
        assert len(page["runs"]) <= 2
        seen += [r["runId"] for r in page["runs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, every run exactly once

    cancelled = ok_json(c.post(f"/v1/runs/{ids[0]}/cancel", json={"reason": "customer left"}))
    assert cancelled["status"] == "CANCELLED"
    ok_json(c.post(f"/v1/runs/{ids[1]}/tick"))  # WAITING runs can be cancelled too
    assert ok_json(c.post(f"/v1/runs/{ids[1]}/cancel"))["status"] == "CANCELLED"
    page = ok_json(c.get("/v1/runs", params={"tenantId": "tenant-list", "status": "CANCELLED"}))
    assert sorted(r["runId"] for r in page["runs"]) == sorted(ids[:2]) and page["nextCursor"] is None
    assert ok_json(c.get("/v1/runs", params={"flowId": "demo-fraud", "tenantId": "tenant-list"}))["runs"] == []
    last = ok_json(c.get(f"/v1/runs/{ids[0]}/timeline"))[-1]
    assert last["type"] == "RUN_CANCELLED" and last["payloadJson"] == {"reason": "customer left", "by": "api"}
    assert_error(c.post(f"/v1/runs/{ids[0]}/cancel"), 409, "RUN_FINISHED")
    assert_error(c.post(f"/v1/runs/{ids[0]}/resume", json={}), 409, "RUN_NOT_WAITING")


def test_flows_and_health(srv: ThreadServer) -> None:
    flows = ok_json(srv.client.get("/v1/flows"))
    assert [(f["flowId"], f["version"]) for f in flows] == [("demo-fraud", "1.0.0"), ("demo-support", "1.0.0")]
    fraud = flows[0]["definitionJson"]
    assert fraud["entry"] == "score" and set(fraud["nodes"]) == {"score", "approve", "review", "reject"}
    assert {(e["to"], e["priority"], e["hasCondition"]) for e in fraud["edges"]} == {
        ("approve", 1, True), ("review", 1, True), ("reject", 1, True)}
    health = ok_json(srv.client.get("/health"))
    assert health["status"] == "alive" and health["condition"] == "ok"
    assert health["fallback"] is False and health["durable"] is True
    assert health["storage"] == srv.engine.storage.kind and health["version"] and health["schemaVersion"] >= 1


def test_openapi_document_is_served(srv: ThreadServer) -> None:
    response = srv.client.get("/schema/openapi.json")
    assert response.status_code == 200 and "json" in response.headers["content-type"]
    doc = response.json()
    paths = doc["paths"]
    for path in ("/v1/runs/start", "/v1/runs/{run_id}/tick", "/v1/runs/{run_id}/resume", "/v1/runs/{run_id}/cancel",
                 "/v1/runs/{run_id}", "/v1/runs/{run_id}/timeline", "/v1/runs", "/v1/flows", "/health", "/ready",
                 "/startup"):
        assert path in paths, path
    assert "StartRequest" in doc["components"]["schemas"] and "RunOut" in doc["components"]["schemas"]


# --------------------------------------------------------------------------- errors


def test_every_error_has_its_status_and_code(srv: ThreadServer, url: str) -> None:
    c = srv.client
    waiting = start(c, "demo-support")
    ok_json(c.post(f"/v1/runs/{waiting}/tick"))
    running = start(c, "demo-fraud", input={"amount": 1})
    missing = "01a00000-0000-7000-8000-000000000000"
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/v1/runs/start", {"content": b"{not json"}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"content": b""}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"json": [1, 2]}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"json": {"version": "1.0.0"}}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"json": {"flowId": 7}}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"json": {"flowId": "demo-fraud", "initialState": [1]}}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"json": {"flowId": "demo-fraud", "tenantId": 5}}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"json": {"flowId": "demo-fraud", "tenantId": "x" * 201}}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start?wait=-1", {"json": {"flowId": "demo-fraud"}}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start?wait=soon", {"json": {"flowId": "demo-fraud"}}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"json": {"flowId": "no-such-flow"}}, 404, "FLOW_NOT_FOUND"),
        ("POST", "/v1/runs/start", {"json": {"flowId": "demo-fraud", "version": "9.9.9"}}, 404, "FLOW_NOT_FOUND"),
        ("POST", "/v1/runs/start", {"content": b"[" * 2000 + b"]" * 2000}, 400, "BAD_REQUEST"),
        ("POST", "/v1/runs/start", {"content": b"x" * ((1 << 20) + 1)}, 413, "PAYLOAD_TOO_LARGE"),
        ("GET", f"/v1/runs/{missing}", {}, 404, "RUN_NOT_FOUND"),
        ("GET", "/v1/runs/%00", {}, 404, "RUN_NOT_FOUND"),
        ("GET", f"/v1/runs/{missing}/timeline", {}, 404, "RUN_NOT_FOUND"),
        ("POST", f"/v1/runs/{missing}/tick", {}, 404, "RUN_NOT_FOUND"),
        ("POST", f"/v1/runs/{missing}/resume", {"json": {}}, 404, "RUN_NOT_FOUND"),
        ("POST", f"/v1/runs/{missing}/cancel", {}, 404, "RUN_NOT_FOUND"),
        ("POST", f"/v1/runs/{waiting}/resume", {"content": b"{oops"}, 400, "BAD_REQUEST"),
        ("POST", f"/v1/runs/{running}/resume", {"json": {"approved": True}}, 409, "RUN_NOT_WAITING"),
        ("POST", f"/v1/runs/{waiting}/cancel", {"json": {"reason": 3}}, 400, "BAD_REQUEST"),
        ("POST", f"/v1/runs/{waiting}/cancel", {"json": "why"}, 400, "BAD_REQUEST"),
        ("GET", f"/v1/runs/{waiting}/timeline?after=-1", {}, 400, "BAD_REQUEST"),
        ("GET", f"/v1/runs/{waiting}/timeline?limit=0", {}, 400, "BAD_REQUEST"),
        ("GET", f"/v1/runs/{waiting}/timeline?after=x", {}, 400, "BAD_REQUEST"),
        ("GET", "/v1/runs?status=DONE", {}, 400, "BAD_REQUEST"),
        ("GET", "/v1/runs?limit=0", {}, 400, "BAD_REQUEST"),
        ("GET", "/v1/runs?limit=1001", {}, 400, "BAD_REQUEST"),
        ("GET", "/v1/runs?tenantId=%00", {}, 400, "BAD_REQUEST"),
        ("GET", "/v1/runs?cursor=" + "z" * 100, {}, 400, "BAD_REQUEST"),
        ("GET", "/v1/nowhere", {}, 404, "NOT_FOUND"),
        ("GET", "/nowhere", {}, 404, "NOT_FOUND"),
        ("DELETE", "/v1/runs/start", {}, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/runs/start", {}, 405, "METHOD_NOT_ALLOWED"),  # the static route wins over {runId}
        ("PUT", "/v1/flows", {}, 405, "METHOD_NOT_ALLOWED"),
    ]
    for method, path, kwargs, status, code in cases:
        response = c.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        assert_error(response, status, code)


def test_error_messages_say_what_to_do(srv: ThreadServer) -> None:
    c = srv.client
    big = c.post("/v1/runs/start", content=b"x" * ((1 << 20) + 1))
    assert "1048576 bytes (1 MiB)" in big.json()["error"] and "--max-body-bytes" in big.json()["error"]
    status = c.get("/v1/runs", params={"status": "DONE"}).json()["error"]
    assert "'DONE'" in status and "RUNNING, WAITING, COMPLETED, FAILED, CANCELLED" in status
    done = start(c, "demo-fraud")
    tick_to_end(c, done)
    not_waiting = c.post(f"/v1/runs/{done}/resume", json={"ticketId": "T-1"}).json()["error"]
    assert "is COMPLETED, not WAITING" in not_waiting and "only a WAITING run can be resumed" in not_waiting
    assert "only a RUNNING or WAITING run" in c.post(f"/v1/runs/{done}/cancel").json()["error"]
    for body in ({"flowId": "no-such-flow"}, {"flowId": "demo-fraud", "version": "9.9.9"}):
        message = c.post("/v1/runs/start", json=body).json()["error"]
        assert "is not registered" in message and "demo-fraud@1.0.0, demo-support@1.0.0" in message, message


def test_busy_run_is_409_and_nothing_runs_twice(srv: ThreadServer) -> None:
    run_id = srv.engine.start("demo-fraud", input={"amount": 5}).run_id  # started elsewhere: no lease kept here
    row = srv.engine.storage.claim(run_id, "another-process", 30_000)  # as if a driver elsewhere held it
    assert row is not None
    assert_error(srv.client.post(f"/v1/runs/{run_id}/tick"), 409, "RUN_BUSY")
    srv.engine.storage.release(run_id, row.lease_epoch)
    assert ok_json(srv.client.post(f"/v1/runs/{run_id}/tick"))["attempts"] == {"score": 1}


def test_run_of_a_flow_not_loaded_here_is_422(srv: ThreadServer, url: str) -> None:
    other = Flow("elsewhere", "2.0.0")
    other.add_node("only", lambda ctx: ok(), entry=True)
    with Engine(url, flows=[other]) as engine:
        run_id = engine.start("elsewhere").run_id
    assert_error(srv.client.post(f"/v1/runs/{run_id}/tick"), 422, "FLOW_NOT_REGISTERED")
    assert ok_json(srv.client.get(f"/v1/runs/{run_id}"))["status"] == "RUNNING"  # readable, untouched


def test_body_limit_is_configurable(url: str) -> None:
    with thread_server(url, drive=False, max_body_bytes=200) as srv:
        big = {"flowId": "demo-fraud", "input": {"amount": 1, "pad": "x" * 300}}
        too_big = srv.client.post("/v1/runs/start", json=big)
        assert_error(too_big, 413, "PAYLOAD_TOO_LARGE")
        message = too_big.json()["error"]
        assert "limit of 200 bytes" in message and "--max-body-bytes" in message and "FLOWRT_MAX_BODY_BYTES" in message
        assert srv.client.post("/v1/runs/start", json={"flowId": "demo-fraud"}).status_code == 200


# --------------------------------------------------------------------------- auth


def test_bearer_token_guards_every_v1_route_but_not_health(url: str) -> None:
    with thread_server(url, drive=False, api_token="s3cret-token") as srv:
        c = srv.client
        for method, path in [("GET", "/v1/flows"), ("GET", "/v1/runs"), ("POST", "/v1/runs/start"),
                             ("GET", "/v1/runs/x"), ("POST", "/v1/runs/x/tick"), ("POST", "/v1/runs/x/resume"),
                             ("POST", "/v1/runs/x/cancel"), ("GET", "/v1/runs/x/timeline")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                            {"Authorization": "Basic s3cret-token"}):
                response = c.request(method, path, headers=headers, json={"flowId": "demo-fraud"})
                assert_error(response, 401, "UNAUTHORIZED")
                assert response.headers["www-authenticate"] == "Bearer"
        auth = {"Authorization": "Bearer s3cret-token"}
        assert ok_json(c.get("/v1/flows", headers=auth))
        run_id = ok_json(c.post("/v1/runs/start", json={"flowId": "demo-fraud", "input": {"amount": 2}},
                                headers={"authorization": "bearer s3cret-token"}))["runId"]
        assert ok_json(c.post(f"/v1/runs/{run_id}/tick", headers=auth))["currentNodeId"] == "approve"
        health = c.get("/health")
        assert health.status_code == 200 and "s3cret" not in health.text
        doc = c.get("/schema/openapi.json").json()
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_without_a_token_no_header_is_needed(srv: ThreadServer) -> None:
    assert srv.client.get("/v1/flows").status_code == 200
    assert srv.client.get("/v1/flows", headers={"Authorization": "Bearer anything"}).status_code == 200


# --------------------------------------------------------------------------- long-poll and drivers


def test_no_drive_long_poll_drives_the_run_inline(srv: ThreadServer) -> None:
    c = srv.client
    run = ok_json(c.post("/v1/runs/start?wait=5", json={"flowId": "demo-fraud", "input": {"amount": 5}}))
    assert run["status"] == "COMPLETED" and run["outputsJson"]["approve"] == {"decision": "approved"}
    run = ok_json(c.post("/v1/runs/start", params={"wait": 5}, json={"flowId": "demo-support"}))
    assert run["status"] == "WAITING"
    run = ok_json(c.post(f"/v1/runs/{run['runId']}/resume?wait=5", json={"ticketId": "T-7"}))
    assert run["status"] == "COMPLETED" and run["outputsJson"]["notify"]["ticketId"] == {"ticketId": "T-7"}
    # wait=0 answers at once, without driving
    assert ok_json(c.post("/v1/runs/start?wait=0", json={"flowId": "demo-fraud"}))["status"] == "RUNNING"


def test_driven_runs_complete_without_ticks(url: str) -> None:
    with thread_server(url, drive=True, workers=2) as srv:
        c = srv.client
        run_id = start(c, "demo-fraud", input={"amount": 5000})
        run: dict[str, Any] = {}
        for _ in range(250):
            run = ok_json(c.get(f"/v1/runs/{run_id}"))
            if run["status"] != "RUNNING":
                break
            time.sleep(0.02)
        assert run["status"] == "COMPLETED" and run["outputsJson"]["reject"] == {"decision": "rejected"}

        run = ok_json(c.post("/v1/runs/start?wait=5", json={"flowId": "demo-fraud", "input": {"amount": 5}}))
        assert run["status"] == "COMPLETED" and run["attempts"] == {"score": 1, "approve": 1}

        run = ok_json(c.post("/v1/runs/start?wait=5", json={"flowId": "demo-support"}))
        assert run["status"] == "WAITING"
        run = ok_json(c.post(f"/v1/runs/{run['runId']}/resume?wait=5", json={"payload": {"ticketId": "T-9"}}))
        assert run["status"] == "COMPLETED" and run["outputsJson"]["notify"] == {"notified": True, "ticketId": {"ticketId": "T-9"}}
        health = ok_json(c.get("/health"))
        assert health["driving"] is True and health["workers"] == 2


def _stuck_flow() -> Flow:
    """One node that fails retryably with a minute's backoff: the run stays RUNNING, parked."""
    flow = Flow("stuck", "1.0.0")
    flow.add_node("flaky", lambda ctx: fail("NETWORK_ERROR", "down"), entry=True,
                  retry=Retry(max_attempts=3, base_delay_ms=60_000))
    return flow


def _slow_flow() -> Flow:
    flow = Flow("slow", "1.0.0")

    async def nap(ctx: Any) -> Any:
        await asyncio.sleep(1)

    flow.add_node("nap", nap, entry=True)
    flow.add_node("again", nap)
    flow.edge("nap", "again")
    return flow


@pytest.mark.parametrize("drive", [False, True], ids=["no-drive", "drive"])
def test_long_poll_gives_up_when_the_time_is_up(drive: bool, tmp_path: Any) -> None:
    with thread_server(f"sqlite:///{tmp_path / 'w.db'}", flows=[_stuck_flow(), _slow_flow()], drive=drive) as srv:
        for flow_id in ("stuck", "slow"):
            began = time.monotonic()
            run = ok_json(srv.client.post("/v1/runs/start?wait=0.3", json={"flowId": flow_id}))
            assert run["status"] == "RUNNING", run
            # no-drive + slow: the step in flight finishes first (it is never cut off)
            limit = 2.0 if flow_id == "slow" and not drive else 1.0
            assert time.monotonic() - began < limit
        stuck = ok_json(srv.client.get("/v1/runs", params={"flowId": "stuck"}))["runs"][0]
        assert stuck["attempts"] == {"flaky": 1} and stuck["wakeAt"] is not None
