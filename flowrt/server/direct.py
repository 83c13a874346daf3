"""The hot routes answered beneath ASGI, on uvicorn's httptools connections: one write an answer.

Why: after the fast path (:mod:`.fastpath`) took Litestar out of an ordinary start, tick, get
or resume, what was left around it per request was uvicorn's ASGI cycle: a task running the
app, two ASGI message dicts, a header loop with two regular expressions per header, and two
``transport.write`` calls -- the head, then the body -- so two system calls and two TCP
segments for the client to wake up to. A profile put the two sends at ~8% of the event loop's
busy time; answering here saves 2.2% of the instructions a request and one system call
(counted: docs/performance.md, "Answers beneath ASGI").

So the httptools protocol (:mod:`.connections`) asks the fast path, as uvicorn is about to
start a request's ASGI task, whether the request is ordinary (:meth:`FastPath.admit`, the
same test as at the ASGI entry). If it is, the task runs :func:`answer_directly` instead:
the fast path's own answer (:meth:`FastPath.answer`: the same engine call, the same bytes)
written with the response head in one ``transport.write``. Everything else about the
connection stays uvicorn's: parsing, keep-alive, pipelining, flow control, the 503 past
``--max-connections``, shutdown, and the error handling of ``run_asgi`` around it all. A
request whose body turns out not to be ordinary goes to the whole app, with the body it read
replayed, as at the ASGI entry.

What is written is what uvicorn's ``send`` would have written for the two messages (a test
compares the bytes): the status line, uvicorn's default headers (``date``), the answer's
headers, ``connection: close`` when the connection will close, then the body; and the access
log line, if uvicorn's access logger has a handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from .answers import Answer
from .fastpath import DECLINED, FastPath, Route, replaying

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

log = logging.getLogger("flowrt.server")

TESTED_UVICORN = ("0.54.",)
"""uvicorn releases whose private protocol parts (``_start_asgi_task``, ``STATUS_LINE``, the
cycle's attributes) this module was checked against; on others, :mod:`.connections` leaves
requests to ASGI (tests/test_fastpath.py fails if the pinned uvicorn is not one of them)."""


def supported(version: str) -> bool:
    return version.startswith(TESTED_UVICORN)


class DirectAnswers:
    """Mixin for uvicorn's ``HttpToolsProtocol``: ordinary hot-route requests skip ASGI."""

    app: ASGI3Application
    loop: asyncio.AbstractEventLoop
    tasks: set[asyncio.Task[None]]
    config: Any

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        fast = _fast_path_of(self.app) if app is self.app else None  # not uvicorn's 503 app
        route = self._admitted(fast, cycle) if fast is not None and self._direct_allowed() else None
        if route is None:
            super()._start_asgi_task(cycle, app)  # type: ignore[misc]
            return
        assert fast is not None

        async def one_request(scope: Any, receive: Any, send: Any) -> None:
            await answer_directly(cycle, fast, route, self.app)

        # run_asgi, as for any request: its error handling (a 500, or the connection closed) and
        # its end-of-cycle bookkeeping stay uvicorn's.
        task = self.loop.create_task(cycle.run_asgi(one_request))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    @staticmethod
    def _admitted(fast: FastPath, cycle: RequestResponseCycle) -> Route | None:
        """``fast.admit``, here inside httptools' header callback (or a pipelined request's
        predecessor's task), where an exception would become a bare 400 or lose the queued
        requests: one is logged and the request goes through ASGI, whose errors are answered."""
        scope: Any = cycle.scope
        try:
            route = fast.admit(scope)
        except Exception:  # noqa: BLE001 - logged; the ASGI entry meets it again and answers
            log.exception("the fast path could not look at %s %s", scope.get("method"), scope.get("path"))
            return None
        if route is None:
            scope[DECLINED] = True  # the ASGI entry need not look again
        return route

    def _direct_allowed(self) -> bool:
        # Fresh context variables per request (an opt-in of uvicorn's) are uvicorn's to set up.
        return not getattr(self.config, "reset_contextvars", False)


def _fast_path_of(app: Any) -> FastPath | None:
    """The fast path installed in the Litestar app uvicorn serves, if any."""
    handler = getattr(app, "asgi_handler", None)
    return handler if isinstance(handler, FastPath) else None


async def answer_directly(cycle: RequestResponseCycle, fast: FastPath, route: Route, app: ASGI3Application) -> None:
    """Serve one admitted request on ``cycle``: the fast path's answer, or the app's if it declines."""
    answer, read = await fast.answer(route, cycle.scope, cycle.receive)  # type: ignore[arg-type]
    if answer is None:
        await app(cycle.scope, replaying(read, cycle.receive), cycle.send)  # type: ignore[arg-type]
        return
    await write_answer(cycle, answer)


async def write_answer(cycle: RequestResponseCycle, answer: Answer) -> None:
    """What uvicorn's ``send`` does for a response start and its one, last body, in one write."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    if cycle.access_log:  # off in `flowrt serve`; uvicorn turns it on when its logger has a handler
        scope: Any = cycle.scope
        cycle.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            answer.status,
        )
    content: list[bytes] = [STATUS_LINE[answer.status]]
    for name, value in cycle.default_headers:
        content += (name, b": ", value, b"\r\n")
    content.append(answer.head_lines())
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", answer.body)
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()

