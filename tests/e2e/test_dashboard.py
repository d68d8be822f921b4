"""The dashboard in a real browser (issue 11): Playwright driving Debian's chromium, headless,
against a real controller serving HTTP on loopback and two real agents running real processes.

Every wait is Playwright's ``expect`` (it polls the page) or a poll of the cluster with a
deadline; screenshots go to the test's tmp_path.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_asyncio

from gaffer.common.roles import Role
from gaffer.controller.tokens import Principal

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from inproc import Cluster, spec  # noqa: E402

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
    pytest.mark.asyncio(loop_scope="module"),
]
if CHROMIUM is not None:
    from playwright.async_api import Page, async_playwright, expect

WAIT = 10_000
"""Milliseconds Playwright's expect waits for the page to show something."""
ECHO = "while read l; do echo \"got $l\"; done"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium():
    """One headless chromium for the module; each test's pages get a context of their own."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def live(tmp_path) -> AsyncIterator[Cluster]:
    """A controller with HTTP on loopback, nodes n1 and n2, template web (2) and echo (1)."""
    cluster = Cluster(tmp_path / "cluster")
    try:
        await cluster.start_controller(http="127.0.0.1:0")
        await cluster.start_agent("n1", {"zone": "a"})
        await cluster.start_agent("n2", {"zone": "b"})
        echo = spec("echo", 1, cmd="sh", args=["-c", ECHO], redirect_input=True, placement={"nodes": ["n1"]})
        await cluster.call("apply", templates=[spec("web", 2), echo])
        await cluster.wait_running(3)
        yield cluster
    finally:
        await cluster.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium, live: Cluster):
    """The module's chromium for one test against ``live``; the pages the test opened are
    closed before the cluster stops, so their event streams end first and the controller's
    HTTP server does not wait out its shutdown grace for them."""
    try:
        yield chromium
    finally:
        for context in chromium.contexts:
            await context.close()


def token(cluster: Cluster, role: Role, ttl: float = 3600.0) -> str:
    import time

    assert cluster.controller is not None and cluster.controller.tokens is not None
    return cluster.controller.tokens.issue(Principal(role.name.lower(), role), ttl, time.time())


class Console:
    """The page's console errors and uncaught exceptions."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))


async def open_page(browser, cluster: Cluster, fragment: str) -> tuple[Page, Console]:
    assert cluster.controller is not None and cluster.controller.http is not None
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    console = Console(page)
    await page.goto(f"{cluster.controller.http.url}/#{fragment}")
    await expect(page.locator("#connection")).to_have_text("live", timeout=WAIT)
    return page, console


def row(page: Page, table: str, key: str):
    return page.locator(f"#{table} tbody tr[data-key='{key}']")


async def test_the_page_shows_the_cluster_with_no_console_errors(browser, live: Cluster, tmp_path):
    """Nodes, templates and instances show up; the token leaves the address bar for
    sessionStorage; the console stays clean."""
    secret = token(live, Role.ADMIN)
    page, console = await open_page(browser, live, f"token={secret}")
    await expect(row(page, "nodes", "n1")).to_contain_text("up", timeout=WAIT)
    await expect(row(page, "nodes", "n2")).to_contain_text("zone=b", timeout=WAIT)
    await expect(row(page, "templates", "web")).to_contain_text("2", timeout=WAIT)
    await expect(page.locator("#instances tbody tr")).to_have_count(3, timeout=WAIT)
    await expect(row(page, "instances", "web.1")).to_contain_text("running", timeout=WAIT)
    assert "#" not in page.url and secret not in page.url
    assert await page.evaluate("sessionStorage.getItem('gaffer.token')") == secret
    await page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    assert console.errors == []


