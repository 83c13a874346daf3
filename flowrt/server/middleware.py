"""HTTP hygiene in front of the Litestar app: ``HEAD`` wherever ``GET`` works, UTF-8 request bodies.

Both sit outside Litestar's routing on purpose. Litestar answers ``HEAD`` on a
``GET`` route with 405, and declaring ``HEAD`` route by route would miss every router
added later (the UI's, the schema's). Here a ``HEAD`` request is served as the ``GET``
it mirrors, with the same status and headers (``Content-Length`` included, as RFC 9110
asks) and the body dropped. A ``GET`` route has no side effects, so that is safe.

Request bodies are JSON, and JSON is UTF-8 (RFC 8259). Litestar decodes a body with
invalid UTF-8 as text and the ``UnicodeDecodeError`` escapes as a 500. The body is
checked here as it streams in, chunk by chunk, with an incremental decoder (no second
copy, so ``--max-body-bytes`` still bounds memory); a bad byte raises
:class:`~flowrt.errors.InvalidInput` inside the handler's body read, which the app's
error handlers answer as ``400 BAD_REQUEST`` naming the offset.
"""

from __future__ import annotations

import codecs
from typing import Any, Awaitable, Callable

from litestar import Litestar

from ..errors import InvalidInput

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Bodies that are not text by design: a future upload route must not be refused.
_BINARY_TYPES = (b"multipart/", b"application/octet-stream")


class InvalidUtf8(InvalidInput):
    """The request body is not valid UTF-8."""


class HttpHygiene:
    """ASGI wrapper: ``HEAD`` as body-less ``GET``; invalid UTF-8 in a body is a 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "GET":
            await self.app(scope, receive, send)
        elif method == "HEAD":
            await self.app({**scope, "method": "GET"}, receive, _without_body(send))
        else:
            if method in _BODY_METHODS and not _is_binary(scope):
                receive = _utf8_checked(receive)
            await self.app(scope, receive, _head_in_allow(send))


def _is_binary(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.lower().lstrip().startswith(_BINARY_TYPES))
    return False


def _without_body(send: Send) -> Send:
    """Pass the response head through, swallow the body, end the response once."""

    async def send_head_only(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
        elif not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return send_head_only


def _head_in_allow(send: Send) -> Send:
    """A 405's ``Allow`` header lists ``HEAD`` wherever it lists ``GET`` (a DELETE on /health)."""

    async def send_with_head(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = []
            for name, value in message.get("headers", ()):
                if name.lower() == b"allow":
                    methods = [part.strip() for part in value.split(b",")]
                    if b"GET" in methods and b"HEAD" not in methods:
                        value = b", ".join([*methods, b"HEAD"])
                headers.append((name, value))
            message = {**message, "headers": headers}
        await send(message)

    return send_with_head


def _utf8_checked(receive: Receive) -> Receive:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    seen = 0

    async def receive_checked() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            try:
                decoder.decode(chunk, final=not message.get("more_body", False))
            except UnicodeDecodeError as exc:
                # exc.object is the decoder's carried-over bytes of the last chunk plus this one.
                offset = seen + len(chunk) - len(exc.object) + exc.start
                raise InvalidUtf8(
                    f"request body is not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {offset} "
                    f"({exc.reason}); JSON text must be UTF-8"
                ) from None
            seen += len(chunk)
        return message

    return receive_checked


def install(app: Litestar) -> Litestar:
    """Put :class:`HttpHygiene` in front of everything ``app`` serves (routing, errors, schema)."""
    app.asgi_handler = HttpHygiene(app.asgi_handler)  # type: ignore[assignment,arg-type]
    return app
