"""Repairs an operator makes to a run: retry it where it stopped, or rewind it to an earlier node.

Both are a claim and one commit through the step core (:class:`~flowrt.steps.StepCore`):
the claim takes the run's lease, so a step, a resume or another repair in flight is fenced
off; the commit is the step core's, fenced by the lease epoch and retried while the
database is away. Neither runs a node: the run is left RUNNING, without a lease, for a
driver (or ``--wait``) to continue. Results still become state only in ``StepCore._step``.

Rewind rebuilds the state and outputs a run had just before a node last started from the
run's own events: each NODE_FINISHED records what its step changed (``change_json``:
output and patch), and RUN_STARTED and RUN_REWOUND record a full snapshot. The state at
an event is the last snapshot before it with every later change applied, in order. Runs
stored before schema 3 carry one snapshot only, made by the migration on their last
finished (or waiting) node, so they can be rewound to nodes started after it and no further back.
"""

from __future__ import annotations

from typing import Any, Generator, Sequence

from .errors import InvalidInput, RewindUnavailable, RunNotFound, RunNotRepairable
from .runs import EventType, RunStatus
from .leases import run_busy
from .steps import Query, Step, StepCore
from .storage import RunRow, Storage
from .values import deep_merge, dumps, loads

RETRYABLE_STATUSES = (RunStatus.FAILED, RunStatus.CANCELLED)
REWINDABLE_STATUSES = tuple(RunStatus)
"""Any run: a RUNNING one only while nobody steps it (its lease is free; else RUN_BUSY)."""


class Repairs:
    """Retry and rewind, on the step core's claims and commits (one per engine)."""

    def __init__(self, steps: StepCore) -> None:
        self.steps = steps
        self.storage = steps.storage

    def retry(self, run_id: str, by: str) -> Step:
        """A FAILED or CANCELLED run becomes RUNNING at the node where it stopped, with its
        state and outputs as they were and that node's failure count reset."""
        current = yield from self._current(run_id)
        if current.status not in RETRYABLE_STATUSES:
            raise RunNotRepairable(_not_retryable(current), run_id=run_id)
        flow = self.steps.flow_of(current)  # FlowNotRegistered (422) before anything is written
        if current.current_node_id is None or current.current_node_id not in flow.nodes:
            raise RunNotRepairable(
                f"run {run_id} stopped at no node of flow {flow.flow_id}@{flow.version} "
                f"({current.current_node_id!r}); rewind it to a node instead (flowrt rewind --to NODE)",
                run_id=run_id,
            )
        row = yield from self._claim(current, RETRYABLE_STATUSES, "retried")
        with self.steps.leases.hold(row) as lease:
            node_id = row.current_node_id
            now = self.steps.clock.now_ms()
            new = _reopened(row, now, node_id)
            new.resume_json = row.resume_json  # a failed resumed node runs again with its payload
            payload = dumps({"by": by, "fromNode": node_id})
            event = (run_id, new.last_seq, now, EventType.RUN_RETRIED, node_id, None, payload, None)
            return (yield from self.steps.commit(new, lease, [event]))

    def rewind(self, run_id: str, to_node: str, by: str) -> Step:
        """The run continues from ``to_node`` with the state and outputs it had just before
        that node last started; later outputs are gone, every earlier event stays.

        Any run that nobody is stepping: WAITING, ended, or RUNNING without a lease
        (parked in a backoff, or not driven); a step in progress makes it RUN_BUSY."""
        if not isinstance(to_node, str) or not to_node:
            raise InvalidInput("toNode must be the id of a node of the run's flow")
        current = yield from self._current(run_id)
        flow = self.steps.flow_of(current)
        if to_node not in flow.nodes:
            raise InvalidInput(
                f"flow {flow.flow_id}@{flow.version} has no node {to_node[:200]!r}; its nodes: {', '.join(flow.nodes)}"
            )
        row = yield from self._claim(current, REWINDABLE_STATUSES, "rewound")
        with self.steps.leases.hold(row) as lease:
            changes = yield Query(changes_of, (self.storage, row.run_id))
            state, outputs, seq = self.rebuild(row.run_id, to_node, changes)
            now = self.steps.clock.now_ms()
            new = _reopened(row, now, to_node)
            new.state_json, new.outputs_json = dumps(state), dumps(outputs)
            snapshot = '{"state":' + new.state_json + ',"outputs":' + new.outputs_json + "}"
            payload = dumps({"by": by, "toNode": to_node, "seq": seq})
            event = (run_id, new.last_seq, now, EventType.RUN_REWOUND, to_node, None, payload, snapshot)
            return (yield from self.steps.commit(new, lease, [event]))

    def rebuild(
        self, run_id: str, node_id: str, changes: list[tuple[int, str, str | None, str | None]]
    ) -> tuple[dict[str, Any], dict[str, Any], int]:
        """``(state, outputs, seq)`` just before ``node_id`` last started (its NODE_STARTED is
        ``seq``), from the run's :func:`changes_of`."""
        starts = [seq for seq, kind, node, _ in changes if kind == EventType.NODE_STARTED and node == node_id]
        if not starts:
            started = sorted({node for _, kind, node, _ in changes if kind == EventType.NODE_STARTED and node})
            raise RewindUnavailable(
                f"run {run_id} never started node {node_id}; it can be rewound to a node it started: "
                f"{', '.join(started) or 'none yet'}",
                run_id=run_id,
            )
        target = starts[-1]
        base: int | None = None
        parsed: list[tuple[int, str | None, dict[str, Any]]] = []
        for seq, _, node, change_json in changes:
            if change_json is None:
                continue
            change = loads(change_json)
            if seq < target and "state" in change:
                base = len(parsed)
            parsed.append((seq, node, change))
        if base is None:
            first = next((seq for seq, _, change in parsed if "state" in change), None)
            reachable = sorted(
                {node for seq, kind, node, _ in changes if kind == EventType.NODE_STARTED and node and first and seq > first}
            )
            raise RewindUnavailable(
                f"run {run_id} cannot be rewound to {node_id} (last started at seq {target}): it was stored before "
                "flowrt kept each step's changes (schema version 3), and its history can be rebuilt only from "
                + (f"seq {first} on; nodes started since: {', '.join(reachable) or 'none'}" if first else "no point at all"),
                run_id=run_id,
            )
        _, _, snapshot = parsed[base]
        state: dict[str, Any] = snapshot["state"]
        outputs: dict[str, Any] = snapshot["outputs"]
        for seq, node, change in parsed[base + 1 :]:
            if seq >= target:
                break
            if change.get("patch"):
                deep_merge(state, change["patch"])
            if "output" in change and node is not None:
                outputs[node] = change["output"]
        return state, outputs, target

    # ------------------------------------------------------------------ helpers

    def _current(self, run_id: str) -> Generator[Query, Any, RunRow]:
        row: RunRow | None = yield Query(self.storage.get_run, (run_id,))
        if row is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        return row

    def _claim(self, current: RunRow, statuses: tuple[RunStatus, ...], what: str) -> Generator[Any, Any, RunRow]:
        steps = self.steps
        yield from steps.wait_for_hand_back(current.run_id)
        row: RunRow | None = yield Query(claim_for_repair, (self.storage, current.run_id, steps.owner, steps.leases.ttl_ms, statuses))
        if row is not None:
            return row
        now = yield from self._current(current.run_id)
        if now.status not in statuses:
            raise RunNotRepairable(f"run {now.run_id} became {now.status} meanwhile and cannot be {what}", run_id=now.run_id)
        raise run_busy(now, steps.clock.now_ms())


