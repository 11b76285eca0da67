"""Web `visit` on pages served by a loopback test server: extraction from real-world-like HTML,
redirects (an inward one is refused), size and time caps, content types, PDF, the reader
service, and goal-directed extraction through the real simulated model.

The guard allows 127.0.0.1 explicitly, as a local set-up would; every other address is refused
before any connection is made."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.fake_search_apis import Website
from workers.backend.memory import MemoryBackend
from workers.corpus import Corpus
from workers.errors import BlockedURL, FetchError, RetryableError
from workers.llm import OpenAIChatModel
from workers.llm.types import ChatMessage, ChatResult, DeltaCallback, Role
from workers.net.client import page_client
from workers.net.ssrf import AddressGuard, IPAddress
from workers.settings import LLMSettings
from workers.sim.server import SimServer
from workers.tools.base import ToolContext
from workers.tools.local import VisitTool
from workers.tools.web.cache import SharedCache
from workers.tools.web.fetch import PageFetcher
from workers.tools.web.summarise import PageSummariser, load_template, parse_reply
from workers.tools.web.visit import WebVisitTool


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer() as server:
        yield server


async def loopback_only(host: str, port: int) -> list[IPAddress]:
    """The tests' DNS: `localhost` and nothing else."""
    if host == "localhost":
        return [ipaddress.ip_address("127.0.0.1")]
    raise BlockedURL(f"cannot resolve {host}")


@pytest.fixture
async def fetcher() -> AsyncIterator[PageFetcher]:
    async with page_client() as client:
        yield PageFetcher(
            client,
            AddressGuard(["127.0.0.1"], loopback_only),
            timeout=3,
            max_bytes=200_000,
            max_redirects=3,
            user_agent="heavyresearch-test",
        )


# -- fetching ---------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_article_main_text_without_boilerplate(site: Website, fetcher: PageFetcher) -> None:
    page = await fetcher.fetch(site.url("/article"))
    assert (
        "discovered by the astronomer Ilse Brandvik at the Halvard Observatory on 3 March 1791" in page.text
    )
    assert "next perihelion is expected in 2075" in page.text
    for boilerplate in (
        "cookies",
        "Sign in",
        "Trending",
        "newsletter",
        "All rights reserved",
        "dataLayer",
        "gtag",
    ):
        assert boilerplate not in page.text
    assert "Comet Brandvik" in page.title
    assert (page.via, page.truncated, page.final_url) == ("web", False, site.url("/article"))


@pytest.mark.anyio
async def test_redirects_are_followed_hop_by_hop(site: Website, fetcher: PageFetcher) -> None:
    before = site.hits["/article"]
    page = await fetcher.fetch(site.url("/redirect?to=/redirect%3Fto%3D/article%26code%3D308"))
    assert page.final_url == site.url("/article")
    assert page.url == site.url("/redirect?to=/redirect%3Fto%3D/article%26code%3D308")
    assert site.hits["/article"] == before + 1
    # A redirect to another allowed host name is checked (and resolved) like the first url.
    assert site.server is not None
    page = await fetcher.fetch(site.url(f"/redirect?to=http://localhost:{site.server.port}/notes.txt"))
    assert page.final_url == f"http://localhost:{site.server.port}/notes.txt"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "to",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://2130706434/",  # 127.0.0.2, spelt as a number
        "http://[::ffff:a9fe:a9fe]/",
        "http://127.0.0.2/",
        "file:///etc/passwd",
    ],
)
async def test_redirect_to_a_disallowed_address_is_refused(
    to: str, site: Website, fetcher: PageFetcher
) -> None:
    with pytest.raises(BlockedURL, match=r"redirected to .+, which was refused\. "):
        await fetcher.fetch(site.url(f"/redirect?to={to}"))


@pytest.mark.anyio
async def test_redirect_loop_is_cut(site: Website, fetcher: PageFetcher) -> None:
    with pytest.raises(FetchError, match="more than 3 redirects"):
        await fetcher.fetch(site.url("/loop"))


