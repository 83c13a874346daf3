"""Every client call, written once: generators of :mod:`.wire` steps that both transports run.

Each operation builds its requests, reads the answers into :class:`~flowrt.Run` and
:class:`~flowrt.Event`, and bridges what the server lacks: the reference runtime answers
tick and resume with a partial run (so the full one is fetched), sends events without
``seq`` (numbered here), needs a version on start (the highest is looked up), and has
no long-poll (so waiting ticks the run, as a caller of that API must).
"""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import FlowNotFound, RunBusy, ServerUnreachable, Unsupported
from ..runs import Event, Run, RunStatus
from .wire import LONG_POLL_SECONDS, Answer, Call, Emit, Listen, NextMessage, Op, ServerInfo, Sleep, get, post, version_key

#: Timeline events that end a run (``follow`` stops after one).
ENDING_EVENTS = frozenset({"RUN_COMPLETED", "RUN_ABORTED", "RUN_CANCELLED"})
# Fields every full run object has; tick/resume on the reference answer without them.
_FULL_RUN = ("currentNodeId", "stateJson", "createdAt", "updatedAt")


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of :meth:`Client.runs_page`: runs newest first, and the next page's cursor."""

    runs: list[Run]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"runs": [r.to_json() for r in self.runs], "nextCursor": self.next_cursor}


def _run_path(run_id: str, action: str = "") -> str:
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id must be a non-empty string, got {run_id!r}")
    path = f"/v1/runs/{urllib.parse.quote(run_id, safe='')}"
    return f"{path}/{action}" if action else path


