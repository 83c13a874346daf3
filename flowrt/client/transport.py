"""The two thin transports: run an operation's steps on ``httpx.Client`` or ``httpx.AsyncClient``.

Everything both share (headers, timeouts, which failures are retried and after how
long -- the tries of a call, :meth:`Settings.tries` --, how an error answer becomes an
exception) lives in :class:`Settings` and the functions here; the sync and async classes
differ only in ``await`` and the sleep.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Generator, Iterator

import httpx

from .. import __version__
from ..errors import InvalidInput, ServerUnreachable, Unsupported
from .wire import Answer, Call, Emit, Listen, NextMessage, Op, Sleep, T, error_from

if TYPE_CHECKING:
    from ..sse import Message, Parser

#: The longest silence on an event stream before it counts as dropped: the server sends
#: a keepalive comment every 15 s.
STREAM_SILENCE = 60.0
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
        options = {"base_url": self.base_url, "headers": headers, "timeout": self.timeout, "limits": self.limits}
        if self.base_url.startswith("http://") and not _proxy_in_env():
            options["verify"] = _never_used_tls()
        return options

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
        return self.pause(attempt) if never_sent(failure) or call.idempotent else None

    def tries(self, call: Call) -> Generator[float, httpx.Response | httpx.TransportError, Answer]:
        """The tries of one call, for either transport: it yields the pause before each try (0
        before the first), is sent what the try came back with (a response, or the transport
        error it raised), and returns the call's answer -- or raises, when a failure is not
        retried or the tries are used up."""
        attempt, sent_before, pause = 0, False, 0.0
        while True:
            attempt += 1
            outcome = yield pause
            if isinstance(outcome, httpx.TransportError):
                retry = self.retry_after(call, attempt, outcome)
                if retry is None:
                    raise self.unreachable(call, outcome, attempt) from outcome
                sent_before = sent_before or not never_sent(outcome)
            else:
                answer = self.answer(call, outcome, sent_before)
                retry = self.retry_after(call, attempt, answer) if answer.status >= 500 else None
                if retry is None:
                    return self.result(call, answer)
                sent_before = True
            pause = retry

    def request_args(self, call: Call) -> dict[str, Any]:
        args: dict[str, Any] = {"params": call.params, "headers": call.headers, "timeout": self.timeout_for(call)}
        if call.has_body:
            try:
                args["content"] = json.dumps(call.body, allow_nan=False).encode()
            except (TypeError, ValueError, RecursionError) as exc:
                raise InvalidInput(f"{call.method} {call.path}: the body must be JSON: {exc}") from exc
            args["headers"] = {"Content-Type": "application/json", **(call.headers or {})}
        return args

    def answer(self, call: Call, response: httpx.Response, sent_before: bool = False) -> Answer:
        """``sent_before``: an earlier attempt of this call may have reached the server. Then a
        replayed start may replay that attempt's own run, so it is not reported as replayed."""
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None  # not JSON (a proxy's HTML page): the status speaks
        replayed = not sent_before and response.headers.get("idempotent-replayed", "").strip().lower() == "true"
        return Answer(response.status_code, body, replayed)

    def result(self, call: Call, answer: Answer) -> Answer:
        if answer.status < 400 or call.any_status:
            if answer.status < 400 and answer.body is None and call.method != "HEAD":
                raise error_from(call, Answer(answer.status, {"error": "the answer is not JSON"}), self.base_url)
            return answer
        raise error_from(call, answer, self.base_url)

    def stream_args(self, call: Call) -> dict[str, Any]:
        headers = {**(call.headers or {}), "Accept": "text/event-stream"}
        read = max(STREAM_SILENCE, self.timeout)
        return {"params": call.params, "headers": headers, "timeout": httpx.Timeout(self.timeout, read=read)}

    def stream_refused(self, call: Call, response: httpx.Response) -> Exception | None:
        """Why an answer to a :class:`Listen` is not a stream to read (its body has been read), or None."""
        if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/event-stream"):
            return None
        answer = self.answer(call, response)
        if answer.status >= 400:
            return error_from(call, answer, self.base_url)
        return Unsupported(f"{self.base_url} does not stream {call.method} {call.path} (it answered {answer.status})")

    def unreachable(self, call: Call, exc: httpx.TransportError, attempts: int) -> ServerUnreachable:
        what = "no answer in time" if isinstance(exc, httpx.TimeoutException) else (str(exc) or type(exc).__name__)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return ServerUnreachable(f"cannot reach {self.base_url} ({call.method} {call.path}){tries}: {what}")


