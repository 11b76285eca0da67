"""The live web page in a real headless Chromium: submit a question, watch it finish."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LiveServer, api_settings, live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make system-deps / .ci/run install it)"
)

# The flags this machine needs: no sandbox as root, and no background calls to the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus, sim={"latency": 0.05})) as running:
        yield running


def test_page_runs_a_job_live_and_shows_answer_sources_and_credits(server: LiveServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server.base_url}/")
            expect(page.locator("#sim-banner")).to_be_visible()
            expect(page.locator("#sim-banner")).to_contain_text("SIMULATED")
            page.fill("#query", "What is the capital of Valdoria?")
            page.fill("#agents", "3")
            page.click("#submit")
            # Live progress: a row per agent appears while the job runs, then the answer.
            expect(page.locator("#agents-body tr")).to_have_count(3, timeout=30_000)
            expect(page.locator("#answer")).not_to_be_empty(timeout=60_000)
            expect(page.locator("#sources li").first).to_be_visible()
            assert page.locator("#sources li").count() >= 1
            assert "Wikipedia" in page.locator("footer").inner_text()
        finally:
            browser.close()


def test_page_works_with_api_keys_on_streaming_through_a_token(mini_corpus: Path) -> None:
    from playwright.sync_api import Request, expect, sync_playwright

    from tests.test_tenants import ALICE, TENANTS

    settings = api_settings(mini_corpus, sim={"latency": 0.05}, server={"tenants": TENANTS})
    with live_server(settings) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            streams: list[Request] = []
            page.on("request", lambda r: streams.append(r) if "/events" in r.url else None)
            page.goto(f"{server.base_url}/")
            page.fill("#query", "What is the capital of Valdoria?")
            page.fill("#agents", "2")
            page.fill("#api-key", ALICE)
            page.click("#submit")
            expect(page.locator("#agents-body tr")).to_have_count(2, timeout=30_000)
            expect(page.locator("#answer")).not_to_be_empty(timeout=60_000)
            expect(page.locator("#sources li").first).to_be_visible()
            assert page.locator("#error").inner_text() == ""
            # The events came through EventSource on a token: no key in the URL or headers.
            assert streams and all("token=" in r.url and ALICE not in r.url for r in streams)
            assert all(r.resource_type == "eventsource" for r in streams)
            assert all("authorization" not in r.headers for r in streams)

            # Without a key the page says why instead of hanging.
            page.fill("#api-key", "")
            page.evaluate("sessionStorage.clear()")
            page.click("#submit")
            expect(page.locator("#error")).to_contain_text("API key", timeout=10_000)
        finally:
            browser.close()


def test_page_links_only_sources_the_job_retrieved(server: LiveServer) -> None:
    # The engine already strips fabricated citations; the page must not link one even if a
    # result carried it. The job's view is altered on its way to the page to carry some.
    import json

    from playwright.sync_api import Route, expect, sync_playwright

    def tamper(route: Route) -> None:
        response = route.fetch()
        job = response.json()
        if job.get("result"):
            job["result"]["answer"] = (
                "Merrowgate [1], not [9]; both [1, 9]. [atlas](https://fake.example/atlas) https://fake.example/x"
            )
        route.fulfill(response=response, body=json.dumps(job))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/v1/research/*", tamper)
            page.goto(f"{server.base_url}/")
            page.fill("#query", "What is the capital of Valdoria?")
            page.fill("#agents", "2")
            page.click("#submit")
            expect(page.locator("#answer")).to_contain_text("not [9]", timeout=60_000)
            sources = {
                int(v) for v in page.locator("#sources li").evaluate_all("els => els.map(e => e.value)")
            }
            hrefs = page.locator("#answer a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
            assert hrefs == ["#source-1", "#source-1"], hrefs
            assert 1 in sources and 9 not in sources
            assert page.locator("a[href='#source-9']").count() == 0
            assert page.locator("a[href*='fake.example']").count() == 0
        finally:
            browser.close()