def claim_for_repair(storage: Storage, run_id: str, owner: str, ttl_ms: int, statuses: Sequence[str]) -> RunRow | None:
    """Take the lease of a run in one of ``statuses`` that nobody holds: the step core's claim
    (the same UPDATE) for any status, so a step, resume or repair still in flight writes nothing."""
    sql = storage._sql
    now = storage.clock.now_ms()
    marks = ", ".join([sql.p] * len(statuses))
    with storage._write() as cur:
        storage.edits += 1
        cur.execute(
            f"{sql._take} WHERE run_id = {sql.p} AND status IN ({marks}) AND {sql._free} RETURNING {sql._cols}",
            (owner, now + ttl_ms, run_id, *statuses, now, owner),
        )
        row = cur.fetchone()
    return RunRow(*row) if row else None


def changes_of(storage: Storage, run_id: str) -> list[tuple[int, str, str | None, str | None]]:
    """``(seq, type, node_id, change_json)`` of what a rewind reads: every NODE_STARTED and
    every event that changed the run's state or outputs, in order."""
    p = storage.db.param
    return storage._read(
        f"SELECT seq, type, node_id, change_json FROM flowrt_events WHERE run_id = {p} "
        "AND (change_json IS NOT NULL OR type = 'NODE_STARTED') ORDER BY seq",
        (run_id,),
    )


def _reopened(row: RunRow, now: int, node_id: str | None) -> RunRow:
    """``row`` RUNNING again at ``node_id``, unleased: one event later, failures and errors cleared."""
    return row.evolve(
        status=RunStatus.RUNNING,
        current_node_id=node_id,
        failures=0,
        recoveries=0,
        error_json=None,
        wait_reason=None,
        wait_until=None,
        wake_at=None,
        resume_json=None,
        last_seq=row.last_seq + 1,
        updated_at=now,
        lease_owner=None,
        lease_expires_at=None,
    )


def _not_retryable(row: RunRow) -> str:
    if row.status == RunStatus.COMPLETED:
        return (
            f"run {row.run_id} is COMPLETED: only a FAILED or CANCELLED run can be retried "
            "(rewind it to a node to run part of it again)"
        )
    if row.status == RunStatus.WAITING:
        return (
            f"run {row.run_id} is WAITING: only a FAILED or CANCELLED run can be retried "
            "(resume it with a payload, or cancel it first)"
        )
    return (
        f"run {row.run_id} is RUNNING, still active: only a FAILED or CANCELLED run can be retried "
        "(it goes on by itself where a server drives it; locally, continue it with `flowrt tick RUN --wait`)"
    )
