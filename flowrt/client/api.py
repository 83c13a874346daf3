"""``Client`` and ``AsyncClient``: one method per call, each a line that hands an operation
(:mod:`.ops`) to its transport (:mod:`.transport`). Nothing here differs between the two
but ``await``; the behaviour is documented once, on :class:`Client`.
"""

from __future__ import annotations

from types import TracebackType
from datetime import datetime
from typing import Any, AsyncIterator, Iterator

import httpx

from ..runs import Event, Run
from .ops import Operations, RunPage
from .transport import AsyncTransport, Settings, SyncTransport
from .wire import LONG_POLL_SECONDS, Call, ServerInfo, check_url

_UNSET: Any = object()


def _settings(url: str, token: str | None, timeout: float, retries: int, retry_backoff: float,
              limits: httpx.Limits | None, headers: dict[str, str] | None) -> Settings:
    extra = {} if limits is None else {"limits": limits}
    return Settings(check_url(url), token, float(timeout), int(retries), float(retry_backoff),
                    headers=dict(headers or {}), **extra)


def _raw_call(method: str, path: str, params: dict[str, Any] | None, body: Any, idempotent: bool | None) -> Call:
    method = method.upper()
    if not path.startswith("/"):
        path = "/" + path
    safe = method in ("GET", "HEAD") if idempotent is None else idempotent
    return Call(method, path, params, None if body is _UNSET else body, body is not _UNSET, idempotent=safe)


