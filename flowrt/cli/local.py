"""The local backend: the engine in this process, on a SQLite, memory or Postgres database.

Imported only by local commands (see :func:`.backends.connect`): it pulls in the
engine, Peewee and the database drivers, which a remote command never needs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime
from types import FrameType
from typing import Any

from .. import errors as flowrt_errors
from ..driver import recover
from ..engine import Engine
from ..errors import RunBusy
from ..execution import Interrupted
from ..liveness import gone
from ..loader import load_all
from ..runs import RunStatus, iso, now_ms
from .errors import Stopped
from .interrupts import finish_step_on_ctrl_c
from .backends import Json, OnProgress, require_existing_sqlite, stuck_entry, version_key

#: What events record as ``by`` for what a local command did.
BY = "cli"
#: How often to look again at a run another process is executing.
POLL_INTERVAL = 0.2


class _EngineWarnings(logging.Handler):
    """The engine's warnings on stderr, as Python prints them when nothing is configured, but a
    failing node's traceback only once: the run this command prints (or its timeline) has it."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        traceback = getattr(record, "handler_traceback", None)
        if traceback and message.endswith(traceback):
            message = message[: -len(traceback)].rstrip()
        sys.stderr.write(message + "\n")


def _warn_on_stderr_once() -> None:
    """Local mode without --debug (which configures logging itself): see :class:`_EngineWarnings`."""
    engine_log = logging.getLogger("flowrt")
    if logging.getLogger().handlers or any(isinstance(h, _EngineWarnings) for h in engine_log.handlers):
        return
    engine_log.addHandler(_EngineWarnings(logging.WARNING))