@pytest.mark.anyio
async def test_endless_body_is_cut_at_the_size_cap(site: Website, fetcher: PageFetcher) -> None:
    page = await fetcher.fetch(site.url("/endless"))
    assert page.truncated is True
    assert "3 March 1791" in page.text
    with pytest.raises(FetchError, match="larger than 200000 bytes"):
        await fetcher.fetch(site.url("/endless.pdf"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/image.png", "unsupported content type 'image/png'"),
        ("/archive.zip", "unsupported content type 'application/zip'"),
        ("/missing", "HTTP 404"),
        ("/empty", "no readable text"),
    ],
)
async def test_unreadable_pages(path: str, reason: str, site: Website, fetcher: PageFetcher) -> None:
    with pytest.raises(FetchError, match=reason):
        await fetcher.fetch(site.url(path))


@pytest.mark.anyio
async def test_other_readable_types(site: Website, fetcher: PageFetcher) -> None:
    text = await fetcher.fetch(site.url("/notes.txt"))
    assert text.text.startswith("Halvard Observatory visitor notes.\nThe observatory was founded")
    pdf = await fetcher.fetch(site.url("/report.pdf"))
    assert pdf.title == "Brandvik Report"
    assert "orbital period of about 71 years" in pdf.text
    sniffed = await fetcher.fetch(site.url("/sniffed"))
    assert "3 March 1791" in sniffed.text


@pytest.mark.anyio
async def test_slow_page_times_out(site: Website) -> None:
    async with page_client() as client:
        quick = PageFetcher(
            client,
            AddressGuard(["127.0.0.1"]),
            timeout=0.3,
            max_bytes=10_000,
            max_redirects=1,
            user_agent="t",
        )
        with pytest.raises(FetchError, match=r"timed out after 0\.3s"):
            await quick.fetch(site.url("/slow"))


@pytest.mark.anyio
async def test_reader_service(site: Website) -> None:
    async with page_client() as client:
        reader = PageFetcher(
            client,
            AddressGuard(["127.0.0.1"], loopback_only),
            timeout=3,
            max_bytes=100_000,
            max_redirects=2,
            user_agent="t",
            reader_client=client,
            reader_base_url=site.url("/reader"),
        )
        page = await reader.fetch(site.url("/article"))
        assert (page.via, page.title) == ("reader", "Read by the reader")
        assert page.text.startswith("# Comet Brandvik")

        # The url passes the guard before the reader ever sees it.
        asked = sum(n for path, n in site.hits.items() if path.startswith("/reader"))
        with pytest.raises(BlockedURL):
            await reader.fetch("http://192.168.0.1/admin")
        assert sum(n for path, n in site.hits.items() if path.startswith("/reader")) == asked

        site.reader_fails = True
        try:
            page = await reader.fetch(site.url("/article"))
        finally:
            site.reader_fails = False
        assert page.via == "web"
        assert "Halvard Observatory" in page.text


