"""A throwaway PostgreSQL cluster for tests that must stop and start the database.

The shared Postgres (``15 main`` on 5432) serves every developer on this machine, so a
test that takes the database away builds its own cluster with Debian's postgresql-common
tools (``pg_createcluster`` on a free port, trust auth on loopback, never started at
boot), and ``pg_dropcluster --stop`` removes it afterwards even when the test fails.
A cluster left over by a run that crashed is removed by the next one: names carry the
creating process's pid, and only clusters whose process is gone are touched, so two
test sessions running side by side never drop each other's cluster.

Usage::

    with throwaway_cluster() as cluster:   # skips (or fails under FLOWRT_REQUIRE_PG=1)
        url = cluster.url                    # postgresql://postgres@127.0.0.1:PORT/flowrt
        cluster.stop()                       # the outage
        cluster.start()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from http_helpers import free_port

PREFIX = "flowrt_t"
"""Every cluster this module creates is named ``flowrt_t<pid>_<hex>``: never ``main``."""
TOOLS = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters")
REQUIRE_PG = os.environ.get("FLOWRT_REQUIRE_PG") == "1"


def _version() -> str | None:
    """The newest PostgreSQL server installed (``/usr/lib/postgresql/<major>/bin/postgres``)."""
    root = Path("/usr/lib/postgresql")
    majors = [p.name for p in root.iterdir() if (p / "bin" / "postgres").exists()] if root.is_dir() else []
    return max(majors, key=lambda m: int(m) if m.isdigit() else -1, default=None)


def unavailable_reason() -> str | None:
    """None when this machine can create clusters, else why not."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"PostgreSQL cluster tools missing ({', '.join(missing)}): install postgresql-common"
    version = _version()
    if version is None:
        return "no PostgreSQL server under /usr/lib/postgresql/<major>/bin"
    conf = Path("/etc/postgresql") / version
    if not os.access(conf if conf.exists() else conf.parent, os.W_OK):
        return f"cannot create clusters: {conf} is not writable by uid {os.getuid()}"
    return None


def require_cluster_tools() -> str:
    """The PostgreSQL major to use; skips the test (fails it under FLOWRT_REQUIRE_PG=1) if none."""
    reason = unavailable_reason()
    if reason is not None:
        if REQUIRE_PG:
            pytest.fail(f"FLOWRT_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    version = _version()
    assert version is not None
    return version


def _run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def _ours(name: str) -> bool:
    return name.startswith(PREFIX) and name != "main"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clusters(version: str) -> list[tuple[str, int, str]]:
    """``(name, port, status)`` of every cluster of ``version`` (status: online/down)."""
    out = _run("pg_lsclusters", "--no-header").stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[0] == version:
            found.append((cols[1], int(cols[2]), cols[3]))
    return found


def remove_stale(version: str) -> list[str]:
    """Drop clusters this module created in sessions that are gone (a crashed earlier run)."""
    removed = []
    for name, _port, _status in clusters(version):
        if not _ours(name):
            continue
        pid_text = name[len(PREFIX) :].split("_", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            _run("pg_dropcluster", "--stop", version, name)
            removed.append(name)
    return removed


class PgCluster:
    """One cluster of this module's making; every command names it, never ``main``."""

    def __init__(self, version: str, name: str, port: int, database: str = "flowrt") -> None:
        if not _ours(name):
            raise ValueError(f"refusing to manage cluster {name!r}: not one of ours ({PREFIX}...)")
        self.version, self.name, self.port, self.database = version, name, port, database
        self.url = f"postgresql://postgres@127.0.0.1:{port}/{database}"
        self.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def create(self) -> None:
        # Trust auth for local and loopback connections (initdb's --auth); manual start,
        # so a reboot of the machine never brings it up. fsync=off: nothing here
        # outlives the test, and a process-level outage does not need it.
        _run(
            "pg_createcluster", "--quiet", self.version, self.name, "--port", str(self.port),
            "--start-conf=manual", "--pgoption", "fsync=off", "--", "--auth=trust",
        )  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        _run("pg_ctlcluster", self.version, self.name, "start", timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self.accepts_connections():
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster {self.name} started but refuses connections:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Take the database away: ``fast`` disconnects every client, ``immediate`` is a crash."""
        _run("pg_ctlcluster", "--mode", mode, self.version, self.name, "stop")

    def running(self) -> bool:
        return subprocess.run(
            ["pg_ctlcluster", self.version, self.name, "status"], capture_output=True, check=False
        ).returncode == 0  # fmt: skip

    def accepts_connections(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def log_tail(self, lines: int = 30) -> str:
        log = Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")
        with contextlib.suppress(OSError):
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        return f"(no log at {log})"

    def drop(self) -> None:
        _run("pg_dropcluster", "--stop", self.version, self.name)


@contextlib.contextmanager
def throwaway_cluster(database: str = "flowrt") -> Iterator[PgCluster]:
    """A started cluster with an empty ``database``, dropped on exit whatever happened."""
    version = require_cluster_tools()
    remove_stale(version)
    cluster = PgCluster(version, f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}", free_port(), database)
    try:
        cluster.create()
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        if cluster.name in {name for name, _, _ in clusters(version)}:
            cluster.drop()
