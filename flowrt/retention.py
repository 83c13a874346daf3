"""Retention: delete finished runs older than a cutoff, with everything stored for them.

A pruned run loses its row, its events, its idempotency records (``flowrt_idempotency``
rows it wrote: a later run with the same key runs the node again) and its start keys
(``flowrt_start_keys``: a start retried with the key makes a new run). RUNNING and
WAITING runs are never touched, whatever the filter says.

"Older than" means *finished* before the cutoff (``updated_at``): a run that started long
ago and ended an hour ago is not old. Work is done in small batches, one short write
transaction each, so steps of other runs commit between them (on SQLite the writer lock
is held for one batch only), and a pause between batches leaves room for them.

Space: on SQLite, deleted pages go to the file's free list and are reused; the file
shrinks only through a vacuum. Databases created by this flowrt use
``auto_vacuum=INCREMENTAL``, and pruning then gives the space back in small steps
(``PRAGMA incremental_vacuum``). An older file (``auto_vacuum=NONE``) needs one full
``VACUUM`` to switch (``flowrt prune --vacuum``: it rewrites the file and blocks writers
while it runs); until then its free pages are reused by new runs. Postgres reuses the
space after its autovacuum; the sizes reported are the tables' ``pg_total_relation_size``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from .errors import InvalidInput
from .runs import FINISHED, RunStatus
from .storage import Storage

log = logging.getLogger("flowrt.retention")

BATCH = 200
"""Runs deleted per transaction."""
PAUSE = 0.02
"""Seconds between two batches, so the steps of live runs get the writer in between."""
VACUUM_PAGES = 512
"""Pages an incremental vacuum gives back per transaction (2 MiB at SQLite's 4 KiB pages)."""
TABLES = ("flowrt_runs", "flowrt_events", "flowrt_idempotency", "flowrt_start_keys")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str, what: str = "age") -> float:
    """Seconds in ``30d``, ``12h``, ``1w2d``, ``90m`` or ``3600s`` (a plain number is seconds)."""
    value = str(text).strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        if not value or _DURATION.sub("", value) != "":
            raise InvalidInput(f"{what} {text!r} is not a duration such as 30d, 12h, 90m or 1w") from None
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(value))
    if not seconds > 0:
        raise InvalidInput(f"{what} must be longer than zero")
    return seconds


def finished_statuses(statuses: Sequence[str] | None) -> list[str]:
    """The statuses a prune may delete: all finished ones by default; active ones are refused."""
    if not statuses:
        return sorted(FINISHED)
    chosen: list[str] = []
    for status in statuses:
        if status not in RunStatus.__members__:
            raise InvalidInput(f"unknown status {status!r}; one of {', '.join(sorted(FINISHED))}")
        if status not in FINISHED:
            raise InvalidInput(f"{status} runs are never pruned: only COMPLETED, FAILED and CANCELLED runs are")
        if status not in chosen:
            chosen.append(status)
    return chosen


