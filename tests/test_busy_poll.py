"""Busy polling after an answer (flowrt/server/busy_poll.py): the window's rule on a scripted
clock, the polling on real event loops (asyncio's and uvloop), and the window opening and
closing behind real servers: uvicorn in a thread on both parsers, and ``flowrt serve``."""

from __future__ import annotations

import asyncio
import subprocess
import time
import typing
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from http_helpers import REPO, SERVE, serve_process, thread_server, wait_for

from flowrt.errors import InvalidInput
from flowrt.server import connections
from flowrt.server.busy_poll import DEFAULT_LIMIT_US, GROW_START, MAX_LIMIT_US, BusyPoll
from flowrt.server.runtime import Settings

pytestmark = pytest.mark.timeout(90)

US = 1e-6


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoLoop:
    """Stands for the event loop where the rule alone is tested: keeps what it was asked to run."""

    def __init__(self) -> None:
        self.scheduled: list[Any] = []

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.scheduled.append((callback, args))


def exchange(poll: BusyPoll, clock: Clock, loop: Any, gap_us: float) -> None:
    """An answer, then the next request's bytes ``gap_us`` later."""
    poll.answered(loop)
    clock.now += gap_us * US
    poll.arrived()


def test_the_window_grows_while_requests_come_soon_after_answers_and_caps_at_the_limit() -> None:
    clock, loop = Clock(), NoLoop()
    poll = BusyPoll(300, clock=clock)
    assert poll.window == 0
    exchange(poll, clock, loop, 150)  # would have been caught by a window: open one
    assert poll.window == pytest.approx(GROW_START)
    assert loop.scheduled == []  # no window was open at that answer: nothing polled
    widths = []
    for _ in range(6):
        exchange(poll, clock, loop, 280)
        widths.append(round(poll.window / US))
    assert widths == [50, 100, 200, 300, 300, 300]  # doubles, up to the limit
    exchange(poll, clock, loop, 120)  # caught by the open window: it stays
    assert poll.window == pytest.approx(300 * US)


def test_the_window_halves_when_requests_come_after_the_limit_and_closes_under_the_first_width() -> None:
    clock, loop = Clock(), NoLoop()
    poll = BusyPoll(300, clock=clock)
    for _ in range(5):
        exchange(poll, clock, loop, 200)
    assert poll.window == pytest.approx(200 * US)
    widths = []
    for _ in range(5):
        exchange(poll, clock, loop, 5000)  # a client that comes back 5 ms later
        widths.append(round(poll.window / US))
    assert widths == [100, 50, 25, 0, 0]  # so a server whose requests come far apart does not poll


def test_only_the_first_bytes_after_an_answer_size_the_window() -> None:
    clock, loop = Clock(), NoLoop()
    poll = BusyPoll(300, clock=clock)
    clock.now += 100 * US
    poll.arrived()  # bytes before any answer (a new connection's first request): says nothing
    assert poll.window == 0
    exchange(poll, clock, loop, 100)
    clock.now += 1.0
    poll.arrived()  # the rest of that request, a second later: not a gap after an answer
    assert poll.window == pytest.approx(GROW_START)


def test_a_limit_of_zero_in_settings_means_no_busy_poll_and_bad_limits_are_refused() -> None:
    assert Settings.resolve(env={}).busy_poll_us == DEFAULT_LIMIT_US
    assert Settings.resolve(env={"FLOWRT_BUSY_POLL": "50"}).busy_poll_us == 50
    assert Settings.resolve(busy_poll_us=0, env={"FLOWRT_BUSY_POLL": "50"}).busy_poll_us == 0
    assert connections.uvicorn_options(10, 5.0, busy_poll_us=0)["http"].busy_poll is None
    on = connections.uvicorn_options(10, 5.0, busy_poll_us=120)["http"].busy_poll
    assert isinstance(on, BusyPoll) and on.limit == pytest.approx(120 * US)
    for bad in ({"FLOWRT_BUSY_POLL": "-1"}, {"FLOWRT_BUSY_POLL": "soon"}, {"FLOWRT_BUSY_POLL": "2000"}, {"FLOWRT_BUSY_POLL": "nan"}):
        with pytest.raises(InvalidInput, match="busy poll|FLOWRT_BUSY_POLL"):
            Settings.resolve(env=bad)