class LocalBackend:
    """The engine in this process, on the database of ``--db`` / ``DATABASE_URL``."""

    def __init__(self, database_url: str, flow_paths: list[str], *, creates_db: bool = False, given: bool = True) -> None:
        self.database_url = database_url
        self.loaded = load_all(flow_paths)
        self.creates_db, self.given = creates_db, given
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """Opened on first use: `flows` and `graph FLOW` read only the code and never touch the database."""
        if self._engine is None:
            if not self.creates_db:
                require_existing_sqlite(self.database_url, given=self.given)
            _warn_on_stderr_once()
            self._engine = Engine(self.database_url, flows=self.loaded)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    def start(
        self,
        flow_id: str,
        *,
        version: str | None,
        input: Any,  # noqa: A002
        tenant_id: str | None,
        wait: bool,
        idempotency_key: str | None = None,
    ) -> tuple[Json, bool]:
        run = self.engine.start(flow_id, version, input, tenant_id=tenant_id, idempotency_key=idempotency_key)
        if not wait:
            return {"runId": run.run_id, "status": str(run.status)}, run.replayed
        return self.settle(run.run_id), run.replayed

    def tick(self, run_id: str) -> Json:
        with finish_step_on_ctrl_c(self.engine, run_id):
            return self.engine.tick(run_id).to_json()

    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Json:
        with finish_step_on_ctrl_c(self.engine, run_id) as stopping:
            run = self.engine.resume(run_id, payload, by=BY)
            if stopping() and run.status == RunStatus.RUNNING:
                raise Stopped(run_id, run.current_node_id, abandoned=False, run=run.to_json())
        if wait and run.status == RunStatus.RUNNING:
            return self.settle(run_id)
        return run.to_json()

    def settle(self, run_id: str) -> Json:
        """Drive the run here until it waits or ends; if another process holds it, watch it.

        Ctrl-C lets the step in hand finish and stops (see :mod:`.interrupts`)."""
        done = threading.Event()
        threading.Thread(target=self._say_backoffs, args=(run_id, done), name="flowrt-cli-backoffs", daemon=True).start()
        with contextlib.ExitStack() as stack:
            stack.callback(done.set)
            stopping = stack.enter_context(finish_step_on_ctrl_c(self.engine, run_id))
            while True:
                try:
                    run = self.engine.run_until_blocked(run_id, should_stop=stopping)
                except RunBusy:
                    pass  # a server (or another CLI) is driving it: look again shortly
                else:
                    if run.status != RunStatus.RUNNING:
                        return run.to_json()
                    if stopping():
                        raise Stopped(run_id, run.current_node_id, abandoned=False, run=run.to_json())
                    # Still RUNNING: parked in a long backoff by another driver; wait for it.
                time.sleep(POLL_INTERVAL)

    def _say_backoffs(self, run_id: str, done: threading.Event) -> None:
        """While ``settle`` sleeps through a retry backoff (half a second or more left when it
        looks), say so once a backoff, on stderr: a silent minute reads as a hung command."""
        said = None
        while not done.wait(0.5):
            try:
                row = self.engine.storage.get_run(run_id)
                if row is None or row.status != RunStatus.RUNNING or row.wake_at is None or row.wake_at == said:
                    continue
                left = (row.wake_at - now_ms()) / 1000
                failed = [e for e in self.engine.timeline(run_id, after=max(0, row.last_seq - 4)) if e.type == "NODE_FAILED"]
            except Exception:  # noqa: BLE001 - only a hint; the wait itself reports what is wrong
                continue
            if left < 0.5 or not failed or done.is_set():
                continue
            said, error = row.wake_at, failed[-1].payload.get("error") or {}
            print(
                f"node {row.current_node_id} failed ({error.get('code')}: {error.get('message')}); retrying at "
                f"{iso(row.wake_at)} (in {left:.0f}s)", file=sys.stderr, flush=True,
            )  # fmt: skip

    def cancel(self, run_id: str, reason: str | None) -> Json:
        return self.engine.cancel(run_id, reason, by=BY).to_json()

    def retry(self, run_id: str, *, wait: bool) -> Json:
        run = self.engine.retry(run_id, by=BY)
        return self.settle(run_id) if wait else run.to_json()

    def rewind(self, run_id: str, to_node: str, *, wait: bool) -> Json:
        run = self.engine.rewind(run_id, to_node, by=BY)
        return self.settle(run_id) if wait else run.to_json()

    def prune(self, older_than: str, statuses: list[str] | None, *, dry_run: bool, vacuum: bool) -> Json:
        return self.engine.prune(older_than, statuses, dry_run=dry_run, vacuum=vacuum).to_json()

    def get(self, run_id: str) -> Json:
        run = self.engine.get(run_id)
        if run is None:
            raise flowrt_errors.RunNotFound(f"run {run_id} not found")
        return run.to_json()

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Json]:
        return [e.to_json() for e in self.engine.timeline(run_id, after, limit)]

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Json:
        extra = {} if limit is None else {"limit": limit}
        runs, next_cursor = self.engine.list_runs(
            status=status, flow_id=flow_id, tenant_id=tenant_id, cursor=cursor, since=since, until=until, **extra
        )
        return {"runs": [r.to_json() for r in runs], "nextCursor": next_cursor}

    def flows(self) -> list[Json]:
        unique = {(f.flow_id, f.version): f for f in self.loaded}
        return [
            {"flowId": f.flow_id, "version": f.version, "definitionJson": f.to_dict()}
            for _, f in sorted(unique.items(), key=lambda item: (item[0][0], version_key(item[0][1])))
        ]

    def stuck_runs(self) -> list[Json]:
        now = now_ms()
        loaded = {(f.flow_id, f.version) for f in self.engine.flows}
        lock = self.engine.liveness
        holder_gone = None if lock is None else functools.partial(gone, lock.folder)
        found = []
        for run_id, status, lease_owner, wake_at in self.engine.storage.runnable_ids():
            if status == "WAITING" and (wake_at is None or wake_at > now):
                continue  # skip the lookups for the common case: a future timer
            row = self.engine.storage.get_run(run_id)
            run = self.engine.get(run_id)
            if row is None or run is None:
                continue  # deleted meanwhile
            entry = stuck_entry(
                run.to_json(), now, lease_known=True, lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at,
                holder_gone=holder_gone,
            )  # fmt: skip
            if entry is None:
                continue
            if loaded and (entry["flowId"], entry["flowVersion"]) not in loaded and entry["action"] == "continue":
                # This process could not execute it; the engine leaves such runs alone.
                entry["action"] = "skip"
                entry["detail"] += f"; flow {entry['flowId']}@{entry['flowVersion']} is not in --flows"
            found.append(entry)
        return found

    def recover(self, candidates: list[Json], *, concurrency: int, progress: OnProgress | None) -> dict[str, str]:
        """Ctrl-C stops claiming: the steps in hand finish (their runs are handed back), then it
        exits 130; a second Ctrl-C abandons them (recovered, not failed, when continued).
        A retry backoff met on the way is waited out as a ``tick`` would (up to the engine's
        inline backoff): with no server, nothing else would continue the run.

        The first Ctrl-C raises nothing: it only sets ``stop``. (A KeyboardInterrupt landing in
        the main thread's ``Thread.join`` can leave that thread marked as stopped while it still
        runs, in Python 3.11, so nothing could wait for its step afterwards.)"""
        stop = threading.Event()

        def on_sigint(sig: int, frame: FrameType | None) -> None:
            if stop.is_set():
                raise Interrupted  # the second: abandon the steps in hand
            stop.set()
            steps = self.engine.leases.in_flight(blocking=False)
            listed = ", ".join(f"run {s.run_id} at {s.node_id}" for s in steps[:4]) + (", ..." if len(steps) > 4 else "")
            said = (
                f"Ctrl-C: letting {len(steps)} step(s) in hand finish: {listed} (Ctrl-C again abandons them; "
                "they are then recovered, not failed, when the runs are continued)"
                if steps
                else "Ctrl-C: stopping (no step in hand)"
            )
            os.write(2, f"\n{said}\n".encode())  # os.write, not print: a signal handler may interrupt a print

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if main else None
        try:
            recover(self.engine, concurrency=concurrency, progress=progress, stop=stop, max_sleep=self.engine.inline_backoff)
        except Interrupted:
            print("second Ctrl-C: abandoning the steps in hand; the next 'flowrt recover' recovers them (not failed)",
                  file=sys.stderr, flush=True)  # fmt: skip
            raise KeyboardInterrupt from None
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        if stop.is_set():
            print("recovery stopped by Ctrl-C: run 'flowrt recover' again, with the same options, to continue the rest",
                  file=sys.stderr, flush=True)  # fmt: skip
            raise KeyboardInterrupt
        return {}  # (runs other processes hold are not candidates here: their leases are visible)
