"""A Python client for a flowrt server (or the reference runtime) over its HTTP API.

    from flowrt.client import Client

    with Client("http://127.0.0.1:3000", token=None) as client:
        run = client.start("demo-support", {"customer": "ana"}, wait=True)   # WAITING
        run = client.resume(run.run_id, {"ticketId": "T-1"}, wait=True)      # COMPLETED
        for event in client.timeline(run.run_id):
            print(event.seq, event.type)

:class:`AsyncClient` is the same, awaited. Both return the engine's :class:`~flowrt.Run`
and :class:`~flowrt.Event` and raise its errors. Importing this package stays light: it
needs httpx, not the engine, its database drivers or the server (see docs/client.md).

    wire.py       requests and answers as data; error answers -> FlowrtError subclasses
    ops.py        every call written once, as a generator of requests (no I/O)
    transport.py  timeouts, retries and the pool; runs the requests on httpx, sync or async
    api.py        Client and AsyncClient: one line per method
"""

from ..errors import HttpError, ServerUnreachable, Unsupported
from .api import AsyncClient, Client
from .ops import RunPage
from .wire import LONG_POLL_SECONDS, ServerInfo

__all__ = [
    "LONG_POLL_SECONDS",
    "AsyncClient",
    "Client",
    "HttpError",
    "RunPage",
    "ServerInfo",
    "ServerUnreachable",
    "Unsupported",
]
