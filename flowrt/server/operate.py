"""The operator's routes: retry and rewind a run, prune old runs (``/v1/admin/prune``).

Mounted under /v1 by :func:`~flowrt.server.app.create_app`, so the token guard applies:
retry and rewind need the ``operate`` scope (every POST does), prune declares ``admin``.
Each records who did it (``by``, :func:`~flowrt.server.auth.identity`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler

from .answers import check_run_id
from .auth import identity
from .wire import RunOut

if TYPE_CHECKING:
    from .app import ApiState

Name = Annotated[str, msgspec.Meta(max_length=200, pattern="^[^\x00]*$")]

class RewindRequest(msgspec.Struct, rename="camel"):
    """Body of ``POST /v1/runs/{runId}/rewind``."""

    to_node: Name


class PruneRequest(msgspec.Struct, rename="camel"):
    """Body of ``POST /v1/admin/prune``."""

    older_than: Annotated[str, msgspec.Meta(max_length=40)]
    """Finished runs that ended longer ago than this: 30d, 12h, 90m, 1w, or seconds."""
    status: list[Literal["COMPLETED", "FAILED", "CANCELLED"]] | None = None
    dry_run: bool = False
    max_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    """Answer after about this long, with ``more: true`` if runs may be left (then ask again)."""


class PruneOut(msgspec.Struct, rename="camel"):
    runs: int
    events: int
    idempotency_records: int
    start_keys: int
    size_before: int | None
    size_after: int | None
    space_note: str | None
    dry_run: bool
    seconds: float
    more: bool



def operate_handlers(state: ApiState, max_body_bytes: int) -> list[HTTPRouteHandler]:
    """The routes, bound to the app's state (imported late: app.py imports this module)."""
    from .app import RunIdParam, WaitParam, _body_doc, _docs, json_response

    engine = state.engine

    @post(
        "/runs/{run_id:str}/retry",
        status_code=200,
        summary="Retry a failed or cancelled run where it stopped",
        description="The run becomes RUNNING at the node that failed (or where it was cancelled), with its state "
        "and outputs as they were and that node's failure count reset; the timeline records RUN_RETRIED {by, fromNode}. "
        "409 for a COMPLETED, RUNNING or WAITING run; 422 if the run's flow version is not loaded. "
        "With ?wait=, the run once it has left RUNNING.",
        responses=_docs(RunOut, 403, 404, 409, 422),
    )
    async def retry_run(
        request: Request[Any, Any, Any], run_id: str = RunIdParam, wait: float | None = WaitParam
    ) -> Response[bytes]:
        check_run_id(run_id)
        run = await engine.retry_async(run_id, by=identity(request))
        if wait is not None:
            run = await state.settle(run, wait)
        return json_response(run.to_json())

    @post(
        "/runs/{run_id:str}/rewind",
        status_code=200,
        summary="Rewind a run to an earlier node",
        description="The run continues from toNode with the state and outputs it had just before that node last "
        "started; outputs of later nodes are removed and every event is kept (RUN_REWOUND {by, toNode, seq}, seq "
        "being that NODE_STARTED's). For WAITING and ended runs, and RUNNING ones nobody is stepping (else 409 "
        "RUN_BUSY); 409 REWIND_UNAVAILABLE when the node never started or the run's stored history does not reach "
        "back that far; 400 for a node the flow does not have. With ?wait=, the run once it has left RUNNING.",
        responses=_docs(RunOut, 403, 404, 409, 413, 422),
    )
    async def rewind_run(
        request: Request[Any, Any, Any],
        data: RewindRequest = _body_doc(max_body_bytes, '{"toNode": "..."}.'),
        run_id: str = RunIdParam,
        wait: float | None = WaitParam,
    ) -> Response[bytes]:
        check_run_id(run_id)
        run = await engine.rewind_async(run_id, data.to_node, by=identity(request))
        if wait is not None:
            run = await state.settle(run, wait)
        return json_response(run.to_json())

    @post(
        "/admin/prune",
        status_code=200,
        summary="Delete old finished runs (admin)",
        description="Deletes COMPLETED, FAILED and CANCELLED runs (or those of status) that ended longer than "
        "olderThan ago, with their events, idempotency records and start keys, in small batches; RUNNING and "
        "WAITING runs are never touched. dryRun only counts. With maxSeconds the answer comes after the batch or "
        "vacuum step that passes that long, with more: true when work may be left: send it again until more is "
        "false, so a long prune comes back in slices. Needs a token with the admin scope.",
        responses=_docs(PruneOut, 403, 413),
        opt={"scope": "admin"},
    )
    async def prune_runs(data: PruneRequest = _body_doc(max_body_bytes, "What to prune.")) -> Response[bytes]:
        statuses = None if data.status is None else [str(status) for status in data.status]
        report = await asyncio.to_thread(
            engine.prune, data.older_than, statuses, dry_run=data.dry_run, max_seconds=data.max_seconds
        )
        return json_response(report.to_json())

    return [retry_run, rewind_run, prune_runs]
