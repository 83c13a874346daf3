"""The commands that read: status, runs, timeline, flows and graph (none of them moves a run).

They never create a database (see :func:`.backends.connect`), and the ``--watch`` /
``--follow`` loops are small functions of their own: :func:`follow_timeline` is the one
place to switch onto the server's event stream.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Callable, Optional

import typer

from ..runs import RunStatus
from .backends import FINISHED, Backend, Json
from .commands import hint_waiting
from .errors import UsageProblem
from .graph_view import graph_doc
from .options import AsJson, Db, Debug, Flows, Interval, LocalTime, RunId, Token, Url, parse_when, session
from .output import Output, watching

ENDED_EVENTS = ("RUN_COMPLETED", "RUN_ABORTED", "RUN_CANCELLED")


def status(
    run_id: RunId,
    watch: Annotated[
        bool,
        typer.Option("--watch", "-w", envvar="FLOWRT_WATCH", help="Refresh until the run waits or ends (in place at a terminal)."),
    ] = False,
    interval: Interval = 1.0,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    local_time: LocalTime = False,
    debug: Debug = False,
) -> None:
    """Show a run: status, current node, state, outputs, error (with its traceback)."""
    out = Output(as_json, local_time=local_time)
    with session(db, url, token) as backend:
        if not watch:
            run = backend.get(run_id)
        else:
            run = watch_run(backend, out, run_id, interval)
    if not watch:
        out.run(run)
    hint_waiting(out, run, db=db, url=url, flows=None)


def watch_run(backend: Backend, out: Output, run_id: str, interval: float) -> Json:
    """Show the run again whenever it changes, until it is no longer RUNNING; answer the last view."""
    last: Json = {}
    with watching(out) as show:
        while True:
            run = backend.get(run_id)
            if run != last:
                show(lambda: out.run_renderable(run), run)
                last = run
            if run["status"] != "RUNNING":
                return run
            time.sleep(interval)


def _run_status(value: str | None) -> str | None:
    """Any case accepted; the message lists the statuses as the API spells them."""
    if value is None:
        return None
    if value.upper() not in RunStatus.__members__:
        raise typer.BadParameter(f"{value!r} is not a status; use one of {', '.join(RunStatus)}")
    return value.upper()


def runs(
    status: Annotated[
        Optional[str],
        typer.Option(
            "--status", "-s", envvar="FLOWRT_RUNS_STATUS", callback=_run_status, metavar="STATUS",
            help="Only runs with this status: RUNNING, WAITING, COMPLETED, FAILED or CANCELLED.",
        ),
    ] = None,
    flow: Annotated[Optional[str], typer.Option("--flow", envvar="FLOWRT_RUNS_FLOW", metavar="FLOW", help="Only runs of this flow id.")] = None,
    tenant: Annotated[Optional[str], typer.Option("--tenant", envvar="FLOWRT_TENANT", metavar="TENANT", help="Only runs of this tenant.")] = None,
    since: Annotated[
        Optional[str],
        typer.Option("--since", envvar="FLOWRT_RUNS_SINCE", metavar="WHEN", help="Only runs started at or after WHEN: a duration ago (30m, 1h, 2d) or an ISO time."),
    ] = None,
    until: Annotated[
        Optional[str],
        typer.Option("--until", envvar="FLOWRT_RUNS_UNTIL", metavar="WHEN", help="Only runs started before WHEN (same forms as --since)."),
    ] = None,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", "-n", envvar="FLOWRT_RUNS_LIMIT", min=1, max=1000, metavar="N", help="Runs per page. Default: 50 (the server's default remotely)."),
    ] = None,
    cursor: Annotated[
        Optional[str],
        typer.Option("--cursor", envvar="FLOWRT_RUNS_CURSOR", metavar="CURSOR", help="Continue after a previous page (its nextCursor)."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", "-a", envvar="FLOWRT_RUNS_ALL", help="Every page, printed as it arrives (--json: one run per line).")
    ] = False,
    count: Annotated[bool, typer.Option("--count", envvar="FLOWRT_RUNS_COUNT", help="Only count the matching runs (reads every page).")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", envvar="FLOWRT_WATCH", help="Refresh the first page until Ctrl-C (in place at a terminal).")
    ] = False,
    interval: Interval = 2.0,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    local_time: LocalTime = False,
    debug: Debug = False,
) -> None:
    """List runs, newest first: one page, every page (--all), a count, or a live view (--watch)."""
    if sum((every, count, watch)) > 1:
        raise UsageProblem("--all, --count and --watch do not go together: pick one")
    filters: dict[str, Any] = {
        "status": status, "flow_id": flow, "tenant_id": tenant,
        "since": parse_when(since, "--since"), "until": parse_when(until, "--until"),
    }
    out = Output(as_json, local_time=local_time)
    with session(db, url, token) as backend:
        if count:
            total = sum(len(page["runs"]) for page in _pages(backend, filters, 1000, cursor))
            return out.count(total)
        if every:
            return out.runs_stream(_pages(backend, filters, limit, cursor))
        if watch:
            return watch_runs(backend, out, filters, limit, cursor, interval)
        page = backend.list_runs(**filters, limit=limit, cursor=cursor)
    out.runs(page)


def _pages(backend: Backend, filters: dict[str, Any], limit: int | None, cursor: str | None) -> Any:
    """Every page from ``cursor`` on, fetched as the caller consumes them."""
    while True:
        page = backend.list_runs(**filters, limit=limit or 1000, cursor=cursor)
        yield page
        cursor = page.get("nextCursor")
        if not cursor:
            return


def watch_runs(backend: Backend, out: Output, filters: dict[str, Any], limit: int | None, cursor: str | None, interval: float) -> None:
    """The first page again every ``interval`` seconds, until Ctrl-C (which ends it with exit 0)."""
    try:
        with watching(out) as show:
            while True:
                page = backend.list_runs(**filters, limit=limit, cursor=cursor)
                show(lambda: out.runs_renderable(page), page)
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def timeline(
    run_id: RunId,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", envvar="FLOWRT_TIMELINE_FOLLOW", help="Keep printing new events until the run ends (one JSON object per line with --json)."),
    ] = False,
    after: Annotated[int, typer.Option("--after", envvar="FLOWRT_TIMELINE_AFTER", min=0, metavar="SEQ", help="Only events after this sequence number.")] = 0,
    limit: Annotated[
        Optional[int], typer.Option("--limit", "-n", envvar="FLOWRT_TIMELINE_LIMIT", min=1, metavar="N", help="At most this many events (without --follow).")
    ] = None,
    seq: Annotated[
        Optional[int],
        typer.Option("--seq", envvar="FLOWRT_TIMELINE_SEQ", min=1, metavar="N", help="Show one event in full: its payload and, for a failure, the traceback."),
    ] = None,
    bars: Annotated[
        bool, typer.Option("--bars", "-b", envvar="FLOWRT_TIMELINE_BARS", help="Where the run spent its time: one bar per node attempt and wait.")
    ] = False,
    interval: Interval = 0.5,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    local_time: LocalTime = False,
    debug: Debug = False,
) -> None:
    """Show a run's timeline: time, event, node, attempt, how long the node took, and what happened."""
    if sum((follow, seq is not None, bars)) > 1:
        raise UsageProblem("--follow, --seq and --bars do not go together: pick one")
    out = Output(as_json, local_time=local_time)
    with session(db, url, token) as backend:
        if seq is not None:
            found = backend.timeline(run_id, seq - 1, 1)
            if not found:
                backend.get(run_id)  # an unknown run says so (RUN_NOT_FOUND) ...
                raise UsageProblem(f"run {run_id} has no event {seq}")  # ... a known one has fewer events
            return out.event_detail(found[0], seq)
        if bars:
            return out.bars(backend.get(run_id), backend.timeline(run_id))
        if not follow:
            return out.timeline(run_id, backend.timeline(run_id, after, limit), first_seq=after + 1)
        follow_timeline(backend, out.event_stream(first_seq=after + 1), run_id, after, interval)


