"""flowrt's tables: the row shapes, the Peewee models, and the numbered migrations.

The schema version is recorded in ``flowrt_schema``; :meth:`flowrt.storage.Storage.ensure_schema`
applies the migrations after it in order, at start. A migration may not assume the models of
today: each checks what is there (a database created from scratch got today's tables in
migration 1) and writes its changes in SQL both SQLite and Postgres accept. Databases written by
earlier versions are kept in tests/fixtures and upgraded by tests/test_migrations.py.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import peewee as pw

from .runs import EventType
from .values import dumps

SCHEMA_VERSION = 4

RUN_COLUMNS = (
    "run_id",
    "flow_id",
    "flow_version",
    "tenant_id",
    "status",
    "current_node_id",
    "input_json",
    "state_json",
    "outputs_json",
    "attempts_json",
    "failures",
    "error_json",
    "wait_reason",
    "wait_until",
    "wake_at",
    "resume_json",
    "last_seq",
    "lease_owner",
    "lease_expires_at",
    "lease_epoch",
    "stale_owner",
    "created_at",
    "updated_at",
    "recoveries",
)
# What a step may change: written by one statement, whose parameters come from the row.
STEP_COLUMNS = (
    "status",
    "current_node_id",
    "state_json",
    "outputs_json",
    "attempts_json",
    "failures",
    "error_json",
    "wait_reason",
    "wait_until",
    "wake_at",
    "resume_json",
    "last_seq",
    "lease_owner",
    "lease_expires_at",
    "updated_at",
    "recoveries",
)
MOVING_COLUMNS = ("status", "wake_at")
"""The step columns an index of ``flowrt_runs`` holds: a step that leaves both as they were
(a run going on to its next node) is written without them, so no index entry is rewritten."""
STEP_COLUMNS_IN_PLACE = tuple(c for c in STEP_COLUMNS if c not in MOVING_COLUMNS)
EVENT_COLUMNS = ("run_id", "seq", "at", "type", "node_id", "attempt", "payload_json", "change_json")
WIRE_EVENT_COLUMNS = EVENT_COLUMNS[:7]
"""What a timeline shows; ``change_json`` is flowrt's own record for rewind (see flowrt.repair)."""


@dataclass(slots=True)
class RunRow:
    """One row of ``flowrt_runs``, JSON columns still as text."""

    run_id: str
    flow_id: str
    flow_version: str
    tenant_id: str | None
    status: str
    current_node_id: str | None
    input_json: str
    state_json: str
    outputs_json: str
    attempts_json: str
    failures: int
    error_json: str | None
    wait_reason: str | None
    wait_until: str | None
    wake_at: int | None
    resume_json: str | None
    last_seq: int
    lease_owner: str | None
    lease_expires_at: int | None
    lease_epoch: int
    stale_owner: str | None
    created_at: int
    updated_at: int
    recoveries: int = 0
    """Interruptions in a row of the current node (its holder stopped mid-node)."""

    def evolve(self, **changes: Any) -> RunRow:
        """A copy with ``changes``; cheaper than ``dataclasses.replace`` on the hot path."""
        new = RunRow(*run_values(self))
        for name, value in changes.items():
            setattr(new, name, value)
        return new


run_values = operator.attrgetter(*RUN_COLUMNS)
step_values = operator.attrgetter(*STEP_COLUMNS)
step_values_in_place = operator.attrgetter(*STEP_COLUMNS_IN_PLACE)

EventRow = tuple[Any, ...]
"""Written as (run_id, seq, at, type, node_id, attempt, payload_json, change_json); read
without change_json. ``change_json`` is what the event did to the run's state and outputs,
so a run can be rewound (:mod:`flowrt.repair`): ``{"output", "patch"}`` on a NODE_FINISHED,
a full ``{"state", "outputs"}`` snapshot on RUN_STARTED and RUN_REWOUND, NULL otherwise."""

_NODE_EVENTS = frozenset({EventType.NODE_STARTED, EventType.NODE_FINISHED, EventType.NODE_FAILED})


