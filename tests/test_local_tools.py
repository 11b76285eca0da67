"""`search` and `visit` over the local corpus, through the Tool interface with a MemoryBackend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers.backend.memory import MemoryBackend
from workers.corpus import Corpus, build_corpus
from workers.errors import RetryableError, ToolError
from workers.models import Source
from workers.tools.base import Tool, ToolContext, ToolOutput
from workers.tools.local import SearchTool, VisitTool
from workers.tools.render import (
    TRIM_MARK,
    SearchItem,
    one_line,
    parse_search_results,
    render_search,
    trim_text,
)

MINI = Path(__file__).parent / "data" / "mini_corpus.jsonl"
WIKI = "https://valdoria.example/wiki/"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    path = tmp_path_factory.mktemp("tools") / "mini.sqlite"
    build_corpus(path, [MINI], wiki=False)
    return Corpus.open(path)


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


def ctx(backend: MemoryBackend, agent: int = 0, job: str = "job_1") -> ToolContext:
    return ToolContext(job_id=job, agent=agent, backend=backend)


def test_tools_satisfy_the_protocol(corpus: Corpus) -> None:
    tools: list[Tool] = [SearchTool(corpus, 5), VisitTool(corpus, 6000)]
    assert [t.name for t in tools] == ["search", "visit"]
    assert tools[0].description.startswith("search(query: string[]) — ")
    assert tools[1].description.startswith("visit(url: string[], goal: string) — ")
    assert all("\n" not in t.description for t in tools)


# -- search -------------------------------------------------------------------------------------------
EXPECTED_SEARCH = """\
A search for 'Comet Brandvik discovery' found 2 results:
1. [S1] Comet Brandvik
   URL: https://valdoria.example/wiki/Comet_Brandvik
   Comet Brandvik is a periodic comet with an orbital period of about 71 years. It was discovered by \
Ilse Brandvik at the Halvard Observatory on 3 March 1791. Its last perihelion was in 2004; the next is \
expected in 2075.
2. [S2] Ilse Brandvik
   URL: https://valdoria.example/wiki/Ilse_Brandvik
   She founded the Halvard Observatory in 1788 and discovered Comet Brandvik in 1791. Her star \
catalogue, Tables of the Northern Sky, appeared in 1802. She studied at the University of Merrowgate.

