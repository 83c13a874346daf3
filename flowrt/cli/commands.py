"""The commands that move runs (start, resume, tick, cancel) and recover.

Each command is a thin function: the backend (local engine or HTTP server) does the
work and returns the API's JSON, :class:`~flowrt.cli.output.Output` prints it, and
errors propagate to the one handler in :mod:`flowrt.cli`, which turns them into a
line on stderr and an exit code. The ``--wait`` loops live in the backends
(``_settle``), one per mode, so they are easy to change.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from typing import Annotated, Any, Iterator, Optional

import typer

from ..errors import RunBusy
from . import bulk
from .bulk import DryRun, FlowFilter, Since, Status, TenantFilter, Until, Yes
from .errors import INTERRUPTED, RUN_FAILED, Stopped, UsageProblem
from .options import AsJson, Db, Debug, Flows, RunId, Token, Url, Wait, read_json, session
from .output import Output

#: RUN, or nothing when a filter selects the runs (cancel, retry, resume).
MaybeRun = Annotated[
    Optional[str],
    typer.Argument(metavar="RUN", help="The run id; leave it out and give a filter to act on many runs.", show_default=False),
]


def _one_or_many(run_id: str | None, filters: tuple[Any, ...], dry_run: bool, yes: bool, wait: bool = False) -> bool:
    """True when a filter selects the runs; a usage error for a mix of both, or neither.
    (``--yes`` means nothing for one run, and is ignored: FLOWRT_YES may be set for scripts.)"""
    chosen = bulk.any_filter(*filters)
    if run_id is not None and chosen:
        raise UsageProblem("give either RUN or a filter (--status, --flow, --tenant, --since, --until), not both")
    if run_id is not None and dry_run:
        raise UsageProblem("--dry-run lists the runs a filter selects; with one RUN, see `flowrt status RUN`")
    if run_id is None and not chosen:
        raise UsageProblem("give a RUN, or a filter (--status, --flow, --tenant, --since, --until) to act on many runs")
    if chosen and wait:
        raise UsageProblem("--wait is for one run; with a filter, watch them with `flowrt runs --watch`")
    return chosen


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
    idempotency_key: Annotated[
        Optional[str],
        typer.Option(
            "--idempotency-key",
            envvar="FLOWRT_IDEMPOTENCY_KEY",
            metavar="KEY",
            help="Starting again with the same key returns the run the first start made (safe to retry); "
            "the same key with another flow or input is an error (exit 4).",
        ),
    ] = None,
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
    with _stops_on_ctrl_c(db, url, flows), session(db, url, token, flows, needs_flows="to start a run", creates_db=True) as backend:
        result, replayed = backend.start(
            flow, version=version, input=payload, tenant_id=tenant, wait=wait, idempotency_key=idempotency_key
        )
    out = Output(as_json)
    if not wait:
        out.started({**result, "replayed": replayed})
        if not url and result.get("status") == "RUNNING":
            out.note(_nothing_drives(result["runId"], db=db, flows=flows))
        return
    if replayed:
        out.note(f"Run {result['runId']} was started earlier with this idempotency key; nothing new was started")
    out.run(result)
    hint_waiting(out, result, db=db, url=url, flows=flows)
    _exit_for(result)


def resume(
    run_id: MaybeRun = None,
    payload: Annotated[
        Optional[str],
        typer.Option("--payload", "-p", envvar="FLOWRT_RESUME_PAYLOAD", metavar="JSON|@FILE|-", help="The resume payload: inline JSON, @file.json, or - for stdin. Default: null."),
    ] = None,
    wait: Wait = False,
    status: Status = None,
    flow: FlowFilter = None,
    tenant: TenantFilter = None,
    since: Since = None,
    until: Until = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Resume a WAITING run with a payload (e.g. a human's decision), or every WAITING run a filter selects.

    The waiting node runs again and sees the payload as ctx.resume_payload. Resuming a
    run that is not WAITING is an error (exit 4): a dropped decision is never silent.
    """
    value = read_json(payload, "--payload")
    if _one_or_many(run_id, (status, flow, tenant, since, until), dry_run, yes, wait):
        return bulk.run_bulk(
            "resume", lambda backend, rid: backend.resume(rid, value, wait=False),
            status=status, flow=flow, tenant=tenant, since=since, until=until, dry_run=dry_run, yes=yes,
            db=db, url=url, token=token, flows=flows, needs_flows="to resume runs (it runs the waiting nodes)",
            as_json=as_json,
        )  # fmt: skip
    assert run_id is not None
    with _stops_on_ctrl_c(db, url, flows, run_id), session(
        db, url, token, flows, needs_flows="to resume a run (it runs the waiting node)"
    ) as backend:
        run = backend.resume(run_id, value, wait=wait)
    out = Output(as_json)
    out.run(run)
    hint_waiting(out, run, db=db, url=url, flows=flows)
    if wait:
        _exit_for(run)