def event_fields(kind: str, node_id: str | None, attempt: int | None, payload: dict[str, Any]) -> tuple[Any, ...]:
    """An event's ``node_id, attempt, payload_json`` in the reference's shape.

    The reference puts ``nodeId`` and ``attempt`` first in every NODE_* payload and
    ``nodeId`` in RUN_WAITING's, and takes the event's own ``nodeId``/``attempt`` from the
    payload, so run-level events (RUN_COMPLETED, RUN_ABORTED) have both null and
    RUN_WAITING has its node but no attempt. flowrt's extra keys follow theirs.
    """
    if kind in _NODE_EVENTS:
        payload = {"nodeId": node_id, "attempt": attempt, **payload}
    elif kind == EventType.RUN_WAITING:
        payload = {"nodeId": node_id, **payload}
    return payload.get("nodeId"), payload.get("attempt"), dumps(payload)


# --------------------------------------------------------------------------- models


def build_models(db: pw.Database) -> dict[str, type[pw.Model]]:
    """The tables, bound to ``db``. Built per storage so several databases can coexist."""

    class Base(pw.Model):
        class Meta:
            database = db

    class SchemaVersion(Base):
        version = pw.IntegerField(primary_key=True)
        applied_at = pw.BigIntegerField()

        class Meta:
            table_name = "flowrt_schema"

    class RunRecord(Base):
        run_id = pw.CharField(64, primary_key=True)
        flow_id = pw.CharField(200)
        flow_version = pw.CharField(100)
        tenant_id = pw.CharField(200, null=True)
        status = pw.CharField(16)
        current_node_id = pw.CharField(200, null=True)
        input_json = pw.TextField()
        state_json = pw.TextField()
        outputs_json = pw.TextField()
        attempts_json = pw.TextField()
        failures = pw.IntegerField(default=0)
        error_json = pw.TextField(null=True)
        wait_reason = pw.TextField(null=True)
        wait_until = pw.TextField(null=True)
        wake_at = pw.BigIntegerField(null=True)
        resume_json = pw.TextField(null=True)
        last_seq = pw.IntegerField(default=0)
        lease_owner = pw.CharField(100, null=True)
        lease_expires_at = pw.BigIntegerField(null=True)
        lease_epoch = pw.IntegerField(default=0)
        stale_owner = pw.CharField(100, null=True)
        created_at = pw.BigIntegerField()
        updated_at = pw.BigIntegerField()
        recoveries = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])

        class Meta:
            table_name = "flowrt_runs"

    class EventRecord(Base):
        run_id = pw.CharField(64)
        seq = pw.IntegerField()
        at = pw.BigIntegerField()
        type = pw.CharField(32)
        node_id = pw.CharField(200, null=True)
        attempt = pw.IntegerField(null=True)
        payload_json = pw.TextField()
        change_json = pw.TextField(null=True)

        class Meta:
            table_name = "flowrt_events"
            primary_key = pw.CompositeKey("run_id", "seq")

    class IdempotencyRecord(Base):
        flow_id = pw.CharField(200)
        node_id = pw.CharField(200)
        key = pw.CharField(500)
        run_id = pw.CharField(64)
        output_json = pw.TextField()
        patch_json = pw.TextField(null=True)
        created_at = pw.BigIntegerField()

        class Meta:
            table_name = "flowrt_idempotency"
            primary_key = pw.CompositeKey("flow_id", "node_id", "key")

    class StartKey(Base):
        """An idempotency key of ``start``: a retried start returns the run it made."""

        key = pw.CharField(200, primary_key=True)
        run_id = pw.CharField(64)
        fingerprint = pw.CharField(64)
        created_at = pw.BigIntegerField()

        class Meta:
            table_name = "flowrt_start_keys"

    return {
        "SchemaVersion": SchemaVersion,
        "RunRecord": RunRecord,
        "EventRecord": EventRecord,
        "IdempotencyRecord": IdempotencyRecord,
        "StartKey": StartKey,
    }