def follow_timeline(backend: Backend, show: Callable[[Json], None], run_id: str, after: int, interval: float) -> None:
    """Print events as they are recorded; return once the run has ended and all its events are out.

    Against a server, the client follows it (its event stream, or polling the timeline where
    there is none, e.g. the reference runtime); locally, the database's timeline is polled.
    """
    follow = getattr(backend, "follow", None)
    if follow is not None:
        for event in follow(run_id, after, interval):
            show(event)
        return
    ended = False
    while True:
        events = backend.timeline(run_id, after)
        for event in events:
            show(event)
            after = event["seq"]
            ended = ended or event["type"] in ENDED_EVENTS
        if ended:
            return
        if not events and backend.get(run_id)["status"] in FINISHED:
            ended = True  # one more read picks up events recorded since ours
            continue
        time.sleep(interval)


def flows(
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """List the flows --flows loads (locally) or the server has registered."""
    with session(db, url, token, flows, needs_flows="to list flows") as backend:
        found = backend.flows()
    Output(as_json).flows(found)


def graph(
    flow: Annotated[Optional[str], typer.Argument(metavar="[FLOW]", help="The flow id; or give --run.", show_default=False)] = None,
    version: Annotated[
        Optional[str], typer.Option("--version", envvar="FLOWRT_GRAPH_VERSION", metavar="V", help="Flow version. Default: the highest registered.")
    ] = None,
    run: Annotated[
        Optional[str], typer.Option("--run", "-r", envvar="FLOWRT_GRAPH_RUN", metavar="RUN", help="Show the run's flow, the nodes it visited and where it is now.")
    ] = None,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Show a flow's shape: entry, nodes with retry and timeout, edges with priority and condition."""
    if (flow is None) == (run is None):
        raise UsageProblem("give a FLOW or --run RUN (one of them)")
    needs = "to show a flow (its definition is in the code)"
    with session(db, url, token, flows, needs_flows=needs) as backend:
        registered = backend.flows()
        if run is None:
            doc = graph_doc(registered, flow, version)  # type: ignore[arg-type]
        else:
            found = backend.get(run)
            doc = graph_doc(registered, found["flowId"], found["flowVersion"], run=found, events=backend.timeline(run))
    Output(as_json).graph(doc)


def register(app: typer.Typer, cls: Any) -> None:
    """The read-only commands, in the order `flowrt --help` lists them."""
    for command in (status, runs, timeline, flows, graph):
        app.command(rich_help_panel="Inspect", cls=cls)(command)