@dataclass
class PruneReport:
    runs: int = 0
    events: int = 0
    idempotency_records: int = 0
    start_keys: int = 0
    size_before: int | None = None
    size_after: int | None = None
    """Bytes of the database (SQLite) or of flowrt's tables (Postgres); None for memory."""
    space_note: str | None = None
    """Why the size did not shrink, when it could not (a SQLite file without incremental vacuum)."""
    dry_run: bool = False
    seconds: float = 0.0
    more: bool = False
    """True when ``max_seconds`` ended it with runs perhaps left to delete: prune again."""

    def to_json(self) -> dict[str, Any]:
        parts = asdict(self)
        return {_camel(k): v for k, v in parts.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


class Pruner:
    """Deletes old finished runs of one storage in small batches."""

    def __init__(self, storage: Storage, *, batch: int = BATCH, pause: float = PAUSE) -> None:
        self.storage = storage
        self.batch = batch
        self.pause = pause
        self._lock = threading.Lock()  # one prune at a time per process

    def prune(
        self,
        older_than: float,
        statuses: Sequence[str] | None = None,
        *,
        dry_run: bool = False,
        vacuum: bool = False,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_seconds: float | None = None,
    ) -> PruneReport:
        """Delete (or with ``dry_run`` count) finished runs that ended over ``older_than`` seconds ago.

        ``vacuum``: on a SQLite file not yet in incremental-vacuum mode, switch it with one
        full VACUUM afterwards (it blocks writers while it runs). ``progress(done, total)``.
        ``max_seconds``: stop after the batch (or vacuum step) that passes it, with ``more``
        set, so that an HTTP caller gets its answer within its timeout and asks again. At
        least one batch is always deleted, and a sliced prune always goes on giving space
        back, so a caller that repeats always gets to the end. A dry run is two counts and
        ignores it.
        """
        chosen = finished_statuses(statuses)
        cutoff = self.storage.clock.now_ms() - int(older_than * 1000)
        started = time.monotonic()

        def out_of_time() -> bool:
            return max_seconds is not None and time.monotonic() - started >= max_seconds

        def stopping() -> bool:
            return (should_stop is not None and should_stop()) or out_of_time()

        report = PruneReport(dry_run=dry_run, size_before=self.size())
        with self._lock:
            if dry_run:
                report.runs, report.events = self._count(cutoff, chosen)
            else:
                total = self._count(cutoff, chosen)[0] if progress else 0
                while should_stop is None or not should_stop():
                    deleted = self._batch(cutoff, chosen)
                    report.runs += deleted[0]
                    report.events += deleted[1]
                    report.idempotency_records += deleted[2]
                    report.start_keys += deleted[3]
                    if progress:
                        progress(report.runs, max(total, report.runs))
                    if deleted[0] < self.batch:
                        break
                    if out_of_time():
                        report.more = True
                        break
                    time.sleep(self.pause)
                # A slice that deleted nothing may still owe the free pages of the ones before it.
                if report.runs or vacuum or max_seconds is not None:
                    report.space_note = self.give_space_back(vacuum=vacuum, should_stop=stopping)
                    if report.space_note is None and out_of_time() and self.free_pages() > 0:
                        report.more = True  # the vacuum was cut short: the next slice goes on with it
        report.size_after = self.size()
        report.seconds = round(time.monotonic() - started, 3)
        return report

    # ------------------------------------------------------------------ batches

    def _count(self, cutoff: int, statuses: list[str]) -> tuple[int, int]:
        p = self.storage.db.param
        marks = ", ".join([p] * len(statuses))
        where = f"status IN ({marks}) AND updated_at < {p}"
        runs = self.storage._read(f"SELECT COUNT(*) FROM flowrt_runs WHERE {where}", (*statuses, cutoff))[0][0]
        events = self.storage._read(
            f"SELECT COUNT(*) FROM flowrt_events WHERE run_id IN (SELECT run_id FROM flowrt_runs WHERE {where})",
            (*statuses, cutoff),
        )[0][0]
        return int(runs), int(events)

    def _batch(self, cutoff: int, statuses: list[str]) -> tuple[int, int, int, int]:
        """One transaction: up to ``batch`` runs and what belongs to them. Rows are locked on
        Postgres (a retry or rewind of one of them waits, then finds it gone)."""
        storage = self.storage
        p = storage.db.param
        marks = ", ".join([p] * len(statuses))
        lock = " FOR UPDATE SKIP LOCKED" if storage.kind == "postgres" else ""
        with storage._write() as cur:
            cur.execute(
                f"SELECT run_id FROM flowrt_runs WHERE status IN ({marks}) AND updated_at < {p} "
                f"ORDER BY run_id LIMIT {p}{lock}",
                (*statuses, cutoff, self.batch),
            )
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                return 0, 0, 0, 0
            chosen = ", ".join([p] * len(ids))
            counts = []
            for table in ("flowrt_events", "flowrt_idempotency", "flowrt_start_keys"):
                cur.execute(f"DELETE FROM {table} WHERE run_id IN ({chosen})", ids)
                counts.append(max(cur.rowcount, 0))
            # Fenced again: a run that was retried meanwhile (SQLite: impossible under the
            # writer lock; Postgres: the rows are locked) is not deleted.
            cur.execute(f"DELETE FROM flowrt_runs WHERE run_id IN ({chosen}) AND status IN ({marks})", (*ids, *statuses))
            return max(cur.rowcount, 0), counts[0], counts[1], counts[2]

    # ------------------------------------------------------------------ space

    def size(self) -> int | None:
        storage = self.storage
        if storage.kind == "sqlite":
            pages, size = (storage._read(f"PRAGMA {name}", ())[0][0] for name in ("page_count", "page_size"))
            return int(pages) * int(size)
        if storage.kind == "postgres":
            total = 0
            for table in TABLES:
                rows = storage._read(f"SELECT COALESCE(pg_total_relation_size(to_regclass({storage.db.param})), 0)", (table,))
                total += int(rows[0][0])
            return total
        return None

    def free_pages(self) -> int:
        """Pages a SQLite file could give back (0 on Postgres and memory)."""
        if self.storage.kind != "sqlite":
            return 0
        return int(self.storage._read("PRAGMA freelist_count", ())[0][0])

    def incremental(self) -> bool:
        return self.storage.kind == "sqlite" and int(self.storage._read("PRAGMA auto_vacuum", ())[0][0]) == 2

    def give_space_back(self, *, vacuum: bool = False, should_stop: Callable[[], bool] | None = None) -> str | None:
        """Shrink a SQLite file by its free pages, in small steps; None when nothing stands in the way."""
        storage = self.storage
        if storage.kind != "sqlite":
            return None
        if not self.incremental():
            if not vacuum:
                return (
                    "this SQLite file was created without incremental vacuum, so its free pages are reused by new "
                    "runs but the file does not shrink; run `flowrt prune --vacuum` once (it rewrites the file and "
                    "blocks writers while it runs) to switch it"
                )
            with storage._write_lock:
                log.warning("switching %s to incremental vacuum: one full VACUUM", storage.db.database)
                conn = storage.db.connection()
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM")
            return None
        # At least one step, even when ``should_stop`` is already true: a sliced prune whose
        # deletions used up its time still makes progress on the space it owes.
        while free := self.free_pages():
            with storage._write_lock:
                # executescript steps the pragma to the end (execute frees one page per call)
                storage.db.connection().executescript(f"PRAGMA incremental_vacuum({min(free, VACUUM_PAGES)});")
            if should_stop is not None and should_stop():
                break
            time.sleep(self.pause)
        with storage._write_lock:  # the WAL holds the deletions; fold it back and truncate it
            storage.db.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return None


class RetentionLoop:
    """``flowrt serve --retention 30d``: prune in the background every ``interval`` seconds."""

    def __init__(self, pruner: Pruner, older_than: float, *, interval: float = 60.0) -> None:
        self.pruner = pruner
        self.older_than = older_than
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="flowrt-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        warned = False
        while not self._stop.is_set():
            try:
                report = self.pruner.prune(self.older_than, should_stop=self._stop.is_set)
            except Exception as exc:  # noqa: BLE001 - the database may be away: try next round
                log.warning("retention: pruning failed (%s); trying again in %.0fs", exc, self.interval)
            else:
                if report.runs:
                    log.info(
                        "retention: pruned %d run(s), %d event(s) in %.1fs; database %s -> %s bytes",
                        report.runs, report.events, report.seconds, report.size_before, report.size_after,
                    )  # fmt: skip
                if report.space_note and not warned:
                    log.warning("retention: %s", report.space_note)
                    warned = True
            self._stop.wait(self.interval)
