"""Times for people: UTC by default (unambiguous in logs and tickets), local with --local-time.

The API's times are ISO-8601 UTC strings (``2026-05-01T12:00:01.234Z``); ``--json`` keeps them.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def span(start: str | None, end: str | None) -> int | None:
    """Milliseconds from ``start`` to ``end``; None if either is missing."""
    a, b = parse(start), parse(end)
    if a is None or b is None:
        return None
    return max(0, round((b - a).total_seconds() * 1000))


class Clock:
    """Formats the API's times in UTC or in this machine's zone."""

    def __init__(self, *, local: bool = False, now: datetime | None = None) -> None:
        self.local = local
        self._now = now

    def _zone(self, moment: datetime) -> datetime:
        return moment.astimezone() if self.local else moment.astimezone(UTC)

    def _suffix(self, moment: datetime) -> str:
        if not self.local:
            return "Z"
        offset = moment.utcoffset()
        minutes = int(offset.total_seconds() // 60) if offset is not None else 0
        sign = "+" if minutes >= 0 else "-"
        return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

    def full(self, value: str | None) -> str:
        """``2026-05-01 12:00:01Z`` (or ``2026-05-01 14:00:01+02:00`` locally)."""
        moment = parse(value)
        if moment is None:
            return "—" if not value else value
        moment = self._zone(moment)
        return moment.strftime("%Y-%m-%d %H:%M:%S") + self._suffix(moment)

    def compact(self, value: str | None) -> str:
        """``12:00:01`` today, else ``05-01 12:00``: a run list at 80 columns."""
        moment = parse(value)
        if moment is None:
            return "—"
        moment = self._zone(moment)
        today = self._zone(self._now or datetime.now(UTC)).date()
        return moment.strftime("%H:%M:%S" if moment.date() == today else "%m-%d %H:%M")

    def time_of_day(self, value: str | None) -> str:
        """``12:00:01.234`` for a timeline row (the date goes on a line of its own)."""
        moment = parse(value)
        if moment is None:
            return ""
        moment = self._zone(moment)
        return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"

    def day(self, value: str | None) -> str:
        moment = parse(value)
        return "" if moment is None else self._zone(moment).strftime("%Y-%m-%d")
