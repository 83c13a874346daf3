"""Busy polling after an answer, so that a client calling in a loop is read at once.

Why: a client that makes one call after another (a script ticking a run, a service calling
in sequence, the reference's benchmark at concurrency 1) sends its next request a short
while after each answer, typically 100-300 µs. In that while the event loop has nothing to
do, so it blocks in ``epoll_wait`` and the process sleeps; the request then has to wake it.
On virtual machines whose idle vCPUs halt at once (Firecracker, KVM guests without halt
polling: this machine's ``/sys/module/haltpoll/parameters/guest_halt_poll_ns`` is 0) that
wake-up is a VM exit and an interrupt, and it costs more than the request's own work:
side by side with the reference at concurrency 1, flowrt went from 0.80× to 1.04× its requests/s
(medians of six rounds in one run; docs/performance.md, "Busy polling after an answer").

So after each answer the loop keeps polling without sleeping for a short window (the loop
runs a callback that schedules itself again; with a ready callback, the loop's poll has a
timeout of 0) and stops as soon as bytes arrive or the window ends. How long the window is
follows the rule of the Linux guest "haltpoll" cpuidle governor, which does the same for
a whole guest:

- the window starts at 0 (no polling);
- when the next request came after the window but within the limit (``--busy-poll``), a
  longer window would have caught it: the window doubles (from :data:`GROW_START`), up to
  the limit;
- when it came after the limit, polling was wasted: the window halves, and under
  :data:`GROW_START` it is 0 again.

So a server whose requests come far apart (or not at all) does not poll; one answering a
client in a loop polls just long enough; one that is busy never runs out of work to poll
for. The price is CPU while a window is open (at concurrency 1 the server's process went from
~65% to ~90% of a core), and the GIL: the loop's thread holds it between polls, so the
process's other threads may wait for it until the window ends (hence :data:`MAX_LIMIT_US`).
``--busy-poll 0`` turns it off.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Callable

DEFAULT_LIMIT_US = 300
"""The longest window (µs): a little over what a Python client takes between two calls here."""

MAX_LIMIT_US = 1_000
"""The largest limit ``--busy-poll`` takes. A window holds the loop's thread busy; other threads
of the process (drivers, database threads, sync handlers) that want the GIL meanwhile may wait
until it ends, so it stays well under the interpreter's 5 ms switch interval."""

GROW_START = 25e-6
"""The first window, in seconds (or the limit, if that is shorter); a window halved below it shuts."""


class BusyPoll:
    """The busy-poll window of one server: told when an answer is complete and when bytes
    arrive (by :class:`flowrt.server.connections.BusyPolling`), it keeps the loop awake."""

    def __init__(self, limit_us: float = DEFAULT_LIMIT_US, clock: Callable[[], float] = monotonic) -> None:
        self.limit = limit_us / 1e6
        self.clock = clock
        self.window = 0.0
        """The current window (seconds): how long the loop polls after the next answer."""
        self._answered_at: float | None = None  # the last answer, until bytes arrive after it
        self._until = 0.0  # the open window's end; 0 once bytes arrived
        self._polling_on: asyncio.AbstractEventLoop | None = None  # the loop the polling callback is scheduled on
        self.polls = 0
        """Loop turns spent polling (for tests and benchmarks)."""

    def answered(self, loop: asyncio.AbstractEventLoop) -> None:
        """An answer was written: open the window."""
        now = self.clock()
        self._answered_at = now
        if not self.window:
            return
        self._until = now + self.window
        if self._polling_on is not loop:  # (a loop closed with the callback scheduled is not this one)
            self._polling_on = loop
            loop.call_soon(self._poll, loop)

    def arrived(self) -> None:
        """Bytes arrived on a connection: close the window, and size the next from how long they took."""
        answered_at = self._answered_at
        if answered_at is None:
            return  # no answer since the last arrival: it says nothing about the window
        self._answered_at = None
        self._until = 0.0
        gap = self.clock() - answered_at
        if gap <= self.window:
            return  # caught
        if gap <= self.limit:
            self.window = min(self.limit, max(GROW_START, self.window * 2))
        else:
            half = self.window / 2
            self.window = half if half >= GROW_START else 0.0

    def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        self.polls += 1
        if self.clock() < self._until:
            loop.call_soon(self._poll, loop)
        else:
            self._polling_on = None

    @property
    def polling(self) -> bool:
        """A window is open and the loop is being kept awake."""
        return self._polling_on is not None
