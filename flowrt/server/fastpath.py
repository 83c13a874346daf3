"""A thin ASGI path for the hot routes, in front of the Litestar app.

Why: at one client, a request's cost is the durable commit plus the framework.
Litestar's routing, parameter parsing, guards and exception layers cost some
35-55 us a request here (this wrapper: 5-7 us), about as much as the step itself
(docs/performance.md, "The fast path for the hot routes"), so ``POST /v1/runs/start``,
``POST /v1/runs/{runId}/tick``, ``POST /v1/runs/{runId}/resume`` and
``GET /v1/runs/{runId}`` -- what a client driving runs sends again and again -- are
served by this wrapper without entering Litestar.

What it serves is only the *ordinary* request: an exact path, no query string but a
plain ``?wait=`` where the route takes one, a JSON (or absent) content type, a body
under ``--max-body-bytes`` that decodes into the route's type, an admitted token.
Anything else -- HEAD, a trailing slash, an odd run id, an unknown query parameter,
a body that is not UTF-8, not JSON or not a valid StartRequest, a missing or wrong
token -- is handed to the Litestar app unchanged (a body already read is replayed to
it), so Litestar stays the one source of the canonical 4xx answers and of the
OpenAPI schema. When a request is accepted here, the answer -- success or an engine
error such as RUN_NOT_FOUND, RUN_BUSY or STORAGE_UNAVAILABLE -- comes from
:mod:`.answers`, the same functions the Litestar routes and exception handlers
call, so the two paths answer byte for byte alike (tests/test_fastpath.py compares
them). Auth is :meth:`~.auth.TokenTable.authorize`, the guard's own rule.

``FLOWRT_FAST_PATH=0`` turns it off (every request goes through Litestar).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import msgspec
from litestar import Litestar
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from . import answers
from .answers import Answer, ErrorAnswers
from .auth import ANONYMOUS, TokenTable, required_scope
from .wire import MAX_NAME, MAX_WAIT, RUN_ID, StartRequest

if TYPE_CHECKING:
    from .app import ApiState

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_RUNS = "/v1/runs/"
_START = "/v1/runs/start"
# What Litestar's float parameter accepts, narrowed to the plain spellings: no sign,
# exponent, leading zero or percent-escape (those go to Litestar, which decides).
_WAIT = re.compile(rb"wait=((?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,9})?)")
_JSON_TYPES = (b"application/json", b"application/x-www-form-urlencoded")  # the latter: curl -d
_READ = frozenset({b"authorization", b"content-type", b"content-length", b"idempotency-key"})
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)  # ValueError: UnicodeDecodeError
DECLINED = "flowrt.fast_path.declined"
"""Scope key: this request was looked at beneath ASGI (:mod:`.direct`) and left to Litestar,
its body replayed if it was read; the ASGI entry does not look again."""


@dataclass(slots=True)
class Route:
    """An ordinary request to a hot route, as admitted: which call, on what, for whom."""

    call: str  # "start", "tick", "get" or "resume"
    run_id: str
    wait: float | None
    idempotency_key: str | None
    by: str


class FastPath:
    """ASGI wrapper: serves ordinary requests to the hot routes itself, passes the rest to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        state: ApiState,
        *,
        table: TokenTable,
        errors: ErrorAnswers,
        max_body_bytes: int,
        static_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.state = state
        self.table = table
        self.errors = errors
        self.max_body_bytes = max_body_bytes
        self.static_paths = static_paths
        """Paths Litestar routes to a route of their own (``/v1/runs/counts``): never a run id here."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.admit(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        answer, read = await self.answer(route, scope, receive)
        if answer is None:
            await self.app(scope, replaying(read, receive), send)
            return
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.asgi_headers()})
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})

    async def answer(self, route: Route, scope: Scope, receive: Receive) -> tuple[Answer | None, list[Message]]:
        """``(answer, messages read)`` for an admitted request; answer None when its body turns
        out not to be ordinary (the caller hands the request, with those messages, to Litestar).

        Also what :mod:`.direct` calls, beneath ASGI, for a connection uvicorn parses with httptools."""
        body: Any = None
        read: list[Message] = []
        if route.call in ("start", "resume"):
            raw, read = await _read_body(receive, self.max_body_bytes)
            body = _NOT_ORDINARY if raw is None else _decode(route.call, raw)
            if body is _NOT_ORDINARY:
                scope[DECLINED] = True  # so a second look (the ASGI entry behind .direct) does not read it again
                return None, read
        try:
            return await self._answer(route, body), read
        except Exception as exc:  # what Litestar's exception handlers would answer (CancelledError passes)
            return self.errors.for_exception(exc, scope["method"], scope["path"]), read

    def _answer(self, route: Route, body: Any) -> Awaitable[Answer]:
        state = self.state
        if route.call == "tick":
            return answers.tick(state, route.run_id)
        if route.call == "get":
            return answers.get(state, route.run_id, route.wait)
        if route.call == "resume":
            return answers.resume(state, route.run_id, body, route.wait, route.by)
        return answers.start(state, body, route.idempotency_key, route.wait)

    def admit(self, scope: Scope) -> Route | None:
        """The request as a :class:`Route` if it is ordinary, else None (Litestar serves it)."""
        method, path = scope["method"], scope["path"]
        if scope.get("root_path") or not path.startswith(_RUNS) or DECLINED in scope:
            return None
        call, run_id = _match(method, path)
        if call is None or (call != "start" and path in self.static_paths):
            return None
        wait = _wait(scope["query_string"], allowed=call != "tick")
        if wait is _NOT_ORDINARY:
            return None
        headers = _headers(scope["headers"])
        if headers is None:
            return None
        if call in ("start", "resume") and not _acceptable_body(headers, self.max_body_bytes):
            return None
        key = _idempotency_key(headers.get(b"idempotency-key"))
        if key is _NOT_ORDINARY:
            return None
        by = ANONYMOUS
        if self.table:
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            try:
                token = self.table.authorize(authorization, required_scope(method))
            except (NotAuthorizedException, PermissionDeniedException):
                return None  # Litestar's guard answers 401/403, with its headers
            by = token.name or ANONYMOUS
        return Route(call, run_id, wait, key, by)


class _NotOrdinary:
    """Marks a request part this path leaves to Litestar."""


_NOT_ORDINARY: Any = _NotOrdinary()


def _match(method: str, path: str) -> tuple[str | None, str]:
    """``(call, run_id)`` for a hot route's exact path (``call`` None otherwise)."""
    if method == "POST":
        if path == _START:
            return "start", ""
        run_id, slash, action = path[len(_RUNS) :].partition("/")
        if slash and action in ("tick", "resume") and RUN_ID.match(run_id):
            return action, run_id
    elif method == "GET":
        run_id = path[len(_RUNS) :]
        if "/" not in run_id and RUN_ID.match(run_id):
            return "get", run_id
    return None, ""