class Operations:
    """The operations of one client; remembers what the server is (``/health``) once asked."""

    def __init__(self, where: str, poll_interval: float, long_poll: float = LONG_POLL_SECONDS) -> None:
        self.where = where
        self.poll_interval = poll_interval
        self.long_poll = long_poll
        self.info: ServerInfo | None = None
        #: True once the server sent timeline events without ``seq`` (the reference): their
        #: ``seq`` is then their position, numbered here.
        self.events_numbered = False

    # ------------------------------------------------------------------ the server

    def server(self) -> Op[ServerInfo]:
        if self.info is None:
            answer: Answer = yield Call("GET", "/health", idempotent=True, any_status=True)
            self.info = ServerInfo.from_health(answer)
        return self.info

    def health(self) -> Op[Any]:
        """``/health`` as the server sends it (flowrt answers 503 with a body when its database is away)."""
        answer: Answer = yield Call("GET", "/health", idempotent=True, any_status=True)
        self.info = ServerInfo.from_health(answer)
        return answer.body

    def raw(self, call: Call) -> Op[Any]:
        answer: Answer = yield call
        return answer.body

    # ------------------------------------------------------------------ runs

    def get(self, run_id: str) -> Op[Run]:
        answer: Answer = yield get(_run_path(run_id))
        return Run.from_json(answer.body)

    def _full(self, run_id: str, body: Any) -> Op[Run]:
        """A run from an answer, fetching the whole object when the server sent part of it."""
        if isinstance(body, dict) and all(key in body for key in _FULL_RUN):
            return Run.from_json(body)
        return (yield from self.get(run_id))

    def start(
        self,
        flow_id: str,
        input: Any,  # noqa: A002 - the engine's name
        *,
        version: str | None,
        tenant_id: str | None,
        initial_state: dict[str, Any] | None,
        idempotency_key: str | None,
        wait: bool,
    ) -> Op[Run]:
        info = yield from self.server()
        if version is None and not info.flowrt:
            version = yield from self._highest_version(flow_id)
        body: dict[str, Any] = {"flowId": flow_id, "input": {} if input is None else input}
        if version is not None:
            body["version"] = version
        if tenant_id is not None:
            body["tenantId"] = tenant_id
        if initial_state is not None:
            body["initialState"] = initial_state
        headers = None if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        # ?wait=0 makes a flowrt server answer with the whole run, saving a GET.
        hold = self.long_poll if wait else 0.0
        answer: Answer = yield post(
            "/v1/runs/start", body, {"wait": hold if info.flowrt else None},
            headers=headers, idempotent=idempotency_key is not None, hold=hold if info.flowrt else 0.0,
        )
        run = yield from self._full(answer.body["runId"], answer.body)
        if wait and run.status == RunStatus.RUNNING:
            run = yield from self.wait(run.run_id, None)
        return dataclasses.replace(run, replayed=True) if answer.replayed else run

    def _highest_version(self, flow_id: str) -> Op[str]:
        flows = yield from self.flows()
        versions = [f.get("version") for f in flows if isinstance(f, dict) and f.get("flowId") == flow_id]
        named = [v for v in versions if isinstance(v, str)]
        if not named:
            known = ", ".join(sorted({str(f.get("flowId")) for f in flows if isinstance(f, dict)})) or "none"
            raise FlowNotFound(f"flow {flow_id} is not registered on {self.where} (registered: {known})")
        return max(named, key=version_key)

    def tick(self, run_id: str) -> Op[Run]:
        answer: Answer = yield post(_run_path(run_id, "tick"), has_body=False)
        return (yield from self._full(run_id, answer.body))

    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Op[Run]:
        info = yield from self.server()
        hold = self.long_poll if wait and info.flowrt else 0.0
        # Always wrapped: flowrt unwraps {"payload": ...} and the reference reads only
        # that key, so every payload (null, or an object whose one key is "payload") arrives whole.
        answer: Answer = yield post(
            _run_path(run_id, "resume"), {"payload": payload}, {"wait": hold or None}, hold=hold
        )
        run = yield from self._full(run_id, answer.body)
        if wait and run.status == RunStatus.RUNNING:
            run = yield from self.wait(run_id, None)
        return run

    def cancel(self, run_id: str, reason: str | None) -> Op[Run]:
        answer: Answer = yield post(_run_path(run_id, "cancel"), {} if reason is None else {"reason": reason})
        return Run.from_json(answer.body)

    def repair(self, run_id: str, action: str, body: dict[str, Any], wait: bool) -> Op[Run]:
        """``retry`` or ``rewind`` (flowrt servers only); with ``wait``, the run once it left RUNNING."""
        answer: Answer = yield post(_run_path(run_id, action), body)
        run = Run.from_json(answer.body)
        if wait and run.status == RunStatus.RUNNING:
            run = yield from self.wait(run_id, None)
        return run

    def timeline(self, run_id: str, after: int, limit: int | None) -> Op[list[Event]]:
        answer: Answer = yield get(_run_path(run_id, "timeline"), {"after": after or None, "limit": limit})
        raw = answer.body
        if raw and isinstance(raw[0], dict) and "seq" not in raw[0]:
            # The reference: no seq, no after/limit. Number the events by position.
            self.events_numbered = True
            events = [Event.from_json(e, run_id=run_id, seq=i) for i, e in enumerate(raw, 1)][after:]
            return events if limit is None else events[:limit]
        return [Event.from_json(e, run_id=run_id) for e in raw]

    def runs_page(self, status: str | None, flow_id: str | None, tenant_id: str | None,
                  limit: int | None, cursor: str | None, since: datetime | None = None,
                  until: datetime | None = None) -> Op[RunPage]:
        params = {"status": None if status is None else str(status), "flowId": flow_id, "tenantId": tenant_id,
                  "limit": limit, "cursor": cursor, "since": _iso(since), "until": _iso(until)}
        answer: Answer = yield get("/v1/runs", params)
        body = answer.body
        if not isinstance(body, dict) or "runs" not in body:
            raise Unsupported(f"{self.where} does not offer GET /v1/runs (its answer is not a page of runs)")
        return RunPage([Run.from_json(r) for r in body["runs"]], body.get("nextCursor"))

    def runs(self, status: str | None, flow_id: str | None, tenant_id: str | None, page_size: int,
             since: datetime | None = None, until: datetime | None = None) -> Op[None]:
        cursor = None
        while True:
            page = yield from self.runs_page(status, flow_id, tenant_id, page_size, cursor, since, until)
            for run in page.runs:
                yield Emit(run)
            cursor = page.next_cursor
            if not cursor:
                return

    def flows(self) -> Op[list[dict[str, Any]]]:
        answer: Answer = yield get("/v1/flows")
        return answer.body  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ waiting

    def wait(self, run_id: str, timeout: float | None) -> Op[Run]:
        """The run once it has left RUNNING (it waits or ended), or as it is at ``timeout``.

        On a flowrt server whose drivers move runs, by long-polls (``GET ?wait=``);
        elsewhere (the reference, ``--no-drive``) nothing moves the run unless someone
        ticks it, so this ticks it, a step at a time, sleeping through retry backoffs.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        info = yield from self.server()
        run = yield from self.get(run_id)
        while run.status == RunStatus.RUNNING:
            left = _left(deadline)
            if left is not None and left <= 0:
                break
            if info.driving:
                hold = self.long_poll if left is None else min(left, self.long_poll)
                asked = time.monotonic()
                answer: Answer = yield get(_run_path(run_id), {"wait": round(hold, 3)}, hold=hold)
                run = Run.from_json(answer.body)
                if run.status == RunStatus.RUNNING and (hold <= 0 or time.monotonic() - asked < min(hold, 1.0) / 2):
                    yield Sleep(_nap(self.poll_interval, deadline))  # a server that does not hold GETs
                continue
            if run.wake_at is not None:
                delay = run.wake_at.timestamp() - time.time()
                if delay > 0:  # parked in a retry backoff: a tick now would change nothing
                    yield Sleep(_nap(delay, deadline))
                    if deadline is not None and time.monotonic() >= deadline:
                        break
            try:
                run = yield from self.tick(run_id)
            except RunBusy:  # another caller's tick holds it: look again shortly
                yield Sleep(_nap(min(0.05, self.poll_interval), deadline))
                run = yield from self.get(run_id)
        return run

    def follow(self, run_id: str, after: int, interval: float | None = None) -> Op[None]:
        """Emit the run's events as they are recorded, until it has ended.

        A flowrt server pushes them on its event stream (``GET /v1/runs/{runId}/events``);
        where there is none (the reference) or it drops, the timeline is polled from the
        last event emitted: quickly after news, then every ``interval`` (default:
        ``poll_interval``). When a poll brings nothing the run itself is looked at, so a
        run that ended without an ending event (possible on the reference) still stops the loop.
        """
        last = after
        try:
            message = yield Listen(get(_run_path(run_id, "events"), {"after": after}))
            while message is not None:
                if message.event == "end":
                    return
                event = Event.from_json(message.json(), run_id=run_id)
                yield Emit(event)
                last = event.seq
                message = yield NextMessage()
        except (Unsupported, ServerUnreachable):
            pass  # no stream here (the reference answers 404), or it dropped: poll from the last event
        slowest = self.poll_interval if interval is None else interval
        nap = min(0.05, slowest)
        while True:
            events = yield from self.timeline(run_id, last, None)
            for event in events:
                yield Emit(event)
                last = event.seq
                if event.type in ENDING_EVENTS:
                    return
            if not events:
                run = yield from self.get(run_id)
                if run.finished:
                    for event in (yield from self.timeline(run_id, last, None)):
                        yield Emit(event)
                    return
                nap = min(nap * 2, slowest)
            else:
                nap = min(0.05, slowest)
            yield Sleep(nap)


def _iso(value: datetime | None) -> str | None:
    """A ``since``/``until`` bound as the API reads it (a naive datetime is taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"since/until must be datetimes, got {value!r}")
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.strftime("%Y-%m-%dT%H:%M:%S.") + f"{aware.microsecond // 1000:03d}Z"


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _nap(seconds: float, deadline: float | None) -> float:
    left = _left(deadline)
    return max(0.0, seconds if left is None else min(seconds, left))
