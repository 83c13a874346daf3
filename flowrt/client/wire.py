"""What goes over the wire, without doing any I/O: requests, and answers turned into errors.

An operation (see :mod:`.ops`) is a generator that yields :class:`Call` (send this
request, give me its JSON), :class:`Sleep` (pause), :class:`Emit` (hand this item to
the caller's ``for`` loop), and :class:`Listen` / :class:`NextMessage` (read an event stream). The sync and async transports execute those steps, so every
operation is written once for both clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generator, TypeVar, Union

from .. import errors
from ..errors import FlowrtError, HttpError, InvalidInput, Unsupported

T = TypeVar("T")

#: How long one ``?wait=`` long-poll asks a flowrt server to hold the request (its
#: maximum is 300 s; a shorter hold keeps proxies with idle timeouts happy).
LONG_POLL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request, and whether it may be sent again after a failure.

    ``idempotent``: sending it twice does no harm (GETs; a start with an idempotency
    key), so it is retried even when the first attempt may have reached the server.
    ``hold``: seconds the server may hold the answer (a long-poll), added to the read
    timeout. ``any_status``: the answer's JSON is wanted whatever its status (``/health``
    says 503 with a body worth reading); otherwise an error status raises.
    """

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    has_body: bool = False
    headers: dict[str, str] | None = None
    idempotent: bool = False
    hold: float = 0.0
    any_status: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """A response as the operations see it: its status, its decoded JSON (None if none), and
    whether it carried ``Idempotent-Replayed: true`` (a start that found an earlier one)."""

    status: int
    body: Any
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Emit:
    """An item for the caller's iteration (``follow``, ``runs``)."""

    item: Any


@dataclass(frozen=True, slots=True)
class Listen:
    """Open ``call`` (a GET) as a ``text/event-stream``; answered with its first message.

    The transport keeps the stream open for the operation (one at a time) and closes it
    when the operation opens another, ends, or is dropped. An error status raises as any
    call's would; an answer that is not a stream raises :class:`~flowrt.errors.Unsupported`.
    """

    call: Call


@dataclass(frozen=True, slots=True)
class NextMessage:
    """The open stream's next message (a :class:`flowrt.sse.Message`), or None once it closed."""


Step = Union[Call, Sleep, Emit, Listen, NextMessage]
Op = Generator[Step, Any, T]
"""An operation: send it ``Answer`` after a Call, an SSE message (or None) after a Listen
or a NextMessage, None after a Sleep or an Emit."""


def get(path: str, params: dict[str, Any] | None = None, *, hold: float = 0.0) -> Call:
    return Call("GET", path, _clean(params), idempotent=True, hold=hold)


def post(path: str, body: Any = None, params: dict[str, Any] | None = None, *, has_body: bool = True,
         headers: dict[str, str] | None = None, idempotent: bool = False, hold: float = 0.0) -> Call:
    return Call("POST", path, _clean(params), body, has_body, headers, idempotent, hold)


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    return {k: _param(v) for k, v in params.items() if v is not None}


def _param(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What ``/health`` says about the server, decided once per client.

    ``flowrt``: a flowrt server (it offers listing, cancel and ``?wait=`` long-polls);
    otherwise the reference runtime, or something else that speaks its API.
    ``driving``: its drivers move runs by themselves (flowrt without ``--no-drive``);
    when False, only ticks move a run, so :meth:`Client.wait` ticks it.
    """

    flowrt: bool
    driving: bool
    health: Any

    @classmethod
    def from_health(cls, answer: Answer) -> ServerInfo:
        body = answer.body
        is_flowrt = isinstance(body, dict) and "driving" in body and "storage" in body
        return cls(is_flowrt, bool(is_flowrt and body.get("driving")), body)


# --------------------------------------------------------------------------- errors

# The engine's classes by their stable code: the server sends {"error", "code"}.
_BY_CODE: dict[str, type[FlowrtError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, FlowrtError) and cls not in (FlowrtError, HttpError)
}
# The reference answers 500 {"error": "RunNotFoundError: Run not found: x"}: its class names.
_BY_REFERENCE_NAME: dict[str, type[FlowrtError]] = {
    "RunNotFoundError": errors.RunNotFound,
    "FlowNotFoundError": errors.FlowNotFound,
    "LockBusyError": errors.RunBusy,
}
_REFERENCE_ERROR = re.compile(r"(\w+Error): (.*)", re.S)


def error_from(call: Call, answer: Answer, where: str) -> FlowrtError:
    """The exception for an error answer: the engine's own class when the code names one."""
    body = answer.body if isinstance(answer.body, dict) else {}
    message = body.get("error") if isinstance(body.get("error"), str) else None
    code = body.get("code") if isinstance(body.get("code"), str) else None
    route = f"{call.method} {call.path}"
    if code is not None:
        if code in ("NOT_FOUND", "METHOD_NOT_ALLOWED"):
            return Unsupported(f"{where} does not offer {route}")
        if code == "UNAUTHORIZED":
            # server_message: the server's own words, for callers (the CLI) with their own hint.
            return HttpError(f"{message or 'unauthorized'}: pass the server's token (Client(url, token=...))",
                             code=code, http_status=answer.status, server_message=message or "unauthorized")
        cls = _BY_CODE.get(code)
        if cls is not None:
            return cls(message)
        return HttpError(message or f"{answer.status} from {where}", code=code, http_status=answer.status)
    # No code: the reference runtime (or a proxy in between).
    if answer.status == 404 and message is None:
        return Unsupported(f"{where} does not offer {route} (the reference runtime has no such endpoint)")
    if message is not None:
        named = _REFERENCE_ERROR.match(message)
        if named and named.group(1) in _BY_REFERENCE_NAME:
            return _BY_REFERENCE_NAME[named.group(1)](named.group(2))
        if answer.status == 404:
            return errors.RunNotFound(message)
        if answer.status == 400:
            return InvalidInput(message)
    detail = message or (body.get("message") if isinstance(body.get("message"), str) else None)
    return HttpError(f"{route} answered {answer.status} from {where}" + (f": {detail}" if detail else ""),
                     code=f"HTTP_{answer.status}", http_status=answer.status)


# --------------------------------------------------------------------------- versions


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order, as the engine's: numbers compare as numbers, ``1.0.0-beta``
    sorts before ``1.0.0``, build metadata is ignored. Picks the default version on servers
    (the reference) that need one named."""

    def parts(text: str) -> tuple[Any, ...]:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", text) if p)

    release, _, pre = version.split("+", 1)[0].partition("-")
    return (parts(release), (1,) if not pre else (0, parts(pre)))


def check_url(url: str) -> str:
    """The server's base URL, without a trailing ``/`` or ``/v1`` (the paths add it)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidInput(f"the server URL must start with http:// or https://, got {url!r}")
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base
