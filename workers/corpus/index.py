"""Read access to a built corpus: BM25 search and lookup by url, safe under concurrent async use.

A call runs in the event loop's own thread when this corpus has shown such calls to be cheap,
else in a worker thread (`anyio.to_thread`), so a slow search never blocks the loop. The rule:
each kind of call (search, get) keeps the time of its slowest recent call, a maximum that decays
by a tenth per call; while that is under `inline_below` seconds (`corpus.inline_search_ms`,
1 ms) the next call runs inline. The first call always goes to a thread, to be measured; one
slow call sends the next ones to threads until the corpus has proven fast again (about 20 calls
for a call ten times over the limit). On the bundled mini corpus (30 documents) a search takes
~0.5 ms and the thread hop adds ~0.1-0.4 ms of CPU; on the 10,000-article Wikipedia sample a
search takes ~4 ms and stays in threads.

The file never changes while open, so the async `search` and `get` remember their last answers
(`SEARCH_CACHE` queries, `DOC_CACHE` documents, least recently used out): the agents of one
Heavy job research one question and repeat each other's queries and urls (counted once on
the engine benchmark's jobs: 22 distinct searches in 269, 12 urls in 353 visits). Only the loop's thread
touches these, so they need no lock.

Connections are pooled rather than tied to threads: a call borrows an idle read-only connection
(or opens one: ~20 µs) and returns it, so the pool never grows past
the peak number of concurrent calls however the thread pool recycles its threads.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar, TypeVarTuple

import anyio.lowlevel
import anyio.to_thread

from workers.corpus.schema import SCHEMA_VERSION, query_terms, url_key
from workers.errors import CorpusError

SNIPPET_CHARS = 300
DEFAULT_INLINE_BELOW = 0.001
_COST_DECAY = 0.9
SEARCH_CACHE = 1024
DOC_CACHE = 128
T = TypeVar("T")
Args = TypeVarTuple("Args")
# Long questions pasted as queries would otherwise OR together dozens of terms.
MAX_QUERY_TERMS = 32

# Dropped from a query unless nothing else is left; BM25 gives them almost no weight anyway, but
# every one of them would pull nearly the whole corpus into the candidate set.
_STOPWORDS = """a an and are as at be but by did do does for from had has have how i in is it its of on
    or that the their there these they this to was were what when where which who whom whose why will
    with would you"""
STOPWORDS = frozenset(_STOPWORDS.split())


@dataclass(frozen=True, slots=True)
class Hit:
    url: str
    title: str
    snippet: str
    # Negated BM25: higher is better; comparable only within one query.
    score: float


@dataclass(frozen=True, slots=True)
class Doc:
    url: str
    title: str
    text: str


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression for free text: every term quoted, terms OR-ed, so no input can
    be read as FTS syntax. None when the text holds no searchable term."""
    seen: set[str] = set()
    terms: list[str] = []
    for term in query_terms(text):
        folded = term.casefold()
        if folded not in seen:
            seen.add(folded)
            terms.append(term)
    content = [t for t in terms if t.casefold() not in STOPWORDS]
    chosen = (content or terms)[:MAX_QUERY_TERMS]
    if not chosen:
        return None
    return " OR ".join(f'"{t}"' for t in chosen)


