"""Operator actions on many runs at once: cancel, retry or resume by filter, and prune.

``flowrt cancel|retry|resume`` take a filter (``--status``, ``--flow``, ``--tenant``,
``--since``, ``--until``) instead of a run id. The matching runs are listed first
(``--dry-run`` stops there), a person at a terminal confirms (``--yes`` for scripts; no
terminal and no ``--yes`` is refused), then each run is acted on in turn with a progress
bar. A failure on one run (it moved on meanwhile, another process holds it) is counted
and never stops the rest; the summary counts each outcome, and the exit code is 4 when
any run's action failed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Annotated, Any, Callable, Optional

import typer
from rich.text import Text

from ..errors import FlowrtError
from .backends import Backend, Json
from .errors import CONFLICT, UsageProblem
from .options import AsJson, Db, Debug, Flows, Token, Url, parse_when, session
from .output import Output, status_text

FILTERS = "Select by filter (instead of RUN)"
#: The statuses each action applies to; a filter's --status must be among them.
APPLIES_TO = {"cancel": ("RUNNING", "WAITING"), "retry": ("FAILED", "CANCELLED"), "resume": ("WAITING",)}
PAST = {"cancel": "cancelled", "retry": "retried", "resume": "resumed"}

Status = Annotated[
    Optional[str],
    typer.Option("--status", "-s", envvar="FLOWRT_SELECT_STATUS", metavar="STATUS", rich_help_panel=FILTERS,
                 help="Only runs with this status (default: every status the action applies to)."),
]
FlowFilter = Annotated[Optional[str], typer.Option("--flow", envvar="FLOWRT_SELECT_FLOW", metavar="FLOW", rich_help_panel=FILTERS, help="Only runs of this flow id.")]
TenantFilter = Annotated[Optional[str], typer.Option("--tenant", envvar="FLOWRT_SELECT_TENANT", metavar="TENANT", rich_help_panel=FILTERS, help="Only runs of this tenant.")]
Since = Annotated[
    Optional[str],
    typer.Option("--since", envvar="FLOWRT_SELECT_SINCE", metavar="WHEN", rich_help_panel=FILTERS, help="Only runs started at or after WHEN (30m, 2d, or an ISO time)."),
]
Until = Annotated[
    Optional[str], typer.Option("--until", envvar="FLOWRT_SELECT_UNTIL", metavar="WHEN", rich_help_panel=FILTERS, help="Only runs started before WHEN.")
]
DryRun = Annotated[bool, typer.Option("--dry-run", envvar="FLOWRT_DRY_RUN", rich_help_panel=FILTERS, help="Only list the runs it would touch.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", envvar="FLOWRT_YES", rich_help_panel=FILTERS, help="Do not ask for confirmation (scripts).")]


def any_filter(*values: Any) -> bool:
    return any(v is not None for v in values)


def confirm(question: str, yes: bool) -> None:
    """Ask at a terminal; refuse without one unless ``--yes``. Declining exits 1, nothing done."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageProblem(f"{question}: no terminal to confirm at; pass --yes to go ahead (or --dry-run to list)")
    if not typer.confirm(question, default=False, err=True):
        sys.stderr.write("nothing was changed\n")
        raise typer.Exit(1)


def select(backend: Backend, action: str, status: str | None, filters: Json) -> list[Json]:
    """Every run the filter matches among those ``action`` applies to, oldest first."""
    allowed = APPLIES_TO[action]
    if status is not None:
        status = status.upper()
        if status not in allowed:
            raise UsageProblem(f"{action} applies to {' or '.join(allowed)} runs, not {status}")
    found: list[Json] = []
    for wanted in [status] if status else allowed:
        cursor = None
        while True:
            page = backend.list_runs(status=wanted, limit=1000, cursor=cursor, **filters)
            found.extend(page["runs"])
            cursor = page.get("nextCursor")
            if not cursor:
                break
    return sorted(found, key=lambda run: run["runId"])


