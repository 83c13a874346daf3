"""The two thin transports: run an operation's steps on ``httpx.Client`` or ``httpx.AsyncClient``.

Everything both share (headers, timeouts, which failures are retried and after how
long, how an error answer becomes an exception) lives in :class:`Settings` and the
functions here; the sync and async classes differ only in ``await`` and the sleep.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

import httpx

from .. import __version__
from ..errors import InvalidInput, ServerUnreachable
from .wire import Answer, Call, Emit, Op, Sleep, T, error_from

#: Statuses that mean "a proxy or the server is briefly unable": an idempotent call is retried.
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Settings:
    """How a client talks to its server; every knob of :class:`~flowrt.client.Client`.

    ``timeout``: seconds to connect, and to wait for each answer (a long-poll's hold is
    added to the read part). ``retries``: how many times a failed call is sent again —
    any call whose connection could not be opened (it never reached the server), and
    idempotent calls (GETs; ``start`` with an ``idempotency_key``) also after a lost
    answer or a 502/503/504. ``tick``, ``resume``, ``cancel`` and a key-less ``start``
    are never re-sent once they may have arrived: doing one twice is not the same as once.
    ``retry_backoff``: the first pause, doubled each time (with jitter), capped at 5 s.
    ``limits``: the connection pool (connections are kept alive and reused).
    """

    base_url: str
    token: str | None = None
    timeout: float = 10.0
    retries: int = 2
    retry_backoff: float = 0.2
    limits: httpx.Limits = field(default_factory=lambda: httpx.Limits(max_connections=20, max_keepalive_connections=10))
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")

    def client_options(self) -> dict[str, Any]:
        headers = {"User-Agent": f"flowrt-client/{__version__}", "Accept": "application/json", **self.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {"base_url": self.base_url, "headers": headers, "timeout": self.timeout, "limits": self.limits}

    def timeout_for(self, call: Call) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.timeout + call.hold)

    def pause(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1, 2, ...): exponential, jittered."""
        base: float = min(5.0, self.retry_backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries, not security

    def retry_after(self, call: Call, attempt: int, failure: httpx.TransportError | Answer) -> float | None:
        """The pause before trying ``call`` again, or None to give up."""
        if attempt > self.retries:
            return None
        if isinstance(failure, Answer):
            wanted = call.idempotent and not call.any_status  # /health's 503 is an answer, not a failure
            return self.pause(attempt) if wanted and failure.status in RETRY_STATUSES else None
        never_sent = isinstance(failure, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        return self.pause(attempt) if never_sent or call.idempotent else None

    def request_args(self, call: Call) -> dict[str, Any]:
        args: dict[str, Any] = {"params": call.params, "headers": call.headers, "timeout": self.timeout_for(call)}
        if call.has_body:
            try:
                args["content"] = json.dumps(call.body, allow_nan=False).encode()
            except (TypeError, ValueError, RecursionError) as exc:
                raise InvalidInput(f"{call.method} {call.path}: the body must be JSON: {exc}") from exc
            args["headers"] = {"Content-Type": "application/json", **(call.headers or {})}
        return args

    def answer(self, call: Call, response: httpx.Response) -> Answer:
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None  # not JSON (a proxy's HTML page): the status speaks
        return Answer(response.status_code, body)

    def result(self, call: Call, answer: Answer) -> Answer:
        if answer.status < 400 or call.any_status:
            if answer.status < 400 and answer.body is None and call.method != "HEAD":
                raise error_from(call, Answer(answer.status, {"error": "the answer is not JSON"}), self.base_url)
            return answer
        raise error_from(call, answer, self.base_url)

    def unreachable(self, call: Call, exc: httpx.TransportError, attempts: int) -> ServerUnreachable:
        what = "no answer in time" if isinstance(exc, httpx.TimeoutException) else (str(exc) or type(exc).__name__)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return ServerUnreachable(f"cannot reach {self.base_url} ({call.method} {call.path}){tries}: {what}")


class SyncTransport:
    """Runs operations on one ``httpx.Client`` (its pool is reused across calls)."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.Client(**settings.client_options())

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call) -> Answer:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.request(call.method, call.path, **self.settings.request_args(call))
            except httpx.TransportError as exc:
                pause = self.settings.retry_after(call, attempt, exc)
                if pause is None:
                    raise self.settings.unreachable(call, exc, attempt) from exc
            else:
                answer = self.settings.answer(call, response)
                pause = self.settings.retry_after(call, attempt, answer) if answer.status >= 500 else None
                if pause is None:
                    return self.settings.result(call, answer)
            time.sleep(pause)

    def run(self, op: Op[T]) -> T:
        items = self._drive(op)
        while True:
            try:
                next(items)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

    def iterate(self, op: Op[Any]) -> Iterator[Any]:
        yield from self._drive(op)

    def _drive(self, op: Op[T]) -> Any:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = op.throw(error) if error is not None else op.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if isinstance(step, Emit):
                yield step.item
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                try:
                    value = self.send(step)
                except Exception as exc:  # noqa: BLE001 - handed to the operation, which may catch it
                    error = exc


class AsyncTransport:
    """Runs operations on one ``httpx.AsyncClient``: the same steps, awaited."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.AsyncClient(**settings.client_options())

    async def close(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call) -> Answer:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.http.request(call.method, call.path, **self.settings.request_args(call))
            except httpx.TransportError as exc:
                pause = self.settings.retry_after(call, attempt, exc)
                if pause is None:
                    raise self.settings.unreachable(call, exc, attempt) from exc
            else:
                answer = self.settings.answer(call, response)
                pause = self.settings.retry_after(call, attempt, answer) if answer.status >= 500 else None
                if pause is None:
                    return self.settings.result(call, answer)
            await asyncio.sleep(pause)

    async def run(self, op: Op[T]) -> T:
        result: list[T] = []
        async for _ in self._drive(op, result):
            raise RuntimeError("an operation that returns a value emitted an item")
        return result[0]

    def iterate(self, op: Op[Any]) -> AsyncIterator[Any]:
        return self._drive(op, [])

    async def _drive(self, op: Op[T], result: list[T]) -> AsyncIterator[Any]:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = op.throw(error) if error is not None else op.send(value)
            except StopIteration as stop:
                result.append(stop.value)
                return
            value, error = None, None
            if isinstance(step, Emit):
                yield step.item
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            else:
                try:
                    value = await self.send(step)
                except Exception as exc:  # noqa: BLE001 - handed to the operation, which may catch it
                    error = exc