def test_cli_refuses_a_bad_busy_poll() -> None:
    for bad in ("-5", "5000"):
        result = subprocess.run([*SERVE, "--busy-poll", bad], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.returncode == 2 and "--busy-poll" in result.stderr


def test_the_cli_takes_the_same_largest_limit_as_the_settings() -> None:
    from flowrt.cli.serve import serve  # its bound is written out there, not imported

    option = typing.get_type_hints(serve, include_extras=True)["busy_poll"].__metadata__[0]
    assert option.max == MAX_LIMIT_US


def test_a_window_opened_on_a_new_loop_polls_there_even_if_the_last_loop_closed_mid_window() -> None:
    poll = BusyPoll(1000)
    poll.window = 0.001
    first = asyncio.new_event_loop()
    poll.answered(first)  # its callback is scheduled, and the loop is closed before it runs
    first.close()
    assert poll.polling

    async def main() -> None:
        poll.answered(asyncio.get_running_loop())
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert poll.polls > 0 and not poll.polling


# --------------------------------------------------------------------------- on real event loops


def _loops() -> list[Any]:
    factories: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return factories
    return [*factories, pytest.param(uvloop.new_event_loop, id="uvloop")]


@pytest.mark.parametrize("new_loop", _loops())
def test_an_open_window_keeps_the_loop_turning_until_it_ends(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    seen: list[float] = []  # the clock at each look: each turn of the loop while the window is open

    def clock() -> float:
        seen.append(time.monotonic())
        return seen[-1]

    poll = BusyPoll(1000, clock=clock)
    poll.window = 0.001

    async def main() -> float:
        poll.answered(asyncio.get_running_loop())
        opened = seen[-1]
        await asyncio.sleep(0.2)  # well past the window: a deadline, not a count of turns
        return opened

    loop = new_loop()
    try:
        opened = loop.run_until_complete(main())
        settled = poll.polls
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()
    # The loop kept turning until the window's end (however often the machine let it) ...
    assert poll.polls >= 2 and seen[-1] >= opened + 0.001
    assert poll.polls == settled and not poll.polling  # ... and then stopped


@pytest.mark.parametrize("new_loop", _loops())
def test_bytes_arriving_close_the_window_at_once(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    poll = BusyPoll(1000, clock=Clock())  # a clock that stands still: the window never ends by itself
    poll.window = 0.001

    async def main() -> int:
        loop = asyncio.get_running_loop()
        poll.answered(loop)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert poll.polling and poll.polls >= 1
        poll.arrived()
        at_close = poll.polls
        await asyncio.sleep(0.1)
        return at_close

    loop = new_loop()
    try:
        at_close = loop.run_until_complete(main())
    finally:
        loop.close()
    assert poll.polls <= at_close + 1 and not poll.polling


# --------------------------------------------------------------------------- behind real servers

PROTOCOLS = pytest.mark.parametrize(
    "protocol",
    [connections.protocol_class(), connections.GuardedH11Protocol],
    ids=lambda cls: "h11" if issubclass(cls, connections.GuardedH11Protocol) else "httptools",
)


class Widest(BusyPoll):
    """Keeps the widest window it has had."""

    widest = 0.0

    def arrived(self) -> None:
        super().arrived()
        self.widest = max(self.widest, self.window)


@PROTOCOLS
def test_a_client_calling_in_a_loop_opens_the_window_and_going_quiet_closes_it(tmp_path: Path, protocol: type) -> None:
    # The largest limit (1 ms), so that a loaded machine's slower client still counts as "soon".
    poll = Widest(1000)
    http = type(protocol.__name__, (protocol,), {"busy_poll": poll})
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", http=http, drive=False) as srv:
        run = srv.client.post("/v1/runs/start", json={"flowId": "demo-fraud", "input": {"amount": 5}}).json()
        for _ in range(30):
            assert srv.client.get(f"/v1/runs/{run['runId']}").status_code == 200
        assert poll.widest > 0 and poll.polls > 0
        for _ in range(8):  # a client that comes back after the limit, again and again
            time.sleep(0.03)
            assert srv.client.get("/health").status_code == 200
        assert poll.window == 0


@PROTOCOLS
def test_an_answer_on_a_closing_connection_opens_no_window(tmp_path: Path, protocol: type) -> None:
    poll = BusyPoll(1000, clock=Clock())  # a clock that stands still: an opened window would stay open
    poll.window = 0.001
    http = type(protocol.__name__, (protocol,), {"busy_poll": poll})
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", http=http, drive=False) as srv:
        for _ in range(4):
            response = httpx.get(srv.url + "/health", headers={"connection": "close"})
            assert response.status_code == 200 and response.headers["connection"] == "close"
        # A window opened by any of the first three answers would still be open: the server's one
        # loop finished with each before it read the next request.
        assert poll.polls == 0 and not poll.polling
        with httpx.Client(base_url=srv.url) as client:  # a keep-alive connection's answer does open one
            assert client.get("/health").status_code == 200
            wait_for(lambda: poll.polling, 10, "a window opened after a keep-alive answer")
            poll.arrived()  # (the stopped clock would keep it open: close it by hand)


def test_flowrt_serve_answers_a_client_in_a_loop_with_busy_polling_on_and_off_and_logs_which() -> None:
    for args, logged in (([], "busy poll: up to 300 µs"), (["--busy-poll", "0"], "busy poll: off")):
        with serve_process(["--flows", "examples.demo:ALL", "--db", "memory://", "--no-drive", *args]) as proc:
            with httpx.Client(base_url=proc.url, timeout=30) as client:
                run_id = client.post("/v1/runs/start", json={"flowId": "demo-fraud", "input": {"amount": 5}}).json()["runId"]
                statuses = [client.post(f"/v1/runs/{run_id}/tick").json()["status"] for _ in range(4)]
            assert statuses[-1] == "COMPLETED", statuses
            assert logged in proc.output()