def run_bulk(
    action: str,
    act: Callable[[Backend, str], Json],
    *,
    status: str | None,
    flow: str | None,
    tenant: str | None,
    since: str | None,
    until: str | None,
    dry_run: bool,
    yes: bool,
    db: str | None,
    url: str | None,
    token: str | None,
    flows: list[str] | None,
    needs_flows: str | None,
    as_json: bool,
) -> None:
    """Select, list, confirm, act on each run, summarise."""
    filters = {"flow_id": flow, "tenant_id": tenant, "since": parse_when(since, "--since"), "until": parse_when(until, "--until")}
    out = Output(as_json)
    with session(db, url, token, flows, needs_flows=None if dry_run else needs_flows) as backend:
        runs = select(backend, action, status, filters)
        if dry_run:
            if as_json:
                return out.json({"action": action, "dryRun": True, "matched": len(runs), "runs": runs})
            out.runs({"runs": runs, "nextCursor": None})
            return out.note(f"{len(runs)} run(s) would be {PAST[action]} (dry run: nothing was changed)")
        if not runs:
            if as_json:
                return out.json({"action": action, "matched": 0, "outcomes": {}, "runs": [], "seconds": 0.0})
            return out.note(f"no run matches: nothing to {action}")
        confirm(f"{action.capitalize()} {len(runs)} run(s)", yes)
        started = time.monotonic()
        results: list[Json] = []
        with out.progress(f"{action} runs") as update:
            for index, run in enumerate(runs):
                try:
                    after = act(backend, run["runId"])
                except FlowrtError as exc:  # one run's trouble never stops the rest
                    results.append({"runId": run["runId"], "outcome": exc.code, "error": exc.message})
                else:
                    results.append({"runId": run["runId"], "outcome": PAST[action], "status": after.get("status")})
                update(index + 1, len(runs))
    outcomes = Counter(r["outcome"] for r in results)
    summary = {"action": action, "matched": len(runs), "outcomes": dict(outcomes), "runs": results,
               "seconds": round(time.monotonic() - started, 3)}
    if as_json:
        out.json(summary)
    else:
        _print_summary(out, summary)
        if action == "retry" and not url and outcomes.get(PAST[action]):
            out.note("retried runs are RUNNING: a `flowrt serve` on this database continues them, or `flowrt recover`")
    if any(r["outcome"] != PAST[action] for r in results):
        raise typer.Exit(CONFLICT)


def _print_summary(out: Output, summary: Json) -> None:
    parts = [Text.assemble((str(n), "bold"), f" {outcome}") for outcome, n in sorted(summary["outcomes"].items())]
    line = Text(f"{summary['action'].capitalize()}: {summary['matched']} run(s) in {summary['seconds']:.2f} s: ")
    line.append(Text(", ").join(parts))
    out.print(line)
    failed = [r for r in summary["runs"] if "error" in r]
    for r in failed[:20]:
        out.print(Text.assemble(("  " + r["runId"], "bold"), "  ", (r["outcome"], "red"), "  ", r["error"]))
    if len(failed) > 20:
        out.note(f"  ... and {len(failed) - 20} more (--json lists every run)")


# --------------------------------------------------------------------------- prune


def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", envvar="FLOWRT_PRUNE_OLDER_THAN", metavar="AGE", help="Finished runs that ended longer ago than AGE: 30d, 12h, 1w.")
    ],
    status: Annotated[
        Optional[list[str]],
        typer.Option("--status", "-s", envvar="FLOWRT_PRUNE_STATUS", metavar="STATUS", help="Only COMPLETED, FAILED or CANCELLED (repeatable). Default: all three."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", envvar="FLOWRT_DRY_RUN", help="Only count what would be deleted.")] = False,
    yes: Yes = False,
    vacuum: Annotated[
        bool,
        typer.Option("--vacuum", envvar="FLOWRT_PRUNE_VACUUM", help="Local SQLite only: switch an older file to incremental vacuum with one full "
                     "VACUUM, so it shrinks (blocks writers while it runs)."),
    ] = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Delete finished runs that ended more than --older-than ago, with their events,
    idempotency records and start keys. RUNNING and WAITING runs are never touched.

    Remotely it needs a token with the admin scope. On SQLite the file shrinks by the
    space freed (see --vacuum for files made before flowrt 0.1's schema 3); the size
    before and after is reported.
    """
    statuses = [s.upper() for s in status] if status else None
    if vacuum and url:
        raise UsageProblem("--vacuum works on a local SQLite file only (a server's database is vacuumed by its host)")
    out = Output(as_json)
    with session(db, url, token) as backend:
        counted = backend.prune(older_than, statuses, dry_run=True, vacuum=False)
        if dry_run:
            return _print_prune(out, counted)
        if counted["runs"] == 0 and not vacuum:
            return _print_prune(out, counted)
        confirm(f"Delete {counted['runs']} run(s) and {counted['events']} event(s)", yes)
        report = backend.prune(older_than, statuses, dry_run=False, vacuum=vacuum)
    _print_prune(out, report)


def _print_prune(out: Output, report: Json) -> None:
    if out.as_json:
        return out.json(report)
    verb = "Would delete" if report["dryRun"] else "Deleted"
    line = f"{verb} {report['runs']} run(s), {report['events']} event(s)"
    if not report["dryRun"]:
        line += f", {report['idempotencyRecords']} idempotency record(s), {report['startKeys']} start key(s)"
        line += f" in {report['seconds']:.2f} s"
    out.print(Text(line))
    if report.get("sizeBefore") is not None:
        before, after = _size(report["sizeBefore"]), _size(report["sizeAfter"])
        out.print(Text(f"database size: {before}" + ("" if report["dryRun"] else f" -> {after}")))
    if report.get("spaceNote"):
        out.note(report["spaceNote"])


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


__all__ = ["prune", "run_bulk", "status_text"]
