"""The ``flowrt`` commands: parse options, call a backend, print the result.

Each command is a thin function: the backend (local engine or HTTP server) does the
work and returns the API's JSON, :class:`~flowrt.cli.output.Output` prints it, and
errors propagate to the one handler in :mod:`flowrt.cli`, which turns them into a
line on stderr and an exit code.
"""

from __future__ import annotations

import contextlib
import shlex
import json
import logging
import sys
import time
from typing import Annotated, Any, Iterator, Optional

import typer

from ..runs import RunStatus
from .backends import FINISHED, Backend, connect
from .errors import RUN_FAILED, UsageProblem
from .output import Output

CONNECTION = "Connection"
OUTPUT = "Output"

# --------------------------------------------------------------------------- shared options


def _remember_debug(ctx: typer.Context, value: bool) -> bool:
    """Eager, so the error handler knows about --debug even when later parsing fails."""
    if value:
        ctx.meta["flowrt.debug"] = True
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    return value


Db = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="DATABASE_URL",
        metavar="URL",
        help="Database for local mode: sqlite:///file.db, postgresql://..., memory://. Default: sqlite:///flowrt.db.",
        rich_help_panel=CONNECTION,
    ),
]
Url = Annotated[
    Optional[str],
    typer.Option(
        "--url",
        envvar="FLOWRT_URL",
        metavar="URL",
        help="Talk to a flowrt server (e.g. http://127.0.0.1:3000) instead of the local database.",
        rich_help_panel=CONNECTION,
    ),
]
Token = Annotated[
    Optional[str],
    typer.Option(
        "--token",
        envvar="FLOWRT_API_TOKEN",
        metavar="TOKEN",
        help="Bearer token for the server (remote mode).",
        rich_help_panel=CONNECTION,
    ),
]
Flows = Annotated[
    Optional[list[str]],
    typer.Option(
        "--flows",
        envvar="FLOWRT_FLOWS",
        metavar="MODULE:NAME",
        help="Flows to load in local mode, e.g. examples.orders:ALL (repeatable or comma-separated). "
        "Not needed with --url: the server has its own.",
        rich_help_panel=CONNECTION,
    ),
]
AsJson = Annotated[
    bool,
    typer.Option("--json", envvar="FLOWRT_JSON", help="Print the HTTP API's JSON, for scripts and jq.", rich_help_panel=OUTPUT),
]
Debug = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar="FLOWRT_DEBUG",
        is_eager=True,
        callback=_remember_debug,
        help="Show tracebacks and debug logs.",
        rich_help_panel=OUTPUT,
    ),
]
RunId = Annotated[str, typer.Argument(metavar="RUN", help="The run id (as printed by start or runs).")]
Wait = Annotated[
    bool,
    typer.Option("--wait", envvar="FLOWRT_WAIT", help="Return when the run waits or ends; exit 1 if it FAILED or was CANCELLED."),
]


@contextlib.contextmanager
def session(
    db: str | None, url: str | None, token: str | None, flows: list[str] | None = None, *, needs_flows: str | None = None
) -> Iterator[Backend]:
    """A backend for one command, closed afterwards (releasing any lease it holds)."""
    backend = connect(db=db, url=url, token=token, flows=flows, needs_flows=needs_flows)
    try:
        yield backend
    finally:
        backend.close()


def read_json(value: str | None, option: str) -> Any:
    """``--input`` / ``--payload``: inline JSON, ``@file.json``, or ``-`` for stdin."""
    if value is None:
        return None
    if value == "-":
        text, source = sys.stdin.read(), " (from stdin)"
    elif value.startswith("@"):
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageProblem(f"{option}: cannot read {path}: {exc.strerror or exc}") from exc
        source = f" (from {path})"
    else:
        text, source = value, ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"{option} is not valid JSON{source}: {exc}") from exc
    except RecursionError:
        raise UsageProblem(f"{option}: the JSON{source} is nested too deeply") from None


def _exit_for(run: dict[str, Any]) -> None:
    if run.get("status") in ("FAILED", "CANCELLED"):
        raise typer.Exit(RUN_FAILED)


# --------------------------------------------------------------------------- runs


