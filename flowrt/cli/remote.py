"""The remote backend: a server's HTTP API (``--url`` / ``FLOWRT_URL``).

Imports httpx and nothing of the engine, so remote commands start fast. It talks to
`flowrt serve` and to the reference runtime (@hazeljs/flow-runtime) alike: the
reference's partial run objects, events without ``seq``, required ``version`` on start
and missing endpoints (it has no run list and no cancel) are handled here, so the
commands above see one API. A route the server does not have becomes one line
(:class:`~flowrt.cli.errors.NotOffered`), not a 404 dump.

The public Python client (flowrt/client.py, issue 15) will take over the HTTP calls;
this class is the only place that needs to change then.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx

from .. import errors as flowrt_errors
from ..errors import FlowNotFound, FlowNotRegistered, FlowrtError, RunBusy, RunNotWaiting
from ..runs import now_ms
from .backends import Json, OnProgress, stuck_entry, version_key
from .errors import NotOffered, RemoteError, Unreachable, UsageProblem

#: How long one ``?wait=`` long-poll asks the server to hold the request.
LONG_POLL_SECONDS = 60
#: How often to look again at a run another process is executing.
POLL_INTERVAL = 0.2

#: What the commands call each endpoint in the "does not offer" message.
ENDPOINT_USE = {
    "GET /v1/runs": "listing runs",
    "POST /v1/runs/{runId}/cancel": "cancelling runs",
    "POST /v1/runs/{runId}/retry": "retrying runs",
    "POST /v1/runs/{runId}/rewind": "rewinding runs",
    "POST /v1/admin/prune": "pruning runs",
}
_CODES_BY_STATUS = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE"}


def _error_classes() -> dict[str, type[FlowrtError]]:
    return {
        cls.code: cls
        for cls in vars(flowrt_errors).values()
        if isinstance(cls, type) and issubclass(cls, FlowrtError) and cls is not FlowrtError
    }


class RemoteBackend:
    """A flowrt (or reference) server, through its HTTP API."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageProblem(f"--url must start with http:// or https://, got {url!r}")
        self.where = url.rstrip("/")
        if self.where.endswith("/v1"):  # the server's base URL is meant; the API paths add /v1
            self.where = self.where[: -len("/v1")]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.client = httpx.Client(base_url=self.where, headers=headers, timeout=timeout)
        self._classes = _error_classes()

    def close(self) -> None:
        self.client.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.client.request(method, path, params=params, json=body, timeout=timeout or self.timeout)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self.where}: {exc or type(exc).__name__}") from exc
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise RemoteError(
                    f"{endpoint} on {self.where} answered {response.status_code} with a body that is not JSON",
                    "BAD_RESPONSE", 502,
                ) from None
        raise self._error(response, endpoint)

    def _error(self, response: httpx.Response, endpoint: str) -> FlowrtError:
        """The server's ``{error, code}`` as the exception the engine would have raised."""
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status in (404, 405) and not (isinstance(body, dict) and "error" in body):
            # No application answer: the route itself is missing (the reference has no
            # run list and no cancel; its 404 is {"statusCode":404,"message":"Route not found"}).
            use = ENDPOINT_USE.get(endpoint, endpoint)
            return NotOffered(f"the server at {self.where} does not offer {use} ({endpoint} answers {status})")
        if isinstance(body, dict) and "error" in body:
            message = str(body["error"])
            code = str(body.get("code") or _CODES_BY_STATUS.get(status, f"HTTP_{status}"))
        else:
            message, code = f"{status} {response.reason_phrase} from {self.where}", "HTTP_ERROR"
        if status == 401:
            return RemoteError(f"{message}: check --token / FLOWRT_API_TOKEN", code, 401)
        cls = self._classes.get(code)
        if cls is not None and cls.http_status == status:
            return cls(message)
        return RemoteError(message, code, status)

    # -- commands

    def start(
        self, flow_id: str, *, version: str | None, input: Any, tenant_id: str | None, wait: bool  # noqa: A002
    ) -> Json:
        body: Json = {"flowId": flow_id}
        if version is not None:
            body["version"] = version
        if input is not None:
            body["input"] = input
        if tenant_id is not None:
            body["tenantId"] = tenant_id
        try:
            first = self._start(body, wait)
        except FlowrtError as exc:
            # The reference requires a version ("flowId and version are required");
            # flowrt picks the highest. Pick it here the same way, and ask again.
            if version is not None or exc.http_status != 400 or "version" not in exc.message:
                raise
            body["version"] = self._highest_version(flow_id)
            first = self._start(body, wait)
        return self._settle(first) if wait else first

    def _start(self, body: Json, wait: bool) -> Json:
        if not wait:
            return self._call("POST", "/v1/runs/start", endpoint="POST /v1/runs/start", body=body)  # type: ignore[no-any-return]
        return self._call(  # type: ignore[no-any-return]
            "POST", "/v1/runs/start", endpoint="POST /v1/runs/start", params={"wait": LONG_POLL_SECONDS},
            body=body, timeout=self._poll_timeout,
        )

    def _highest_version(self, flow_id: str) -> str:
        versions = [f["version"] for f in self.flows() if f.get("flowId") == flow_id]
        if not versions:
            names = ", ".join(sorted({str(f.get("flowId")) for f in self.flows()})) or "none"
            raise FlowNotFound(f"flow {flow_id} is not registered on {self.where} (registered: {names})")
        return str(max(versions, key=version_key))

    def tick(self, run_id: str) -> Json:
        return self._whole(self._tick(run_id))

    def _tick(self, run_id: str) -> Json:
        return self._call("POST", f"/v1/runs/{_quote(run_id)}/tick", endpoint="POST /v1/runs/{runId}/tick")  # type: ignore[no-any-return]

    def _whole(self, run: Json) -> Json:
        """The full run object: the reference's tick and resume answer only some of its fields."""
        return run if "createdAt" in run else self.get(run["runId"])

    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Json:
        # Always wrapped: the server unwraps {"payload": ...}, so every payload
        # (even null, or an object whose only key is "payload") arrives unchanged.
        body = {"payload": payload}
        path, endpoint = f"/v1/runs/{_quote(run_id)}/resume", "POST /v1/runs/{runId}/resume"
        if not wait:
            return self._whole(self._call("POST", path, endpoint=endpoint, body=body))
        first = self._call(
            "POST", path, endpoint=endpoint, params={"wait": LONG_POLL_SECONDS}, body=body, timeout=self._poll_timeout
        )
        return self._settle(first)

    @property
    def _poll_timeout(self) -> float:
        return LONG_POLL_SECONDS + self.timeout

    def _settle(self, run: Json) -> Json:
        """Keep the run moving until it leaves RUNNING, then answer the full run object.

        A tick moves it on a ``--no-drive`` server (and on the reference, which ignores
        ``?wait=``); with drivers the tick either helps or gets RUN_BUSY, and then we
        just look again.
        """
        run_id = run["runId"]
        while run.get("status") == "RUNNING":
            before = _progress_mark(run)
            try:
                run = self._tick(run_id)
            except RunBusy:
                run = self.get(run_id)
            if run["status"] == "RUNNING" and _progress_mark(run) == before:
                time.sleep(POLL_INTERVAL * 5)  # parked in a backoff, or held by a long node
        return self._whole(run)

    def cancel(self, run_id: str, reason: str | None) -> Json:
        body = {} if reason is None else {"reason": reason}
        return self._call(  # type: ignore[no-any-return]
            "POST", f"/v1/runs/{_quote(run_id)}/cancel", endpoint="POST /v1/runs/{runId}/cancel", body=body
        )

    def retry(self, run_id: str, *, wait: bool) -> Json:
        return self._repair(run_id, "retry", None, wait)

    def rewind(self, run_id: str, to_node: str, *, wait: bool) -> Json:
        return self._repair(run_id, "rewind", {"toNode": to_node}, wait)

    def _repair(self, run_id: str, action: str, body: Json | None, wait: bool) -> Json:
        path, endpoint = f"/v1/runs/{_quote(run_id)}/{action}", f"POST /v1/runs/{{runId}}/{action}"
        if not wait:
            return self._call("POST", path, endpoint=endpoint, body=body)  # type: ignore[no-any-return]
        first = self._call(
            "POST", path, endpoint=endpoint, params={"wait": LONG_POLL_SECONDS}, body=body, timeout=self._poll_timeout
        )
        return self._settle(first)

    def prune(self, older_than: str, statuses: list[str] | None, *, dry_run: bool, vacuum: bool) -> Json:
        body = {"olderThan": older_than, "status": statuses, "dryRun": dry_run}
        return self._call(  # type: ignore[no-any-return]
            "POST", "/v1/admin/prune", endpoint="POST /v1/admin/prune", body=body, timeout=max(self.timeout, 600)
        )

    def get(self, run_id: str) -> Json:
        return self._call("GET", f"/v1/runs/{_quote(run_id)}", endpoint="GET /v1/runs/{runId}")  # type: ignore[no-any-return]

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Json]:
        params = {"after": after or None, "limit": limit}
        events: list[Json] = self._call(
            "GET", f"/v1/runs/{_quote(run_id)}/timeline", endpoint="GET /v1/runs/{runId}/timeline", params=params
        )
        if events and not all("seq" in e for e in events):
            # The reference has no seq and ignores after/limit: the position is the
            # sequence number, so apply them here.
            events = events[after:]
            if limit is not None:
                events = events[:limit]
        return events

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Json:
        params = {
            "status": status, "flowId": flow_id, "tenantId": tenant_id, "limit": limit, "cursor": cursor,
            "since": _iso(since), "until": _iso(until),
        }
        return self._call("GET", "/v1/runs", endpoint="GET /v1/runs", params=params)  # type: ignore[no-any-return]

    def flows(self) -> list[Json]:
        return self._call("GET", "/v1/flows", endpoint="GET /v1/flows")  # type: ignore[no-any-return]

    # -- recovery through the public API

    def _all(self, status: str) -> list[Json]:
        runs: list[Json] = []
        cursor = None
        while True:
            page = self.list_runs(status=status, limit=1000, cursor=cursor)
            runs.extend(page["runs"])
            cursor = page["nextCursor"]
            if not cursor:
                return runs

    def stuck_runs(self) -> list[Json]:
        now = now_ms()
        found = []
        for run in self._all("RUNNING") + self._all("WAITING"):
            entry = stuck_entry(run, now, lease_known=False)
            if entry is not None:
                found.append(entry)
        found.sort(key=lambda e: e["runId"])
        return found

    def recover(self, candidates: list[Json], *, concurrency: int, progress: OnProgress | None) -> None:
        """Continue each stuck run with tick (RUNNING) or a null resume (due timer), as a driver would."""
        todo = [c for c in candidates if c["action"] == "continue"]
        done = 0
        lock = threading.Lock()

        def one(entry: Json) -> None:
            nonlocal done
            try:
                if entry["status"] == "WAITING":
                    self.resume(entry["runId"], None, wait=False)
                else:
                    self._tick_until_blocked(entry["runId"])
            except (RunBusy, RunNotWaiting):
                pass  # someone else (the server's drivers) is moving it
            except FlowNotRegistered:
                pass  # the server does not load this run's flow version; another one may
            with lock:
                done += 1
                if progress is not None:
                    progress(done, len(todo))

        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            for future in [pool.submit(one, entry) for entry in todo]:
                future.result()

    def _tick_until_blocked(self, run_id: str) -> None:
        last = None
        while True:
            run = self._tick(run_id)
            # Every executed step counts an attempt; a tick that counted none found the run
            # parked in a long backoff. (updatedAt alone is not enough: two fast steps can
            # share a millisecond.)
            seen = _progress_mark(run)[1:]  # without updatedAt: a tick that did nothing may touch it
            if run["status"] != "RUNNING" or seen == last:
                return
            last = seen


def _progress_mark(run: Json) -> tuple[Any, ...]:
    """What changes when a step executed; the reference's tick answer has only some of it."""
    return (run.get("updatedAt"), run.get("currentNodeId"), str(run.get("attempts")), str(run.get("outputsJson")))


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")
