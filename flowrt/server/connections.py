"""Connection limits and timeouts of the HTTP listener (uvicorn), in one place.

uvicorn's defaults suit a server behind a reverse proxy that enforces its own
limits; ``flowrt serve`` is often run without one. Four gaps are closed here:

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
- **A request may take forever to arrive** (slowloris): a client that sends its head or
  body a byte at a time holds its connection, and a slot under the cap, as long as it keeps
  sending; and any byte cancels uvicorn's keep-alive timer, so stray ones (blank lines, the
  rest of a body answered early) keep an idle connection open. The protocol below gives
  each request :data:`DEFAULT_READ_TIMEOUT` seconds (``--read-timeout``) from its first
  byte to its last, then answers ``408`` and closes the connection, and closes one with no
  request under way for the keep-alive timeout whatever it sends. It costs the hot path
  nothing: a check a second per connection looks at what uvicorn's parser already knows.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .busy_poll import DEFAULT_LIMIT_US as DEFAULT_BUSY_POLL_US
from .busy_poll import BusyPoll

log = logging.getLogger("flowrt.server")

DEFAULT_MAX_CONNECTIONS = 1000
"""Open connections plus requests in progress; past it, new requests get 503."""

DEFAULT_KEEP_ALIVE = 5.0
"""Seconds an idle connection (fresh, or between requests) is kept open."""

DEFAULT_READ_TIMEOUT = 30.0
"""Seconds a request may take to arrive, head and body, from its first byte."""

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


class BusyPolling:
    """Mixin: tells the server's :class:`~flowrt.server.busy_poll.BusyPoll` when an answer is
    complete and when bytes arrive (``busy_poll`` is set on the class, one per server)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    busy_poll: BusyPoll | None = None

    def data_received(self, data: bytes) -> None:
        if self.busy_poll is not None:
            self.busy_poll.arrived()
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # No next request comes on a closing connection (Connection: close, a 503 past the
        # limit, shutdown): nothing to poll for.
        if self.busy_poll is not None and not self.transport.is_closing():
            self.busy_poll.answered(self.loop)


_TIMED_OUT = b"Request Timeout"


class _ReadTimeout:
    """Mixin: a request must arrive whole within ``read_timeout`` seconds of its first byte,
    and a connection with no request under way is closed after the keep-alive timeout even
    if it keeps sending stray bytes.

    Why a check a second, not a timer per request: arming and cancelling a timer for every
    request would cost the hot path a few microseconds; this reads, once a second per
    connection, which request the parser is in the middle of (:meth:`_request_being_read`,
    per protocol) and how long it has been. So the bounds hold to within a second.

    What does not count: time the server makes a request wait -- while uvicorn has paused
    reading (a pipelined request whose head is whole, behind one still being answered; a
    body the app has not taken yet) or holds back ``100 Continue`` until the app reads the
    body, the client cannot send, so the clock starts again when it can. What does: a head
    still arriving behind a request being answered (it gets its 408 only after that answer).

    The second bound closes what the keep-alive timer leaves open: uvicorn cancels that timer
    whenever bytes arrive, so blank lines between requests (which the parser skips), or the
    rest of a body after its request was answered early (a 401 or 413 before the body came),
    would keep a connection open for ever. Such a connection is closed, without an answer,
    once it has had no request under way for the keep-alive timeout.
    """

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: Any
    cycle: Any
    server_state: Any
    timeout_keep_alive: int  # as _FirstRequestTimer declares it (a float in fact)
    read_timeout: float = DEFAULT_READ_TIMEOUT  # set per server by uvicorn_options
    _read_check: asyncio.TimerHandle | None = None
    _read_seen: tuple[Any, float] | None = None  # (the request being read, first seen then)
    _idle_seen: tuple[Any, float] | None = None  # (the last request, first seen idle after it)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_read_check()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_check()
        super().connection_lost(exc)  # type: ignore[misc]

    def handle_websocket_upgrade(self, *args: Any) -> None:
        self._stop_read_check()  # the socket is another protocol's from here on
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def _arm_read_check(self) -> None:
        self._read_check = self.loop.call_later(min(1.0, self.read_timeout / 2), self._check_read)

    def _stop_read_check(self) -> None:
        if self._read_check is not None:
            self._read_check.cancel()
            self._read_check = None

    def _request_being_read(self) -> tuple[Any, Any] | None:
        """``(which request, its cycle)`` while a request's bytes are still arriving, else None;
        the cycle is None while its head is (uvicorn makes one when the head is whole). The
        first is an object that stays the same from the request's first byte to its last."""
        raise NotImplementedError

    def _check_read(self) -> None:
        self._read_check = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._server_holds_it_back():
            self._read_seen = self._idle_seen = None
        elif (reading := self._request_being_read()) is not None and not _answered(reading[1]):
            self._idle_seen = None
            if self._read_seen is None or self._read_seen[0] is not reading[0]:
                self._read_seen = (reading[0], now)
            elif now - self._read_seen[1] >= self.read_timeout and not self._earlier_answer_pending(reading[1]):
                log.info("closed a connection whose request took over %gs to arrive (--read-timeout)", self.read_timeout)
                self._send_408()
                self.transport.close()
                return
        elif self.cycle is not None and not self.cycle.response_complete:
            self._read_seen = self._idle_seen = None  # a request being answered: not idle
        else:  # no request under way
            self._read_seen = None
            last = getattr(self, "scope", None)  # a new one per request, on both protocols
            if self._idle_seen is None or self._idle_seen[0] is not last:
                self._idle_seen = (last, now)
            elif now - self._idle_seen[1] >= self.timeout_keep_alive:
                self.transport.close()  # what the keep-alive timer would have done
                return
        self._arm_read_check()

    def _server_holds_it_back(self) -> bool:
        """The client cannot send now: reading is paused, or its ``100 Continue`` is not sent yet."""
        cycle = self.cycle
        return bool(self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue))

    def _earlier_answer_pending(self, cycle: Any) -> bool:
        """A head arriving behind a request still being answered: that answer comes first (the
        check waits for it), and only then may this connection get a 408."""
        return cycle is None and self.cycle is not None and not self.cycle.response_complete

    def _send_408(self) -> None:
        head = [b"HTTP/1.1 408 Request Timeout\r\n"]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        head += (
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(_TIMED_OUT),
            b"connection: close\r\n\r\n",
            _TIMED_OUT,
        )
        self.transport.write(b"".join(head))


