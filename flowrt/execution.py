"""Handler execution: call user code and turn whatever it does into a :class:`Result`.

Handlers are user code, so everything they can do wrong is contained here, and the
step core only ever sees a result:

- Any exception a handler raises, ``BaseException`` included (argparse's ``SystemExit``,
  a ``KeyboardInterrupt`` the handler raises itself, ``GeneratorExit``), is the node's
  failure, coded by its class name, with its traceback kept (:func:`failure_from`).
- A real interrupt still stops the process: Ctrl-C delivered to the main thread by
  Python's default SIGINT handler, flowrt's own :class:`Interrupted` (the CLI's second
  Ctrl-C), or the cancellation of the task running the step.
- A sync handler with ``timeout_ms`` runs in a thread of its own. Python cannot kill a
  thread, so on timeout the thread is *abandoned*: it runs on, its result ignored. The
  abandoned threads still running are bounded (:attr:`Executor.max_abandoned`); past the
  bound a timed node fails fast with ``HANDLER_THREADS_EXHAUSTED`` (retryable) instead
  of piling up threads, and ``/health`` says so. Handlers without a timeout never wait
  behind abandoned ones: those threads are not taken from any pool.
- An async handler that blocks its event loop (a ``time.sleep`` or a blocking client
  inside ``async def``) stalls every other run on that loop and cannot be timed out. A
  watchdog notices a loop that stops answering and logs the run, node and line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from .context import Context
from .definitions import Fail, Node, Ok, Result, Wait

log = logging.getLogger("flowrt.execution")

MAX_TRACEBACK_CHARS = 8000
"""A stored traceback is cut to this size, keeping its outermost and innermost frames."""

_FLOWRT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class Interrupted(BaseException):
    """Raised into a step to abandon it now (the CLI's second Ctrl-C).

    Never recorded as the node's failure: the lease is expired so that the attempt is
    recovered later as an interruption (``WORKER_LOST``), like a crash.
    """


class CtrlC(KeyboardInterrupt):
    """A real Ctrl-C, raised by a flowrt signal handler (the CLI's): an interruption wherever it
    lands, in a handler, a key function or an edge condition, never their failure."""


class _NodeTimeout(Exception):
    pass


# --------------------------------------------------------------------------- results


def as_result(value: Any) -> Result:
    if isinstance(value, (Ok, Wait, Fail)):
        return value
    return Ok(output=value)


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS, skip: tuple[str, ...] = ()) -> str:
    """The exception's traceback without flowrt's own frames (nor those under ``skip``
    folders), at most ``limit`` characters."""
    skip = (_FLOWRT_DIR, *skip)
    te = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    chain: list[traceback.TracebackException] = [te]
    while chain:
        item = chain.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        item.stack = traceback.StackSummary.from_list(
            [frame for frame in item.stack if not (frame.filename or "").startswith(skip)]
        )
        chain.extend(x for x in (item.__cause__, item.__context__) if x is not None)
    text = "".join(te.format())
    if len(text) > limit:
        head = limit // 4
        tail = limit - head - 60
        text = f"{text[:head]}\n  ... ({len(text) - head - tail} characters omitted) ...\n{text[-tail:]}"
    return text


def failure_from(exc: BaseException) -> Fail:
    """A raised exception as a failure: its ``code`` attribute or class name, its
    ``retryable`` attribute, and its traceback."""
    code = None if isinstance(exc, SystemExit) else getattr(exc, "code", None)  # SystemExit.code is its exit status
    code = code if isinstance(code, str) and code else type(exc).__name__
    retryable = getattr(exc, "retryable", None)
    message = str(exc) or type(exc).__name__
    return Fail(code, message, retryable if isinstance(retryable, bool) else None, format_traceback(exc))


def timeout_failure(node: Node) -> Fail:
    return Fail("TIMEOUT", f"node {node.id} exceeded its timeout of {node.timeout_ms} ms", True)


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` means "this process is being stopped" rather than "the handler failed"."""
    if isinstance(exc, (Interrupted, CtrlC)):
        return True
    return (
        isinstance(exc, KeyboardInterrupt)
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )


async def _awaited(awaitable: Any, timeout: float | None) -> Any:
    """Await with the node's timeout; only *our* deadline becomes a TIMEOUT failure, a
    TimeoutError the handler raises itself stays an ordinary exception."""
    if timeout is None:
        return await awaitable
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise _NodeTimeout from None
        raise


# --------------------------------------------------------------------------- executor


@dataclass(slots=True)
class _Abandoned:
    run_id: str
    node_id: str
    since: float


class Executor:
    """Calls handlers for the engine, from sync code (:meth:`call`) or an event loop (:meth:`acall`)."""

    def __init__(self, *, max_abandoned: int = 64, blocked_loop_warning: float = 1.0) -> None:
        self.max_abandoned = max_abandoned
        self._lock = threading.Lock()
        self._abandoned: dict[threading.Thread, _Abandoned] = {}
        self.abandoned_total = 0
        self.exhausted_total = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self.watchdog = LoopWatchdog(blocked_loop_warning)

    def status(self) -> dict[str, Any]:
        """For ``/health``: threads of timed-out handlers still running, and blocked loops."""
        with self._lock:
            alive = len(self._abandoned)
        return {
            "abandonedThreads": alive,
            "abandonedThreadsLimit": self.max_abandoned,
            "abandonedThreadsTotal": self.abandoned_total,
            "blockedEventLoops": self.watchdog.blocked(),
        }

    def close(self) -> None:
        self.watchdog.stop()
        if self._loop is not None:
            loop, thread = self._loop, self._loop_thread

            def cancel_then_stop() -> None:
                # An async handler still running (an abandoned step) is cancelled and given a
                # turn to finish, instead of being destroyed pending at exit ("Task was destroyed").
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.call_soon(loop.stop)

            with contextlib.suppress(RuntimeError):  # closed already
                loop.call_soon_threadsafe(cancel_then_stop)
            if thread is not None:
                thread.join(5)
            if not loop.is_running():
                loop.close()

    # -- entry points

    def call(self, node: Node, ctx: Context) -> Result:
        """Run the handler from a sync caller (the Python API, drivers, recovery)."""
        timeout = node.timeout_ms / 1000 if node.timeout_ms else None
        if node.is_async:
            future = asyncio.run_coroutine_threadsafe(self._call_async(node, ctx, timeout), self._background_loop())
            return future.result()
        if timeout is not None:
            return self._call_timed(node, ctx, timeout)
        return self._call_plain(node, ctx)

    async def acall(self, node: Node, ctx: Context) -> Result:
        """Run the handler from an event loop (the HTTP server); a sync one never blocks the loop."""
        timeout = node.timeout_ms / 1000 if node.timeout_ms else None
        if node.is_async:
            return await self._call_async(node, ctx, timeout)
        if timeout is not None:
            started = self._start_timed(node, ctx)
            if isinstance(started, Fail):
                return started
            thread, future = started
            waiter = asyncio.wrap_future(future)
            done, _ = await asyncio.wait([waiter], timeout=timeout)
            if waiter in done:
                return waiter.result()
            waiter.cancel()
            return self._abandon(thread, future, node, ctx)
        # A daemon thread of its own, not a pool's: pool threads are joined at interpreter exit,
        # so one stuck handler would keep a stopping server from exiting.
        plain: concurrent.futures.Future[Result] = concurrent.futures.Future()
        threading.Thread(
            target=self._plain_target, args=(node, ctx, plain), name=f"flowrt-handler-{node.id}", daemon=True
        ).start()
        return await asyncio.wrap_future(plain)

    def _plain_target(self, node: Node, ctx: Context, future: concurrent.futures.Future[Result]) -> None:
        result = self._call_plain_contained(node, ctx)
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # its request was cancelled
            future.set_result(result)

    # -- the ways of calling

    def _call_plain(self, node: Node, ctx: Context) -> Result:
        try:
            value = node.handler(ctx)
            if inspect.isawaitable(value):
                coro = self._finish_awaitable(value)
                return asyncio.run_coroutine_threadsafe(coro, self._background_loop()).result()
            return as_result(value)
        except BaseException as exc:  # noqa: BLE001 - whatever a handler raises is its failure
            if is_interrupt(exc):
                raise
            return failure_from(exc)

    async def _finish_awaitable(self, value: Any) -> Result:
        """A sync handler that returned an awaitable: await it, contained like an async handler."""
        try:
            return as_result(await value)
        except BaseException as exc:  # noqa: BLE001
            task = asyncio.current_task()
            if isinstance(exc, Interrupted) or (isinstance(exc, asyncio.CancelledError) and task and task.cancelling()):
                raise
            return failure_from(exc)

    async def _call_async(self, node: Node, ctx: Context, timeout: float | None) -> Result:
        self.watchdog.watch(asyncio.get_running_loop())
        try:
            value = await _awaited(node.handler(ctx), timeout)
            if inspect.isawaitable(value):
                value = await _awaited(value, timeout)
            return as_result(value)
        except _NodeTimeout:
            return timeout_failure(node)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our step is being cancelled (shutdown), not a handler's doing
            return failure_from(exc)
        except BaseException as exc:  # noqa: BLE001 - caught inside the task: it never reaches the loop
            if isinstance(exc, Interrupted):
                raise
            return failure_from(exc)

    def _call_timed(self, node: Node, ctx: Context, timeout: float) -> Result:
        started = self._start_timed(node, ctx)
        if isinstance(started, Fail):
            return started
        thread, future = started
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            return self._abandon(thread, future, node, ctx)

    def _start_timed(
        self, node: Node, ctx: Context
    ) -> Fail | tuple[threading.Thread, concurrent.futures.Future[Result]]:
        """A fresh thread for a handler we may have to walk away from (never a pooled one,
        so a hung handler holds up nobody else)."""
        with self._lock:
            alive = len(self._abandoned)
            if alive >= self.max_abandoned:
                self.exhausted_total += 1
                message = (
                    f"{alive} handler threads that timed out are still running (limit {self.max_abandoned}); "
                    f"node {node.id} was not started"
                )
                log.error("run %s: %s", ctx.run_id, message)
                return Fail("HANDLER_THREADS_EXHAUSTED", message, True)
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._timed_target, args=(node, ctx, future), name=f"flowrt-node-{node.id}", daemon=True
        )
        thread.start()
        return thread, future

    def _timed_target(self, node: Node, ctx: Context, future: concurrent.futures.Future[Result]) -> None:
        started = time.monotonic()
        result = self._call_plain_contained(node, ctx)
        with self._lock:  # the same lock as _abandon: a thread is abandoned, or it finished, never both
            abandoned = self._abandoned.pop(threading.current_thread(), None)
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_result(result)
        if abandoned is not None:
            log.info(
                "run %s: the abandoned handler of node %s returned after %.1fs; its result was ignored",
                ctx.run_id, node.id, time.monotonic() - started,
            )  # fmt: skip

    def _call_plain_contained(self, node: Node, ctx: Context) -> Result:
        try:
            return self._call_plain(node, ctx)
        except BaseException as exc:  # noqa: BLE001 - not the main thread: never a real interrupt
            return failure_from(exc)

    def _abandon(
        self, thread: threading.Thread, future: concurrent.futures.Future[Result], node: Node, ctx: Context
    ) -> Result:
        with self._lock:
            if future.done():  # it finished just now after all
                return future.result()
            future.cancel()
            self._abandoned[thread] = _Abandoned(ctx.run_id, node.id, time.monotonic())
            self.abandoned_total += 1
            alive = len(self._abandoned)
        log.warning(
            "run %s: node %s exceeded its timeout of %d ms; its thread is abandoned and keeps running "
            "(%d abandoned thread(s) alive, limit %d)",
            ctx.run_id, node.id, node.timeout_ms, alive, self.max_abandoned,
        )  # fmt: skip
        return timeout_failure(node)

    # -- threads and loops

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop in a thread of its own, for async handlers called from sync code."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=loop.run_forever, name="flowrt-async-nodes", daemon=True)
                self._loop_thread.start()
                self._loop = loop
            return self._loop


# --------------------------------------------------------------------------- watchdog


@dataclass(slots=True)
class _Beat:
    thread_id: int
    sent: float | None = None
    reported: float | None = None  # how long it was blocked when we logged it


class LoopWatchdog:
    """Notices an event loop that stops answering and says which handler holds it.

    A thread sends each watched loop a no-op callback; a loop that has not run it within
    ``threshold`` seconds is blocked. The loop thread's stack then shows the handler
    (the ``ctx`` of :meth:`Executor._call_async`) and the line it is stuck on.
    """

    def __init__(self, threshold: float = 1.0, interval: float = 0.25) -> None:
        self.threshold = threshold
        self.interval = interval
        self._loops: dict[asyncio.AbstractEventLoop, _Beat] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the loop's own thread (cheap after the first time)."""
        if loop in self._loops or self.threshold <= 0:
            return
        with self._lock:
            self._loops[loop] = _Beat(threading.get_ident())
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flowrt-loop-watchdog", daemon=True)
                self._thread.start()

    def blocked(self) -> int:
        return sum(1 for beat in list(self._loops.values()) if beat.reported is not None)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for loop, beat in list(self._loops.items()):
                if loop.is_closed():
                    self._loops.pop(loop, None)
                    continue
                now = time.monotonic()
                if beat.sent is None:
                    beat.sent = now
                    try:
                        loop.call_soon_threadsafe(self._ack, beat)
                    except RuntimeError:  # closed meanwhile
                        self._loops.pop(loop, None)
                elif beat.reported is None and now - beat.sent > self.threshold:
                    beat.reported = now - beat.sent
                    self._report(beat)

    def _ack(self, beat: _Beat) -> None:
        if beat.reported is not None and beat.sent is not None:
            log.warning("event loop answers again after %.1fs", time.monotonic() - beat.sent)
        beat.sent, beat.reported = None, None

    def _report(self, beat: _Beat) -> None:
        frame = sys._current_frames().get(beat.thread_id)
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
        ctx: Any = None
        while frame is not None:
            if frame.f_code is _CALL_ASYNC_CODE:
                ctx = frame.f_locals.get("ctx")
                break
            frame = frame.f_back
        seconds = beat.reported or 0.0
        if isinstance(ctx, Context):
            log.warning(
                "run %s: async handler of node %s has blocked the event loop for %.1fs (at %s). Every run on this "
                "loop waits meanwhile and timeout_ms cannot stop it: make the handler sync, or move the blocking "
                "call off the loop (await asyncio.to_thread(...))",
                ctx.run_id, ctx.node_id, seconds, where,
            )  # fmt: skip
        else:
            log.warning("event loop blocked for %.1fs (at %s)", seconds, where)


_CALL_ASYNC_CODE = Executor._call_async.__code__
