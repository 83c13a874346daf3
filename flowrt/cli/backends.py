"""Where a CLI command runs: in-process on the database, or against a server over HTTP.

Both backends answer with the HTTP API's JSON documents (a run object, a list of
events, ``{runs, nextCursor}``, ...) and raise the same :class:`~flowrt.FlowrtError`
subclasses, so the commands and their output never know which one they talk to.
This module is the only place where local and remote differ.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Callable, Protocol

import httpx

from .. import errors as flowrt_errors
from ..driver import recover
from ..engine import Engine
from ..errors import FlowNotRegistered, FlowrtError, RunBusy, RunNotWaiting
from ..loader import load_all
from ..runs import FINISHED, RunStatus, iso, now_ms
from .errors import RemoteError, Unreachable, UsageProblem

Json = dict[str, Any]
OnProgress = Callable[[int, int], None]

#: How long one ``?wait=`` long-poll asks the server to hold the request.
LONG_POLL_SECONDS = 60
#: How often to look again at a run another process is executing.
POLL_INTERVAL = 0.2

__all__ = ["FINISHED", "Backend", "LocalBackend", "RemoteBackend", "connect", "stuck_entry"]


class Backend(Protocol):
    """What every command needs; one method per HTTP endpoint, plus recovery."""

    def start(
        self, flow_id: str, *, version: str | None, input: Any, tenant_id: str | None, wait: bool
    ) -> Json: ...
    def tick(self, run_id: str) -> Json: ...
    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Json: ...
    def cancel(self, run_id: str, reason: str | None) -> Json: ...
    def get(self, run_id: str) -> Json: ...
    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Json]: ...
    def list_runs(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Json: ...
    def flows(self) -> list[Json]: ...
    def stuck_runs(self) -> list[Json]: ...
    def recover(self, candidates: list[Json], *, concurrency: int, progress: OnProgress | None) -> None: ...
    def close(self) -> None: ...


def connect(
    *, db: str | None, url: str | None, token: str | None, flows: list[str] | None, needs_flows: str | None = None
) -> Backend:
    """The backend the options ask for: ``--url`` wins; otherwise the local database.

    ``needs_flows`` says why the local command cannot do without ``--flows``.
    """
    if url:
        return RemoteBackend(url, token)
    if needs_flows and not flows:
        raise UsageProblem(
            f"{needs_flows} locally, pass --flows module:NAME (or set FLOWRT_FLOWS); or use a server with --url"
        )
    return LocalBackend(db, flows or [])


# --------------------------------------------------------------------------- why a run is stuck


def stuck_entry(
    run: Json, now: int, *, lease_known: bool, lease_owner: str | None = None, lease_expires_at: int | None = None
) -> Json | None:
    """Why recovery would (or would not) continue ``run``; None if it is not stuck at all.

    ``lease_known`` is False over HTTP, where the run object does not show leases.
    """
    wake = _ms(run.get("wakeAt"))
    node = run.get("currentNodeId")
    if run["status"] == "WAITING":
        if wake is None or wake > now:
            return None  # waiting for a person or a future timer: nothing to recover
        reason, detail, action = "TIMER_DUE", f"timer was due at {run['wakeAt']}", "continue"
    elif lease_known and lease_owner is not None and (lease_expires_at or 0) >= now:
        reason, detail, action = "LEASE_HELD", f"being executed by {lease_owner} (lease until {iso(lease_expires_at)})", "skip"
    elif lease_known and lease_owner is not None:
        reason = "LEASE_EXPIRED"
        detail = f"lease of {lease_owner} expired at {iso(lease_expires_at)}; its attempt at {node} counts as WORKER_LOST"
        action = "continue"
    elif wake is not None and wake > now:
        reason, detail, action = "RETRY_PENDING", f"retry backoff of {node} until {run['wakeAt']}", "skip"
    elif wake is not None:
        reason, detail, action = "RETRY_DUE", f"retry backoff of {node} ended at {run['wakeAt']}", "continue"
    elif lease_known:
        reason, detail, action = "NOT_DRIVEN", f"RUNNING at {node}, and nobody is driving it", "continue"
    else:
        reason, detail, action = "RUNNING", f"RUNNING at {node} (leases are not visible over HTTP)", "continue"
    return {
        "runId": run["runId"],
        "flowId": run["flowId"],
        "flowVersion": run["flowVersion"],
        "status": run["status"],
        "currentNodeId": node,
        "reason": reason,
        "detail": detail,
        "action": action,
    }


def _ms(value: str | None) -> int | None:
    if value is None:
        return None
    return int(datetime.fromisoformat(value).astimezone(UTC).timestamp() * 1000)


# --------------------------------------------------------------------------- local


class LocalBackend:
    """The engine in this process, on the database of ``--db`` / ``DATABASE_URL``."""

    def __init__(self, database_url: str | None, flow_paths: list[str]) -> None:
        self.engine = Engine(database_url, flows=load_all(flow_paths))

    def close(self) -> None:
        self.engine.close()

    def start(
        self, flow_id: str, *, version: str | None, input: Any, tenant_id: str | None, wait: bool  # noqa: A002
    ) -> Json:
        run = self.engine.start(flow_id, version, input, tenant_id=tenant_id)
        if not wait:
            return {"runId": run.run_id, "status": str(run.status)}
        return self._settle(run.run_id)

    def tick(self, run_id: str) -> Json:
        return self.engine.tick(run_id).to_json()

    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Json:
        run = self.engine.resume(run_id, payload)
        if wait and run.status == RunStatus.RUNNING:
            return self._settle(run_id)
        return run.to_json()

    def _settle(self, run_id: str) -> Json:
        """Drive the run here until it waits or ends; if another process holds it, watch it."""
        while True:
            try:
                run = self.engine.run_until_blocked(run_id)
            except RunBusy:
                pass  # a server (or another CLI) is driving it: look again shortly
            else:
                if run.status != RunStatus.RUNNING:
                    return run.to_json()
                # Still RUNNING: parked in a long backoff by another driver; wait for it.
            time.sleep(POLL_INTERVAL)

    def cancel(self, run_id: str, reason: str | None) -> Json:
        return self.engine.cancel(run_id, reason).to_json()

    def get(self, run_id: str) -> Json:
        run = self.engine.get(run_id)
        if run is None:
            raise flowrt_errors.RunNotFound(f"run {run_id} not found")
        return run.to_json()

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Json]:
        return [e.to_json() for e in self.engine.timeline(run_id, after, limit)]

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Json:
        extra = {} if limit is None else {"limit": limit}
        runs, next_cursor = self.engine.list_runs(
            status=status, flow_id=flow_id, tenant_id=tenant_id, cursor=cursor, **extra
        )
        return {"runs": [r.to_json() for r in runs], "nextCursor": next_cursor}

    def flows(self) -> list[Json]:
        return self.engine.list_flows()

    def stuck_runs(self) -> list[Json]:
        now = now_ms()
        loaded = {(f.flow_id, f.version) for f in self.engine.flows}
        found = []
        for run_id, status, lease_owner, wake_at in self.engine.storage.runnable_ids():
            if status == "WAITING" and (wake_at is None or wake_at > now):
                continue  # skip the lookups for the common case: a future timer
            row = self.engine.storage.get_run(run_id)
            run = self.engine.get(run_id)
            if row is None or run is None:
                continue  # deleted meanwhile
            entry = stuck_entry(
                run.to_json(), now, lease_known=True, lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at
            )
            if entry is None:
                continue
            if loaded and (entry["flowId"], entry["flowVersion"]) not in loaded and entry["action"] == "continue":
                # This process could not execute it; the engine leaves such runs alone.
                entry["action"] = "skip"
                entry["detail"] += f"; flow {entry['flowId']}@{entry['flowVersion']} is not in --flows"
            found.append(entry)
        return found

    def recover(self, candidates: list[Json], *, concurrency: int, progress: OnProgress | None) -> None:
        recover(self.engine, concurrency=concurrency, progress=progress)


# --------------------------------------------------------------------------- remote


def _error_classes() -> dict[str, type[FlowrtError]]:
    return {
        cls.code: cls
        for cls in vars(flowrt_errors).values()
        if isinstance(cls, type) and issubclass(cls, FlowrtError) and cls is not FlowrtError
    }


class RemoteBackend:
    """A flowrt server, through its HTTP API (``--url`` / ``FLOWRT_URL``)."""

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

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
              timeout: float | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.client.request(
                method, path, params=params, json=body, timeout=timeout or self.timeout
            )
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self.where}: {exc or type(exc).__name__}") from exc
        if response.is_success:
            return response.json()
        raise self._error(response)

    def _error(self, response: httpx.Response) -> FlowrtError:
        """The server's ``{error, code}`` as the exception the engine would have raised."""
        try:
            body = response.json()
            message, code = str(body["error"]), str(body["code"])
        except (ValueError, KeyError, TypeError):
            message, code = f"{response.status_code} {response.reason_phrase} from {self.where}", "HTTP_ERROR"
        if response.status_code == 401:
            return RemoteError(f"{message}: check --token / FLOWRT_API_TOKEN", code, 401)
        cls = self._classes.get(code)
        if cls is not None and cls.http_status == response.status_code:
            return cls(message)
        return RemoteError(message, code, response.status_code)

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
        if not wait:
            return self._call("POST", "/v1/runs/start", body=body)  # type: ignore[no-any-return]
        first = self._call(
            "POST", "/v1/runs/start", params={"wait": LONG_POLL_SECONDS}, body=body, timeout=self._poll_timeout
        )
        return self._settle(first)

    def tick(self, run_id: str) -> Json:
        return self._call("POST", f"/v1/runs/{_quote(run_id)}/tick")  # type: ignore[no-any-return]

    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Json:
        # Always wrapped: the server unwraps {"payload": ...}, so every payload
        # (even null, or an object whose only key is "payload") arrives unchanged.
        body = {"payload": payload}
        path = f"/v1/runs/{_quote(run_id)}/resume"
        if not wait:
            return self._call("POST", path, body=body)  # type: ignore[no-any-return]
        first = self._call("POST", path, params={"wait": LONG_POLL_SECONDS}, body=body, timeout=self._poll_timeout)
        return self._settle(first)

    @property
    def _poll_timeout(self) -> float:
        return LONG_POLL_SECONDS + self.timeout

    def _settle(self, run: Json) -> Json:
        """After a long-poll that outlasted its ``?wait=``: keep the run moving until it leaves RUNNING.

        A tick moves it on a ``--no-drive`` server; with drivers the tick either helps
        or gets RUN_BUSY, and then we just look again.
        """
        run_id = run["runId"]
        while run.get("status") == "RUNNING":
            before = run.get("updatedAt")
            try:
                run = self.tick(run_id)
            except RunBusy:
                run = self.get(run_id)
            if run["status"] == "RUNNING" and run.get("updatedAt") == before:
                time.sleep(POLL_INTERVAL * 5)  # parked in a backoff, or held by a long node
        return run

    def cancel(self, run_id: str, reason: str | None) -> Json:
        body = {} if reason is None else {"reason": reason}
        return self._call("POST", f"/v1/runs/{_quote(run_id)}/cancel", body=body)  # type: ignore[no-any-return]

    def get(self, run_id: str) -> Json:
        return self._call("GET", f"/v1/runs/{_quote(run_id)}")  # type: ignore[no-any-return]

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Json]:
        params = {"after": after or None, "limit": limit}
        return self._call("GET", f"/v1/runs/{_quote(run_id)}/timeline", params=params)  # type: ignore[no-any-return]

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Json:
        params = {"status": status, "flowId": flow_id, "tenantId": tenant_id, "limit": limit, "cursor": cursor}
        return self._call("GET", "/v1/runs", params=params)  # type: ignore[no-any-return]

    def flows(self) -> list[Json]:
        return self._call("GET", "/v1/flows")  # type: ignore[no-any-return]

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
            run = self.tick(run_id)
            # Every executed step counts an attempt; a tick that counted none found the run
            # parked in a long backoff. (updatedAt alone is not enough: two fast steps can
            # share a millisecond.)
            seen = (run["currentNodeId"], run["attempts"])
            if run["status"] != "RUNNING" or seen == last:
                return
            last = seen


def _quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")