def _wait(query: bytes, *, allowed: bool) -> Any:
    """``?wait=`` as seconds, None without a query; anything else is not ordinary."""
    if not query:
        return None
    match = _WAIT.fullmatch(query) if allowed else None
    if match is None:
        return _NOT_ORDINARY
    seconds = float(match[1])
    return seconds if seconds <= MAX_WAIT else _NOT_ORDINARY


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes] | None:
    """The headers this path reads; None if one of them is repeated (Litestar decides which counts)."""
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in _READ:
            if name in found:
                return None
            found[name] = value
    return found


def _idempotency_key(raw: bytes | None) -> Any:
    """The ``Idempotency-Key`` header as Litestar's parameter accepts it (1-200 characters, no NUL)."""
    if raw is None:
        return None
    key = raw.decode("latin-1")
    return key if 0 < len(key) <= MAX_NAME and "\x00" not in key else _NOT_ORDINARY


def _acceptable_body(headers: dict[bytes, bytes], limit: int) -> bool:
    """A JSON (or untyped) body whose announced length is within the limit."""
    content_type = headers.get(b"content-type")
    if content_type is not None and not content_type.lower().startswith(_JSON_TYPES):
        return False
    length = headers.get(b"content-length")
    return length is None or (length.isdigit() and int(length) <= limit)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, list[Message]]:
    """``(body, messages read)``; body None past ``limit`` bytes or on a disconnect (read no further)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if size > limit:
            return None, messages
        if not message.get("more_body", False):
            break
    if len(messages) == 1:
        return messages[0].get("body", b""), messages
    return b"".join(m.get("body", b"") for m in messages), messages


def _decode(call: str, raw: bytes) -> Any:
    """The body as the route's type, or not ordinary if Litestar would refuse it (it will say why)."""
    try:
        if call == "start":
            return msgspec.json.decode(raw, type=StartRequest)
        return None if raw == b"" else msgspec.json.decode(raw)  # resume: any JSON, empty = null
    except _DECODE_ERRORS:
        return _NOT_ORDINARY


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` for the app: the messages this path already read, then the rest of the stream."""
    pending = deque(messages)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


def install(
    app: Litestar, state: ApiState, *, table: TokenTable, errors: ErrorAnswers, max_body_bytes: int
) -> Litestar:
    """Put :class:`FastPath` in front of everything ``app`` serves (outside :mod:`.middleware` too)."""
    static_paths = frozenset(route.path for route in app.routes if "{" not in route.path)
    app.asgi_handler = FastPath(  # type: ignore[assignment]
        app.asgi_handler,  # type: ignore[arg-type]
        state,
        table=table,
        errors=errors,
        max_body_bytes=max_body_bytes,
        static_paths=static_paths,
    )
    return app
