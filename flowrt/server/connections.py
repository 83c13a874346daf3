"""Connection limits and timeouts of the HTTP listener (uvicorn), in one place.

uvicorn's defaults suit a server behind a reverse proxy that enforces its own
limits; ``flowrt serve`` is often run without one. Three gaps are closed here:

- **No cap on connections.** ``limit_concurrency`` (``--max-connections``) bounds the
  open connections *and* the requests in progress (long-polls included); past it
  uvicorn answers every new request ``503`` (plain text, ``Connection: close``) before
  the app sees it, so memory and file descriptors stay bounded.
- **A connection that never sends a request is kept forever** (uvicorn only arms its
  idle timer after a response), and with a cap that is a cheap way to lock everyone
  out. The protocol below arms the same keep-alive timer when a connection opens.
- **No bound on the request head with httptools** (the ``fast`` extra): a 5 MB header
  is parsed and kept. The protocol below counts the request line and headers and
  refuses a head over :data:`MAX_HEAD_BYTES` (h11 has the same bound through
  ``h11_max_incomplete_event_size``) with uvicorn's plain-text 400, closing the connection.

What is not bounded: a client that sends its head or body very slowly holds its
connection (and a slot) as long as it keeps sending. Put a reverse proxy in front of
a server exposed to untrusted clients.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, Callable

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("flowrt.server")

DEFAULT_MAX_CONNECTIONS = 1000
"""Open connections plus requests in progress; past it, new requests get 503."""

DEFAULT_KEEP_ALIVE = 5.0
"""Seconds an idle connection (fresh, or between requests) is kept open."""

BACKLOG = 2048
"""Connections the kernel queues before ``accept`` (capped by net.core.somaxconn)."""

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; larger heads are refused with 400 and the connection closed."""

_SPARE_FILES = 128  # the database, its WAL, the log, the Postgres pool, imports


class _HeadTooLarge(Exception):
    """Raised inside an httptools callback: the parser reports it as a bad request."""


class _FirstRequestTimer:
    """Mixin: a connection must send its first request within the keep-alive timeout."""

    loop: asyncio.AbstractEventLoop
    timeout_keep_alive: int  # so uvicorn declares it; a float works as well (call_later)
    timeout_keep_alive_task: asyncio.TimerHandle | None

    timeout_keep_alive_handler: Callable[[], None]  # uvicorn's; annotated only, so not shadowed

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        # uvicorn cancels this timer as soon as data arrives (data_received).
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


class GuardedH11Protocol(_FirstRequestTimer, H11Protocol):
    """uvicorn's h11 protocol with the first-request timer (its head is bounded by config)."""


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # the `fast` extra is not installed
        return None

    import uvicorn

    from . import direct  # uvicorn's httptools module: only with the `fast` extra

    if direct.supported(uvicorn.__version__):
        bases: tuple[type, ...] = (_FirstRequestTimer, direct.DirectAnswers, HttpToolsProtocol)
    else:  # its private parts may differ: the fast path stays an ASGI app, as on h11
        log.info("uvicorn %s is not one direct answers were checked with; serving them through ASGI", uvicorn.__version__)
        bases = (_FirstRequestTimer, HttpToolsProtocol)

    class GuardedHttpToolsProtocol(*bases):  # type: ignore[misc]
        """uvicorn's httptools protocol with the first-request timer, a bounded head, and (on
        the uvicorn releases it was checked with) the hot routes answered beneath ASGI
        (:mod:`.direct`)."""

        _head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEAD_BYTES:
                raise _HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")

    return GuardedHttpToolsProtocol


def protocol_class() -> type[asyncio.Protocol]:
    """The protocol uvicorn's ``http="auto"`` would pick (httptools if installed), guarded."""
    return _httptools_protocol() or GuardedH11Protocol


def uvicorn_options(max_connections: int, keep_alive: float) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments for these limits."""
    return {
        "http": protocol_class(),
        "limit_concurrency": max_connections,
        "timeout_keep_alive": keep_alive,
        "backlog": BACKLOG,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }


def ensure_file_limit(max_connections: int) -> None:
    """Raise the soft open-files limit so ``max_connections`` sockets fit, or warn that they do not.

    Each connection is a file descriptor; many systems start processes with a soft
    limit of 1024. Past it ``accept`` fails in a loop while every other file the
    process needs (the database) fails too. Raising the soft limit up to the hard one
    is what a process may do for itself.
    """
    needed = max_connections + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        target = soft
    if target < needed:
        log.warning(
            "the open-files limit (%d) is below --max-connections (%d) plus %d spare: "
            "raise it (ulimit -n, LimitNOFILE= in systemd) or lower --max-connections",
            target,
            max_connections,
            _SPARE_FILES,
        )