def _answered(cycle: Any) -> bool:
    """The request was answered before its body came (a 401, a 413): what still arrives of it
    is thrown away, and the connection counts as idle (the keep-alive bound), not reading."""
    return cycle is not None and cycle.response_complete


class GuardedH11Protocol(BusyPolling, _FirstRequestTimer, _ReadTimeout, H11Protocol):
    """uvicorn's h11 protocol with the first-request timer and the read timeout (its head
    is bounded by config)."""

    conn: h11.Connection
    _head_arriving: list[Any] | None = None  # what names the request whose head is arriving

    def _request_being_read(self) -> tuple[Any, Any] | None:
        # h11 makes nothing per request until its head is whole, so the request is named by a
        # list of our own, made when its head is first seen arriving and kept for its body.
        # (A request that came and went between two checks may leave its list to the next
        # one: that request's clock then starts up to one check early.)
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.trailing_data[0]:
            if self._head_arriving is None or self._head_arriving[0] is not self.cycle:
                self._head_arriving = [self.cycle]  # keyed by the cycle before it
            return self._head_arriving, None
        if state is h11.SEND_BODY:
            head = self._head_arriving
            if head is None or len(head) > 1 and head[1] is not self.cycle:
                head = self._head_arriving = [None, self.cycle]  # a head that came whole at once
            elif len(head) == 1:
                head.append(self.cycle)  # the same request: its head was seen arriving
            return head, self.cycle
        return None


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # the `fast` extra is not installed
        return None

    import uvicorn

    from . import direct  # uvicorn's httptools module: only with the `fast` extra

    if direct.supported(uvicorn.__version__):
        bases: tuple[type, ...] = (BusyPolling, _FirstRequestTimer, _ReadTimeout, direct.DirectAnswers, HttpToolsProtocol)
    else:  # its private parts may differ: the fast path stays an ASGI app, as on h11
        log.info("uvicorn %s is not one direct answers were checked with; serving them through ASGI", uvicorn.__version__)
        bases = (BusyPolling, _FirstRequestTimer, _ReadTimeout, HttpToolsProtocol)

    class GuardedHttpToolsProtocol(*bases):  # type: ignore[misc]
        """uvicorn's httptools protocol with the first-request timer, the read timeout, a bounded head, and (on
        the uvicorn releases it was checked with) the hot routes answered beneath ASGI
        (:mod:`.direct`)."""

        _head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0

        def _request_being_read(self) -> tuple[Any, Any] | None:
            # uvicorn makes a new scope at a request's first byte, its cycle (sharing that
            # scope) once the head is whole, and clears the cycle's more_body at the last byte.
            scope, cycle = getattr(self, "scope", None), self.cycle
            if scope is None:
                return None  # no request yet
            if cycle is None or cycle.scope is not scope:
                return scope, None  # its head is arriving
            return (scope, cycle) if cycle.more_body else None  # its body is (or was answered early)

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


def uvicorn_options(
    max_connections: int,
    keep_alive: float,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    busy_poll_us: float = DEFAULT_BUSY_POLL_US,
) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments for these limits (and the busy polling, 0 for none)."""
    protocol = protocol_class()
    own = {"read_timeout": read_timeout, "busy_poll": BusyPoll(busy_poll_us) if busy_poll_us > 0 else None}
    return {
        "http": type(protocol.__name__, (protocol,), own),
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
