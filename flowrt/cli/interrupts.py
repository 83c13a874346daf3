"""Ctrl-C during a local ``--wait``: the step in hand finishes, and no run is ever failed by it.

The engine runs handlers in this process, so a plain ``KeyboardInterrupt`` would land inside
user code. Instead, while a local command drives a run:

- the first Ctrl-C says which node is running and lets it finish; its step commits, the run is
  handed back RUNNING, and the command says how to continue it (exit 130);
- a second Ctrl-C abandons the step (:class:`~flowrt.execution.Interrupted`): its lease is
  expired, so whoever continues the run next recovers that attempt (``WORKER_LOST``, not a
  failure) at once;
- a Ctrl-C while no handler runs (sleeping through a backoff, watching a run another process
  holds) stops at once: there is nothing to wait for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..execution import CtrlC, Interrupted
from .errors import Stopped

if TYPE_CHECKING:
    from ..engine import Engine


@contextlib.contextmanager
def finish_step_on_ctrl_c(engine: Engine, run_id: str) -> Iterator[Callable[[], bool]]:
    """Yields ``stopping()``: True once Ctrl-C was pressed (pass it as ``should_stop``).

    Raises :class:`Stopped` out of the block when Ctrl-C ended it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed: dict[str, Any] = {"count": 0, "node": None}

    def on_sigint(sig: int, frame: FrameType | None) -> None:
        pressed["count"] += 1
        if pressed["count"] > 1:
            raise Interrupted
        running = engine.leases.in_flight(blocking=False)
        if not running:
            raise CtrlC  # nothing to wait for; wherever it lands (a key function too) it is a stop
        pressed["node"] = running[0].node_id
        # os.write, not print: a signal handler may interrupt a print in progress.
        os.write(2, (
            f"\nCtrl-C: waiting for node {running[0].node_id} of run {run_id} to finish "
            "(Ctrl-C again abandons it; it is then recovered, not failed, when the run is continued)\n"
        ).encode())  # fmt: skip

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            yield lambda: pressed["count"] > 0
        except Interrupted:
            raise Stopped(run_id, pressed["node"], abandoned=True) from None
        except KeyboardInterrupt:
            raise Stopped(run_id, None, abandoned=False) from None
    finally:
        signal.signal(signal.SIGINT, previous)
