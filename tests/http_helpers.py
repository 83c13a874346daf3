"""Real servers for the HTTP tests: uvicorn in a thread, or ``flowrt serve`` as a process.

Both listen on a free loopback port. The in-thread server runs the same
:class:`~flowrt.server.runtime.FlowRuntime` as ``flowrt serve`` (engine, recovery,
drivers, app), so only process-level behaviour (signals, exit codes, kill -9)
needs the slower subprocess.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import uvicorn

from flowrt.server.runtime import FlowRuntime, Settings, uvicorn_config

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `examples` lives at the repository root, not in the package
SERVE = [sys.executable, "-m", "flowrt.cli", "serve"]


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    """The predicate's first truthy value within ``timeout`` seconds (a deadline, not a count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadServer:
    """A FlowRuntime behind uvicorn in a daemon thread; ``client`` talks to it."""

    def __init__(self, runtime: FlowRuntime, port: int, **config: Any) -> None:
        self.runtime = runtime
        self.engine = runtime.engine
        self.url = f"http://127.0.0.1:{port}"
        # log_config=None: leave the test process's logging alone (pytest captures it).
        config = {"port": port, "log_config": None, "log_level": "warning", **config}
        config = uvicorn_config(runtime.app, runtime.settings, **config)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def start(self) -> ThreadServer:
        self.runtime.start()
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.client.close()
        self.runtime.begin_shutdown()
        self.server.should_exit = True
        self.thread.join(10)
        self.runtime.close()


@contextlib.contextmanager
def thread_server(
    database_url: str, flows: list[Any] | None = None, *, http: Any = None, **settings: Any
) -> Iterator[ThreadServer]:
    """``with thread_server(url, drive=False, api_token="t") as srv: srv.client.get(...)``;
    ``http``: uvicorn's protocol class, in place of the one ``flowrt serve`` picks."""
    from examples.demo import ALL

    port = free_port()
    resolved = Settings.resolve(
        flows=ALL if flows is None else flows, database_url=database_url, port=port, env={}, **settings
    )
    server = ThreadServer(FlowRuntime(resolved), port, **({"http": http} if http else {})).start()
    try:
        yield server
    finally:
        server.stop()


class ServeProcess:
    """``flowrt serve`` in a child process, with its combined log kept in a file."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()  # (a port of a server this one restarts)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="flowrt-serve-", suffix=".log", delete=False)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_") and k not in ("PORT", "HOST")}
        # The repository (for `examples`) and tests/ (for `http_flows`) are importable.
        paths = [str(REPO), str(REPO / "tests"), full_env.get("PYTHONPATH", "")]
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*SERVE, "--port", str(self.port), "--log-level", "info", *args],
            cwd=str(cwd or REPO),
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flowrt serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code in (200, 503):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"flowrt serve did not become ready:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: no shutdown code runs; its leases stay held until they run out (on SQLite, or
        until the next recovery finds the process gone, flowrt.liveness)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.kill()
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


@contextlib.contextmanager
def serve_process(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[ServeProcess]:
    """A ready ``flowrt serve`` on a free port, killed (if still running) on exit."""
    proc = ServeProcess(args, env, cwd)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.close()


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole HTTP answers off a raw connection, each with its content-length body
    (an interim ``1xx`` answer, a head alone, counts as one). The socket's timeout bounds each read."""
    data, found = b"", []
    while len(found) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            declared = re.search(rb"\r\ncontent-length: (\d+)", data[:head_end], re.IGNORECASE)
            assert declared or data.startswith(b"HTTP/1.1 1"), f"no content-length: {data[:head_end]!r}"
            end = head_end + 4 + (int(declared[1]) if declared else 0)
            if len(data) >= end:
                found.append(data[:end])
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(found)} answer(s): {data!r}"
        data += chunk
    return found
