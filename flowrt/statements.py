"""The hot-path SQL, rendered once per backend: building statements through Peewee's model
API on every step costs more than the commit itself (shared/spec/PERFORMANCE.md)."""

from __future__ import annotations

from .schema import EVENT_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, STEP_COLUMNS_IN_PLACE, WIRE_EVENT_COLUMNS


class Statements:
    """The hot-path SQL of one backend (``p``: its parameter mark; ``kind``: sqlite, memory, postgres)."""

    def __init__(self, p: str, kind: str) -> None:
        cols = ", ".join(RUN_COLUMNS)
        self.p = p
        # Free: nobody holds it, its holder expired it on purpose (0: an abandoned step), or
        # another process's lease ran out. Never our own lease that merely ran out: this
        # process is alive, and a step of it may be waiting for the database to commit.
        # Parameters: (now, owner).
        free = f"(lease_owner IS NULL OR lease_expires_at <= 0 OR (lease_expires_at < {p} AND lease_owner <> {p}))"
        take = (
            f"UPDATE flowrt_runs SET lease_owner = {p}, lease_expires_at = {p}, "
            # A claim that finds a lease (expired: the holder died) remembers whose it was until a
            # step commits, so the lost attempt is recorded even if this claimer backs off.
            "lease_epoch = lease_epoch + 1, stale_owner = COALESCE(lease_owner, stale_owner)"
        )
        self.insert_run = f"INSERT INTO flowrt_runs ({cols}) VALUES ({', '.join([p] * len(RUN_COLUMNS))})"
        self.get_run = f"SELECT {cols} FROM flowrt_runs WHERE run_id = {p}"
        # (owner, expires, run_id, now, owner)
        self.claim_by_id = (
            f"{take} WHERE run_id = {p} AND status IN ('RUNNING', 'WAITING') AND {free} RETURNING {cols}"
        )
        self._lock = " FOR UPDATE SKIP LOCKED" if kind == "postgres" else ""
        self._take, self._free, self._cols = take, free, cols
        self._claim_next: dict[tuple[bool, int], tuple[str, str]] = {}
        # A step's update, fenced by the lease epoch. Parameters: the step's columns, run_id, epoch.
        # In place: the run's status and timer stay as they were, so they are left out and
        # SQLite rewrites no index entry (it rewrites those of every column a SET names).
        self.commit_step, self.commit_step_in_place = (
            "UPDATE flowrt_runs SET "
            + ", ".join(f"{c} = {p}" for c in columns)
            + f", stale_owner = NULL WHERE run_id = {p} AND lease_epoch = {p}"
            for columns in (STEP_COLUMNS, STEP_COLUMNS_IN_PLACE)
        )
        self.event_exists = f"SELECT 1 FROM flowrt_events WHERE run_id = {p} AND seq = {p}"
        self.release = (
            f"UPDATE flowrt_runs SET lease_owner = NULL, lease_expires_at = NULL WHERE run_id = {p} AND lease_epoch = {p}"
        )
        self.cancel = (
            "UPDATE flowrt_runs SET status = 'CANCELLED', lease_owner = NULL, lease_expires_at = NULL, "
            "lease_epoch = lease_epoch + 1, stale_owner = NULL, wake_at = NULL, wait_reason = NULL, wait_until = NULL, "
            f"last_seq = last_seq + 1, updated_at = {p} "
            f"WHERE run_id = {p} AND status IN ('RUNNING', 'WAITING') RETURNING {cols}"
        )
        self.events_all = (
            f"SELECT {', '.join(WIRE_EVENT_COLUMNS)} FROM flowrt_events WHERE run_id = {p} AND seq > {p} ORDER BY seq"
        )
        self.events_page = self.events_all + f" LIMIT {p}"
        self.get_idempotency = (
            f"SELECT output_json, patch_json FROM flowrt_idempotency WHERE flow_id = {p} AND node_id = {p} AND key = {p}"
        )
        self.insert_idempotency = (
            "INSERT INTO flowrt_idempotency (flow_id, node_id, key, run_id, output_json, patch_json, created_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING"
        )
        self.running_ids = f"SELECT run_id FROM flowrt_runs WHERE status = {p} ORDER BY run_id"
        self.insert_start_key = (
            f"INSERT INTO flowrt_start_keys (key, run_id, fingerprint, created_at) VALUES ({p}, {p}, {p}, {p}) "
            "ON CONFLICT DO NOTHING"
        )
        self.get_start_key = f"SELECT run_id, fingerprint FROM flowrt_start_keys WHERE key = {p}"
        self._events: dict[int, str] = {}
        self.one_statement = kind == "postgres"
        """Whether a step's (and a start's) writes are one statement here: Postgres can update
        a run and insert its events together (a data-modifying WITH), so a write alone costs
        one round trip, with no BEGIN and COMMIT around it."""
        self._step_with_events: dict[tuple[int, bool], str] = {}
        self._run_with_events: dict[int, str] = {}

    def claim_next(self, timers: bool, flows: int) -> tuple[str, str]:
        """``(probe, claim)`` for the next runnable run of ``flows`` registered flow versions.

        Parameters: probe ``(now, now, owner, *flows)``; claim ``(owner, expires, now, now, owner, *flows, now, owner)``.
        """
        key = (timers, flows)
        found = self._claim_next.get(key)
        if found is None:
            p = self.p
            if timers:
                where, order = f"status = 'WAITING' AND wake_at <= {p}", "wake_at"
            else:
                where, order = f"status = 'RUNNING' AND (wake_at IS NULL OR wake_at <= {p})", "run_id"
            where += f" AND {self._free} AND flow_id || '@' || flow_version IN ({', '.join([p] * flows)})"
            probe = f"SELECT 1 FROM flowrt_runs WHERE {where} LIMIT 1"
            claim = (
                f"{self._take} WHERE run_id = (SELECT run_id FROM flowrt_runs WHERE {where} "
                f"ORDER BY {order} LIMIT 1{self._lock}) AND {self._free} RETURNING {self._cols}"
            )
            found = self._claim_next[key] = (probe, claim)
        return found

    def insert_events(self, count: int) -> str:
        sql = self._events.get(count)
        if sql is None:
            one = "(" + ", ".join([self.p] * len(EVENT_COLUMNS)) + ")"
            sql = f"INSERT INTO flowrt_events ({', '.join(EVENT_COLUMNS)}) VALUES " + ", ".join([one] * count)
            self._events[count] = sql
        return sql

    # Postgres only (see one_statement). The events' values carry their column types: in a
    # SELECT over VALUES nothing else tells Postgres what a NULL parameter is.
    _EVENT_TYPES = ("varchar", "integer", "bigint", "varchar", "varchar", "integer", "text", "text")

    def step_with_events(self, count: int, in_place: bool) -> str:
        """A step's run update and its ``count`` events, the events written only if the
        update was (lease epoch unchanged); its rowcount is the events written.
        Parameters: the step's columns (``in_place``: without status and timer), run_id,
        epoch, then the events' values."""
        sql = self._step_with_events.get((count, in_place))
        if sql is None:
            p = self.p
            one = "(" + ", ".join(f"{p}::{t}" for t in self._EVENT_TYPES) + ")"
            sql = (
                f"WITH moved AS ({self.commit_step_in_place if in_place else self.commit_step} RETURNING 1) "
                f"INSERT INTO flowrt_events ({', '.join(EVENT_COLUMNS)}) "
                f"SELECT * FROM (VALUES {', '.join([one] * count)}) AS e WHERE EXISTS (SELECT 1 FROM moved)"
            )
            self._step_with_events[(count, in_place)] = sql
        return sql

    def run_with_events(self, count: int) -> str:
        """A new run and its first ``count`` events, in one statement."""
        sql = self._run_with_events.get(count)
        if sql is None:
            sql = f"WITH run AS ({self.insert_run} RETURNING 1) {self.insert_events(count)}"
            self._run_with_events[count] = sql
        return sql

