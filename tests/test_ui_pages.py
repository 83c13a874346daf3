"""The dashboard in a real headless browser: Debian's Chromium driven by Playwright.

One ``flowrt serve`` (with a token) and one browser for the module; each test gets a
fresh page that fails the test on any console error, uncaught exception or request to
another origin. What is checked is what a person sees: statuses, events, graph nodes.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import httpx
import pytest

from http_helpers import ServeProcess

CHROMIUM = os.environ.get("FLOWRT_TEST_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

TOKEN = "ui-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    proc = ServeProcess(["--flows", "examples.demo:ALL", "--flows", "ui_flows:ALL", "--db", "memory://", "--token", TOKEN])
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def api(server: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page plus what went wrong on it: console errors, page errors, foreign requests."""

    def __init__(self, browser: Any, origin: str, width: int = 1280, token: bool = True) -> None:
        self.origin = origin
        self.context = browser.new_context(viewport={"width": width, "height": 900}, base_url=origin)
        if token:  # as if the token had been typed once in this tab
            self.context.add_init_script(f"sessionStorage.setItem('flowrt.token', {TOKEN!r})")
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("request", self._request)

    def _request(self, request: Any) -> None:
        if not request.url.startswith(self.origin + "/") and not request.url.startswith("data:"):
            self.problems.append(f"request to another origin: {request.url}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any, server: ServeProcess) -> Iterator[Any]:
    pages: list[Watched] = []

    def open_page(**kwargs: Any) -> Watched:
        page = Watched(browser, server.url, **kwargs)
        pages.append(page)
        return page

    yield open_page
    problems = [p for page in pages for p in page.problems]
    for page in pages:
        page.close()
    assert not problems, problems


def start(api: httpx.Client, flow_id: str, body: Any = None, **extra: Any) -> str:
    response = api.post("/v1/runs/start", json={"flowId": flow_id, "input": body or {}, **extra})
    response.raise_for_status()
    return str(response.json()["runId"])


def settle(api: httpx.Client, run_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = api.get(f"/v1/runs/{run_id}").json()
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"run {run_id} is {run['status']}, not {status}"
        time.sleep(0.02)


def test_the_pages_ask_for_the_token_and_show_nothing_without_it(watched: Any, api: httpx.Client) -> None:
    run_id = start(api, "demo-support", {"who": "token-test"})
    w = watched(token=False)
    page = w.page
    page.goto("/")  # a browser at / lands on the dashboard
    assert page.url.endswith("/ui")
    dialog = page.locator("#token-dialog")
    sync_api.expect(dialog).to_be_visible()
    assert run_id not in page.content()
    page.fill("#token-input", "wrong")
    page.click("#token-form button[type=submit]")
    sync_api.expect(page.locator("#token-error")).to_be_visible()  # refused, asked again
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    sync_api.expect(page.locator(f'tr[data-run="{run_id}"]')).to_contain_text("WAITING")
    # 401s are expected here (the page learns that a token is needed); nothing else may fail.
    w.problems[:] = [p for p in w.problems if "401" not in p]


def test_runs_list_shows_counts_and_updates_live(watched: Any, api: httpx.Client) -> None:
    page = watched().page
    page.goto("/ui")
    sync_api.expect(page.locator("#live")).to_contain_text("live")
    run_id = start(api, "demo-fraud", {"amount": 5000})  # started after the page loaded
    row = page.locator(f'tr[data-run="{run_id}"]')
    sync_api.expect(row).to_contain_text("COMPLETED")
    sync_api.expect(row).to_contain_text("demo-fraud")
    completed = api.get("/v1/runs/counts").json()["COMPLETED"]
    sync_api.expect(page.locator('.count[data-status="COMPLETED"] .n')).to_have_text(str(completed))

    page.select_option("select[name=status]", "WAITING")
    sync_api.expect(row).to_have_count(0)
    assert "status=WAITING" in page.url


def test_run_page_resumes_a_waiting_run(watched: Any, api: httpx.Client) -> None:
    run_id = start(api, "demo-support", {"subject": "printer"})
    settle(api, run_id, "WAITING")
    page = watched().page
    page.goto(f"/ui/runs/{run_id}")
    sync_api.expect(page.locator("#run-status")).to_have_text("WAITING")
    for event in ("RUN_STARTED", "NODE_STARTED", "RUN_WAITING"):
        sync_api.expect(page.locator(".events")).to_contain_text(event)
    sync_api.expect(page.locator('svg.graph [data-node="create"]')).to_have_class("node entry visited current")
    sync_api.expect(page.locator('svg.graph [data-node="notify"]')).to_be_visible()

    editor = page.locator(".json-editor")
    editor.fill('{"ticketId": "T-77",}')  # a trailing comma: not JSON
    sync_api.expect(page.locator(".resume .error")).to_contain_text("Invalid JSON")
    sync_api.expect(page.locator(".resume button[type=submit]")).to_be_disabled()
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "WAITING"

    editor.fill('{"ticketId": "T-77"}')
    page.click(".resume button[type=submit]")
    sync_api.expect(page.locator("#confirm-dialog")).to_contain_text('"ticketId": "T-77"')
    page.click("#confirm-ok")
    sync_api.expect(page.locator(".action-result")).to_contain_text("Resume: done")
    sync_api.expect(page.locator("#run-status")).to_have_text("COMPLETED")  # live, no reload
    sync_api.expect(page.locator(".events")).to_contain_text("RUN_COMPLETED")
    sync_api.expect(page.locator('svg.graph [data-node="notify"]')).to_have_class("node visited")
    sync_api.expect(page.locator('.step[data-node="notify"]')).to_be_visible()
    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "COMPLETED" and run["outputsJson"]["create"] == {"ticketId": "T-77"}


def test_cancel_asks_first_and_shows_the_result(watched: Any, api: httpx.Client) -> None:
    run_id = start(api, "ui-review", {"text": "draft"})
    settle(api, run_id, "WAITING")
    page = watched().page
    page.goto(f"/ui/runs/{run_id}")
    page.click("[data-action=cancel]")
    page.click("#confirm-dialog button[value=cancel]")  # changed their mind
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "WAITING"
    page.click("[data-action=cancel]")
    page.fill("#confirm-dialog input[name=reason]", "no longer needed")
    page.click("#confirm-ok")
    sync_api.expect(page.locator(".action-result")).to_contain_text("now CANCELLED")
    sync_api.expect(page.locator(".events")).to_contain_text("no longer needed")
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "CANCELLED"


def test_failed_run_shows_its_error(watched: Any, api: httpx.Client) -> None:
    run_id = start(api, "ui-broken")
    run = settle(api, run_id, "FAILED")
    page = watched().page
    page.goto(f"/ui/runs/{run_id}")
    box = page.locator(".error-box")
    sync_api.expect(box).to_contain_text("the printer is on fire")
    if run["error"].get("traceback"):  # handlers that raised carry one (issue 9)
        sync_api.expect(box.locator(".traceback")).to_contain_text("RuntimeError")
    sync_api.expect(page.locator(".events")).to_contain_text("NODE_FAILED")
    sync_api.expect(page.locator('svg.graph [data-node="explode"]')).to_have_class("node entry visited failed")
    sync_api.expect(page.locator('svg.graph [data-node="explode"] .attempts')).to_contain_text(f"×{run['attempts']['explode']}")
    # A failed run can be retried or rewound, nothing else.
    assert page.locator("[data-action]").evaluate_all("els => els.map(e => e.dataset.action)") == ["retry", "rewind"]


def test_retry_and_rewind_ask_first_and_show_the_result(watched: Any, api: httpx.Client) -> None:
    run_id = start(api, "ui-review", {"text": "draft"})
    settle(api, run_id, "WAITING")
    api.post(f"/v1/runs/{run_id}/cancel", json={"reason": "by mistake"}).raise_for_status()
    page = watched().page
    page.goto(f"/ui/runs/{run_id}")
    sync_api.expect(page.locator("#run-status")).to_have_text("CANCELLED")
    page.click("[data-action=retry]")
    sync_api.expect(page.locator("#confirm-dialog")).to_contain_text("continues at decide")
    page.click("#confirm-dialog button[value=cancel]")  # changed their mind
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "CANCELLED"
    page.click("[data-action=retry]")
    page.click("#confirm-ok")
    sync_api.expect(page.locator(".action-result")).to_contain_text("Retry: done")
    sync_api.expect(page.locator("#run-status")).to_have_text("WAITING")  # the server's drivers moved it on
    sync_api.expect(page.locator(".events")).to_contain_text("RUN_RETRIED")

    page.click("[data-action=rewind]")
    page.select_option("#confirm-dialog select[name=toNode]", "draft")
    page.click("#confirm-ok")
    sync_api.expect(page.locator(".action-result")).to_contain_text("Rewind: done")
    sync_api.expect(page.locator(".events")).to_contain_text("to draft as before #2")
    sync_api.expect(page.locator("#run-status")).to_have_text("WAITING")
    rewinds = [e for e in api.get(f"/v1/runs/{run_id}/timeline").json() if e["type"] == "RUN_REWOUND"]
    assert [e["payloadJson"]["toNode"] for e in rewinds] == ["draft"]


def test_flow_page_draws_the_graph_and_settings(watched: Any) -> None:
    page = watched().page
    page.goto("/ui/flows")
    page.click('tr[data-flow="ui-review"] a')
    graph = page.locator("svg.graph")
    for node in ("draft", "decide", "revise", "publish"):
        sync_api.expect(graph.locator(f'[data-node="{node}"]')).to_be_visible()
    sync_api.expect(graph.locator('[data-node="draft"]')).to_contain_text("timeout 5 s")
    sync_api.expect(graph.locator('[data-node="revise"]')).to_contain_text("retry 3× exponential")
    assert graph.locator("path.edge").count() == 4
    assert graph.locator("path.edge.back").count() == 1  # revise -> decide closes the loop
    assert graph.locator("path.edge.conditional").count() == 1
    sync_api.expect(graph.locator(".edge-label")).to_contain_text(['if ctx.state.get("approved") p2', "p1"])
    sync_api.expect(page.locator("table.edges")).to_contain_text('if ctx.state.get("approved")')
    # Entry at the top, the rest in layers below it.
    top = {n: graph.locator(f'[data-node="{n}"]').bounding_box()["y"] for n in ("draft", "decide", "publish")}
    assert top["draft"] < top["decide"] < top["publish"]
    sync_api.expect(page.locator("table.nodes")).to_contain_text("3 attempts, exponential")


def test_a_flow_whose_id_holds_a_slash_has_its_page_and_links(watched: Any, api: httpx.Client) -> None:
    run_id = start(api, "billing/charge")
    settle(api, run_id, "COMPLETED")
    page = watched().page
    page.goto("/ui/flows")
    page.click('tr[data-flow="billing/charge"] a')
    assert page.url.endswith("/ui/flows/billing%2Fcharge?version=1.0.0")
    sync_api.expect(page.locator("h1")).to_contain_text("billing/charge")
    sync_api.expect(page.locator('svg.graph [data-node="charge"]')).to_be_visible()
    page.goto(f"/ui/runs/{run_id}")  # and back from the run to its flow
    page.click('a:has-text("billing/charge@1.0.0")')
    sync_api.expect(page.locator('svg.graph [data-node="charge"]')).to_be_visible()


def test_readable_on_a_phone(watched: Any, api: httpx.Client) -> None:
    run_id = start(api, "demo-fraud", {"amount": 500})
    settle(api, run_id, "COMPLETED")
    page = watched(width=390).page
    for path in ("/ui", f"/ui/runs/{run_id}", "/ui/flows/demo-fraud"):
        page.goto(path)
        sync_api.expect(page.locator("main h1")).to_be_visible()
        sync_api.expect(page.locator("main table, main svg").first).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390px"
    sync_api.expect(page.locator("svg.graph")).to_be_visible()
    assert page.locator("svg.graph").bounding_box()["width"] <= 390
