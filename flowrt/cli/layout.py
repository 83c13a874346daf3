"""Fitting text to the terminal: tables that choose a layout, and long texts on lines of their own."""

from __future__ import annotations

from typing import Callable, Iterable

from rich import box
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

#: Narrower than this, a table's long text column moves under its row.
MIN_TEXT_COLUMN = 30


def table() -> Table:
    """The look of every list: a header rule, two spaces between columns, no borders."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)


def natural_width(console: Console, renderable: RenderableType) -> int:
    """The width it would take unsqueezed (rich clamps a measurement to the console's width)."""
    return Measurement.get(console, console.options.update(width=10_000), renderable).maximum


def fit(console: Console, layouts: Iterable[Callable[[], Table]]) -> Table:
    """The first layout whose natural width fits the console; else the last (which rich squeezes)."""
    chosen: Table | None = None
    for build in layouts:
        chosen = build()
        if natural_width(console, chosen) <= console.width:
            return chosen
    assert chosen is not None, "fit() needs at least one layout"
    return chosen


def with_lines_under(console: Console, rows: Table, texts: list[str], indent: int = 4) -> RenderableType:
    """``rows`` (one line each) with each row's text on an indented line of its own, wrapping
    at the terminal's width instead of in a column too narrow to read."""
    lines = console.render_lines(rows, console.options, pad=False)
    header = len(lines) - len(texts)
    if header < 0:
        return rows
    parts: list[RenderableType] = [Segments([*line, Segment.line()]) for line in lines[:header]]
    for line, text in zip(lines[header:], texts, strict=True):
        parts.append(Segments([*line, Segment.line()]))
        if text:
            parts.append(Padding(Text(text, style="dim"), (0, 0, 0, indent)))
    return Group(*parts)


def traceback_section(trace: str) -> RenderableType:
    """A handler's traceback under a heading, indented; lines fold at the terminal's edge."""
    body = Text(trace.rstrip("\n"), style="red", overflow="fold")
    return Group(Text("traceback", style="dim"), Padding(body, (0, 0, 0, 2)))
