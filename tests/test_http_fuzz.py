"""Malformed requests at every endpoint never produce a 5xx, and every error is ``{"error", "code"}``.

Hypothesis throws odd methods, percent-encoded path segments (NUL, unicode, huge),
query strings and bodies (bytes, arbitrary JSON, near-valid objects) at a real
server. Postgres is included because it refuses things SQLite swallows (NUL in
text, over-long VARCHARs): those must be caught at the door, not become 500s.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from http_helpers import ThreadServer, thread_server

# Hypothesis keeps caches in ./.hypothesis; in the repository root that directory
# trips pytest's collection (norecursedirs is set without its defaults), so keep it out.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "flowrt-hypothesis")

pytestmark = pytest.mark.timeout(120)

ENDPOINTS = [
    ("POST", "/v1/runs/start"),
    ("POST", "/v1/runs/{id}/tick"),
    ("POST", "/v1/runs/{id}/resume"),
    ("POST", "/v1/runs/{id}/cancel"),
    ("GET", "/v1/runs/{id}"),
    ("GET", "/v1/runs/{id}/timeline"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/flows"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/startup"),
]
QUERY_KEYS = ["wait", "after", "limit", "status", "flowId", "tenantId", "cursor"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "a\x00b", "\ud7ff", "é" * 300, "x" * 250, "-1", "1e999", "nan", "null", "..", "%"]),
)
start_bodies = st.fixed_dictionaries(
    {},
    optional={
        "flowId": st.sampled_from(["demo-fraud", "demo-support"]) | odd_text | json_values,
        "version": st.sampled_from(["1.0.0", "9"]) | odd_text | json_values,
        "input": st.fixed_dictionaries({"amount": json_values}) | json_values,
        "tenantId": odd_text | json_values,
        "initialState": json_values,
        "payload": json_values,
        "reason": odd_text | json_values,
    },
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    start_bodies.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"{", b"[" * 3000 + b"]" * 3000, b'{"flowId": "demo-fraud"', b"\xff\xfe", b'"\\ud800"']),
)


@st.composite
def requests(draw: st.DrawFn, run_ids: list[str]) -> tuple[str, str, bytes | None, dict[str, str]]:
    method, template = draw(st.sampled_from(ENDPOINTS))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "GET", "POST"]))
    run_id = draw(st.sampled_from(run_ids) | odd_text)
    path = template.replace("{id}", urllib.parse.quote(run_id, safe=""))
    if draw(st.integers(0, 9)) == 0:
        path += "/" + urllib.parse.quote(draw(odd_text), safe="")
    query = draw(st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=8), odd_text), max_size=4))
    # A long-poll that really waited would only slow the test down; keep waits short.
    query = [(k, v if k != "wait" or not v.replace(".", "").isdigit() else "0.05") for k, v in query]
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers = draw(st.sampled_from([{}, {"Content-Type": "application/json"}, {"Content-Type": "text/plain"},
                                    {"Content-Type": "multipart/form-data; boundary=x"}]))
    return method, path, draw(bodies), headers


class RawClient:
    """http.client, so paths and bodies reach the server as sent (no client-side fixing)."""

    def __init__(self, server: ThreadServer) -> None:
        self.port = int(server.url.rsplit(":", 1)[1])
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # the server may close after a 4xx; a fresh connection per retry
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()


@pytest.fixture(params=["sqlite", "postgres"])
def fuzz_server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[ThreadServer, list[str]]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'f.db'}"
    with thread_server(url, drive=False) as srv:
        c = srv.client
        ids = [c.post("/v1/runs/start", json={"flowId": "demo-support"}).json()["runId"] for _ in range(3)]
        c.post(f"/v1/runs/{ids[0]}/tick")  # one WAITING, two RUNNING
        fraud = c.post("/v1/runs/start?wait=5", json={"flowId": "demo-fraud", "input": {"amount": 3}}).json()
        yield srv, [*ids, fraud["runId"]]


def test_no_request_yields_a_server_error(fuzz_server: tuple[ThreadServer, list[str]]) -> None:
    server, run_ids = fuzz_server
    client = RawClient(server)

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(requests(run_ids))
    def check(req: tuple[str, str, bytes | None, dict[str, str]]) -> None:
        method, path, body, headers = req
        status, content = client.send(method, path, body, headers)
        assert status < 500, (method, path, body, status, content[:500])
        if method == "HEAD" or (method == "OPTIONS" and status < 400):
            return  # no body by definition (Litestar answers OPTIONS with 204 and Allow)
        data = json.loads(content)
        if status >= 400:
            assert set(data) == {"error", "code"} and isinstance(data["code"], str), (method, path, data)

    try:
        check()
    finally:
        client.conn.close()
    assert server.client.get("/health").json()["condition"] == "ok"  # and it is still healthy
