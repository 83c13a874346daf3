"""The same requests against the reference runtime and ``flowrt serve``: what a reference client sees.

The reference (``@hazeljs/flow-runtime``, in memory, with its own demo flows) is started
by ``../shared/peer/start.sh`` on a free loopback port; its npm dependencies are installed
once into a fixed folder (``FLOWRT_PEER_HOME``, default ``/tmp/flowrt-peer-test``) that
later runs reuse. flowrt is a real ``flowrt serve --no-drive --flows examples.demo:ALL``
(no drivers: only tick/resume move runs, as on the reference).

Checked: status codes, that every key the reference sends is there (flowrt may add keys),
run statuses and outputs, and the timeline's event types, node ids and payload keys. The
deliberate differences (docs/http-api.md, "Compatibility with @hazeljs/flow-runtime") are
asserted as such, so a change on either side shows up here. Skipped, with the reason,
when node/npm or the peer are missing; nothing else in the suite depends on this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from http_helpers import ServeProcess
from reference_peer import running_reference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # the first npm install can take a while

@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """(reference client, flowrt client)."""
    with running_reference() as reference_url:
        ours = ServeProcess(
            ["--no-drive", "--flows", "examples.demo:ALL", "--db", f"sqlite:///{tmp_path_factory.mktemp('compat')}/c.db"]
        )
        try:
            ours.wait_ready()
            with httpx.Client(base_url=reference_url, timeout=30) as ref:
                with httpx.Client(base_url=ours.url, timeout=30) as flowrt:
                    yield ref, flowrt
        finally:
            ours.close()


# --------------------------------------------------------------------------- helpers


def covers(ref: Any, ours: Any, where: str) -> None:
    """Every key of the reference's object is in flowrt's (flowrt may add keys)."""
    assert isinstance(ref, dict) and isinstance(ours, dict), (where, ref, ours)
    missing = set(ref) - set(ours)
    assert not missing, f"{where}: flowrt lacks {sorted(missing)} (reference {ref}, flowrt {ours})"


def call(client: httpx.Client, method: str, path: str, body: Any = None) -> httpx.Response:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    return client.request(method, path, **kwargs)


def same_status(ref: httpx.Client, ours: httpx.Client, method: str, path: str, body: Any = None) -> tuple[Any, Any]:
    a, b = call(ref, method, path, body), call(ours, method, path, body)
    assert a.status_code == b.status_code, (method, path, a.status_code, a.text[:300], b.status_code, b.text[:300])
    return a.json(), b.json()


def tick_until_settled(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    answers = []
    for _ in range(6):
        response = client.post(f"/v1/runs/{run_id}/tick")
        assert response.status_code == 200, response.text
        answers.append(response.json())
        if answers[-1]["status"] != "RUNNING":
            break
    return answers


def compare_run(ref: httpx.Client, ours: httpx.Client, ref_id: str, our_id: str, *, state: bool = True) -> None:
    a, b = ref.get(f"/v1/runs/{ref_id}"), ours.get(f"/v1/runs/{our_id}")
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    run_a, run_b = a.json(), b.json()
    covers(run_a, run_b, "GET /v1/runs/{id}")
    for key in ("flowId", "flowVersion", "tenantId", "status", "currentNodeId", "inputJson", "outputsJson"):
        assert run_a[key] == run_b[key], (key, run_a[key], run_b[key])
    if state:
        assert run_a["stateJson"] == run_b["stateJson"]


def compare_timeline(ref: httpx.Client, ours: httpx.Client, ref_id: str, our_id: str) -> list[str]:
    a, b = ref.get(f"/v1/runs/{ref_id}/timeline"), ours.get(f"/v1/runs/{our_id}/timeline")
    assert a.status_code == b.status_code == 200
    # flowrt's RUN_RESUMED is its own addition; the rest must be the reference's, in order
    ref_events, our_events = a.json(), [e for e in b.json() if e["type"] != "RUN_RESUMED"]
    assert [(e["type"], e["nodeId"]) for e in ref_events] == [(e["type"], e["nodeId"]) for e in our_events]
    for x, y in zip(ref_events, our_events):
        covers(x, y, f"event {x['type']}")
        covers(x["payloadJson"], y["payloadJson"], f"{x['type']} payloadJson")
        assert (x["attempt"] is None) == (y["attempt"] is None), (x, y)
        if "reason" in x["payloadJson"]:
            assert x["payloadJson"]["reason"] == y["payloadJson"]["reason"]
    return [e["type"] for e in ref_events]


def start_both(ref: httpx.Client, ours: httpx.Client, body: dict[str, Any]) -> tuple[str, str]:
    a, b = same_status(ref, ours, "POST", "/v1/runs/start", body)
    assert set(a) == set(b) == {"runId", "status"} and a["status"] == b["status"] == "RUNNING", (a, b)
    return a["runId"], b["runId"]


# --------------------------------------------------------------------------- the script


def test_probes(servers: tuple[httpx.Client, httpx.Client]) -> None:
    ref, ours = servers
    for path, status in (("/health", "alive"), ("/ready", "healthy"), ("/startup", "started")):
        a, b = same_status(ref, ours, "GET", path)
        covers(a, b, path)
        assert a["status"] == b["status"] == status, (path, a, b)
    a, b = same_status(ref, ours, "GET", "/ready")
    assert isinstance(a["uptime"], int) and isinstance(b["uptime"], int) and a["checks"] and b["checks"]


def test_flows(servers: tuple[httpx.Client, httpx.Client]) -> None:
    ref, ours = servers
    a, b = same_status(ref, ours, "GET", "/v1/flows")
    assert sorted((f["flowId"], f["version"]) for f in a) == sorted((f["flowId"], f["version"]) for f in b)
    by_id = {f["flowId"]: f for f in b}
    for flow in a:
        mine = by_id[flow["flowId"]]
        covers(flow, mine, "flow")
        covers(flow["definitionJson"], mine["definitionJson"], "definitionJson")
        assert flow["definitionJson"]["entry"] == mine["definitionJson"]["entry"]
        assert set(flow["definitionJson"]["nodes"]) == set(mine["definitionJson"]["nodes"])
        edges = {(e["from"], e["to"], e["priority"]) for e in flow["definitionJson"]["edges"]}
        assert edges == {(e["from"], e["to"], e["priority"]) for e in mine["definitionJson"]["edges"]}


@pytest.mark.parametrize(
    "input_",
    [None, {"amount": 50}, {"amount": 5000}, {"amount": "5000"}, {"amount": "abc"}],
    ids=["no-input", "50", "5000", "string-5000", "abc"],
)
def test_demo_fraud_same_path_outputs_and_timeline(servers: tuple[httpx.Client, httpx.Client], input_: Any) -> None:
    ref, ours = servers
    body: dict[str, Any] = {"flowId": "demo-fraud", "version": "1.0.0"}
    if input_ is not None:
        body["input"] = input_
    ref_id, our_id = start_both(ref, ours, body)
    ticks_a, ticks_b = tick_until_settled(ref, ref_id), tick_until_settled(ours, our_id)
    assert [t["status"] for t in ticks_a] == [t["status"] for t in ticks_b] == ["RUNNING", "COMPLETED"]
    for x, y in zip(ticks_a, ticks_b):
        covers(x, y, "tick")
        assert x["outputsJson"] == y["outputsJson"]
    compare_run(ref, ours, ref_id, our_id)
    types = compare_timeline(ref, ours, ref_id, our_id)
    assert types == ["RUN_STARTED", "NODE_STARTED", "NODE_FINISHED", "NODE_STARTED", "NODE_FINISHED", "RUN_COMPLETED"]
    # a tick of a finished run returns it unchanged, on both
    a, b = ref.post(f"/v1/runs/{ref_id}/tick"), ours.post(f"/v1/runs/{our_id}/tick")
    assert a.status_code == b.status_code == 200 and a.json()["status"] == b.json()["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "resume_body",
    [{"payload": {"ticketId": "T-7"}, "note": "x"}, {"payload": {"approved": True}}],
    ids=["payload-and-more", "approved"],
)
def test_demo_support_wait_poll_resume(servers: tuple[httpx.Client, httpx.Client], resume_body: Any) -> None:
    ref, ours = servers
    ref_id, our_id = start_both(ref, ours, {"flowId": "demo-support", "version": "1.0.0"})
    for _ in range(2):  # the first tick waits, the second polls the waiting node
        a, b = ref.post(f"/v1/runs/{ref_id}/tick"), ours.post(f"/v1/runs/{our_id}/tick")
        assert a.status_code == b.status_code == 200
        covers(a.json(), b.json(), "tick")
        assert a.json()["status"] == b.json()["status"] == "WAITING"
    a = ref.post(f"/v1/runs/{ref_id}/resume", json=resume_body)
    b = ours.post(f"/v1/runs/{our_id}/resume", json=resume_body)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    covers(a.json(), b.json(), "resume")
    assert a.json()["status"] == b.json()["status"] == "RUNNING"
    ticks_a, ticks_b = tick_until_settled(ref, ref_id), tick_until_settled(ours, our_id)
    assert [t["status"] for t in ticks_a] == [t["status"] for t in ticks_b] == ["COMPLETED"]
    assert ticks_a[-1]["outputsJson"] == ticks_b[-1]["outputsJson"]
    # The reference keeps the payload in the state (_resumePayload); flowrt passes it as ctx.resume_payload.
    compare_run(ref, ours, ref_id, our_id, state=False)
    state_a = ref.get(f"/v1/runs/{ref_id}").json()["stateJson"]
    state_b = ours.get(f"/v1/runs/{our_id}").json()["stateJson"]
    assert {k: v for k, v in state_a.items() if k != "_resumePayload"} == state_b
    types = compare_timeline(ref, ours, ref_id, our_id)
    waited = ["NODE_STARTED", "NODE_FINISHED", "RUN_WAITING"]
    done = ["NODE_STARTED", "NODE_FINISHED"]
    assert types == ["RUN_STARTED", *waited, *waited, *done, *done, "RUN_COMPLETED"]
    resumed = [e for e in ours.get(f"/v1/runs/{our_id}/timeline").json() if e["type"] == "RUN_RESUMED"]
    assert [e["payloadJson"]["payload"] for e in resumed] == [resume_body["payload"]]


def test_the_same_errors(servers: tuple[httpx.Client, httpx.Client]) -> None:
    ref, ours = servers
    for method, path, body, status in [
        ("GET", "/v1/runs/no-such-run", None, 404),
        ("POST", "/v1/runs/start", {"version": "1.0.0"}, 400),
    ]:
        a, b = call(ref, method, path, body), call(ours, method, path, body)
        assert a.status_code == b.status_code == status, (method, path, a.text, b.text)
        assert "error" in a.json() and "error" in b.json() and b.json()["code"], (a.json(), b.json())
    bad = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    assert ref.post("/v1/runs/start", **bad).status_code == ours.post("/v1/runs/start", **bad).status_code == 400


def _finished_run(client: httpx.Client) -> str:
    run_id = client.post("/v1/runs/start", json={"flowId": "demo-fraud", "version": "1.0.0"}).json()["runId"]
    tick_until_settled(client, run_id)
    return str(run_id)


def test_deliberate_differences(servers: tuple[httpx.Client, httpx.Client]) -> None:
    """Each is in the compatibility table of docs/http-api.md, with why."""
    ref, ours = servers
    ref_done, our_done = _finished_run(ref), _finished_run(ours)
    cases: list[tuple[str, str, str, Any, int, int, str]] = [
        # what, method, path ({done} = a finished run), body, reference status, flowrt status, flowrt code
        ("resume of a run that is not waiting", "POST", "/v1/runs/{done}/resume", {"payload": {}}, 200, 409,
         "RUN_NOT_WAITING"),
        ("timeline of an unknown run", "GET", "/v1/runs/no-such-run/timeline", None, 200, 404, "RUN_NOT_FOUND"),
        ("tick of an unknown run", "POST", "/v1/runs/no-such-run/tick", None, 500, 404, "RUN_NOT_FOUND"),
        ("resume of an unknown run", "POST", "/v1/runs/no-such-run/resume", {}, 500, 404, "RUN_NOT_FOUND"),
        ("start of an unknown flow", "POST", "/v1/runs/start", {"flowId": "nope", "version": "1.0.0"}, 500, 404,
         "FLOW_NOT_FOUND"),
        ("an ill-typed flowId", "POST", "/v1/runs/start", {"flowId": 7, "version": "1.0.0"}, 500, 400, "BAD_REQUEST"),
        ("a body over 1 MiB", "POST", "/v1/runs/start",
         {"flowId": "demo-fraud", "version": "1.0.0", "input": {"pad": "x" * (1 << 20)}}, 200, 413,
         "PAYLOAD_TOO_LARGE"),
    ]  # fmt: skip
    for what, method, path, body, ref_status, our_status, code in cases:
        a = call(ref, method, path.format(done=ref_done), body)
        b = call(ours, method, path.format(done=our_done), body)
        assert (a.status_code, b.status_code) == (ref_status, our_status), (what, a.text[:200], b.text[:200])
        assert b.json()["code"] == code and b.json()["error"], (what, b.json())
    # Additions: no version (the highest registered), list and cancel exist only on flowrt.
    assert ref.post("/v1/runs/start", json={"flowId": "demo-fraud"}).status_code == 400
    assert ours.post("/v1/runs/start", json={"flowId": "demo-fraud"}).status_code == 200
    assert (ref.get("/v1/runs").status_code, ours.get("/v1/runs").status_code) == (404, 200)
    running = ours.post("/v1/runs/start", json={"flowId": "demo-fraud"}).json()["runId"]
    assert ref.post(f"/v1/runs/{ref_done}/cancel").status_code == 404
    assert ours.post(f"/v1/runs/{running}/cancel").json()["status"] == "CANCELLED"
