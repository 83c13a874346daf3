"""A run's timeline for people: one row per event with how long each node took, the detail
of one event (with a failure's traceback), and a bar view of where the run spent its time.

Events are the API's JSON; the reference runtime's have no ``seq``, so a position stands
in for it (``first_seq`` + index), the same number ``--after`` and ``--seq`` use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .backends import Json
from .clock import Clock, parse, span
from .layout import MIN_TEXT_COLUMN, traceback_section

EVENT_STYLES = {
    "RUN_STARTED": "cyan",
    "NODE_STARTED": "dim",
    "NODE_FINISHED": "green",
    "NODE_FAILED": "red",
    "RUN_WAITING": "yellow",
    "RUN_RESUMED": "cyan",
    "RUN_COMPLETED": "bold green",
    "RUN_ABORTED": "bold red",
    "RUN_CANCELLED": "bold magenta",
    "RUN_RETRIED": "bold cyan",
    "RUN_REWOUND": "bold cyan",
}
SHORT = 100  # characters of a payload described in a row
NODE_WIDTH = 16
#: seq, time, event, node, attempt, took: the fixed part of a row, with two spaces between.
FIXED = 4 + 12 + 13 + NODE_WIDTH + 3 + 7 + 2 * 6


def duration(ms: int | None) -> str:
    """``850ms``, ``1.2s``, ``3m12s``, ``2h05m``, ``3d04h``; empty when unknown."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


@dataclass
class StreamState:
    """What a row needs from earlier events: when each node attempt started, the last wait, the day."""

    next_seq: int = 1
    started: dict[tuple[Any, Any], str] = field(default_factory=dict)
    waiting_since: str | None = None
    day: str | None = None

    def took(self, event: Json) -> int | None:
        """How long this event's node attempt (or, for RUN_RESUMED, the wait) took."""
        kind, at = event["type"], event.get("at")
        key = (event.get("nodeId"), event.get("attempt"))
        if kind == "NODE_STARTED":
            self.started[key] = at or ""
        elif kind in ("NODE_FINISHED", "NODE_FAILED"):
            return span(self.started.pop(key, None), at)
        elif kind == "RUN_WAITING":
            self.waiting_since = at
        elif kind == "RUN_RESUMED":
            waited, self.waiting_since = span(self.waiting_since, at), None
            return waited
        return None


def describe_payload(kind: str, payload: Json, seq: int | None = None) -> str:
    """What an event's payload means, in a few words; ``seq`` (in a list) points to the detail view."""
    if kind == "NODE_FINISHED":
        return "cached result (idempotency key)" if payload.get("cached") else ""
    if kind in ("NODE_FAILED", "RUN_ABORTED"):
        error = payload.get("error") or {}
        text = f"{error.get('code')}: {error.get('message')}"
        if "retryInMs" in payload:
            text += f" · retry in {payload['retryInMs']} ms"
        elif payload.get("notRetried"):
            text += f" · not retried: {payload['notRetried']}"
        if error.get("traceback") and seq is not None and kind == "NODE_FAILED":
            text += f" · traceback: --seq {seq}"
        return _cut(text)
    if kind == "RUN_WAITING":
        text = payload.get("reason") or "waiting"
        return _cut(text + (f" · until {payload['until']}" if payload.get("until") else ""))
    if kind == "RUN_RESUMED":
        return _cut(f"by {payload.get('by')} · payload {_short(payload.get('payload'), 60)}")
    if kind == "RUN_CANCELLED":
        by = f"by {payload['by']}" if payload.get("by") else ""
        return _cut(" · ".join(p for p in (by, payload.get("reason") or "") if p))
    if kind == "RUN_RETRIED":
        return _cut(f"by {payload.get('by')} · from {payload.get('fromNode')}")
    if kind == "RUN_REWOUND":
        return _cut(f"by {payload.get('by')} · to {payload.get('toNode')} as before seq {payload.get('seq')}")
    if kind == "NODE_STARTED":
        return ""  # nodeId and attempt are in their columns already
    rest = {k: v for k, v in payload.items() if k not in ("nodeId", "attempt")}
    return "" if not rest else _short(rest, 80)


