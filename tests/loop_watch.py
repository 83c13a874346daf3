"""A heartbeat on the running event loop: how long the loop was ever held by something."""

from __future__ import annotations

import asyncio
import time


class Heartbeat:
    """Beats every 10 ms on the running loop from :meth:`start`; :meth:`stop` returns the
    longest gap between two beats, i.e. the longest the loop could not run anything else."""

    def __init__(self) -> None:
        self.beats: list[float] = []
        self._task: asyncio.Future[None] | None = None

    def start(self) -> Heartbeat:
        self._task = asyncio.ensure_future(self._beat())
        return self

    async def _beat(self) -> None:
        while True:
            self.beats.append(time.monotonic())
            await asyncio.sleep(0.01)

    def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        gaps = [b - a for a, b in zip(self.beats, self.beats[1:])]
        return max(gaps, default=99.0)
