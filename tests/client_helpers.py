"""What the client tests share: flows a test can hold mid-node, and a scripted HTTP server.

``ScriptedServer`` is a real HTTP server on loopback that answers from a script
(``"drop"`` closes the connection without an answer, as a dying proxy does; a
``(status, body)`` pair answers that) and records every request, so the client's
retry policy and headers can be checked exactly, without relying on timing.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

from flowrt import Flow, Retry, fail, ok

# --------------------------------------------------------------------------- flows


class Gate:
    """A node that blocks until the test opens the gate (the servers here run in-process)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def reset(self) -> None:
        self.entered.clear()
        self.opened.clear()
        self.calls = 0


GATE = Gate()
gated = Flow("client-gate", "1.0.0")


@gated.node(entry=True)
def hold(ctx: Any) -> Any:
    GATE.calls += 1
    GATE.entered.set()
    GATE.opened.wait(60)
    return ok({"held": True})


@gated.node
def after(ctx: Any) -> Any:
    return ok({"after": True})


gated.edge("hold", "after")

# Two attempts with a short backoff between them, then success.
flaky = Flow("client-flaky", "1.0.0")


@flaky.node(entry=True, retry=Retry(max_attempts=3, backoff="fixed", base_delay_ms=150))
def shaky(ctx: Any) -> Any:
    if ctx.attempt < 2:
        return fail("SHAKY", "first try fails", retryable=True)
    return ok({"attempt": ctx.attempt})


# Versions, to check the default is the highest.
older = Flow("client-versions", "1.2.0")
newer = Flow("client-versions", "1.10.0")


def _version_node(version: str) -> Any:
    def only(ctx: Any) -> Any:
        return ok({"version": version})

    return only


for _f in (older, newer):
    _f.add_node("only", _version_node(_f.version), entry=True)

FLOWS = [gated, flaky, older, newer]


# --------------------------------------------------------------------------- scripted server

Reply = Union[str, tuple[int, Any], tuple[int, Any, dict[str, str]]]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    """``with ScriptedServer(["drop", (200, {...}), (200, {...}, {header: value})]) as srv: ...``;
    ``srv.seen`` lists requests.

    When the script runs out, the last reply repeats.
    """

    script: list[Reply]
    seen: list[Seen] = field(default_factory=list)

    def __enter__(self) -> ScriptedServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                reply = outer.script[min(len(outer.seen), len(outer.script)) - 1]
                if reply == "drop":
                    self.close_connection = True
                    return
                status, content, *extra = reply  # type: ignore[misc]
                data = json.dumps(content).encode()
                self.send_response(status)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_json(run_id: str = "r1", status: str = "COMPLETED") -> dict[str, Any]:
    """A complete run object, as a flowrt server sends it."""
    return {
        "runId": run_id, "flowId": "f", "flowVersion": "1.0.0", "tenantId": None, "status": status,
        "currentNodeId": None, "inputJson": {}, "stateJson": {}, "outputsJson": {}, "attempts": {},
        "waitReason": None, "waitUntil": None, "wakeAt": None, "error": None,
        "createdAt": "2026-11-24T15:32:25.545Z", "updatedAt": "2026-11-24T15:32:25.663Z",
    }


FLOWRT_HEALTH = {"status": "ok", "storage": "memory", "durable": False, "fallback": False, "version": "0.1.0",
                 "driving": True, "workers": 1, "flows": 1}
