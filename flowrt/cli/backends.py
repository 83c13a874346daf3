"""Where a CLI command runs: in-process on the database, or against a server over HTTP.

Both backends answer with the HTTP API's JSON documents (a run object, a list of
events, ``{runs, nextCursor}``, ...) and raise the same :class:`~flowrt.FlowrtError`
subclasses, so the commands and their output never know which one they talk to.
The local backend (:mod:`.local`) loads the engine, Peewee and the database drivers;
the remote one (:mod:`.remote`) only httpx. :func:`connect` imports the one it needs,
so a remote command starts in the time httpx and rich take to import.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any, Callable, Protocol

from ..runs import FINISHED, iso
from .errors import DatabaseMissing, UsageProblem

Json = dict[str, Any]
OnProgress = Callable[[int, int], None]

DEFAULT_DB = "sqlite:///flowrt.db"

__all__ = ["FINISHED", "Backend", "Json", "OnProgress", "connect", "stuck_entry"]


class Backend(Protocol):
    """What every command needs; one method per HTTP endpoint, plus recovery."""

    def start(
        self,
        flow_id: str,
        *,
        version: str | None,
        input: Any,
        tenant_id: str | None,
        wait: bool,
        idempotency_key: str | None = None,
    ) -> tuple[Json, bool]:
        """``(answer, replayed)``: ``{runId, status}`` (the run once settled, with ``wait``),
        and whether an idempotency key found an earlier start."""
    def tick(self, run_id: str) -> Json: ...
    def settle(self, run_id: str) -> Json: ...
    def resume(self, run_id: str, payload: Any, *, wait: bool) -> Json: ...
    def cancel(self, run_id: str, reason: str | None) -> Json: ...
    def retry(self, run_id: str, *, wait: bool) -> Json: ...
    def rewind(self, run_id: str, to_node: str, *, wait: bool) -> Json: ...
    def prune(self, older_than: str, statuses: list[str] | None, *, dry_run: bool, vacuum: bool) -> Json: ...
    def get(self, run_id: str) -> Json: ...
    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Json]: ...
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
    ) -> Json: ...
    def flows(self) -> list[Json]: ...
    def stuck_runs(self) -> list[Json]: ...
    def recover(self, candidates: list[Json], *, concurrency: int, progress: OnProgress | None) -> dict[str, str]:
        """Continue the candidates to act on; the runs left to someone else, and why."""
        ...
    def close(self) -> None: ...


def connect(
    *,
    db: str | None,
    url: str | None,
    token: str | None,
    flows: list[str] | None,
    needs_flows: str | None = None,
    creates_db: bool = False,
) -> Backend:
    """The backend the options ask for: ``--url`` wins; otherwise the local database.

    ``needs_flows`` says why the local command cannot do without ``--flows``.
    Only a command that ``creates_db`` (``start``) may open a SQLite file that is not
    there yet: any other command in the wrong folder would silently create an empty
    database and report "not found" or "no runs".
    """
    if url:
        from .remote import RemoteBackend

        return RemoteBackend(url, token)
    if needs_flows and not flows:
        raise UsageProblem(
            f"{needs_flows} locally, pass --flows module:NAME (or set FLOWRT_FLOWS); or use a server with --url"
        )
    from .local import LocalBackend

    return LocalBackend(db or os.environ.get("DATABASE_URL") or DEFAULT_DB, flows or [], creates_db=creates_db, given=db is not None)


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order, as the engine picks "the highest registered" version."""

    def parts(text: str) -> tuple[Any, ...]:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", text) if p)

    release, _, pre = version.split("+", 1)[0].partition("-")
    return (parts(release), (1,) if not pre else (0, parts(pre)))


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///file.db`` URL; None for memory, Postgres or anything else."""
    if not url.lower().startswith("sqlite:") or ":memory:" in url:
        return None
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):] or None
    return None


def require_existing_sqlite(url: str, *, given: bool) -> None:
    path = sqlite_path(url)
    if path is None or os.path.exists(path):
        return
    where = os.path.abspath(path)
    source = "from --db / DATABASE_URL" if given else "the default: no --db or DATABASE_URL given"
    raise DatabaseMissing(
        f"database {where} does not exist ({source})",
        hint="run this where your flowrt.db is, pass --db sqlite:///path/to/file.db, "
        "or --url for a server; only `flowrt start` creates a database",
    )


# --------------------------------------------------------------------------- why a run is stuck


def stuck_entry(
    run: Json,
    now: int,
    *,
    lease_known: bool,
    lease_owner: str | None = None,
    lease_expires_at: int | None = None,
    holder_gone: Callable[[str], bool | None] | None = None,
) -> Json | None:
    """Why recovery would (or would not) continue ``run``; None if it is not stuck at all.

    ``lease_known`` is False over HTTP, where the run object does not show leases;
    ``holder_gone(owner)``: whether the holder of a lease not yet run out is provably gone
    (:mod:`flowrt.liveness`; SQLite, locally).
    """
    wake = _ms(run.get("wakeAt"))
    node = run.get("currentNodeId")
    if run["status"] == "WAITING":
        if wake is None or wake > now:
            return None  # waiting for a person or a future timer: nothing to recover
        reason, detail, action = "TIMER_DUE", f"timer was due at {run['wakeAt']}", "continue"
    elif lease_known and lease_owner is not None and (lease_expires_at or 0) >= now:
        if holder_gone is not None and holder_gone(lease_owner):
            reason = "HOLDER_GONE"
            detail = f"held by {lease_owner}, a process that is gone; its attempt at {node} counts as WORKER_LOST"
            action = "continue"
        else:
            reason, detail, action = "LEASE_HELD", f"being executed by {lease_owner} (lease until {iso(lease_expires_at)})", "skip"
    elif lease_known and lease_owner is not None:
        reason = "LEASE_EXPIRED"
        ended = (  # 0: ended on purpose, by a shutdown that gave the step up or a sweep that found the holder gone
            f"lease of {lease_owner} was ended (its process gave the step up at shutdown, or was found gone)"
            if not lease_expires_at
            else f"lease of {lease_owner} expired at {iso(lease_expires_at)}"
        )
        detail = f"{ended}; its attempt at {node} counts as WORKER_LOST"
        action = "continue"
    elif wake is not None and wake > now:
        reason, detail, action = "RETRY_PENDING", f"retry backoff of {node} until {run['wakeAt']}", "skip"
    elif wake is not None:
        reason, detail, action = "RETRY_DUE", f"retry backoff of {node} ended at {run['wakeAt']}", "continue"
    elif lease_known:
        reason, detail, action = "NOT_DRIVEN", f"RUNNING at {node}, and nobody is driving it", "continue"
    else:
        reason, detail, action = "RUNNING", f"RUNNING at {node} (leases are not visible over HTTP)", "continue"
    return {
        "runId": run["runId"],
        "flowId": run["flowId"],
        "flowVersion": run["flowVersion"],
        "status": run["status"],
        "currentNodeId": node,
        "reason": reason,
        "detail": detail,
        "action": action,
    }


def _ms(value: str | None) -> int | None:
    if value is None:
        return None
    return int(datetime.fromisoformat(value).astimezone(UTC).timestamp() * 1000)
