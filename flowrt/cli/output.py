"""What the CLI prints: the API's JSON for scripts, rich tables and a coloured timeline for people.

Every renderer takes the HTTP API's JSON documents, so local and remote commands
print the same thing. Colour, spinners and progress bars appear only when stdout is
a terminal (rich decides, and honours ``NO_COLOR``); piped output is plain text.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from typing import Any, Iterator

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .backends import Json, OnProgress

STATUS_STYLES = {
    "RUNNING": "bold blue",
    "WAITING": "bold yellow",
    "COMPLETED": "bold green",
    "FAILED": "bold red",
    "CANCELLED": "bold magenta",
}
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
}
SHORT = 100  # characters of a JSON value shown in a timeline row
DETAIL = 400  # ... and in a run's own view; --json has it all


def short_json(value: Any, limit: int = SHORT) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(value: str | None) -> str:
    """``2026-05-01T12:00:01.234Z`` as ``2026-05-01 12:00:01Z``: readable, still unambiguous."""
    return "—" if not value else value.replace("T", " ")[:19] + "Z"


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

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = _stdout_console()

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
        # Driver threads report progress; rich's Progress is thread-safe.
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    # -- documents

    def started(self, doc: Json) -> None:
        """``{runId, status}`` from ``start`` without ``--wait``."""
        if self.as_json:
            return self.json(doc)
        line = Text.assemble("Started run ", (doc["runId"], "bold"), "  ", status_text(doc["status"]))
        self.print(line)

    def run(self, run: Json) -> None:
        if self.as_json:
            return self.json(run)
        title = Text.assemble(
            ("run ", "dim"), (run["runId"], "bold"), "  ", f"{run['flowId']}@{run['flowVersion']}", "  ",
            status_text(run["status"]),
        )
        self.print(title)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        if run.get("currentNodeId"):
            grid.add_row("node", run["currentNodeId"])
        if run.get("tenantId"):
            grid.add_row("tenant", run["tenantId"])
        if run["status"] == "WAITING":
            waiting = run.get("waitReason") or "(no reason given)"
            until = run.get("waitUntil") or run.get("wakeAt")
            grid.add_row("waiting", waiting + (f", until {until}" if until else ""))
        if run.get("error"):
            error = run["error"]
            grid.add_row("error", Text(f"{error.get('code')}: {error.get('message')}", style="red"))
        grid.add_row("input", short_json(run.get("inputJson"), DETAIL))
        grid.add_row("state", short_json(run.get("stateJson"), DETAIL))
        outputs = run.get("outputsJson") or {}
        if outputs:
            nested = Table.grid(padding=(0, 2))
            nested.add_column(style="bold", no_wrap=True)
            nested.add_column(overflow="fold")
            for node, output in outputs.items():
                nested.add_row(node, short_json(output, DETAIL))
            grid.add_row("outputs", nested)
        attempts = run.get("attempts") or {}
        if attempts:
            grid.add_row("attempts", ", ".join(f"{node} ×{n}" for node, n in attempts.items()))
        grid.add_row("created", when(run.get("createdAt")))
        grid.add_row("updated", when(run.get("updatedAt")))
        self.print(grid)

    def runs(self, page: Json) -> None:
        if self.as_json:
            return self.json(page)
        runs = page["runs"]
        if not runs:
            self.print(Text("no runs", style="dim"))
        else:
            table = _table()
            for name in ("RUN ID", "FLOW", "STATUS", "NODE", "TENANT", "UPDATED"):
                table.add_column(name, no_wrap=name in ("RUN ID", "STATUS"))
            for run in runs:
                table.add_row(
                    run["runId"],
                    f"{run['flowId']}@{run['flowVersion']}",
                    status_text(run["status"]),
                    run.get("currentNodeId") or "",
                    run.get("tenantId") or "",
                    when(run.get("updatedAt")),
                )
            self.print(table)
        if page.get("nextCursor"):
            self.note(f"more runs: add --cursor {page['nextCursor']}")

    def flows(self, flows: list[Json]) -> None:
        if self.as_json:
            return self.json(flows)
        if not flows:
            self.print(Text("no flows registered", style="dim"))
            return
        table = _table()
        for name in ("FLOW", "VERSION", "ENTRY", "NODES", "DESCRIPTION"):
            table.add_column(name)
        for item in flows:
            definition = item.get("definitionJson") or {}
            table.add_row(
                item["flowId"],
                item["version"],
                definition.get("entry", ""),
                ", ".join(_node_label(n, spec) for n, spec in (definition.get("nodes") or {}).items()),
                definition.get("description") or "",
            )
        self.print(table)

    # -- timeline

    def timeline(self, run_id: str, events: list[Json]) -> None:
        if self.as_json:
            return self.json(events)
        stream = self.event_stream()
        for event in events:
            stream(event)
        if not events:
            self.print(Text(f"run {run_id} has no events after that point", style="dim"))

    def event_stream(self) -> Any:
        """A printer for one event at a time (``--follow``), with a date line when the day changes."""
        last_day: list[str] = []

        def show(event: Json) -> None:
            if self.as_json:
                return self.json(event, compact=True)
            at = event.get("at") or ""
            day = at[:10]
            if day and day != (last_day[-1] if last_day else None):
                self.print(Text(f"── {day} ──", style="dim"))
                last_day.append(day)
            self.print(event_line(event))

        return show

    # -- recovery

    def stuck(self, entries: list[Json]) -> None:
        if self.as_json:
            return self.json({"dryRun": True, "runs": entries})
        if not entries:
            self.print(Text("nothing to recover: no RUNNING runs, expired leases or due timers", style="dim"))
            return
        table = _table()
        for name in ("RUN ID", "FLOW", "STATUS", "NODE", "ACTION", "WHY"):
            table.add_column(name, no_wrap=name in ("RUN ID", "ACTION"))
        for e in entries:
            action = Text(e["action"], style="green" if e["action"] == "continue" else "dim")
            table.add_row(
                e["runId"], f"{e['flowId']}@{e['flowVersion']}", status_text(e["status"]),
                e.get("currentNodeId") or "", action, e["detail"],
            )
        self.print(table)
        todo = sum(1 for e in entries if e["action"] == "continue")
        self.note(f"{todo} run(s) would be continued, {len(entries) - todo} skipped; run without --dry-run to recover")

    def recovered(self, report: Json) -> None:
        if self.as_json:
            return self.json(report)
        counts = Counter(r["status"] for r in report["runs"])
        parts = [Text.assemble((str(n), "bold"), " ", status_text(s)) for s, n in sorted(counts.items())]
        line = Text(f"Recovered {len(report['runs'])} run(s) in {report['seconds']:.2f} s")
        if parts:
            line.append(": ")
            line.append(Text(", ").join(parts))
        self.print(line)
        if 0 < len(report["runs"]) <= 50:
            table = _table()
            for name in ("RUN ID", "FLOW", "WAS", "NOW", "NODE"):
                table.add_column(name, no_wrap=True)
            for r in report["runs"]:
                table.add_row(
                    r["runId"], f"{r['flowId']}@{r['flowVersion']}", r["reason"], status_text(r["status"]),
                    r.get("currentNodeId") or "",
                )
            self.print(table)


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


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


def event_line(event: Json) -> Text:
    """One timeline row: seq, time, event, node, attempt, and the payload in a few words."""
    at = event.get("at") or ""
    attempt = event.get("attempt")
    kind = event["type"]
    style = EVENT_STYLES.get(kind, "")
    if kind == "NODE_FAILED" and "retryInMs" in (event.get("payloadJson") or {}):
        style = "yellow"  # a failure that will be retried is a warning, not the end
    return Text.assemble(
        (f"{event['seq']:>4}", "dim"),
        "  ",
        at[11:23].ljust(12),
        "  ",
        (kind.ljust(14), style),
        "  ",
        (event.get("nodeId") or "").ljust(16)[:16] if event.get("nodeId") else " " * 16,
        "  ",
        (f"#{attempt}" if attempt else "").ljust(3),
        "  ",
        describe_payload(kind, event.get("payloadJson") or {}),
    )


def describe_payload(kind: str, payload: Json) -> str:
    """What an event's payload means, in a few words."""
    if kind == "NODE_FINISHED":
        return "cached result (idempotency key)" if payload.get("cached") else ""
    if kind in ("NODE_FAILED", "RUN_ABORTED"):
        error = payload.get("error") or {}
        text = f"{error.get('code')}: {error.get('message')}"
        if "retryInMs" in payload:
            text += f" · retry in {payload['retryInMs']} ms"
        return _cut(text)
    if kind == "RUN_WAITING":
        text = payload.get("reason") or "waiting"
        return _cut(text + (f" · until {payload['until']}" if payload.get("until") else ""))
    if kind == "RUN_RESUMED":
        return _cut(f"by {payload.get('by')} · payload {short_json(payload.get('payload'), 60)}")
    if kind == "RUN_CANCELLED":
        return _cut(payload.get("reason") or "")
    return "" if not payload else short_json(payload, 80)


def _cut(text: str, limit: int = SHORT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
