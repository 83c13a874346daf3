"""The web dashboard at ``/ui``: static pages that read the same JSON API and event streams as any client.

The pages are one HTML shell plus scripts and a stylesheet in ``static/``, shipped inside
the package (no build step, no CDN: it works with no network). The shell carries no data:
every run, event and flow comes from ``/v1`` with the bearer token the page asks for, so
the UI shows exactly what the API promises. A strict Content-Security-Policy keeps the
pages to their own origin. ``GET /`` sends browsers here and tells other clients where
things are.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.response import Redirect
from litestar.router import Router
from litestar.static_files import create_static_files_router

from ... import __version__

STATIC = Path(__file__).resolve().parent / "static"

# Everything from this origin only; SVG graphs are inline elements, the favicon is a file.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=1)
def _shell() -> bytes:
    return (STATIC / "index.html").read_bytes()


def _page() -> Response[bytes]:
    return Response(_shell(), media_type="text/html", headers=_PAGE_HEADERS)


# A flow id may hold a slash ("billing/charge"): its page link encodes it (%2F), which the
# server decodes before routing, so the flow page takes the rest of the path.
@get(["/ui", "/ui/flows", "/ui/runs/{run_id:str}", "/ui/flows/{flow_id:path}"], include_in_schema=False, sync_to_thread=False)
def ui_page() -> Response[bytes]:
    """The one page shell; the script reads the path and draws runs, a run or a flow."""
    return _page()


@get("/", include_in_schema=False, sync_to_thread=False)
def index(request: Request[Any, Any, Any]) -> Response[Any]:
    """Browsers go to the dashboard; API clients get a small JSON index of where things are."""
    if "text/html" in request.headers.get("accept", ""):
        return Redirect("/ui", status_code=302)
    body = {
        "name": "flowrt",
        "version": __version__,
        "links": {"ui": "/ui", "schema": "/schema", "flows": "/v1/flows", "health": "/health"},
    }
    return Response(body, media_type="application/json")


def ui_handlers() -> list[HTTPRouteHandler | Router]:
    """The routes to mount at the app's root: ``/``, the pages and ``/ui/static``."""
    static = create_static_files_router(
        path="/ui/static",
        directories=[STATIC],
        name="ui-static",
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),
    )
    return [index, ui_page, static]