def start(
    flow: Annotated[str, typer.Argument(metavar="FLOW", help="The flow id, e.g. order-flow.")],
    version: Annotated[
        Optional[str],
        typer.Option("--version", envvar="FLOWRT_START_VERSION", metavar="V", help="Flow version. Default: the highest registered."),
    ] = None,
    input: Annotated[  # noqa: A002 - the API's name
        Optional[str],
        typer.Option("--input", "-i", envvar="FLOWRT_START_INPUT", metavar="JSON|@FILE|-", help="The run's input: inline JSON, @file.json, or - for stdin."),
    ] = None,
    tenant: Annotated[Optional[str], typer.Option("--tenant", envvar="FLOWRT_TENANT", metavar="TENANT", help="Tenant id to record on the run.")] = None,
    wait: Wait = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Start a run of FLOW. With --wait, drive it until it waits or ends.

    Locally, without --wait, the run is only created (RUNNING at its entry node):
    move it with tick, resume or recover, or let a server's drivers pick it up.
    """
    payload = read_json(input, "--input")
    with session(db, url, token, flows, needs_flows="to start a run") as backend:
        result = backend.start(flow, version=version, input=payload, tenant_id=tenant, wait=wait)
    out = Output(as_json)
    if not wait:
        return out.started(result)
    out.run(result)
    _hint_waiting(out, result, db=db, url=url, flows=flows)
    _exit_for(result)


def resume(
    run_id: RunId,
    payload: Annotated[
        Optional[str],
        typer.Option("--payload", "-p", envvar="FLOWRT_RESUME_PAYLOAD", metavar="JSON|@FILE|-", help="The resume payload: inline JSON, @file.json, or - for stdin. Default: null."),
    ] = None,
    wait: Wait = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Resume a WAITING run with a payload (e.g. a human's decision).

    The waiting node runs again and sees the payload as ctx.resume_payload. Resuming a
    run that is not WAITING is an error (exit 4): a dropped decision is never silent.
    """
    value = read_json(payload, "--payload")
    with session(db, url, token, flows, needs_flows="to resume a run (it runs the waiting node)") as backend:
        run = backend.resume(run_id, value, wait=wait)
    out = Output(as_json)
    out.run(run)
    _hint_waiting(out, run, db=db, url=url, flows=flows)
    if wait:
        _exit_for(run)


def tick(
    run_id: RunId,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Execute one step of a run (a WAITING run's node is polled once)."""
    with session(db, url, token, flows, needs_flows="to tick a run (it runs a node)") as backend:
        run = backend.tick(run_id)
    Output(as_json).run(run)


def cancel(
    run_id: RunId,
    reason: Annotated[Optional[str], typer.Option("--reason", envvar="FLOWRT_CANCEL_REASON", metavar="TEXT", help="Why, recorded in the timeline.")] = None,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Cancel a RUNNING or WAITING run (exit 4 if it already ended)."""
    with session(db, url, token) as backend:
        run = backend.cancel(run_id, reason)
    Output(as_json).run(run)


# --------------------------------------------------------------------------- inspect


def status(
    run_id: RunId,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Show a run: status, current node, state, outputs, error."""
    with session(db, url, token) as backend:
        run = backend.get(run_id)
    out = Output(as_json)
    out.run(run)
    _hint_waiting(out, run, db=db, url=url, flows=None)


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
            "--status",
            "-s",
            envvar="FLOWRT_RUNS_STATUS",
            callback=_run_status,
            metavar="STATUS",
            help="Only runs with this status: RUNNING, WAITING, COMPLETED, FAILED or CANCELLED.",
        ),
    ] = None,
    flow: Annotated[Optional[str], typer.Option("--flow", envvar="FLOWRT_RUNS_FLOW", metavar="FLOW", help="Only runs of this flow id.")] = None,
    tenant: Annotated[Optional[str], typer.Option("--tenant", envvar="FLOWRT_TENANT", metavar="TENANT", help="Only runs of this tenant.")] = None,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", "-n", envvar="FLOWRT_RUNS_LIMIT", min=1, max=1000, metavar="N", help="Runs per page. Default: 50 (the server's default remotely)."),
    ] = None,
    cursor: Annotated[
        Optional[str],
        typer.Option("--cursor", envvar="FLOWRT_RUNS_CURSOR", metavar="CURSOR", help="Continue after a previous page (its nextCursor)."),
    ] = None,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """List runs, newest first, one page at a time."""
    with session(db, url, token) as backend:
        page = backend.list_runs(
            status=status, flow_id=flow, tenant_id=tenant, limit=limit, cursor=cursor
        )
    Output(as_json).runs(page)


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
    interval: Annotated[
        float, typer.Option("--interval", envvar="FLOWRT_POLL_INTERVAL", min=0.05, metavar="SECONDS", help="How often --follow polls for new events.")
    ] = 0.5,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Show a run's timeline: time, event, node, attempt and what happened."""
    out = Output(as_json)
    with session(db, url, token) as backend:
        if not follow:
            return out.timeline(run_id, backend.timeline(run_id, after, limit))
        follow_timeline(backend, out, run_id, after, interval)


def follow_timeline(backend: Backend, out: Output, run_id: str, after: int, interval: float) -> None:
    """Print events as they are recorded; return once the run has ended and all its events are out.

    Against a server, its event stream pushes them; one without it (404/405, e.g. the reference
    runtime) or a stream that drops is followed by polling the timeline from the last event shown.
    """
    import httpx  # here, not at the top: this function is the CLI's only use of the stream

    from .. import sse

    show = out.event_stream()
    client = getattr(backend, "client", None)
    if isinstance(client, httpx.Client):
        try:
            for event in sse.follow_run(client, run_id, after):
                show(event)
                after = event["seq"]
            return
        except (sse.StreamUnavailable, httpx.TransportError):
            pass
    ended = False
    while True:
        events = backend.timeline(run_id, after)
        for event in events:
            show(event)
            after = event["seq"]
            ended = ended or event["type"] in ("RUN_COMPLETED", "RUN_ABORTED", "RUN_CANCELLED")
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


# --------------------------------------------------------------------------- operate


def recover(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", envvar="FLOWRT_RECOVER_DRY_RUN", help="Only list what would be continued, and why each run is stuck."),
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", envvar="FLOWRT_RECOVER_CONCURRENCY", min=1, max=64, metavar="N", help="Runs driven at once.")
    ] = 4,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Continue stuck runs to their next wait or end (see --dry-run for why each is stuck).

    Stuck means: RUNNING with nobody driving it, a lease whose holder died (its attempt
    counts as WORKER_LOST), a due timer, or a retry whose backoff is over. `flowrt serve`
    does this at startup and continuously; use this command when no server runs.
    """
    needs = None if dry_run else "to continue runs (it runs their nodes)"
    out = Output(as_json)
    with session(db, url, token, flows, needs_flows=needs) as backend:
        candidates = backend.stuck_runs()
        if dry_run:
            return out.stuck(candidates)
        todo = [c for c in candidates if c["action"] == "continue"]
        started = time.monotonic()
        with out.progress("recovering runs") as update:
            backend.recover(candidates, concurrency=concurrency, progress=update)
        seconds = round(time.monotonic() - started, 3)
        report = []
        for entry in todo:
            run = backend.get(entry["runId"])
            report.append(
                {
                    "runId": run["runId"],
                    "flowId": run["flowId"],
                    "flowVersion": run["flowVersion"],
                    "reason": entry["reason"],
                    "before": entry["status"],
                    "status": run["status"],
                    "currentNodeId": run["currentNodeId"],
                }
            )
    out.recovered({"seconds": seconds, "runs": report})


def _hint_waiting(
    out: Output, run: dict[str, Any], *, db: str | None, url: str | None, flows: list[str] | None
) -> None:
    """A next step that can be pasted as printed: the same connection options as this command."""
    if run.get("status") != "WAITING":
        return
    if url:
        where = f" --url {shlex.quote(url)}"
    else:
        where = f" --flows {shlex.quote(','.join(flows))}" if flows else " --flows MODULE:NAME"
        where += f" --db {shlex.quote(db)}" if db else ""
    out.note(f"resume it with: flowrt resume {run['runId']} --payload '<json>'{where}")


def register(app: typer.Typer) -> None:
    """Add the commands in the order `flowrt --help` lists them."""
    app.command(rich_help_panel="Runs")(start)
    app.command(rich_help_panel="Runs")(resume)
    app.command(rich_help_panel="Runs")(tick)
    app.command(rich_help_panel="Runs")(cancel)
    app.command(rich_help_panel="Inspect")(status)
    app.command(rich_help_panel="Inspect")(runs)
    app.command(rich_help_panel="Inspect")(timeline)
    app.command(rich_help_panel="Inspect")(flows)
    app.command(rich_help_panel="Operate")(recover)
