"""What an HTTP client and the server log each see of a database outage.

:class:`~flowrt.errors.StorageUnavailable` carries the operator's details: the
database URL (user, host, port, name; the password is already masked) and the
driver's own words. Those help whoever runs the server and help an attacker map the
network, so a client gets a fixed ``503 STORAGE_UNAVAILABLE`` message and the details
go to the server log. During an outage every request fails the same way, so the log
gets the first failure at once and then one line per :data:`LOG_INTERVAL` while it
lasts, with the count of requests answered 503 meanwhile; the count left when it ends is
logged with the next episode's first line, or at shutdown.

The answer itself is :meth:`.answers.ErrorAnswers.storage_unavailable`, one per app
(for Litestar's handlers and the fast path alike), so both count into one log.

The CLI in local mode shows the full message: there the operator is the client.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..errors import StorageUnavailable

log = logging.getLogger("flowrt.server")

LOG_INTERVAL = 60.0
"""Seconds between two log lines about requests failing on one ongoing outage."""

CLIENT_MESSAGE = StorageUnavailable.public_message


class OutageLog:
    """Rate-limited logging of storage errors met by requests.

    An outage *episode* starts with the first failure after at least ``interval``
    seconds without one; its first failure is logged in full at once. Later failures
    are counted and logged (with the count and the latest message) at most once per
    ``interval``, so a retrying fleet of clients cannot flood the log.
    """

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_failure: float | None = None
        self._last_logged = 0.0
        self._suppressed = 0

    def failed(self, method: str, path: str, message: str) -> None:
        now = self._clock()
        with self._lock:
            new_episode = self._last_failure is None or now - self._last_failure >= self.interval
            self._last_failure = now
            if new_episode:
                ended, self._last_logged, self._suppressed = self._suppressed, now, 0
                if ended:  # the last episode's tail, never logged: it ended before the next line was due
                    log.error("storage was unavailable: %d more request(s) answered 503 before it came back", ended)
                log.error("storage unavailable (%s %s answered 503): %s", method, path, message)
                return
            if now - self._last_logged < self.interval:
                self._suppressed += 1
                return
            count, self._suppressed, self._last_logged = self._suppressed + 1, 0, now
        log.error("storage still unavailable: %d more request(s) answered 503; latest: %s", count, message)

    def flush(self) -> None:
        """Log the 503s counted since the last line, if any (at shutdown: they would be lost)."""
        with self._lock:
            count, self._suppressed = self._suppressed, 0
        if count:
            log.error("storage was unavailable: %d more request(s) answered 503 before it came back", count)
