"""The remote backend: a server's HTTP API (``--url`` / ``FLOWRT_URL``), through :class:`flowrt.Client`.

The project has one HTTP client: this backend is a thin adapter from the public
client's ``Run`` / ``Event`` objects to the JSON documents the commands print, and
from its errors to the CLI's (a call the server does not offer becomes one line,
:class:`~flowrt.cli.errors.NotOffered`; a bad token names ``--token``). Everything
about the reference runtime (partial run objects, events without ``seq``, a required
``version`` on start, no long-poll) is bridged by the client. Imports httpx and
nothing of the engine, so remote commands start fast.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator

from ..client import Client
from ..errors import FlowNotRegistered, HttpError, RunBusy, RunNotWaiting, ServerUnreachable, StorageUnavailable, Unsupported
from ..runs import Event, Run, now_ms
from .backends import Json, OnProgress, stuck_entry
from .errors import NotOffered, RemoteError, Stopped, UsageProblem

#: How long one ``?wait=`` long-poll asks the server to hold the request.
LONG_POLL_SECONDS = 60
#: How often to look again at a run another process is executing (and the slowest poll of --follow).
POLL_INTERVAL = 0.2
#: Seconds to connect, and for each answer (a long-poll's hold comes on top).
TIMEOUT = 30.0
#: How long ``--wait`` goes on waiting while the server cannot be reached (a restart, a deploy).
WAIT_THROUGH_OUTAGE = 30.0
#: ``--wait`` waits in slices of this many seconds, so a slice that worked ends an outage's count.
WAIT_SLICE = 60.0
#: How long the server prunes before answering; the CLI asks again while it says ``more``.
#: Well under TIMEOUT, so each slice's answer (one batch past it at most) comes within it.
PRUNE_SLICE_SECONDS = 10.0

#: What the commands call each endpoint in the "does not offer" message.
ENDPOINT_USE = {
    "GET /v1/runs": "listing runs",
    "POST /v1/runs/{runId}/cancel": "cancelling runs",
    "POST /v1/runs/{runId}/retry": "retrying runs",
    "POST /v1/runs/{runId}/rewind": "rewinding runs",
    "POST /v1/admin/prune": "pruning runs",
}


class RemoteBackend:
    """A flowrt (or reference) server, through its HTTP API."""

    def __init__(self, url: str, token: str | None, timeout: float = TIMEOUT) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageProblem(f"--url must start with http:// or https://, got {url!r}")
        # Read at connect time (not import time), so a test may shorten the long-poll.
        self.client = Client(url, token, timeout=timeout, poll_interval=POLL_INTERVAL, long_poll=LONG_POLL_SECONDS)
        self.where = self.client.url

    def close(self) -> None:
        self.client.close()

    @contextmanager
    def _asking(self, endpoint: str) -> Iterator[None]:
        """The client's errors as the CLI words them (the exit code follows the HTTP status)."""
        try:
            yield
        except Unsupported as exc:
            use = ENDPOINT_USE.get(endpoint, endpoint)
            raise NotOffered(f"the server at {self.where} does not offer {use} ({endpoint})") from exc
        except HttpError as exc:
            if exc.http_status != 401:
                raise
            said = exc.details.get("server_message") or "unauthorized"
            raise RemoteError(f"{said}: check --token / FLOWRT_API_TOKEN", exc.code, 401) from exc

    def _event(self, event: Event) -> Json:
        data = event.to_json()
        if self.client.events_numbered:
            # The reference's events have neither: show them as it sends them (positions
            # stand in for seq in the views; the client numbered them the same way).
            del data["seq"], data["runId"]
        return data

    # -- commands

    def start(
        self,
        flow_id: str,
        *,
        version: str | None,
        input: Any,  # noqa: A002
        tenant_id: str | None,
        wait: bool,
        idempotency_key: str | None = None,
    ) -> tuple[Json, bool]:
        with self._asking("POST /v1/runs/start"):
            run = self.client.start(
                flow_id, input, version=version, tenant_id=tenant_id, idempotency_key=idempotency_key
            )
        # Without --wait the answer is POST /v1/runs/start's, as locally: {runId, status}.
        # With it, the run id is known before the wait, so a Ctrl-C can say which run goes on.
        doc = self.settle(run.run_id) if wait else {"runId": run.run_id, "status": str(run.status)}
        return doc, run.replayed

    def settle(self, run_id: str) -> Json:
        """Until the run leaves RUNNING (long-polls where drivers move it, ticks elsewhere).

        Ctrl-C only stops watching: the run goes on on the server. So does a server that goes
        away meanwhile (a restart, a deploy): the run is started, and a script that read a
        failure as "not started" would start it again. So the wait goes on through
        :data:`WAIT_THROUGH_OUTAGE` of it (counted from its first failed call; each outage gets
        its own), and an error past that says the run goes on. A proxy's 502/503/504 during a
        deploy counts as an outage too."""
        away_since: float | None = None
        try:
            while True:
                try:
                    with self._asking("GET /v1/runs/{runId}"):
                        run = self.client.wait(run_id, timeout=WAIT_SLICE)  # in slices: one that worked ends an outage
                    if run.status != "RUNNING":
                        return run.to_json()
                    away_since = None
                    continue
                except (ServerUnreachable, StorageUnavailable, HttpError) as exc:
                    if isinstance(exc, HttpError) and exc.http_status not in (502, 503, 504):
                        raise
                    now = time.monotonic()
                    if away_since is None:
                        away_since = now
                        print(f"{exc.message}; still waiting for run {run_id}, which goes on there", file=sys.stderr)
                    if now - away_since >= WAIT_THROUGH_OUTAGE:
                        raise ServerUnreachable(
                            f"{exc.message}; run {run_id} was started and goes on there: watch it with "
                            f"'flowrt status {run_id} --url {self.where} --watch'"
                        ) from exc
                time.sleep(1.0)
        except KeyboardInterrupt:
            raise Stopped(run_id, None, abandoned=False) from None

    def tick(self, run_id: str) -> Json:
        with self._asking("POST /v1/runs/{runId}/tick"):
            return self.client.tick(run_id).to_json()

    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Json:
        with self._asking("POST /v1/runs/{runId}/resume"):
            run = self.client.resume(run_id, payload).to_json()
        return self.settle(run_id) if wait and run.get("status") == "RUNNING" else run

    def cancel(self, run_id: str, reason: str | None) -> Json:
        with self._asking("POST /v1/runs/{runId}/cancel"):
            return self.client.cancel(run_id, reason).to_json()

    def retry(self, run_id: str, *, wait: bool) -> Json:
        return self._repair(run_id, "retry", None, wait)

    def rewind(self, run_id: str, to_node: str, *, wait: bool) -> Json:
        return self._repair(run_id, "rewind", {"toNode": to_node}, wait)

    def _repair(self, run_id: str, action: str, body: Json | None, wait: bool) -> Json:
        with self._asking(f"POST /v1/runs/{{runId}}/{action}"):
            if action == "retry":
                run = self.client.retry(run_id).to_json()
            else:
                run = self.client.rewind(run_id, (body or {})["toNode"]).to_json()
        return self.settle(run_id) if wait and run.get("status") == "RUNNING" else run

    def prune(self, older_than: str, statuses: list[str] | None, *, dry_run: bool, vacuum: bool) -> Json:
        """One report for the whole prune, made of slices of PRUNE_SLICE_SECONDS each."""
        body = {"olderThan": older_than, "status": statuses, "dryRun": dry_run, "maxSeconds": PRUNE_SLICE_SECONDS}
        total: Json = {}
        with self._asking("POST /v1/admin/prune"):
            while True:
                # Not re-sent after a lost answer: that slice may still be deleting on the server.
                part: Json = self.client.request("POST", "/v1/admin/prune", body=body, idempotent=False)
                if not total:
                    total = dict(part)
                else:
                    for key in ("runs", "events", "idempotencyRecords", "startKeys", "seconds"):
                        total[key] = total.get(key, 0) + part.get(key, 0)
                    total.update(sizeAfter=part.get("sizeAfter"), spaceNote=part.get("spaceNote") or total.get("spaceNote"))
                if not part.get("more"):  # a server before maxSeconds answers once, for all of it
                    total["more"] = False
                    total["seconds"] = round(total.get("seconds", 0), 3)
                    return total

    def get(self, run_id: str) -> Json:
        with self._asking("GET /v1/runs/{runId}"):
            return self.client.get(run_id).to_json()

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Json]:
        with self._asking("GET /v1/runs/{runId}/timeline"):
            return [self._event(e) for e in self.client.timeline(run_id, after, limit)]

    def follow(self, run_id: str, after: int, interval: float) -> Iterator[Json]:
        """The run's events as they are recorded (the server's event stream, else polling), until it ends."""
        with self._asking("GET /v1/runs/{runId}/events"):
            for event in self.client.follow(run_id, after, interval=interval):
                yield self._event(event)

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
        with self._asking("GET /v1/runs"):
            page = self.client.runs_page(status=status, flow_id=flow_id, tenant_id=tenant_id, limit=limit,
                                         cursor=cursor, since=since, until=until)
        return page.to_json()

    def flows(self) -> list[Json]:
        with self._asking("GET /v1/flows"):
            return self.client.flows()

    # -- recovery through the public API

    def stuck_runs(self) -> list[Json]:
        now = now_ms()
        found = []
        with self._asking("GET /v1/runs"):
            active = [*self.client.runs(status="RUNNING", page_size=1000),
                      *self.client.runs(status="WAITING", page_size=1000)]
        for run in active:
            entry = stuck_entry(run.to_json(), now, lease_known=False)
            if entry is not None:
                found.append(entry)
        found.sort(key=lambda e: e["runId"])
        return found

    def recover(self, candidates: list[Json], *, concurrency: int, progress: OnProgress | None) -> dict[str, str]:
        """Continue each stuck run with tick (RUNNING) or a null resume (due timer), as a driver would;
        the runs left to someone else (the server's drivers were moving one already), and why."""
        todo = [c for c in candidates if c["action"] == "continue"]
        done = 0
        left: dict[str, str] = {}
        lock = threading.Lock()

        def one(entry: Json) -> None:
            nonlocal done
            try:
                if entry["status"] == "WAITING":
                    self.resume(entry["runId"], None, wait=False)
                else:
                    self._tick_until_blocked(entry["runId"])
            except (RunBusy, RunNotWaiting):  # someone else (the server's drivers) is moving it
                left[entry["runId"]] = "another executor is moving it (the server's drivers)"
            except FlowNotRegistered:  # another server may load this run's flow version
                left[entry["runId"]] = "the server does not load its flow version"
            with lock:
                done += 1
                if progress is not None:
                    progress(done, len(todo))

        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            for future in [pool.submit(one, entry) for entry in todo]:
                future.result()
        return left

    def _tick_until_blocked(self, run_id: str) -> None:
        last = None
        while True:
            with self._asking("POST /v1/runs/{runId}/tick"):
                run = self.client.tick(run_id)
            # Every executed step counts an attempt; a tick that counted none found the run
            # parked in a long backoff. (updatedAt is not enough: two fast steps can share a
            # millisecond, and a tick that did nothing may touch it.)
            seen = _progress_mark(run)
            if run.status != "RUNNING" or seen == last:
                return
            last = seen


def _progress_mark(run: Run) -> tuple[Any, ...]:
    """What changes when a step executed."""
    return (run.current_node_id, str(run.attempts), str(run.outputs))
