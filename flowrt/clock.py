"""Where the engine and storage read the time and sleep: one seam, so tests can run a flow's
timers and backoffs on a virtual clock instead of waiting (``flowrt.testing``).

Leases and timers are compared across processes, so a real deployment always uses
:data:`SYSTEM_CLOCK` (wall-clock epoch milliseconds).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Epoch milliseconds."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling coroutine for ``seconds``."""


class SystemClock:
    """The real time."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