async def test_scaling_from_the_page_changes_the_cluster_and_the_page(browser, live: Cluster, tmp_path):
    """Scale up on the page: the cluster runs one more instance and the page shows it,
    running and ready (a template without a check is ready once running)."""
    page, console = await open_page(browser, live, f"token={token(live, Role.OPERATOR)}")
    await page.get_by_role("button", name="Scale up web").click()
    await live.wait_running(3, "web")
    await expect(row(page, "instances", "web.3")).to_contain_text("running", timeout=WAIT)
    cells = row(page, "templates", "web").locator("td")
    await expect(cells.nth(1)).to_have_text("3", timeout=WAIT)
    await expect(cells.nth(2)).to_have_text("3", timeout=WAIT)  # running
    await expect(cells.nth(3)).to_have_text("3", timeout=WAIT)  # ready: web has no check
    await page.get_by_role("button", name="Scale down web").focus()
    await page.keyboard.press("Enter")
    await live.wait_running(2, "web")
    await expect(row(page, "instances", "web.3")).to_have_count(0, timeout=WAIT)
    await page.screenshot(path=tmp_path / "scaled.png", full_page=True)
    assert console.errors == []


async def test_a_lost_agent_turns_its_row_red_without_a_reload(browser, live: Cluster, tmp_path):
    """When an agent dies its node row turns to down (red) on the open page."""
    page, console = await open_page(browser, live, f"token={token(live, Role.VIEWER)}")
    await expect(row(page, "nodes", "n2")).to_have_class("node-up", timeout=WAIT)
    await live.lose_agent("n2")
    await expect(row(page, "nodes", "n2")).to_have_class("node-down", timeout=WAIT)
    color = await row(page, "nodes", "n2").evaluate("tr => getComputedStyle(tr).backgroundColor")
    assert color == "rgb(255, 235, 233)"
    await page.screenshot(path=tmp_path / "node-down.png", full_page=True)
    assert console.errors == []


async def test_the_log_tail_follows_new_lines_and_writes_to_stdin(browser, live: Cluster, tmp_path):
    """The chosen instance's log tail shows lines as the process writes them; the stdin box
    writes to the process."""
    page, console = await open_page(browser, live, f"token={token(live, Role.OPERATOR)}")
    await page.get_by_role("button", name="Show logs of echo.1").click()
    await expect(page.get_by_label("Write to stdin")).to_be_visible(timeout=WAIT)
    await live.call("write", id="echo.1", data="from-the-cluster\n")
    await expect(page.locator("#logs")).to_contain_text("got from-the-cluster", timeout=WAIT)
    await page.get_by_label("Write to stdin").fill("from-the-page")
    await page.get_by_label("Write to stdin").press("Enter")
    await expect(page.locator("#logs")).to_contain_text("got from-the-page", timeout=WAIT)
    await page.screenshot(path=tmp_path / "logs.png", full_page=True)
    assert console.errors == []


async def test_a_viewer_sees_no_write_buttons_and_a_forged_request_is_refused(browser, live: Cluster):
    """A viewer's page has no scale, start, stop or restart buttons and no stdin box; a POST
    it forges with its token is refused with 403."""
    page, console = await open_page(browser, live, f"token={token(live, Role.VIEWER)}")
    await expect(row(page, "templates", "web")).to_be_visible(timeout=WAIT)
    await expect(page.get_by_role("button", name="Show logs of web.1")).to_be_visible(timeout=WAIT)
    for name in ("Scale up web", "Scale down web", "Start web", "Stop web", "Restart web"):
        assert await page.get_by_role("button", name=name).count() == 0, name
    await page.get_by_role("button", name="Show logs of echo.1").click()
    await expect(page.get_by_label("Write to stdin")).to_be_hidden()
    assert console.errors == []
    status = await page.evaluate("""async () => {
        const answer = await fetch("/v1/templates/web/scale", {method: "POST",
            headers: {Authorization: "Bearer " + sessionStorage.getItem("gaffer.token"),
                      "Content-Type": "application/json"},
            body: JSON.stringify({count: 9})});
        return answer.status;
    }""")
    assert status == 403
    assert len(await live.running("web")) == 2
    assert [error for error in console.errors if "403" not in error] == []


async def test_a_login_link_is_traded_for_a_session_token(browser, live: Cluster):
    """#login=<token> is exchanged for a session token of the same role, kept in
    sessionStorage; the login token leaves the address bar."""
    login = token(live, Role.OPERATOR, ttl=300.0)
    page, console = await open_page(browser, live, f"login={login}")
    await expect(page.locator("#who")).to_have_text("operator (operator)", timeout=WAIT)
    kept = await page.evaluate("sessionStorage.getItem('gaffer.token')")
    assert kept and kept != login and "#" not in page.url
    assert console.errors == []