class Corpus:
    """A read-only corpus file. Open with `Corpus.open(path)`; close with `close()` (or `with`)."""

    def __init__(
        self,
        path: Path,
        meta: dict[str, str],
        count: int,
        first: sqlite3.Connection,
        *,
        inline_below: float = DEFAULT_INLINE_BELOW,
    ) -> None:
        self.path = path
        self._inline_below = inline_below
        self._search_cost = _Cost()
        self._get_cost = _Cost()
        self._searches: _LRU[tuple[str, int], list[Hit]] = _LRU(SEARCH_CACHE)
        self._docs: _LRU[str, Doc | None] = _LRU(DOC_CACHE)
        self.meta = meta
        self._count = count
        self._idle = [first]
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, path: str | Path, *, inline_below: float = DEFAULT_INLINE_BELOW) -> Corpus:
        """`inline_below`: seconds under which calls run in the event loop (0: always a thread)."""
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise CorpusError(f"no corpus at {path}: build one with `heavyresearch corpus build`")
        conn = _connect(path)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            (count,) = conn.execute("SELECT count(*) FROM docs").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CorpusError(f"{path} is not a heavyresearch corpus ({exc}); rebuild it") from exc
        if meta.get("schema_version") != SCHEMA_VERSION:
            conn.close()
            raise CorpusError(
                f"{path} has corpus schema {meta.get('schema_version')!r}, this version reads "
                f"{SCHEMA_VERSION!r}: rebuild it with `heavyresearch corpus build`"
            )
        return cls(path, meta, int(count), conn, inline_below=inline_below)

    def count(self) -> int:
        return self._count

    def attribution(self) -> str:
        """The credit line to show wherever the corpus's text is shown."""
        return self.meta.get("attribution", "")

    # -- queries ------------------------------------------------------------------------------
    async def search(self, query: str, k: int) -> list[Hit]:
        found = self._searches.get((query, k))
        if found is None:
            found = await self._run(self._search_cost, self.search_sync, query, k)
            self._searches.put((query, k), found)
        else:
            await anyio.lowlevel.checkpoint()
        return list(found)  # the caller's own list; the hits are frozen

    async def get(self, url: str) -> Doc | None:
        if url in self._docs:
            await anyio.lowlevel.checkpoint()
            return self._docs.get(url)
        doc = await self._run(self._get_cost, self.get_sync, url)
        self._docs.put(url, doc)
        return doc

    async def _run(self, cost: _Cost, call: Callable[[*Args], T], *args: *Args) -> T:
        if cost.recent < self._inline_below:
            await anyio.lowlevel.checkpoint_if_cancelled()
            return cost.timed(time.perf_counter, call, *args)
        return await anyio.to_thread.run_sync(cost.timed, time.thread_time, call, *args)

    def search_sync(self, query: str, k: int) -> list[Hit]:
        match = fts_query(query)
        if match is None or k < 1:
            return []
        with self._borrow() as conn:
            rows = conn.execute(
                "SELECT d.url, d.title, d.text, f.rank FROM ("
                "  SELECT rowid, rank FROM docs_fts WHERE docs_fts MATCH ? ORDER BY rank LIMIT ?"
                ") AS f JOIN docs AS d ON d.id = f.rowid ORDER BY f.rank",
                (match, k),
            ).fetchall()
        terms = query_terms(query)
        return [Hit(url, title, make_snippet(text, terms), -rank) for url, title, text, rank in rows]

    def get_sync(self, url: str) -> Doc | None:
        with self._borrow() as conn:
            row = conn.execute(
                "SELECT url, title, text FROM docs WHERE url_key = ?", (url_key(url),)
            ).fetchone()
        return Doc(*row) if row else None

    # -- connections ----------------------------------------------------------------------------
    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise CorpusError(f"the corpus {self.path} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = _connect(self.path)
        try:
            yield conn
        finally:
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> Corpus:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """At most `size` entries; the least recently used one goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None or key in self._entries:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


class _Cost:
    """The time of one kind of call's slowest recent call (seconds), decaying per call."""

    def __init__(self) -> None:
        self.recent = math.inf  # unmeasured: the first call goes to a thread

    def timed(self, clock: Callable[[], float], call: Callable[[*Args], T], *args: *Args) -> T:
        """`call(*args)`, its time on `clock` kept. Inline that is the wall clock (what the loop
        waits); in a worker thread it is the thread's CPU time: its wall time there includes the
        waits for the GIL while the loop runs, which under load kept every search in a thread
        (timed at several ms) although each takes well under one."""
        started = clock()
        try:
            return call(*args)
        finally:
            took = clock() - started
            # Written from worker threads too: a lost update only delays the rule by one call.
            self.recent = took if self.recent == math.inf else max(took, self.recent * _COST_DECAY)


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only, and usable from whichever worker thread borrows it (one at a time).
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)


# -- snippets ----------------------------------------------------------------------------------------
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?。！？])\s+|\n+")
_WORD = re.compile(r"\w+")
# Only the head of a long document is scanned for the best sentence: snippets must stay cheap.
_SNIPPET_SCAN_CHARS = 20_000


def make_snippet(text: str, terms: list[str], max_chars: int = SNIPPET_CHARS) -> str:
    """One line from `text` starting at the first sentence that matches the most query terms."""
    sentences = [s for s in _SENTENCE_SPLIT.split(text[:_SNIPPET_SCAN_CHARS]) if s.strip()]
    if not sentences:
        return ""
    words = {_stem(t.casefold()) for t in terms if " " not in t and t.casefold() not in STOPWORDS}
    phrases = {t.replace(" ", "") for t in terms if " " in t}
    best, best_score = 0, 0
    for i, sentence in enumerate(sentences):
        folded = sentence.casefold()
        found = {_stem(w) for w in _WORD.findall(folded)}
        score = len(words & found) + sum(1 for p in phrases if p in folded)
        if score > best_score:
            best, best_score = i, score
    window: list[str] = []
    size = 0
    for sentence in sentences[best:]:
        window.append(sentence)
        size += len(sentence) + 1
        if size > max_chars:
            break
    return cut_line(" ".join(" ".join(window).split()), max_chars)


def _stem(word: str) -> str:
    # The index stems English words (porter); a shared prefix is close enough to pick a sentence.
    return word[:6]


def cut_line(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` at a word boundary, with an ellipsis when cut."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"
