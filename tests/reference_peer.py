"""The reference runtime (@hazeljs/flow-runtime) for the tests that compare against it.

``../shared/peer/start.sh`` (or ``FLOWRT_PEER_START``) runs it on a free loopback port; its
npm dependencies are installed once into a fixed folder (``FLOWRT_PEER_HOME``, default
``/tmp/flowrt-peer-test``) that every later run, and every test module, reuses. Where it
cannot start (no start script, no node/npm, the first install failing) the tests skip with
the reason; nothing else in the suite depends on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from http_helpers import REPO, free_port

PEER_START = Path(os.environ.get("FLOWRT_PEER_START", REPO.parent / "shared" / "peer" / "start.sh"))
PEER_HOME = Path(os.environ.get("FLOWRT_PEER_HOME", "/tmp/flowrt-peer-test"))


def why_no_reference() -> str | None:
    """Why the reference cannot run here, or None."""
    if not PEER_START.is_file():
        return f"the reference's start script {PEER_START} is not there"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the reference runtime needs node >= 20.19 and npm)"
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30)
    major, minor = (int(part) for part in out.stdout.strip().lstrip("v").split(".")[:2])
    if (major, minor) < (20, 19):
        return f"node {out.stdout.strip()} is too old for the reference runtime (needs 20.19 or later)"
    return None


class Reference:
    """The reference runtime in a child process (start.sh execs node, so the pid is node's)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="flowrt-peer-", suffix=".log", delete=False)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LOG_ENABLED")}
        env.update(PORT=str(self.port), FLOWRT_PEER_HOME=str(PEER_HOME))
        self.proc = subprocess.Popen(["bash", str(PEER_START)], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = Path(self.log.name).read_text(errors="replace")[-3000:]
                if not (PEER_HOME / ".installed").exists():
                    pytest.skip(f"the reference's npm install failed (exit {self.proc.returncode}):\n{output}")
                raise RuntimeError(f"the reference exited with {self.proc.returncode}:\n{output}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the reference did not answer within {timeout:.0f} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


@contextlib.contextmanager
def running_reference(timeout: float = 240) -> Iterator[str]:
    """The URL of a running reference, stopped afterwards; skips the test where it cannot run."""
    why = why_no_reference()
    if why:
        pytest.skip(why)
    PEER_HOME.parent.mkdir(parents=True, exist_ok=True)
    reference = None
    try:
        # One install at a time when several runs share the peer home.
        with open(f"{PEER_HOME}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            reference = Reference()
            reference.wait_ready(timeout)
        yield reference.url
    finally:
        if reference is not None:
            reference.close()
