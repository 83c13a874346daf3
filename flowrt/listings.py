"""The cold path of :class:`~flowrt.storage.Storage`: listing, counting and deleting runs.

Plain SQL over the indexes the schema keeps; none of it runs per step. A mixin so that the
one storage class reads as its hot path, with these beside it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Sequence

import peewee as pw

from .schema import RUN_COLUMNS, EventRow, RunRow


def _first_id_at(ms: int) -> str:
    """The smallest UUIDv7 of millisecond ``ms``: ids of runs started at or after it sort at or above."""
    h = f"{max(0, min(ms, (1 << 48) - 1)):012x}"
    return f"{h[:8]}-{h[8:12]}-0000-0000-000000000000"


class Listings:
    """Listing, counting and deleting runs (mixed into Storage, whose ``_read``/``_write`` they use)."""

    db: pw.Database
    _sql: Any
    edits: int

    if TYPE_CHECKING:  # Storage's own

        def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

        def _write(self, *, one_statement: bool = False) -> contextlib.AbstractContextManager[Any]: ...

    def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[EventRow]:
        if limit is None:
            return self._read(self._sql.events_all, (run_id, after))
        return self._read(self._sql.events_page, (run_id, after, limit))

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[RunRow]:
        """Newest first; ``cursor`` is the last run id of the previous page (keyset, O(page)).

        ``since`` / ``until`` (epoch ms) bound when runs were started: run ids are UUIDv7,
        whose first 48 bits are the creation millisecond, so the bounds are run-id bounds
        on the primary key (no index on created_at needed). ``until`` is exclusive.
        """
        p = self.db.param
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("flow_id", flow_id), ("tenant_id", tenant_id)):
            if value is not None:
                where.append(f"{column} = {p}")
                params.append(value)
        if cursor:
            where.append(f"run_id < {p}")
            params.append(cursor)
        if since is not None:
            where.append(f"run_id >= {p}")
            params.append(_first_id_at(since))
        if until is not None:
            where.append(f"run_id < {p}")
            params.append(_first_id_at(until))
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM flowrt_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY run_id DESC LIMIT {p}"
        params.append(limit)
        return [RunRow(*r) for r in self._read(sql, params)]

    def delete_runs(self, flow_id: str, flow_version: str) -> None:
        """Delete every run of one flow version with its events (``flowrt bench`` cleans up with it)."""
        p = self.db.param
        with self._write() as cur:
            self.edits += 1
            cur.execute(
                "DELETE FROM flowrt_events WHERE run_id IN "
                f"(SELECT run_id FROM flowrt_runs WHERE flow_id = {p} AND flow_version = {p})",
                (flow_id, flow_version),
            )
            cur.execute(f"DELETE FROM flowrt_runs WHERE flow_id = {p} AND flow_version = {p}", (flow_id, flow_version))

    def runnable_ids(self) -> list[tuple[str, str, str | None, int | None]]:
        """``(run_id, status, lease_owner, wake_at)`` of every RUNNING run and WAITING timer."""
        p = self.db.param
        return self._read(
            "SELECT run_id, status, lease_owner, wake_at FROM flowrt_runs "
            f"WHERE status = {p} OR (status = {p} AND wake_at IS NOT NULL) ORDER BY run_id",
            ("RUNNING", "WAITING"),
        )

    def held_elsewhere(self, owner: str, now_ms: int) -> list[tuple[str, int, int]]:
        """``(holder, runs, first expiry)`` for each other owner whose lease keeps active runs at
        ``now_ms``: what a recovery could not take (after a crash, perhaps a process that is gone)."""
        p = self.db.param
        rows = self._read(
            "SELECT lease_owner, COUNT(*), MIN(lease_expires_at) FROM flowrt_runs "
            f"WHERE status IN ({p}, {p}) AND lease_owner IS NOT NULL AND lease_owner <> {p} AND lease_expires_at > {p} "
            "GROUP BY lease_owner ORDER BY lease_owner",
            ("RUNNING", "WAITING", owner, now_ms),
        )
        return [(holder, int(count), int(first)) for holder, count, first in rows]

    def running_ids(self) -> list[str]:
        return [r[0] for r in self._read(self._sql.running_ids, ("RUNNING",))]

    def count_runs(self, flow_version: str | None = None) -> dict[str, int]:
        if flow_version is None:
            rows = self._read("SELECT status, COUNT(*) FROM flowrt_runs GROUP BY status", ())
        else:
            rows = self._read(
                f"SELECT status, COUNT(*) FROM flowrt_runs WHERE flow_version = {self.db.param} GROUP BY status",
                (flow_version,),
            )
        return {status: count for status, count in rows}
