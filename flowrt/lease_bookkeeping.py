"""The process's lease bookkeeping in :class:`~flowrt.storage.Storage`: renewals, expiries,
hand-backs at close and the release of lapsed leases -- writes of many runs at once, made by
the lease renewer and at start and shutdown (:mod:`flowrt.leases`), never per step. A mixin,
as :mod:`flowrt.listings` is, so that the storage class reads as its hot path.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Sequence

import peewee as pw

from .clock import Clock


class LeaseBookkeeping:
    """Bulk lease writes (mixed into Storage, whose ``_read``/``_write`` they use)."""

    db: pw.Database
    _sql: Any
    kind: str
    clock: Clock

    if TYPE_CHECKING:  # Storage's own

        def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

        def _write(self, *, one_statement: bool = False) -> contextlib.AbstractContextManager[Any]: ...

    def release_lapsed(self, owner: str, keep: Sequence[str]) -> None:
        """Release ``owner``'s leases that ran out, but those of ``keep`` (at most 500)."""
        p = self.db.param
        lapsed = (
            f"status IN ('RUNNING', 'WAITING') AND lease_owner = {p} AND lease_expires_at > 0 AND lease_expires_at < {p}"
        )
        now = self.clock.now_ms()
        if not self._read(f"SELECT 1 FROM flowrt_runs WHERE {lapsed} LIMIT 1", (owner, now)):
            return  # the usual case: a read, no write
        if keep:
            lapsed += f" AND run_id NOT IN ({', '.join([p] * len(keep))})"
        with self._write() as cur:
            cur.execute(f"UPDATE flowrt_runs SET lease_owner = NULL, lease_expires_at = NULL WHERE {lapsed}", (owner, now, *keep))

    def leases_of(self, owner: str) -> list[tuple[str, int, int]]:
        """``(run_id, epoch, expiry)`` of the active runs whose lease ``owner`` holds (run out or not;
        not those ended on purpose, expiry 0)."""
        p = self.db.param
        rows = self._read(
            f"SELECT run_id, lease_epoch, lease_expires_at FROM flowrt_runs WHERE status IN ('RUNNING', 'WAITING') "
            f"AND lease_owner = {p} AND lease_expires_at > 0",
            (owner,),
        )
        return [(run_id, int(epoch), int(expiry)) for run_id, epoch, expiry in rows]

    def end_lapsed(self, owner: str, leases: Sequence[tuple[str, int]]) -> int:
        """End (expiry 0) those of ``leases`` -- ``(run_id, epoch)`` -- that ``owner`` still holds
        at that epoch and that have run out; how many."""
        p = self.db.param
        now, ended = self.clock.now_ms(), 0
        with self._write() as cur:
            for run_id, epoch in leases:
                cur.execute(
                    f"UPDATE flowrt_runs SET lease_expires_at = 0 WHERE run_id = {p} AND lease_epoch = {p} "
                    f"AND lease_owner = {p} AND lease_expires_at > 0 AND lease_expires_at < {p}",
                    (run_id, epoch, owner, now),
                )
                ended += int(cur.rowcount)
        return ended

    def release_many(self, leases: Sequence[tuple[str, int]]) -> None:
        """Hand back many ``(run_id, epoch)`` leases in one transaction (parked ones, at close)."""
        with self._write() as cur:
            for run_id, epoch in leases:
                cur.execute(self._sql.release, (run_id, epoch))

    def renew(self, owner: str, run_ids: Sequence[str], ttl_ms: int) -> None:
        expires = self.clock.now_ms() + ttl_ms
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            marks = ", ".join([self.db.param] * len(chunk))
            where = f"lease_owner = {self.db.param} AND run_id IN ({marks})"
            if self.kind == "postgres":
                # A row a step's commit has locked is being written with a fresh lease anyway;
                # waiting for it while holding others could deadlock with a batch of commits.
                where = f"run_id IN (SELECT run_id FROM flowrt_runs WHERE {where} FOR UPDATE SKIP LOCKED)"
            with self._write() as cur:
                cur.execute(f"UPDATE flowrt_runs SET lease_expires_at = {self.db.param} WHERE {where}", [expires, owner, *chunk])

    def expire_holder(self, owner: str) -> int:
        """End every lease ``owner`` holds now, as :meth:`expire` does: a holder known to be gone
        (:mod:`flowrt.liveness`). How many runs it held."""
        p = self.db.param
        with self._write() as cur:
            cur.execute(
                f"UPDATE flowrt_runs SET lease_expires_at = 0 WHERE status IN ({p}, {p}) AND lease_owner = {p} "
                "AND lease_expires_at > 0",
                ("RUNNING", "WAITING", owner),
            )
            return int(cur.rowcount)

    def expire(self, owner: str, run_ids: Sequence[str]) -> None:
        """End ``owner``'s leases now without releasing them: the next claimer, this process
        included, sees an abandoned holder and records the interrupted attempt as WORKER_LOST.
        (Expiry 0 marks it as on purpose: a lease of ours that merely ran out is not free to us.)"""
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            marks = ", ".join([self.db.param] * len(chunk))
            with self._write() as cur:
                cur.execute(
                    f"UPDATE flowrt_runs SET lease_expires_at = 0 WHERE lease_owner = {self.db.param} AND run_id IN ({marks})",
                    [owner, *chunk],
                )
