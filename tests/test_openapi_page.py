"""The OpenAPI page works offline: its HTML names no other origin, and the assets come from the package.

With Chromium installed, the page is rendered headless with every host name but
127.0.0.1 unresolvable, and must show the API's operations (with a CDN it shows nothing).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from http_helpers import ThreadServer, thread_server

pytestmark = pytest.mark.timeout(90)

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    with thread_server(f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'flowrt.db'}", drive=False) as server:
        yield server


def test_page_references_no_external_origin_and_every_asset_is_served(srv: ThreadServer) -> None:
    page = srv.client.get("/schema/swagger")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    urls = _ASSET.findall(page.text)
    assert len(urls) >= 3, urls  # the css, the bundle, the preset (and the favicon)
    types = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = srv.client.get(url)
        assert asset.status_code == 200, url
        assert types[Path(url).suffix] in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 500, url
        assert "max-age" in asset.headers.get("cache-control", ""), url
    bundle = next(u for u in urls if u.endswith("swagger-ui-bundle.js"))
    assert b"SwaggerUIBundle" in srv.client.get(bundle).content


def test_assets_need_no_token_and_unknown_ones_are_404(tmp_path: Any) -> None:
    with thread_server(f"sqlite:///{tmp_path / 'flowrt.db'}", drive=False, api_token="s3cret") as server:
        assert server.client.get("/schema/swagger").status_code == 200
        assert server.client.get("/schema/assets/swagger-ui/swagger-ui.css").status_code == 200
        missing = server.client.get("/schema/assets/swagger-ui/nope.js")
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
        escape = server.client.get("/schema/assets/swagger-ui/..%2F..%2Fapp.py")
        assert escape.status_code == 404


CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to render the page with")
def test_page_renders_the_operations_with_no_network_but_loopback(srv: ThreadServer, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing else resolves: offline
         "--virtual-time-budget=15000", "--dump-dom", srv.url + "/schema/swagger"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', out.stdout))
    assert {"/v1/runs/start", "/v1/runs/{run_id}/resume", "/health", "/ready"} <= rendered, out.stdout[-2000:]