# -- summarising ----------------------------------------------------------------------------------
class ScriptedModel:
    """A `ChatModel` answering the summariser with scripted replies, in order."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    async def chat(
        self,
        role: Role,
        messages: list[ChatMessage],
        *,
        seed: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> ChatResult:
        assert role == "summariser"
        self.prompts.append(messages[-1]["content"])
        if not self.replies:
            raise RetryableError("summariser down")
        return ChatResult(content=self.replies.pop(0))


def visit_tool(fetcher: PageFetcher, model: Any, backend: MemoryBackend, retries: int = 2) -> WebVisitTool:
    summariser = PageSummariser(model, load_template(), page_tokens=2000, max_tokens=512, retries=retries)
    return WebVisitTool(fetcher, summariser, SharedCache(backend, wait=5), max_chars=3000, ttl=60)


@pytest.mark.anyio
async def test_goal_directed_extraction_through_the_simulated_model(
    site: Website, sim: SimServer, fetcher: PageFetcher
) -> None:
    backend = MemoryBackend()
    ctx = ToolContext("job_1", 0, backend)
    llm = LLMSettings(base_url=sim.openai_base_url, model="heavyresearch-sim", max_retries=0)
    async with OpenAIChatModel.from_settings(llm) as model:
        tool = visit_tool(fetcher, model, backend)
        url = site.url("/article")
        fetched = site.hits["/article"]
        summaries = sim.stats.by_role["summariser"]

        out = await tool(
            {"url": [url], "goal": "Which astronomer discovered it, and at which observatory?"}, ctx
        )
        lines = out.text.split("\n")
        assert lines[0] == "[S1] Comet Brandvik returns to the evening sky"
        assert lines[1] == f"URL: {url}"
        assert lines[2] == "Goal: Which astronomer discovered it, and at which observatory?"
        assert lines[3].startswith("Evidence: ")
        assert (
            "discovered by the astronomer Ilse Brandvik at the Halvard Observatory on 3 March 1791"
            in lines[3]
        )
        assert lines[4].startswith("Summary: ")
        assert (out.provider, out.cached) == ("web", False)
        assert [s.url for s in out.sources] == [url]

        # The same visit again: no fetch, no model call.
        again = await tool(
            {"url": [url], "goal": "which ASTRONOMER discovered it,  and at which observatory?"}, ctx
        )
        assert again.cached is True
        assert again.text.split("\n")[3:] == lines[3:]
        # Another goal: the page comes from the cache, the summary is new.
        other = await tool({"url": [url], "goal": "When is the next perihelion?"}, ctx)
        assert other.cached is False
        assert "2075" in other.text
        assert site.hits["/article"] == fetched + 1
        assert sim.stats.by_role["summariser"] == summaries + 2


@pytest.mark.anyio
async def test_summary_is_asked_again_after_an_unusable_reply(site: Website, fetcher: PageFetcher) -> None:
    backend = MemoryBackend()
    good = '```json\n{"rational": "r", "evidence": "Discovered on 3 March 1791.", "summary": "1791."}\n```'
    model = ScriptedModel(["", "Sorry, I cannot help with that.", good])
    out = await visit_tool(fetcher, model, backend)(
        {"url": [site.url("/article")], "goal": "discovery date"}, ToolContext("j", 0, backend)
    )
    assert len(model.prompts) == 3
    assert "Evidence: Discovered on 3 March 1791.\nSummary: 1791." in out.text
    prompt = model.prompts[0]
    assert prompt.index("## Goal\ndiscovery date") < prompt.index("## Page\n")
    assert "3 March 1791" in prompt.split("## Page\n", 1)[1]


@pytest.mark.anyio
async def test_unusable_summaries_degrade_to_the_page_text(site: Website, fetcher: PageFetcher) -> None:
    backend = MemoryBackend()
    ctx = ToolContext("j", 0, backend)
    model = ScriptedModel(["nope", "{}", "still nothing"])
    tool = visit_tool(fetcher, model, backend)
    out = await tool({"url": [site.url("/notes.txt")], "goal": "founding year"}, ctx)
    assert len(model.prompts) == 3
    lines = out.text.split("\n")
    assert lines[2] == "Goal: founding year"
    assert lines[3] == "Halvard Observatory visitor notes."
    assert "Evidence:" not in out.text
    # A degraded answer is not cached: the next visit asks the summariser again (which is now
    # down altogether: that degrades too).
    again = await tool({"url": [site.url("/notes.txt")], "goal": "founding year"}, ctx)
    assert again.cached is False
    assert again.text == out.text


def test_parse_reply_variants() -> None:
    assert parse_reply('{"evidence": "e", "summary": "s"}') == ("e", "s")
    assert parse_reply('<think>{"evidence": "no"}</think> Here: {"evidence": ["a", "b"], "summary": ""}') == (
        "a\nb",
        "",
    )
    assert parse_reply('{"evidence": "", "summary": ""}') is None
    assert parse_reply("no json") is None
    assert parse_reply('{"other": 1}') is None


# -- behind the corpus visit tool -------------------------------------------------------------------
@pytest.mark.anyio
async def test_corpus_urls_stay_local_and_the_rest_go_to_the_web(
    site: Website, fetcher: PageFetcher, mini_corpus: Path
) -> None:
    backend = MemoryBackend()
    good = '{"rational": "r", "evidence": "Founded in 1788.", "summary": "1788."}'
    web = visit_tool(fetcher, ScriptedModel([good]), backend)
    with Corpus.open(mini_corpus) as corpus:
        tool = VisitTool(corpus, 4000, fallback=web)
        corpus_url = "https://valdoria.example/wiki/Ilse_Brandvik"
        out = await tool(
            {"url": [corpus_url, site.url("/notes.txt"), "http://10.0.0.5/"], "goal": "founding"},
            ToolContext("j", 0, backend),
        )
    blocks = out.text.split("\n\n")
    assert blocks[0].startswith(f"[S1] Ilse Brandvik\nURL: {corpus_url}\nGoal: founding\n")
    notes = site.url("/notes.txt")
    assert (
        blocks[1] == f"[S2] {notes}\nURL: {notes}\nGoal: founding\nEvidence: Founded in 1788.\nSummary: 1788."
    )
    assert blocks[2].startswith(
        "[not found] http://10.0.0.5/: Refused to fetch 10.0.0.5: it is a private address, not a public one."
    )
    assert out.provider == "local+web"


# -- TLS with a pinned address ------------------------------------------------------------------------
@pytest.mark.anyio
async def test_https_connects_to_the_checked_address_and_verifies_the_host_name() -> None:
    """The request goes to the address the guard checked (127.0.0.1), while TLS still sends the
    host name (SNI) and verifies the certificate against it, not against the address."""
    ca = trustme.CA()
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)

    async def resolve(host: str, port: int) -> list[IPAddress]:
        assert host in ("pinned.example", "impostor.example")
        return [ipaddress.ip_address("127.0.0.1")]

    with (
        ca.issue_cert("pinned.example").private_key_and_cert_chain_pem.tempfile() as pem,
        Website(certfile=pem) as site,
    ):
        assert site.server is not None
        port = site.server.port
        async with page_client(verify=trusted) as client:
            fetcher = PageFetcher(
                client,
                AddressGuard(["127.0.0.1"], resolve),
                timeout=5,
                max_bytes=100_000,
                max_redirects=2,
                user_agent="t",
            )
            page = await fetcher.fetch(f"https://pinned.example:{port}/article")
            assert page.final_url == f"https://pinned.example:{port}/article"
            assert "3 March 1791" in page.text
            # Same address, a name the certificate does not cover: refused by TLS.
            with pytest.raises(FetchError, match="could not be fetched"):
                await fetcher.fetch(f"https://impostor.example:{port}/article")


@pytest.mark.anyio
async def test_dns_rebinding_cannot_swap_the_address_after_the_check(site: Website) -> None:
    """A name that answers an allowed address to the check and a private one afterwards: the
    fetch connects to the checked address, and never asks DNS again for that hop."""
    answers = iter(["127.0.0.1", "10.0.0.1", "10.0.0.1"])
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(next(answers))]

    assert site.server is not None
    async with page_client() as client:
        fetcher = PageFetcher(
            client,
            AddressGuard(["127.0.0.1"], rebinding),
            timeout=5,
            max_bytes=100_000,
            max_redirects=2,
            user_agent="t",
        )
        page = await fetcher.fetch(f"http://rebind.example:{site.server.port}/notes.txt")
    assert page.text.startswith("Halvard Observatory visitor notes.")
    assert asked == ["rebind.example"]