def never_sent(failure: httpx.TransportError) -> bool:
    """The request cannot have reached the server: no connection was made."""
    return isinstance(failure, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def _proxy_in_env() -> bool:
    """Whether httpx would route through a proxy from the environment (which may speak TLS)."""
    return any(name.lower() in ("http_proxy", "https_proxy", "all_proxy") for name in os.environ)


def _never_used_tls() -> Any:
    """The TLS context for a plain-http server: requests only ever go to the base URL and
    redirects are not followed, so TLS never happens. Loading the CA bundle for nothing is
    most of a CLI command's start-up (tens of ms), so this context has none: should a TLS
    handshake ever happen, verification fails rather than passes."""
    import ssl

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default


async def _asleep(seconds: float) -> None:
    import asyncio  # here: asyncio costs a sync caller (the CLI) a tenth of its start-up

    await asyncio.sleep(seconds)


class SyncTransport:
    """Runs operations on one ``httpx.Client`` (its pool is reused across calls)."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.Client(**settings.client_options())

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call) -> Answer:
        tries = self.settings.tries(call)
        pause = next(tries)
        while True:
            if pause:
                time.sleep(pause)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self.http.request(call.method, call.path, **self.settings.request_args(call))
            except httpx.TransportError as exc:
                outcome = exc
            try:
                pause = tries.send(outcome)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

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
        stream = _SyncStream(self)
        try:
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
                        if isinstance(step, Listen):
                            value = stream.open(step.call)
                        elif isinstance(step, NextMessage):
                            value = stream.next()
                        else:
                            value = self.send(step)
                    except Exception as exc:  # noqa: BLE001 - handed to the operation, which may catch it
                        error = exc
        finally:
            stream.close()
            op.close()


class _SyncStream:
    """The one event stream an operation has open."""

    def __init__(self, transport: SyncTransport) -> None:
        self.transport = transport
        self.response: httpx.Response | None = None
        self.messages: Iterator[Message] = iter(())
        self.call: Call | None = None

    def open(self, call: Call) -> Message | None:
        from .. import sse  # here: only a follow reads streams (and sse needs msgspec)

        self.close()
        http, settings = self.transport.http, self.transport.settings
        try:
            response = http.send(http.build_request("GET", call.path, **settings.stream_args(call)), stream=True)
            if response.status_code != 200:
                response.read()
        except httpx.TransportError as exc:
            raise settings.unreachable(call, exc, 1) from exc
        refused = settings.stream_refused(call, response)
        if refused is not None:
            response.close()
            raise refused
        self.response, self.call = response, call
        self.messages = sse.parse(response.iter_lines())
        return self.next()

    def next(self) -> Message | None:
        if self.response is None or self.call is None:
            return None
        try:
            return next(self.messages, None)
        except httpx.TransportError as exc:
            call = self.call
            self.close()
            raise self.transport.settings.unreachable(call, exc, 1) from exc

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        self.response, self.call, self.messages = None, None, iter(())


class AsyncTransport:
    """Runs operations on one ``httpx.AsyncClient``: the same steps, awaited."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.AsyncClient(**settings.client_options())

    async def close(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call) -> Answer:
        tries = self.settings.tries(call)
        pause = next(tries)
        while True:
            if pause:
                await _asleep(pause)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self.http.request(call.method, call.path, **self.settings.request_args(call))
            except httpx.TransportError as exc:
                outcome = exc
            try:
                pause = tries.send(outcome)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

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
        stream = _AsyncStream(self)
        try:
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
                    await _asleep(step.seconds)
                else:
                    try:
                        if isinstance(step, Listen):
                            value = await stream.open(step.call)
                        elif isinstance(step, NextMessage):
                            value = await stream.next()
                        else:
                            value = await self.send(step)
                    except Exception as exc:  # noqa: BLE001 - handed to the operation, which may catch it
                        error = exc
        finally:
            await stream.close()
            op.close()


class _AsyncStream:
    """:class:`_SyncStream`, awaited: lines arrive one by one and feed an :class:`~flowrt.sse.Parser`."""

    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport
        self.response: httpx.Response | None = None
        self.lines: AsyncIterator[str] | None = None
        self.parser: Parser | None = None
        self.call: Call | None = None

    async def open(self, call: Call) -> Message | None:
        from .. import sse  # here: only a follow reads streams (and sse needs msgspec)

        await self.close()
        http, settings = self.transport.http, self.transport.settings
        try:
            response = await http.send(http.build_request("GET", call.path, **settings.stream_args(call)), stream=True)
            if response.status_code != 200:
                await response.aread()
        except httpx.TransportError as exc:
            raise settings.unreachable(call, exc, 1) from exc
        refused = settings.stream_refused(call, response)
        if refused is not None:
            await response.aclose()
            raise refused
        self.response, self.call = response, call
        self.lines, self.parser = response.aiter_lines(), sse.Parser()
        return await self.next()

    async def next(self) -> Message | None:
        if self.lines is None or self.parser is None or self.call is None:
            return None
        try:
            async for line in self.lines:
                message = self.parser.feed(line)
                if message is not None:
                    return message
        except httpx.TransportError as exc:
            call = self.call
            await self.close()
            raise self.transport.settings.unreachable(call, exc, 1) from exc
        return None

    async def close(self) -> None:
        if self.response is not None:
            await self.response.aclose()
        self.response, self.lines, self.parser, self.call = None, None, None, None
