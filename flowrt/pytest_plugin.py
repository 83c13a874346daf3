"""flowrt's pytest plugin: the ``flowrt_clock`` and ``flowrt_engine`` fixtures.

Installed with flowrt and registered through the ``pytest11`` entry point, so every test
of a project that has flowrt installed can ask for them, without a ``conftest.py``. This
module imports nothing of flowrt until a test asks for a fixture (the engine, Peewee and
the database drivers would add to every pytest start-up). ``pytest -p no:flowrt`` turns
the plugin off.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from .engine import Engine
    from .testing import VirtualClock


@pytest.fixture
def flowrt_clock() -> VirtualClock:
    """A :class:`flowrt.testing.VirtualClock` at the real time: it moves only when the engine
    sleeps through a backoff or the test calls ``advance(timedelta(...))``."""
    from .testing import VirtualClock

    return VirtualClock()


@pytest.fixture
def flowrt_engine(flowrt_clock: VirtualClock, tmp_path: Path) -> Iterator[Engine]:
    """An :class:`flowrt.Engine` on a fresh SQLite file in ``tmp_path``, on ``flowrt_clock``.

    Register your flows (``flowrt_engine.register(my_flow)``), start runs, and move them
    with :func:`flowrt.testing.drive` (what is due now) or ``drive(engine, within=...)``.
    No drivers run in the background: nothing happens between two lines of the test.
    """
    from .engine import Engine

    with Engine(f"sqlite:///{tmp_path / 'flowrt-test.db'}", clock=flowrt_clock) as engine:
        yield engine
