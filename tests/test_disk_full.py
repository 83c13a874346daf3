"""SQLite on a full disk, with a real `flowrt serve` on a 4 MiB tmpfs (tests/disk_full.py).

What users should see (issue 9, point 2): while the disk is full `/ready` and `/health` say so
(503, status not "ok") and writes answer 503; once space frees, everything recovers by
itself, without a restart: health is ok again, a run whose step finished while the
disk was full commits that step (once: the node is not run again, no WORKER_LOST),
new runs complete, and the WAL is checkpointed again (the -wal file shrinks back).

Every check is made and the failures are reported together, so one run of the test
shows the whole state of the failure path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from disk_full import small_disk
from http_helpers import serve_process

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def poll(deadline: float, probe: Callable[[], Any], done: Callable[[Any], bool], interval: float = 0.2) -> Any:
    """``probe()`` until ``done(result)`` or the deadline (time.monotonic()); the last result."""
    while True:
        result = probe()
        if done(result) or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def health(c: httpx.Client) -> tuple[int, str]:
    """``(/ready's status code, /health's condition)``: readiness takes the server out of
    rotation, liveness says why (and stays 200: restarting would not free the disk)."""
    ready = c.get("/ready")
    live = c.get("/health")
    assert live.status_code == 200, live.text
    return ready.status_code, str(live.json().get("condition"))


def wal_resets(db: Path) -> bytes:
    """The -wal header's checkpoint sequence and salts: they change each time a checkpoint rewinds the WAL."""
    with open(db.with_name(db.name + "-wal"), "rb") as f:
        return f.read(32)[12:24]


def wal_size(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_full_disk_is_reported_and_everything_recovers_when_space_frees(tmp_path: Path) -> None:
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    gate, reached, started = tmp_path / "gate", tmp_path / "reached", tmp_path / "started"
    with small_disk(tmp_path / "disk") as disk:
        db = disk.path / "flowrt.db"
        args = ["--flows", "disk_full_flows:ALL", "--db", f"sqlite:///{db}", "--workers", "2"]
        with serve_process(args) as proc, httpx.Client(base_url=proc.url, timeout=30) as c:
            assert health(c) == (200, "ok")
            run = c.post(
                "/v1/runs/start", json={"flowId": "gated", "input": {"gate": str(gate), "reached": str(reached), "started": str(started)}}
            )
            assert run.status_code == 200, run.text
            run_id = run.json()["runId"]
            # A driver has claimed the run (a committed write) and runs its node before the disk fills.
            assert poll(time.monotonic() + 30, started.exists, bool), "the gated node never started"

            # Fill the disk, then write until the database says so too.
            disk.fill()
            refused = None
            deadline = time.monotonic() + 60
            while refused is None and time.monotonic() < deadline:
                response = c.post("/v1/runs/start", json={"flowId": "filler"})
                if response.status_code != 200:
                    refused = response
                else:
                    disk.fill()  # whatever the database gave back meanwhile
            assert refused is not None, "writes kept succeeding on a full disk"
            assert refused.status_code == 503 and refused.json()["code"] == "STORAGE_UNAVAILABLE", refused.text
            assert str(disk.path) not in refused.text  # no file paths for clients either
            full_wal, full_resets = wal_size(db), wal_resets(db)

            status = poll(time.monotonic() + 15, lambda: health(c), lambda h: h[0] == 503)
            check(status == (503, "unavailable"), f"/ready, /health while the disk is full: {status}, expected 503, unavailable")

            # The gated node finishes while the disk is full: its commit cannot land now.
            gate.touch()
            poll(time.monotonic() + 30, reached.exists, bool)
            assert reached.exists(), "the gated node never ran to its end"
            time.sleep(1.5)  # the commit is attempted (and fails) against the full disk
            during = c.get(f"/v1/runs/{run_id}").json()
            check(during["status"] == "RUNNING", f"the run left RUNNING while the disk was full: {during['status']}")

            disk.free()
            freed = time.monotonic()

            status = poll(freed + 30, lambda: health(c), lambda h: h == (200, "ok"))
            check(status == (200, "ok"), f"/ready, /health 30 s after space freed: {status}, expected (200, 'ok')")

            final = poll(freed + 30, lambda: c.get(f"/v1/runs/{run_id}").json(), lambda r: r["status"] != "RUNNING")
            check(final["status"] == "COMPLETED", f"the run started before the disk filled, 30 s after space freed: "
                  f"{final['status']} at {final['currentNodeId']} (error {final['error']})")
            events = c.get(f"/v1/runs/{run_id}/timeline").json()
            lost = [e for e in events if e["type"] == "NODE_FAILED"]
            check(not lost, f"the finished step was not committed as it was: {[e['payloadJson'] for e in lost]}")
            runs_of_hold = reached.read_text().splitlines()
            check(len(runs_of_hold) == 1, f"the gated node ran {len(runs_of_hold)} times, expected once: {runs_of_hold}")

            new = c.post("/v1/runs/start?wait=20", json={"flowId": "filler"})
            check(new.status_code == 200 and new.json().get("status") == "COMPLETED",
                  f"a new run after space freed: {new.status_code} {new.text[:200]}")

            resets = poll(freed + 30, lambda: wal_resets(db), lambda header: header != full_resets)
            check(resets != full_resets, "the WAL was not checkpointed (rewound) after space freed")
            shrunk = poll(freed + 30, lambda: wal_size(db), lambda size: size < full_wal)
            check(shrunk < full_wal, f"the -wal file did not shrink after space freed: {full_wal} -> {shrunk} bytes")
            log = proc.output()
    assert not problems, "\n".join(problems) + "\n--- server log (tail) ---\n" + log[-4000:]
    assert not os.path.ismount(tmp_path / "disk")
