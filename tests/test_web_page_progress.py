"""The web page's live view in a real headless Chromium: the action column shows tool calls
with their arguments, the agents' table keeps its shape as answers arrive, the synthesis box
shows progress while the agents research and ends with the renumbered, linked citations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LiveServer, api_settings, live_server
from tests.test_web_page import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make system-deps / .ci/run install it)"
)

# Records every state the page's agents table and synthesis box go through (each mutation
# forces a layout, so the widths are those the user saw).
WATCH = """() => {
  window.seen = { actions: [], widths: [], heights: [], synthesis: [] };
  const table = () => {
    const all = (selector) => [...document.querySelectorAll(selector)];
    const widths = all('#agents-table th').map(e => e.getBoundingClientRect().width);
    if (widths.some(w => w > 0)) window.seen.widths.push(widths.map(w => w.toFixed(1)).join(','));
    for (const tr of all('#agents-body tr')) window.seen.heights.push(tr.getBoundingClientRect().height);
    for (const td of all('#agents-body td.action')) window.seen.actions.push(td.textContent);
  };
  const opts = { subtree: true, childList: true, characterData: true };
  new MutationObserver(table).observe(document.getElementById('agents-body'), opts);
  new MutationObserver(() => window.seen.synthesis.push(document.getElementById('synthesis').textContent))
    .observe(document.getElementById('synthesis'), opts);
}"""


@pytest.fixture(scope="module")
def server(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus, sim={"latency": 0.1})) as running:
        yield running


def test_page_shows_tool_calls_progress_a_steady_table_and_linked_synthesis(server: LiveServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{server.base_url}/")
            page.evaluate(WATCH)
            page.fill("#query", "What is the capital of Valdoria?")
            page.fill("#agents", "3")
            page.click("#submit")
            expect(page.locator("#answer")).not_to_be_empty(timeout=60_000)
            expect(page.locator("#synthesis a").first).to_be_visible()
            seen = page.evaluate("window.seen")
            synthesis_html_links = page.locator("#synthesis a").evaluate_all(
                "els => els.map(e => e.getAttribute('href'))"
            )
            synthesis_text = page.locator("#synthesis").inner_text()
            sources = page.locator("#sources li").count()
        finally:
            browser.close()

    # "current action": tool calls with their arguments, never a bare "thinking".
    assert "thinking" not in seen["actions"]
    assert any(re.fullmatch(r"search \{.+\}", action) for action in seen["actions"]), seen["actions"]
    # The table never reflowed: the same column widths and one row height in every state,
    # answers included.
    assert any(action.startswith("answer: ") for action in seen["actions"])
    assert len(set(seen["widths"])) == 1, set(seen["widths"])
    assert len(set(seen["heights"])) == 1, set(seen["heights"])
    # While the agents researched, the synthesis box said how far they were.
    waiting = [text for text in seen["synthesis"] if text.startswith("Waiting for the agents")]
    assert any("0 of 3 done" in text for text in waiting), seen["synthesis"]
    assert any(re.search(r"[12] of 3 done", text) for text in waiting), seen["synthesis"]
    # At the end it shows the report with the renumbered citations, linked like the answer's.
    assert "[S" not in synthesis_text
    assert "#source-1" in synthesis_html_links
    assert all(int(href.removeprefix("#source-")) <= sources for href in synthesis_html_links)