def tick(
    run_id: RunId,
    wait: Wait = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Execute one step of a run (a WAITING run's node is polled once); with --wait, until it waits or ends."""
    with _stops_on_ctrl_c(db, url, flows, run_id), session(
        db, url, token, flows, needs_flows="to tick a run (it runs a node)"
    ) as backend:
        try:
            run = backend.tick(run_id)
        except RunBusy as busy:
            if not wait:
                raise
            print(f"{busy.message}; watching it until it waits or ends", file=sys.stderr, flush=True)
            run = {"status": "RUNNING"}  # another executor holds it (a server): --wait watches it, as start does
        if wait and run.get("status") == "RUNNING":
            run = backend.settle(run_id)
    out = Output(as_json)
    out.run(run)
    if wait:
        hint_waiting(out, run, db=db, url=url, flows=flows)
        _exit_for(run)


def cancel(
    run_id: MaybeRun = None,
    reason: Annotated[Optional[str], typer.Option("--reason", envvar="FLOWRT_CANCEL_REASON", metavar="TEXT", help="Why, recorded in the timeline.")] = None,
    status: Status = None,
    flow: FlowFilter = None,
    tenant: TenantFilter = None,
    since: Since = None,
    until: Until = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Cancel a RUNNING or WAITING run (exit 4 if it already ended), or every one a filter selects."""
    if _one_or_many(run_id, (status, flow, tenant, since, until), dry_run, yes):
        return bulk.run_bulk(
            "cancel", lambda backend, rid: backend.cancel(rid, reason),
            status=status, flow=flow, tenant=tenant, since=since, until=until, dry_run=dry_run, yes=yes,
            db=db, url=url, token=token, flows=None, needs_flows=None, as_json=as_json,
        )  # fmt: skip
    assert run_id is not None
    with session(db, url, token) as backend:
        run = backend.cancel(run_id, reason)
    Output(as_json).run(run)


def retry(
    run_id: MaybeRun = None,
    wait: Wait = False,
    status: Status = None,
    flow: FlowFilter = None,
    tenant: TenantFilter = None,
    since: Since = None,
    until: Until = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Retry a FAILED or CANCELLED run from the node where it stopped.

    Its state and outputs stay as they were and that node's failure count is reset; the
    timeline records RUN_RETRIED. A COMPLETED or active run is a conflict (exit 4).
    Without --wait the run is only made RUNNING again, for a server's drivers or tick.
    With a filter instead of RUN, every FAILED or CANCELLED run it selects.
    """
    if _one_or_many(run_id, (status, flow, tenant, since, until), dry_run, yes, wait):
        return bulk.run_bulk(
            "retry", lambda backend, rid: backend.retry(rid, wait=False),
            status=status, flow=flow, tenant=tenant, since=since, until=until, dry_run=dry_run, yes=yes,
            db=db, url=url, token=token, flows=flows, needs_flows="to retry runs (their flows must be loaded)",
            as_json=as_json,
        )  # fmt: skip
    assert run_id is not None
    with session(db, url, token, flows, needs_flows="to retry a run (its flow must be loaded)") as backend:
        run = backend.retry(run_id, wait=wait)
    out = Output(as_json)
    out.run(run)
    hint_waiting(out, run, db=db, url=url, flows=flows)
    if not url and run.get("status") == "RUNNING":
        out.note(_nothing_drives(run["runId"], db=db, flows=flows))
    if wait:
        _exit_for(run)


def rewind(
    run_id: RunId,
    to: Annotated[str, typer.Option("--to", envvar="FLOWRT_REWIND_TO", metavar="NODE", help="The node to continue from.")],
    wait: Wait = False,
    db: Db = None,
    url: Url = None,
    token: Token = None,
    flows: Flows = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Rewind a WAITING or ended run to NODE and continue from there.

    The run gets the state and outputs it had just before NODE last started; outputs of
    later nodes are removed, and every event stays in the timeline (RUN_REWOUND). A
    RUNNING run, or a point the run's history cannot rebuild, is a conflict (exit 4).
    """
    with session(db, url, token, flows, needs_flows="to rewind a run (its flow must be loaded)") as backend:
        run = backend.rewind(run_id, to, wait=wait)
    out = Output(as_json)
    out.run(run)
    hint_waiting(out, run, db=db, url=url, flows=flows)
    if not url and run.get("status") == "RUNNING":
        out.note(_nothing_drives(run["runId"], db=db, flows=flows))
    if wait:
        _exit_for(run)


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
            local_without_flows = url is None and not flows  # a real recover would be refused: say what it needs
            return out.stuck(candidates, then="flowrt recover --flows module:NAME" if local_without_flows else None)
        todo = [c for c in candidates if c["action"] == "continue"]
        started = time.monotonic()
        with out.progress("recovering runs") as update:
            left = backend.recover(candidates, concurrency=concurrency, progress=update)
        seconds = round(time.monotonic() - started, 3)
        report = []
        for entry in todo:
            run = backend.get(entry["runId"])
            report.append(
                {
                    **({"leftBecause": left[entry["runId"]]} if entry["runId"] in left else {}),
                    "runId": run["runId"],
                    "flowId": run["flowId"],
                    "flowVersion": run["flowVersion"],
                    "reason": entry["reason"],
                    "before": entry["status"],
                    "status": run["status"],
                    "currentNodeId": run["currentNodeId"],
                    "wakeAt": run.get("wakeAt"),
                }
            )
    out.recovered({"seconds": seconds, "runs": report})
    skipped = sum(1 for c in candidates if c["action"] == "skip")
    if skipped:
        out.note(f"{skipped} run(s) skipped, not due yet or held by another process: 'flowrt recover --dry-run' says why")
    backing_off = sorted(r["wakeAt"] for r in report if r["status"] == "RUNNING" and r["wakeAt"] and "leftBecause" not in r)
    if backing_off:  # a backoff longer than a tick waits out (Engine(inline_backoff=...))
        out.note(
            f"{len(backing_off)} run(s) left RUNNING in a retry backoff, the first due at {backing_off[0]}: "
            "run 'flowrt recover' again after that (a 'flowrt serve' with drivers continues them itself)"
        )


def hint_waiting(
    out: Output, run: dict[str, Any], *, db: str | None, url: str | None, flows: list[str] | None
) -> None:
    """A next step that can be pasted as printed: the same connection options as this command."""
    if run.get("status") != "WAITING":
        return
    where = f" --url {shlex.quote(url)}" if url else _connection(db, flows)
    out.note(f"resume it with: flowrt resume {run['runId']} --payload '<json>'{where}")


def _connection(db: str | None, flows: list[str] | None) -> str:
    where = f" --flows {shlex.quote(','.join(flows))}" if flows else " --flows MODULE:NAME"
    return where + (f" --db {shlex.quote(db)}" if db else "")


@contextlib.contextmanager
def _stops_on_ctrl_c(db: str | None, url: str | None, flows: list[str] | None, run_id: str | None = None) -> Iterator[None]:
    """Ctrl-C never fails a run: say where it stands and the command that continues or watches it."""
    try:
        yield
    except Stopped as stop:
        if stop.run and stop.run.get("status") != "RUNNING":
            return  # it reached a wait or its end after all
        if url is not None:
            _stopped_watching(stop.run_id, url)
        what = (
            f"abandoned node {stop.node_id} of run {stop.run_id}: its attempt is recovered (not failed) "
            "when the run is continued"
            if stop.abandoned
            else f"stopped: run {stop.run_id} is RUNNING" + (f" at node {stop.run.get('currentNodeId')}" if stop.run else "")
        )
        sys.stderr.write(f"{what}\ncontinue it with: flowrt tick {stop.run_id} --wait{_connection(db, flows)}\n")
        raise typer.Exit(INTERRUPTED) from None
    except KeyboardInterrupt:
        if url is None or run_id is None:
            raise
        _stopped_watching(run_id, url)


def _stopped_watching(run_id: str, url: str) -> None:
    sys.stderr.write(
        f"stopped watching run {run_id}; it goes on on the server. Watch it with: "
        f"flowrt status {run_id} --watch --url {shlex.quote(url)}\n"
    )
    raise typer.Exit(INTERRUPTED) from None


def _nothing_drives(run_id: str, *, db: str | None, flows: list[str] | None) -> str:
    """A local start without --wait leaves a run nobody moves: say so, and how to move it."""
    return (
        f"nothing drives this run yet: move it with `flowrt tick {run_id}{_connection(db, flows)}`, "
        f"start with --wait, run `flowrt recover`, or let `flowrt serve` on this database pick it up"
    )


def register_runs(app: typer.Typer, cls: Any) -> None:
    """The commands that move runs, in the order `flowrt --help` lists them."""
    for command in (start, resume, tick, cancel, retry, rewind):
        app.command(rich_help_panel="Runs", cls=cls)(command)


def register_operate(app: typer.Typer, cls: Any) -> None:
    app.command(rich_help_panel="Operate", cls=cls)(recover)
    app.command(rich_help_panel="Operate", cls=cls)(bulk.prune)