class Client:
    """A flowrt server (or the reference runtime) over HTTP, from synchronous code.

    ``Client("http://127.0.0.1:3000", token=None)``; use it as a context manager, or
    call :meth:`close`. One client keeps one pool of keep-alive connections: make one
    and share it (it is thread-safe), rather than one per call.

    Options (see docs/client.md): ``timeout`` seconds to connect and for each answer
    (10); ``retries`` extra attempts for calls that are safe to send again (2);
    ``retry_backoff`` the first pause between attempts (0.2 s, doubling);
    ``limits`` the ``httpx.Limits`` of the pool; ``headers`` sent with every request;
    ``poll_interval`` the slowest pace of :meth:`follow` and of polling fallbacks (0.5 s);
    ``long_poll`` the seconds one ``?wait=`` asks the server to hold an answer (60; lower
    it behind a proxy that drops idle requests sooner).

    Every method returns the engine's own :class:`~flowrt.Run` / :class:`~flowrt.Event`
    and raises its :class:`~flowrt.FlowrtError` subclasses (``RunNotFound``, ``RunBusy``,
    ``RunNotWaiting``, ...), plus ``ServerUnreachable`` when no answer comes,
    ``Unsupported`` for a call the server does not offer, ``HttpError`` for the rest.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0, retries: int = 2,
                 retry_backoff: float = 0.2, limits: httpx.Limits | None = None,
                 headers: dict[str, str] | None = None, poll_interval: float = 0.5,
                 long_poll: float = LONG_POLL_SECONDS) -> None:
        settings = _settings(url, token, timeout, retries, retry_backoff, limits, headers)
        self.url = settings.base_url
        self._ops = Operations(settings.base_url, poll_interval, float(long_poll))
        self._t = SyncTransport(settings)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._t.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def start(self, flow_id: str, input: Any = None, *, version: str | None = None,  # noqa: A002
              tenant_id: str | None = None, initial_state: dict[str, Any] | None = None,
              idempotency_key: str | None = None, wait: bool = False) -> Run:
        """Start a run; the run as it is now, or with ``wait=True`` once it waits or ended.

        ``version`` defaults to the highest registered. ``idempotency_key`` is sent as the
        ``Idempotency-Key`` header: the server answers a repeat with the same run (its
        ``replayed`` True where the server says so, unless a retry of this call got that
        answer), which also makes the call safe to retry. Without it a start is never
        re-sent once it may have reached the server (it could create two runs).
        """
        return self._t.run(self._ops.start(flow_id, input, version=version, tenant_id=tenant_id,
                                           initial_state=initial_state, idempotency_key=idempotency_key, wait=wait))

    def get(self, run_id: str) -> Run:
        """The run; ``RunNotFound`` if there is none (where ``Engine.get`` returns None)."""
        return self._t.run(self._ops.get(run_id))

    def tick(self, run_id: str) -> Run:
        """Execute one step of the run (a WAITING run's node is polled) and return it."""
        return self._t.run(self._ops.tick(run_id))

    def resume(self, run_id: str, payload: Any = None, *, wait: bool = False) -> Run:
        """Wake a WAITING run with ``payload``; with ``wait=True``, return once it waits again or ended."""
        return self._t.run(self._ops.resume(run_id, payload, wait=wait))

    def cancel(self, run_id: str, reason: str | None = None) -> Run:
        """End a RUNNING or WAITING run as CANCELLED (``RunFinished`` if it already ended)."""
        return self._t.run(self._ops.cancel(run_id, reason))

    def retry(self, run_id: str, *, wait: bool = False) -> Run:
        """A FAILED or CANCELLED run RUNNING again where it stopped (``RunNotRepairable`` otherwise)."""
        return self._t.run(self._ops.repair(run_id, "retry", {}, wait))

    def rewind(self, run_id: str, to_node: str, *, wait: bool = False) -> Run:
        """Continue the run from ``to_node`` with the state it had just before that node last started."""
        return self._t.run(self._ops.repair(run_id, "rewind", {"toNode": to_node}, wait))

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The run's events in order; only those with ``seq > after``, at most ``limit``."""
        return self._t.run(self._ops.timeline(run_id, after, limit))

    def follow(self, run_id: str, after: int = 0, *, interval: float | None = None) -> Iterator[Event]:
        """Each event of the run (``seq > after``) as it is recorded, ending after the run has ended.

        A flowrt server pushes the events on its stream (``GET /v1/runs/{runId}/events``);
        on one without it (the reference), or when the stream drops, the timeline is polled
        every ``interval`` seconds at most (default ``poll_interval``), from the last event seen.
        It only watches: on a server that does not drive runs (the reference, ``--no-drive``)
        someone else's ticks must move the run.
        """
        return self._t.iterate(self._ops.follow(run_id, after, interval))

    def runs(self, *, status: str | None = None, flow_id: str | None = None, tenant_id: str | None = None,
             page_size: int = 100, since: datetime | None = None, until: datetime | None = None) -> Iterator[Run]:
        """Every run matching the filters, newest first, fetching page after page as you iterate.

        ``since`` (inclusive) and ``until`` (exclusive) bound when the runs were started
        (a naive datetime is UTC).
        """
        return self._t.iterate(self._ops.runs(status, flow_id, tenant_id, page_size, since, until))

    def runs_page(self, *, status: str | None = None, flow_id: str | None = None, tenant_id: str | None = None,
                  limit: int | None = None, cursor: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> RunPage:
        """One page of runs (``GET /v1/runs``); pass ``page.next_cursor`` as ``cursor`` for the next."""
        return self._t.run(self._ops.runs_page(status, flow_id, tenant_id, limit, cursor, since, until))

    def flows(self) -> list[dict[str, Any]]:
        """The registered flows and their definitions, as ``Engine.list_flows``."""
        return self._t.run(self._ops.flows())

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once it has left RUNNING (it waits or ended); after ``timeout`` seconds, as it is.

        Long-polls a flowrt server that drives runs; on one that does not (the reference,
        ``--no-drive``) it ticks the run itself, step by step, as that API requires.
        """
        return self._t.run(self._ops.wait(run_id, timeout))

    def health(self) -> Any:
        """``GET /health`` as the server answers it (also when it says 503)."""
        return self._t.run(self._ops.health())

    def server(self) -> ServerInfo:
        """What the server is (flowrt or the reference; driving runs or not), asked once per client."""
        return self._t.run(self._ops.server())

    @property
    def events_numbered(self) -> bool:
        """True once this server sent timeline events without ``seq`` (the reference runtime
        does): their ``seq`` is their 1-based position in the timeline, numbered by the client."""
        return self._ops.events_numbered

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = _UNSET,
                idempotent: bool | None = None) -> Any:
        """Any API call, answered as decoded JSON, with the same errors, timeouts and retries.

        ``idempotent`` (default: GET and HEAD only) says the call may be re-sent after a lost answer.
        """
        return self._t.run(self._ops.raw(_raw_call(method, path, params, body, idempotent)))


class AsyncClient:
    """:class:`Client` for ``asyncio``: the same methods, awaited (``follow`` and ``runs``
    are ``async for``); ``async with AsyncClient(url) as client: ...``."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0, retries: int = 2,
                 retry_backoff: float = 0.2, limits: httpx.Limits | None = None,
                 headers: dict[str, str] | None = None, poll_interval: float = 0.5,
                 long_poll: float = LONG_POLL_SECONDS) -> None:
        settings = _settings(url, token, timeout, retries, retry_backoff, limits, headers)
        self.url = settings.base_url
        self._ops = Operations(settings.base_url, poll_interval, float(long_poll))
        self._t = AsyncTransport(settings)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._t.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def start(self, flow_id: str, input: Any = None, *, version: str | None = None,  # noqa: A002
                    tenant_id: str | None = None, initial_state: dict[str, Any] | None = None,
                    idempotency_key: str | None = None, wait: bool = False) -> Run:
        return await self._t.run(self._ops.start(flow_id, input, version=version, tenant_id=tenant_id,
                                                 initial_state=initial_state, idempotency_key=idempotency_key,
                                                 wait=wait))

    async def get(self, run_id: str) -> Run:
        return await self._t.run(self._ops.get(run_id))

    async def tick(self, run_id: str) -> Run:
        return await self._t.run(self._ops.tick(run_id))

    async def resume(self, run_id: str, payload: Any = None, *, wait: bool = False) -> Run:
        return await self._t.run(self._ops.resume(run_id, payload, wait=wait))

    async def cancel(self, run_id: str, reason: str | None = None) -> Run:
        return await self._t.run(self._ops.cancel(run_id, reason))

    async def retry(self, run_id: str, *, wait: bool = False) -> Run:
        return await self._t.run(self._ops.repair(run_id, "retry", {}, wait))

    async def rewind(self, run_id: str, to_node: str, *, wait: bool = False) -> Run:
        return await self._t.run(self._ops.repair(run_id, "rewind", {"toNode": to_node}, wait))

    async def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        return await self._t.run(self._ops.timeline(run_id, after, limit))

    def follow(self, run_id: str, after: int = 0, *, interval: float | None = None) -> AsyncIterator[Event]:
        return self._t.iterate(self._ops.follow(run_id, after, interval))

    def runs(self, *, status: str | None = None, flow_id: str | None = None, tenant_id: str | None = None,
             page_size: int = 100, since: datetime | None = None,
             until: datetime | None = None) -> AsyncIterator[Run]:
        return self._t.iterate(self._ops.runs(status, flow_id, tenant_id, page_size, since, until))

    async def runs_page(self, *, status: str | None = None, flow_id: str | None = None,
                        tenant_id: str | None = None, limit: int | None = None, cursor: str | None = None,
                        since: datetime | None = None, until: datetime | None = None) -> RunPage:
        return await self._t.run(self._ops.runs_page(status, flow_id, tenant_id, limit, cursor, since, until))

    async def flows(self) -> list[dict[str, Any]]:
        return await self._t.run(self._ops.flows())

    async def wait(self, run_id: str, timeout: float | None = None) -> Run:
        return await self._t.run(self._ops.wait(run_id, timeout))

    async def health(self) -> Any:
        return await self._t.run(self._ops.health())

    async def server(self) -> ServerInfo:
        return await self._t.run(self._ops.server())

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = _UNSET,
                      idempotent: bool | None = None) -> Any:
        return await self._t.run(self._ops.raw(_raw_call(method, path, params, body, idempotent)))
