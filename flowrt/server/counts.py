"""``GET /v1/runs/counts``: how many runs are in each status (the dashboard's summary line).

One ``GROUP BY status`` over the runs table (the status index on SQLite and Postgres),
optionally narrowed to a flow and/or a tenant; every status is present, zeros included,
so a client need not know the list.
"""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter

from ..runs import RunStatus

_NO_NUL = "^[^\x00]*$"


def counts_handler(api: Any) -> HTTPRouteHandler:
    """The route, bound to the app's :class:`~flowrt.server.app.ApiState` (mounted under /v1)."""
    engine = api.engine

    def count(flow_id: str | None, tenant_id: str | None) -> dict[str, int]:
        storage = engine.storage
        p = storage.db.param
        where, params = [], []
        for column, value in (("flow_id", flow_id), ("tenant_id", tenant_id)):
            if value is not None:
                where.append(f"{column} = {p}")
                params.append(value)
        sql = "SELECT status, COUNT(*) FROM flowrt_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        # Storage's own read path (connection, lock, error translation); the SQL is ours.
        rows = storage._read(sql + " GROUP BY status", params)
        found = {str(status): int(n) for status, n in rows}
        return {status.value: found.get(status.value, 0) for status in RunStatus}

    @get("/runs/counts", summary="How many runs are in each status", tags=["runs"])
    async def run_counts(
        flowId: str | None = Parameter(required=False, max_length=200, pattern=_NO_NUL),  # noqa: N803
        tenantId: str | None = Parameter(required=False, max_length=200, pattern=_NO_NUL),  # noqa: N803
    ) -> dict[str, int]:
        result: dict[str, int] = await engine.offload(count, flowId, tenantId)
        return result

    return run_counts
