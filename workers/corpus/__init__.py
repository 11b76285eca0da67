"""The local corpus: one SQLite FTS5 file searched with BM25, the embedded default search source.

Build with `build_corpus` (JSONL, folders of text/markdown/HTML, offline Wikipedia); read with
`Corpus.open`. File layout in `schema.py`, input formats in `sources.py`.
"""

from workers.corpus.build import build_corpus
from workers.corpus.index import Corpus, Doc, Hit, fts_query
from workers.corpus.sources import wiki_data_path
from workers.errors import CorpusError

__all__ = ["Corpus", "CorpusError", "Doc", "Hit", "build_corpus", "fts_query", "wiki_data_path"]