A search for 'qwertyuiop' found no results."""


@pytest.mark.anyio
async def test_search_output_format(corpus: Corpus, backend: MemoryBackend) -> None:
    out = await SearchTool(corpus, 2)({"query": ["Comet Brandvik discovery", "qwertyuiop"]}, ctx(backend))
    assert out.text == EXPECTED_SEARCH
    assert out.provider == "local"
    assert out.sources == [
        Source(id="S1", url=WIKI + "Comet_Brandvik", title="Comet Brandvik"),
        Source(id="S2", url=WIKI + "Ilse_Brandvik", title="Ilse Brandvik"),
    ]
    assert await backend.get_sources("job_1") == {s.id: s for s in out.sources}


@pytest.mark.anyio
async def test_search_accepts_a_bare_string_and_dedupes(corpus: Corpus, backend: MemoryBackend) -> None:
    out = await SearchTool(corpus, 3)({"query": "Mount Aldric"}, ctx(backend))
    assert out.text.startswith("A search for 'Mount Aldric' found 3 results:\n1. [S1] Mount Aldric\n")
    twice = await SearchTool(corpus, 3)({"query": ["Mount Aldric", " Mount Aldric "]}, ctx(backend))
    assert twice.text == out.text


@pytest.mark.anyio
async def test_source_ids_are_stable_across_agents_and_tools(corpus: Corpus, backend: MemoryBackend) -> None:
    search = SearchTool(corpus, 5)
    first = await search({"query": ["Halvard Observatory"]}, ctx(backend, agent=0))
    second = await search({"query": ["Great Brass Refractor telescope"]}, ctx(backend, agent=1))
    again = await search({"query": ["Halvard Observatory"]}, ctx(backend, agent=2))
    assert again.sources == first.sources
    by_url = {s.url: s.id for s in first.sources}
    for source in second.sources:
        if source.url in by_url:
            assert source.id == by_url[source.url]
    registry = await backend.get_sources("job_1")
    assert sorted(registry, key=lambda s: int(s[1:])) == [f"S{i}" for i in range(1, len(registry) + 1)]

    visit = await VisitTool(corpus, 2000)(
        {"url": [first.sources[0].url], "goal": "founding year"}, ctx(backend, agent=3)
    )
    assert visit.sources == [first.sources[0]]
    assert visit.text.startswith(f"[{first.sources[0].id}] ")

    # Another job has its own registry.
    other = await search({"query": ["Great Brass Refractor telescope"]}, ctx(backend, job="job_2"))
    assert other.sources[0].id == "S1"


@pytest.mark.anyio
async def test_search_caps_queries_per_call(corpus: Corpus, backend: MemoryBackend) -> None:
    out = await SearchTool(corpus, 1, max_queries=2)(
        {"query": ["Tessel", "Selka", "Amber War"]}, ctx(backend)
    )
    assert [q for q, _ in parse_search_results(out.text)] == ["Tessel", "Selka"]
    assert out.text.endswith("(Only the first 2 queries were run; send the rest again.)")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "arguments",
    [{}, {"query": []}, {"query": ""}, {"query": "   "}, {"query": [1, 2]}, {"query": None}, {"q": "x"}],
)
async def test_search_bad_arguments(
    corpus: Corpus, backend: MemoryBackend, arguments: dict[str, Any]
) -> None:
    with pytest.raises(ToolError, match="'query'"):
        await SearchTool(corpus, 3)(arguments, ctx(backend))


@pytest.mark.anyio
async def test_search_odd_queries_do_not_fail(corpus: Corpus, backend: MemoryBackend) -> None:
    out = await SearchTool(corpus, 3)(
        {"query": ['"unbalanced', "NEAR(", "长城", "Line\nbreak"]}, ctx(backend)
    )
    results = parse_search_results(out.text)
    assert [q for q, _ in results] == ['"unbalanced', "NEAR(", "长城", "Line break"]
    assert results[2][1][0].title == "长城"


def test_search_text_round_trips_through_the_parser() -> None:
    items = [
        SearchItem("S4", "A  title\nwith a break", "https://a.example/x", "first  line\nsecond"),
        SearchItem("S9", "B", "https://b.example/", ""),
    ]
    text = render_search("it's a query", items) + "\n\n" + render_search("nothing", [])
    assert parse_search_results(text) == [
        (
            "it's a query",
            [
                SearchItem("S4", "A title with a break", "https://a.example/x", "first line second"),
                SearchItem("S9", "B", "https://b.example/", ""),
            ],
        ),
        ("nothing", []),
    ]
    long = render_search("q", [SearchItem("S1", "T", "u", "word " * 200)])
    assert len(long.splitlines()[-1]) <= 3 + 300


# -- visit ----------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_visit_output_format(corpus: Corpus, backend: MemoryBackend) -> None:
    out = await VisitTool(corpus, 6000)(
        {"url": [WIKI + "Pia_Lund", "https://nowhere.example/page"], "goal": "  who she climbed with "},
        ctx(backend),
    )
    assert out.text == (
        "[S1] Pia Lund\n"
        f"URL: {WIKI}Pia_Lund\n"
        "Goal: who she climbed with\n"
        "Pia Lund (1841–1919) was a mountain guide from the Korrin Mountains. She led the first ascent of "
        "Mount Aldric in 1867 together with Oskar Fenwick.\n"
        "\n"
        "[not found] https://nowhere.example/page: not in the local corpus"
    )
    assert out.sources == [Source(id="S1", url=WIKI + "Pia_Lund", title="Pia Lund")]
    assert out.provider == "local"


@pytest.mark.anyio
async def test_visit_accepts_loose_urls_and_reports_the_canonical_one(
    corpus: Corpus, backend: MemoryBackend
) -> None:
    out = await VisitTool(corpus, 6000)(
        {"url": "http://valdoria.example/wiki/Pia_Lund/", "goal": "x"}, ctx(backend)
    )
    assert out.text.splitlines()[1] == f"URL: {WIKI}Pia_Lund"
    assert out.sources[0].url == WIKI + "Pia_Lund"


@pytest.mark.anyio
async def test_visit_all_unknown_is_an_observation(corpus: Corpus, backend: MemoryBackend) -> None:
    out = await VisitTool(corpus, 6000)(
        {"url": ["https://a.example/", "https://b.example/"], "goal": "g"}, ctx(backend)
    )
    assert out.text == (
        "[not found] https://a.example/: not in the local corpus\n\n"
        "[not found] https://b.example/: not in the local corpus"
    )
    assert out.sources == []
    assert await backend.get_sources("job_1") == {}


@pytest.mark.anyio
async def test_visit_splits_the_budget_and_trims(corpus: Corpus, backend: MemoryBackend) -> None:
    urls = [WIKI + "History_of_Merrowgate", WIKI + "Halvard_Observatory"]
    out = await VisitTool(corpus, 600)({"url": urls, "goal": "when"}, ctx(backend))
    blocks = out.text.split("\n\n")
    assert len(blocks) == 2
    bodies = ["\n".join(block.splitlines()[3:]) for block in blocks]
    assert all(len(body) <= 300 for body in bodies)
    assert bodies[0].endswith(TRIM_MARK)
    assert bodies[0].startswith("Merrowgate began as a ford across the River Sel in the ninth century.")
    # Cut after a whole sentence.
    assert bodies[0].removesuffix(" " + TRIM_MARK).endswith(".")

    whole = await VisitTool(corpus, 6000)({"url": urls[1], "goal": "when"}, ctx(backend))
    assert TRIM_MARK not in whole.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"url": [WIKI + "Selka"]}, "'goal'"),
        ({"url": [WIKI + "Selka"], "goal": "  "}, "'goal'"),
        ({"url": [WIKI + "Selka"], "goal": ["a"]}, "'goal'"),
        ({"goal": "x"}, "'url'"),
        ({"url": [], "goal": "x"}, "'url'"),
        ({"url": [3], "goal": "x"}, "'url'"),
    ],
)
async def test_visit_bad_arguments(
    corpus: Corpus, backend: MemoryBackend, arguments: dict[str, Any], match: str
) -> None:
    with pytest.raises(ToolError, match=match):
        await VisitTool(corpus, 6000)(arguments, ctx(backend))


@pytest.mark.anyio
async def test_visit_caps_urls_per_call(corpus: Corpus, backend: MemoryBackend) -> None:
    urls = [WIKI + t for t in ("Selka", "Tessel", "Amber_Sea")]
    out = await VisitTool(corpus, 3000, max_urls=2)({"url": urls, "goal": "g"}, ctx(backend))
    assert [s.title for s in out.sources] == ["Selka", "Tessel"]
    assert out.text.endswith("(Only the first 2 urls were read; visit the rest separately.)")


class FakeFetcher:
    """A stand-in web fetcher: registers what it reads, refuses one host."""

    name = "visit"
    description = "visit(url: string[], goal: string) — fake web fetcher"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        self.calls.append(arguments)
        (url,) = arguments["url"]
        if "refused" in url:
            raise ToolError("blocked address")
        source = await ctx.backend.register_source(ctx.job_id, url, "Web page")
        return ToolOutput(
            text=f"[{source.id}] Web page\nURL: {url}\nfetched", sources=[source], provider="web"
        )


@pytest.mark.anyio
async def test_visit_falls_back_for_urls_the_corpus_lacks(corpus: Corpus, backend: MemoryBackend) -> None:
    fetcher = FakeFetcher()
    tool = VisitTool(corpus, 6000, fallback=fetcher)
    urls = ["https://web.example/a", WIKI + "Selka", "https://refused.example/"]
    out = await tool({"url": urls, "goal": "g"}, ctx(backend))
    blocks = out.text.split("\n\n")
    # Corpus documents are registered before the fetcher runs; the output keeps the urls' order.
    assert blocks[0] == "[S2] Web page\nURL: https://web.example/a\nfetched"
    assert blocks[1].startswith(f"[S1] Selka\nURL: {WIKI}Selka\nGoal: g\n")
    assert blocks[2] == "[not found] https://refused.example/: blocked address"
    assert [s.id for s in out.sources] == ["S2", "S1"]
    assert out.provider == "local+web"
    assert sorted(c["url"][0] for c in fetcher.calls) == ["https://refused.example/", "https://web.example/a"]
    assert all(c["goal"] == "g" for c in fetcher.calls)

    only_web = await tool({"url": ["https://web.example/a"], "goal": "g"}, ctx(backend))
    assert only_web.provider == "web"


# -- text helpers -------------------------------------------------------------------------------------
def test_trim_text_leaves_short_text_alone() -> None:
    assert trim_text("Short. Text.", 100) == "Short. Text."
    assert trim_text("", 10) == ""


def test_trim_text_cuts_at_a_sentence_end() -> None:
    text = "First sentence here. Second sentence is here. Third one runs on and on and on."
    out = trim_text(text, 60)
    assert out == "First sentence here. Second sentence is here. " + TRIM_MARK
    assert len(out) <= 60


def test_trim_text_cuts_at_a_word_without_a_sentence_end() -> None:
    text = "word " * 40
    out = trim_text(text, 50)
    assert out.endswith(" " + TRIM_MARK)
    assert len(out) <= 50
    assert out.removesuffix(" " + TRIM_MARK).split(" ") == ["word"] * ((50 - len(TRIM_MARK) - 1) // 5)


def test_trim_text_hard_cuts_unbroken_text() -> None:
    out = trim_text("x" * 100, 40)
    assert out == "x" * (40 - len(TRIM_MARK) - 1) + " " + TRIM_MARK
    assert trim_text("x" * 100, 5) == "xxxxx"


def test_trim_text_handles_cjk_sentences() -> None:
    text = "长城是中国古代的军事防御工程。" * 10
    out = trim_text(text, 50)
    assert out.removesuffix(" " + TRIM_MARK).endswith("。")
    assert len(out) <= 50


def test_one_line() -> None:
    assert one_line("a\n b\t c", 10) == "a b c"
    assert one_line("alpha beta gamma delta", 12) == "alpha beta…"
    assert len(one_line("x" * 50, 10)) == 10


class BrokenFetcher(FakeFetcher):
    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        if "down" in arguments["url"][0]:
            raise RetryableError("upstream 503")
        return await super().__call__(arguments, ctx)


@pytest.mark.anyio
async def test_visit_fallback_outage_propagates_unwrapped(corpus: Corpus, backend: MemoryBackend) -> None:
    tool = VisitTool(corpus, 6000, fallback=BrokenFetcher())
    with pytest.raises(RetryableError, match="503"):
        await tool(
            {"url": ["https://web.example/a", "https://down.example/", WIKI + "Selka"], "goal": "g"},
            ctx(backend),
        )