# Numbered migrations, applied in order; each takes the models of its own version.
def _migration_1(models: dict[str, type[pw.Model]]) -> None:
    db = models["RunRecord"]._meta.database
    db.create_tables(
        [models["RunRecord"], models["EventRecord"], models["IdempotencyRecord"]], safe=True
    )
    # Named by hand: Peewee would name them after the model classes, and every name
    # flowrt adds to an application's database must carry the flowrt_ prefix.
    for name, columns in (
        ("flowrt_runs_status_run_id", "status, run_id"),
        ("flowrt_runs_status_wake_at", "status, wake_at"),
        ("flowrt_runs_flow_id_run_id", "flow_id, run_id"),
        ("flowrt_runs_tenant_id_run_id", "tenant_id, run_id"),
    ):
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS {name} ON flowrt_runs ({columns})")


def _migration_2(models: dict[str, type[pw.Model]]) -> None:
    """Interruptions get a budget of their own (``recoveries``), and ``start`` takes an idempotency key."""
    db = models["RunRecord"]._meta.database
    # A database created from scratch got today's flowrt_runs in migration 1 already.
    if "recoveries" not in {column.name for column in db.get_columns("flowrt_runs")}:
        db.execute_sql("ALTER TABLE flowrt_runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0")
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS flowrt_start_keys (key VARCHAR(200) NOT NULL PRIMARY KEY, "
        "run_id VARCHAR(64) NOT NULL, fingerprint VARCHAR(64) NOT NULL, created_at BIGINT NOT NULL)"
    )


def _migration_3(models: dict[str, type[pw.Model]]) -> None:
    """Events record what each step changed (``change_json``), so runs can be rewound.

    Runs stored before have no such record. Their current state and outputs become a
    snapshot on the last event that may have changed them, NODE_FINISHED or RUN_WAITING
    (version 1 recorded a wait without NODE_FINISHED), or on their first event if none did:
    that is what they were from then on, so they can be rewound to any node started
    after it, and no further back (flowrt.repair says so).
    """
    db = models["RunRecord"]._meta.database
    if "change_json" in {column.name for column in db.get_columns("flowrt_events")}:
        return  # a database created from scratch got today's flowrt_events in migration 1
    db.execute_sql("ALTER TABLE flowrt_events ADD COLUMN change_json TEXT")
    db.execute_sql(
        "UPDATE flowrt_events SET change_json = (SELECT '{\"state\":' || r.state_json || ',\"outputs\":' "
        "|| r.outputs_json || '}' FROM flowrt_runs r WHERE r.run_id = flowrt_events.run_id) "
        "WHERE (run_id, seq) IN (SELECT run_id, COALESCE(MAX(CASE WHEN type IN ('NODE_FINISHED', 'RUN_WAITING') "
        "THEN seq END), "
        "MIN(seq)) FROM flowrt_events GROUP BY run_id)"
    )


def _migration_4(models: dict[str, type[pw.Model]]) -> None:
    """Fewer pages written per step (docs/storage.md, "What a step writes").

    Most runs have no timer and no tenant, yet every one had an entry in the indexes on
    ``(status, wake_at)`` and ``(tenant_id, run_id)``, rewritten at each step. Both become
    partial: only rows with a timer (or backoff), or a tenant, are in them; the queries that
    use them ask for ``wake_at <= ?`` and ``tenant_id = ?``, which imply it. (Rebuilding the
    events table WITHOUT ROWID was measured too and left out: it saves a page per small
    event, but costs more pages once outputs pass a few hundred bytes.)
    """
    db = models["RunRecord"]._meta.database
    for name, columns, having in (
        ("flowrt_runs_status_wake_at", "status, wake_at", "wake_at"),
        ("flowrt_runs_tenant_id_run_id", "tenant_id, run_id", "tenant_id"),
    ):
        db.execute_sql(f"DROP INDEX IF EXISTS {name}")
        db.execute_sql(f"CREATE INDEX {name} ON flowrt_runs ({columns}) WHERE {having} IS NOT NULL")


MIGRATIONS = {1: _migration_1, 2: _migration_2, 3: _migration_3, 4: _migration_4}