def _short(value: Any, limit: int) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut(text: str, limit: int = SHORT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _style(event: Json) -> str:
    kind = event["type"]
    if kind == "NODE_FAILED" and "retryInMs" in (event.get("payloadJson") or {}):
        return "yellow"  # a failure that will be retried is a warning, not the end
    return EVENT_STYLES.get(kind, "")


def _grid(with_details: bool) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(justify="right", no_wrap=True, min_width=4, style="dim")
    grid.add_column(no_wrap=True, min_width=12)
    grid.add_column(no_wrap=True, min_width=13)
    grid.add_column(no_wrap=True, min_width=NODE_WIDTH, max_width=NODE_WIDTH, overflow="ellipsis")
    grid.add_column(no_wrap=True, min_width=3)
    grid.add_column(no_wrap=True, min_width=7, justify="right", style="cyan")
    if with_details:
        grid.add_column(overflow="fold")  # long details wrap inside their own column
    return grid


def _cells(event: Json, seq: int, took: int | None, clock: Clock) -> list[RenderableType]:
    attempt = event.get("attempt")
    return [
        str(event.get("seq", seq)),
        clock.time_of_day(event.get("at")),
        Text(event["type"], style=_style(event)),
        Text(event.get("nodeId") or "", no_wrap=True, overflow="ellipsis"),
        f"#{attempt}" if attempt else "",
        duration(took),
    ]


def stream_row(event: Json, state: StreamState, width: int, clock: Clock) -> RenderableType:
    """One event (``--follow`` prints them as they come); a date line first when the day changes."""
    seq = state.next_seq
    state.next_seq = int(event.get("seq", seq)) + 1
    took = state.took(event)
    details = describe_payload(event["type"], event.get("payloadJson") or {}, seq)
    wide = width - FIXED >= MIN_TEXT_COLUMN
    grid = _grid(wide)
    cells = _cells(event, seq, took, clock)
    grid.add_row(*(cells + [details] if wide else cells))
    parts: list[RenderableType] = []
    day = clock.day(event.get("at"))
    if day and day != state.day:
        parts.append(Text(f"── {day} ──", style="dim"))
        state.day = day
    parts.append(grid)
    if details and not wide:
        parts.append(Padding(Text(details), (0, 0, 0, 6)))  # under the row, wrapping at the edge
    return Group(*parts)


def rows(events: list[Json], width: int, clock: Clock, *, first_seq: int = 1) -> RenderableType:
    state = StreamState(first_seq)
    return Group(*[stream_row(event, state, width, clock) for event in events])


def detail(event: Json, seq: int, clock: Clock) -> RenderableType:
    """``timeline --seq N``: everything one event says, the payload in full, and the traceback."""
    payload = event.get("payloadJson") or {}
    title = Text.assemble(
        ("event ", "dim"), (str(event.get("seq", seq)), "bold"), "  ", (event["type"], _style(event)),
        f"  {event.get('nodeId') or ''}", f" #{event['attempt']}" if event.get("attempt") else "",
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("at", clock.full(event.get("at")) + f"  ({clock.time_of_day(event.get('at'))})")
    if event.get("runId"):
        grid.add_row("run", event["runId"])
    summary = describe_payload(event["type"], payload)
    if summary:
        grid.add_row("what", summary)
    parts: list[RenderableType] = [title, grid, Text("payload", style="dim"),
                                   Padding(Text(json.dumps(_without_traceback(payload), indent=2, ensure_ascii=False, default=str), overflow="fold"), (0, 0, 0, 2))]
    error = payload.get("error")
    trace = error.get("traceback") if isinstance(error, dict) else None
    if isinstance(trace, str) and trace.strip():
        parts.append(traceback_section(trace))
    return Group(*parts)


def _without_traceback(payload: Json) -> Json:
    """The payload as JSON, the traceback shown below as text instead of one escaped string."""
    error = payload.get("error")
    if isinstance(error, dict) and "traceback" in error:
        return {**payload, "error": {**error, "traceback": "(below)"}}
    return payload


# --------------------------------------------------------------------------- where the time went


def spans(events: list[Json]) -> list[Json]:
    """Node attempts and waits as ``{kind, nodeId, attempt, startAt, endAt, ms, outcome}``.

    A span still open at the last event (a node running, a run waiting) ends there,
    with outcome ``running`` / ``waiting``.
    """
    out: list[Json] = []
    open_nodes: dict[tuple[Any, Any], Json] = {}
    open_wait: Json | None = None
    last = events[-1].get("at") if events else None
    for event in events:
        kind, at = event["type"], event.get("at")
        key = (event.get("nodeId"), event.get("attempt"))
        if kind == "NODE_STARTED":
            item = {"kind": "node", "nodeId": key[0], "attempt": key[1], "startAt": at, "endAt": None, "outcome": "running"}
            open_nodes[key] = item
            out.append(item)
        elif kind in ("NODE_FINISHED", "NODE_FAILED") and key in open_nodes:
            item = open_nodes.pop(key)
            item["endAt"], item["outcome"] = at, "finished" if kind == "NODE_FINISHED" else "failed"
        elif kind == "RUN_WAITING":
            open_wait = {"kind": "wait", "nodeId": event.get("nodeId"), "attempt": None, "startAt": at, "endAt": None, "outcome": "waiting"}
            out.append(open_wait)
        elif kind in ("RUN_RESUMED", "RUN_CANCELLED") and open_wait is not None:
            open_wait["endAt"], open_wait["outcome"] = at, "resumed" if kind == "RUN_RESUMED" else "cancelled"
            open_wait = None
    for item in out:
        item["ms"] = span(item["startAt"], item["endAt"] or last)
    return out


BAR_STYLES = {"finished": "green", "failed": "red", "running": "blue", "waiting": "yellow", "resumed": "yellow", "cancelled": "magenta"}


def bars(run: Json, items: list[Json], width: int) -> RenderableType:
    """One line per node attempt and wait: label, duration, and a bar placed on the run's time axis."""
    title = Text.assemble(("run ", "dim"), (run["runId"], "bold"), "  ", str(run.get("status") or ""))
    starts = [parse(i["startAt"]) for i in items if i["startAt"]]
    if not items or not starts:
        return Group(title, Text("no node has run yet", style="dim"))
    t0 = min(s for s in starts if s is not None)
    origin = t0.isoformat()
    total = max(1, max((span(origin, i["startAt"]) or 0) + (i["ms"] or 0) for i in items))
    label_width = min(24, max(len(_label(i)) for i in items))
    axis = max(10, width - label_width - 8 - 4)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, min_width=label_width, max_width=label_width, overflow="ellipsis")
    grid.add_column(no_wrap=True, justify="right", min_width=6, style="cyan")
    grid.add_column(no_wrap=True)
    for item in items:
        offset = span(origin, item["startAt"]) or 0
        ms = item["ms"] or 0
        left = min(axis - 1, int(offset / total * axis))
        length = max(1, min(axis - left, round(ms / total * axis)))
        glyph = "░" if item["kind"] == "wait" else "█"
        bar = Text(" " * left) + Text(glyph * length, style=BAR_STYLES.get(item["outcome"], ""))
        grid.add_row(Text(_label(item), no_wrap=True, overflow="ellipsis"), duration(item["ms"]), bar)
    busy = sum(i["ms"] or 0 for i in items if i["kind"] == "node")
    waited = sum(i["ms"] or 0 for i in items if i["kind"] == "wait")
    summary = Text(f"{duration(total)} from the first node to the last event · nodes {duration(busy)} · waiting {duration(waited)}", style="dim")
    return Group(title, grid, summary)


def _label(item: Json) -> str:
    if item["kind"] == "wait":
        return f"(wait) {item['nodeId'] or ''}".rstrip()
    return f"{item['nodeId']} #{item['attempt']}" if item.get("attempt") else str(item["nodeId"])
