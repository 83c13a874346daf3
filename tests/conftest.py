"""Shared fixtures: every backend (SQLite file, memory, Postgres), isolated per test.

Postgres tests use FLOWRT_TEST_DATABASE_URL (default the local `test` database) and
get a schema of their own, dropped afterwards, so they never see another run's rows.
They skip when Postgres is unreachable, unless FLOWRT_REQUIRE_PG=1 (as in CI).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterator

import hypothesis  # noqa: F401 - imported up front: a lazy import at session end trips a CPython 3.11 AST bug
import pytest

PG_URL = os.environ.get("FLOWRT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("FLOWRT_REQUIRE_PG") == "1"
BACKENDS = ["sqlite", "memory", "postgres"]

_pg_state: dict[str, Any] = {}


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)


def _pg_available() -> str | None:
    """None when Postgres answers, else why not."""
    if "error" not in _pg_state:
        try:
            with _pg_admin() as conn:
                conn.execute("SELECT 1")
            _pg_state["error"] = None
        except Exception as exc:  # noqa: BLE001
            _pg_state["error"] = f"Postgres unreachable at {PG_URL}: {exc}"
    return _pg_state["error"]


def require_pg() -> None:
    error = _pg_available()
    if error:
        if REQUIRE_PG:
            pytest.fail(f"FLOWRT_REQUIRE_PG=1 but {error}")
        pytest.skip(error)


def schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A Postgres URL whose search_path is a fresh, private schema."""
    require_pg()
    schema = f"flowrt_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(schema)
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'flowrt.db'}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh database URL for the parametrised backend."""
    if backend == "postgres":
        return request.getfixturevalue("pg_url")
    if backend == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'flowrt.db'}"


@pytest.fixture
def make_engine(db_url: str) -> Iterator[Callable[..., Any]]:
    """``make_engine(*flows, url=None, **kwargs)``: an Engine on this test's database, closed afterwards."""
    from flowrt import Engine

    engines: list[Any] = []

    def factory(*flows: Any, url: str | None = None, **kwargs: Any) -> Any:
        engine = Engine(url or db_url, flows=flows, **kwargs)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit the developer's flowrt settings."""
    for name in list(os.environ):
        if name in ("DATABASE_URL", "PORT", "HOST") or (
            name.startswith("FLOWRT_") and name not in ("FLOWRT_TEST_DATABASE_URL", "FLOWRT_REQUIRE_PG")
        ):
            monkeypatch.delenv(name, raising=False)
