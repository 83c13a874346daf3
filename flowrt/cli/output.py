"""What the CLI prints: the API's JSON for scripts, tables that fit the terminal for people.

Every renderer takes the HTTP API's JSON documents, so local and remote commands
print the same thing. Colour, spinners, progress bars and in-place refreshes appear
only when stdout is a terminal (rich decides, and honours ``NO_COLOR``); piped output
is plain text. Tables pick the widest layout that fits (:func:`fit`): at 80 columns a
run list keeps the run id, flow, status and the latest time on one line and drops the
rest; long texts wrap inside their own column or move to a line of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..runs import FINISHED
from . import timeline_view
from .backends import Json, OnProgress
from .clock import Clock, span
from .layout import MIN_TEXT_COLUMN, fit, natural_width, table, traceback_section, with_lines_under

STATUS_STYLES = {
    "RUNNING": "bold blue",
    "WAITING": "bold yellow",
    "COMPLETED": "bold green",
    "FAILED": "bold red",
    "CANCELLED": "bold magenta",
}
DETAIL = 400  # characters of a JSON value shown in a run's own view; --json has it all


def short_json(value: Any, limit: int = DETAIL) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _stdout_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped output has no width; don't wrap run ids into a too-narrow default.
        console.width = 200
    return console


class Output:
    """Prints one command's result, as JSON (``--json``) or for people."""

    def __init__(self, as_json: bool, *, local_time: bool = False) -> None:
        self.as_json = as_json
        self.console = _stdout_console()
        self.clock = Clock(local=local_time)

    # -- plumbing

    def print(self, renderable: Any) -> None:
        """Print for people; piped output loses rich's trailing padding, for grep and diff."""
        if self.console.is_terminal:
            self.console.print(renderable)
            return
        with self.console.capture() as captured:
            self.console.print(renderable)
        lines = captured.get().splitlines()
        sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))
        sys.stdout.flush()

    def json(self, doc: Any, *, compact: bool = False) -> None:
        """Exactly the API's document, one per command (one per line when streaming)."""
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) if compact else json.dumps(
            doc, ensure_ascii=False, indent=2
        )
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """A hint for people; never part of JSON output."""
        if not self.as_json:
            self.print(Text(message, style="dim"))

    @contextlib.contextmanager
    def progress(self, description: str) -> Iterator[OnProgress]:
        """A progress bar on a terminal, else nothing; yields ``update(done, total)``."""
        if self.as_json or not self.console.is_terminal:
            yield lambda done, total: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # Driver threads report progress; rich's Progress is thread-safe.
        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True,
        )
        with bar:
            task = bar.add_task(description, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    # -- runs

    def started(self, doc: Json) -> None:
        """``{runId, status, replayed}`` from ``start`` without ``--wait``; replayed: the
        idempotency key found an earlier start, so nothing was started now."""
        if self.as_json:
            return self.json(doc)
        if doc.get("replayed"):
            head = Text.assemble("Run ", (doc["runId"], "bold"), " was started earlier with this idempotency key")
        else:
            head = Text.assemble("Started run ", (doc["runId"], "bold"))
        self.print(Text.assemble(head, "  ", status_text(doc["status"])))

    def run(self, run: Json) -> None:
        if self.as_json:
            return self.json(run)
        self.print(self.run_renderable(run))

    def run_renderable(self, run: Json) -> RenderableType:
        """Title line, then a label/value grid; a failure's traceback gets a section of its own."""
        title = Text.assemble(
            ("run ", "dim"), (run["runId"], "bold"), "  ", f"{run.get('flowId')}@{run.get('flowVersion')}", "  ",
            status_text(run.get("status") or "?"),
        )
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        if run.get("currentNodeId"):
            grid.add_row("node", run["currentNodeId"])
        if run.get("tenantId"):
            grid.add_row("tenant", run["tenantId"])
        if run.get("status") == "RUNNING" and run.get("wakeAt"):  # parked in a retry backoff: say until when
            retry = f"{run.get('currentNodeId')} at {self.clock.full(run['wakeAt'])}, after a failed attempt"
            grid.add_row("retrying", retry + " (flowrt timeline shows it)")
        if run.get("status") == "WAITING":
            waiting = run.get("waitReason") or "(no reason given)"
            until = run.get("waitUntil") or run.get("wakeAt")
            grid.add_row("waiting", waiting + (f", until {until}" if until else ""))
        error = run.get("error")
        if isinstance(error, dict) and error:
            grid.add_row("error", Text(f"{error.get('code')}: {error.get('message')}", style="red"))
            if error.get("notRetried"):
                grid.add_row("not retried", str(error["notRetried"]))
        grid.add_row("input", short_json(run.get("inputJson")))
        grid.add_row("state", short_json(run.get("stateJson")))
        outputs = run.get("outputsJson") or {}
        if outputs:
            nested = Table.grid(padding=(0, 2))
            nested.add_column(style="bold", no_wrap=True)
            nested.add_column(overflow="fold")
            for node, output in outputs.items():
                nested.add_row(node, short_json(output))
            grid.add_row("outputs", nested)
        attempts = run.get("attempts") or {}
        if attempts:
            grid.add_row("attempts", ", ".join(f"{node} ×{n}" for node, n in attempts.items()))
        grid.add_row("created", self.clock.full(run.get("createdAt")))
        grid.add_row("updated", self.clock.full(run.get("updatedAt")))
        # How long the run took, once it has ended: before, created-to-updated is only how far
        # it got (a run waiting for a person would read as "took 3ms").
        took = span(run.get("createdAt"), run.get("updatedAt")) if run.get("status") in FINISHED else None
        if took is not None:
            grid.add_row("took", timeline_view.duration(took))
        parts: list[RenderableType] = [title, grid]
        trace = error.get("traceback") if isinstance(error, dict) else None
        if isinstance(trace, str) and trace.strip():
            parts.append(traceback_section(trace))
        return Group(*parts)

    def runs(self, page: Json) -> None:
        if self.as_json:
            return self.json(page)
        self.print(self.runs_renderable(page))

    def runs_renderable(self, page: Json) -> RenderableType:
        runs = page["runs"]
        parts: list[RenderableType] = []
        parts.append(self.runs_table(runs) if runs else Text("no runs", style="dim"))
        if page.get("nextCursor"):
            parts.append(Text(f"more runs: add --cursor {page['nextCursor']} (or --all)", style="dim"))
        return Group(*parts)

    def runs_table(self, runs: list[Json], *, header: bool = True, widths: dict[str, int] | None = None) -> Table:
        """The widest layout that fits: TENANT, NODE, DURATION go first, then the time gets compact."""
        has_tenant = any(r.get("tenantId") for r in runs)
        optional = [c for c in ("DURATION", "NODE", "TENANT") if c != "TENANT" or has_tenant]
        def layout(keep: list[str], compact: bool) -> Callable[[], Table]:
            return lambda: self._runs_layout(runs, keep, compact, header, widths)

        layouts = [layout(optional[: len(optional) - dropped], False) for dropped in range(len(optional) + 1)]
        layouts.append(layout([], True))
        return fit(self.console, layouts)

    def _runs_layout(
        self, runs: list[Json], optional: list[str], compact: bool, header: bool, widths: dict[str, int] | None
    ) -> Table:
        out = table()
        out.show_header = header
        names = ["RUN ID", "FLOW", "STATUS", *[c for c in ("NODE", "TENANT", "DURATION") if c in optional], "UPDATED"]
        for name in names:
            width = (widths or {}).get(name)
            # Only FLOW may be squeezed (with an ellipsis); the others never wrap.
            out.add_column(name, no_wrap=name != "FLOW", min_width=width, justify="right" if name == "DURATION" else "left")
        for run in runs:
            cells: dict[str, RenderableType] = {
                "RUN ID": run["runId"],
                "FLOW": Text(f"{run.get('flowId')}@{run.get('flowVersion')}", no_wrap=True, overflow="ellipsis"),
                "STATUS": status_text(run.get("status") or "?"),
                "NODE": run.get("currentNodeId") or "",
                "TENANT": run.get("tenantId") or "",
                "DURATION": timeline_view.duration(span(run.get("createdAt"), run.get("updatedAt"))),
                "UPDATED": self.clock.compact(run.get("updatedAt")) if compact else self.clock.full(run.get("updatedAt")),
            }
            out.add_row(*[cells[n] for n in names])
        return out

    def runs_stream(self, pages: Iterable[Json]) -> None:
        """``--all``: each page as it arrives; one header, and later pages keep the first one's widths."""
        total = 0
        widths: dict[str, int] | None = None
        for page in pages:
            runs = page["runs"]
            total += len(runs)
            if self.as_json:
                for run in runs:
                    self.json(run, compact=True)
                continue
            if not runs:
                continue
            shown = self.runs_table(runs, header=widths is None, widths=widths)
            if widths is None:
                widths = {str(c.header): _column_width(self.console, shown, i) for i, c in enumerate(shown.columns)}
            self.print(shown)
        if not self.as_json:
            self.print(Text(f"{total} run(s)" if total else "no runs", style="dim"))

    def count(self, total: int) -> None:
        if self.as_json:
            return self.json({"count": total})
        self.print(Text(str(total)))

    def flows(self, flows: list[Json]) -> None:
        if self.as_json:
            return self.json(flows)
        if not flows:
            self.print(Text("no flows registered", style="dim"))
            return
        out = table()
        for name in ("FLOW", "VERSION", "ENTRY", "NODES", "EDGES", "DESCRIPTION"):
            out.add_column(name, no_wrap=name in ("FLOW", "VERSION"), overflow="fold")
        for item in flows:
            definition = item.get("definitionJson") or {}
            nodes = definition.get("nodes") or {}
            out.add_row(
                item["flowId"], item["version"], definition.get("entry", ""),
                ", ".join(_node_label(n, spec) for n, spec in nodes.items()),
                str(len(definition.get("edges") or [])),
                definition.get("description") or "",
            )
        self.print(out)
        self.note("the shape of one: flowrt graph FLOW")

    def graph(self, doc: Json) -> None:
        from .graph_view import render

        if self.as_json:
            return self.json(doc)
        self.print(render(doc))

    # -- timeline

    def timeline(self, run_id: str, events: list[Json], *, first_seq: int = 1) -> None:
        if self.as_json:
            return self.json(events)
        if not events:
            self.print(Text(f"run {run_id} has no events after that point", style="dim"))
            return
        self.print(timeline_view.rows(events, self.console.width, self.clock, first_seq=first_seq))

    def event_stream(self, *, first_seq: int = 1) -> Callable[[Json], None]:
        """A printer for one event at a time (``--follow``), with a date line when the day changes."""
        state = timeline_view.StreamState(first_seq)

        def show(event: Json) -> None:
            if self.as_json:
                return self.json(event, compact=True)
            self.print(timeline_view.stream_row(event, state, self.console.width, self.clock))

        return show

    def event_detail(self, event: Json, seq: int) -> None:
        if self.as_json:
            return self.json(event)
        self.print(timeline_view.detail(event, seq, self.clock))

    def bars(self, run: Json, events: list[Json]) -> None:
        spans = timeline_view.spans(events)
        if self.as_json:
            return self.json({"runId": run["runId"], "status": run.get("status"), "spans": spans})
        self.print(timeline_view.bars(run, spans, self.console.width))

    # -- recovery

    def stuck(self, entries: list[Json], then: str | None = None) -> None:
        """The dry run's table; ``then``: the command that would recover them, if not the same without --dry-run."""
        if self.as_json:
            return self.json({"dryRun": True, "runs": entries})
        if not entries:
            self.print(Text("nothing to recover: no RUNNING runs, expired leases or due timers", style="dim"))
            return
        narrow = self._stuck_table(entries, with_why=False)
        room = self.console.width - natural_width(self.console, narrow) - 2
        if room >= MIN_TEXT_COLUMN:
            self.print(self._stuck_table(entries, with_why=True))  # WHY wraps inside its own column
        else:
            self.print(with_lines_under(self.console, narrow, [e["detail"] for e in entries]))
        todo = sum(1 for e in entries if e["action"] == "continue")
        if not todo:
            self.note(f"nothing would be continued now; {len(entries)} skipped, each for the reason shown")
            return
        how = f"run '{then}' to recover" if then else "run without --dry-run to recover"
        self.note(f"{todo} run(s) would be continued, {len(entries) - todo} skipped; {how}")

    def _stuck_table(self, entries: list[Json], *, with_why: bool) -> Table:
        out = table()
        names = ["RUN ID", "FLOW", "STATUS", "ACTION"] + (["NODE", "WHY"] if with_why else [])
        for name in names:
            out.add_column(name, no_wrap=name != "WHY", overflow="fold")
        for e in entries:
            action = Text(e["action"], style="green" if e["action"] == "continue" else "dim")
            cells: list[RenderableType] = [
                e["runId"], Text(f"{e['flowId']}@{e['flowVersion']}", no_wrap=True, overflow="ellipsis"),
                status_text(e["status"]), action,
            ]
            if with_why:
                cells += [e.get("currentNodeId") or "", e["detail"]]
            out.add_row(*cells)
        return out

    def recovered(self, report: Json) -> None:
        if self.as_json:
            return self.json(report)
        moved = [r for r in report["runs"] if "leftBecause" not in r]
        counts = Counter(r["status"] for r in moved)
        parts = [Text.assemble((str(n), "bold"), " ", status_text(s)) for s, n in sorted(counts.items())]
        line = Text(f"Recovered {len(moved)} run(s) in {report['seconds']:.2f} s")
        if parts:
            line.append(": ")
            line.append(Text(", ").join(parts))
        self.print(line)
        reasons = Counter(r["leftBecause"] for r in report["runs"] if "leftBecause" in r)
        for why, n in sorted(reasons.items()):
            self.note(f"{n} run(s) left as they are: {why}")
        if 0 < len(report["runs"]) <= 50:
            out = table()
            for name in ("RUN ID", "FLOW", "WAS", "NOW", "NODE"):
                out.add_column(name, no_wrap=name != "FLOW")
            for r in report["runs"]:
                out.add_row(
                    r["runId"], Text(f"{r['flowId']}@{r['flowVersion']}", no_wrap=True, overflow="ellipsis"),
                    r["reason"], Text.assemble(status_text(r["status"]), " (left)" if "leftBecause" in r else ""),
                    r.get("currentNodeId") or "",
                )
            self.print(out)


@contextlib.contextmanager
def watching(out: Output) -> Iterator[Callable[[Callable[[], RenderableType], Any], None]]:
    """``show(render, doc)``: in place at a terminal, else each view again (JSON: one per line)."""
    if out.as_json:
        yield lambda render, doc: out.json(doc, compact=True)
        return
    if not out.console.is_terminal:

        def again(render: Callable[[], RenderableType], doc: Any) -> None:
            out.print(Text(f"── {datetime.now().astimezone().strftime('%H:%M:%S')} ──", style="dim"))
            out.print(render())

        yield again
        return
    from rich.live import Live

    with Live(console=out.console, auto_refresh=False, transient=False) as live:
        yield lambda render, doc: live.update(render(), refresh=True)


def _column_width(console: Console, shown: Table, index: int) -> int:
    widths = shown._calculate_column_widths(console, console.options)  # noqa: SLF001 - rich has no public API
    return int(widths[index])


def _node_label(node_id: str, spec: Json) -> str:
    marks = []
    retry = spec.get("retry")
    if retry and retry.get("maxAttempts", 1) > 1:
        marks.append(f"×{retry['maxAttempts']}")
    if spec.get("timeoutMs"):
        marks.append(f"{spec['timeoutMs']}ms")
    if spec.get("hasIdempotencyKey"):
        marks.append("idempotent")
    return node_id + (f" ({', '.join(marks)})" if marks else "")
