"""Build the local corpus file from JSONL, folders of text/markdown/HTML, and offline Wikipedia.

The build writes a temporary file next to the target and renames it over the target only when
complete, so a crash or a bad input never leaves a half-built index (and a running service that
has the old file open keeps reading the old file).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from workers.corpus.schema import DDL, SCHEMA_VERSION, segment_cjk, url_key
from workers.corpus.sources import (
    WIKI_ATTRIBUTION,
    WIKI_LICENSE,
    DocRecord,
    SourceReader,
    open_source,
    wiki_source,
)
from workers.errors import CorpusError

_BATCH = 1000


def build_corpus(
    out_path: Path,
    sources: list[Path] | None,
    *,
    wiki: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Index `sources` (and the offline Wikipedia data when `wiki`) into `out_path`.

    Returns the number of documents indexed. A url seen twice keeps its first document;
    documents without text are skipped.
    `on_progress(done, total)` is called after every batch and once at the end.
    Raises `CorpusError` for a missing or malformed input, or when there is nothing to index.
    """
    readers = [open_source(Path(p)) for p in sources or []]
    if wiki:
        readers.insert(0, wiki_source())
    if not readers:
        raise CorpusError("nothing to index: give JSONL files or folders, or use the Wikipedia data")

    out_path = Path(out_path).expanduser()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        count = _write(tmp, readers, wiki=wiki, on_progress=on_progress)
        # The build ran without a journal or syncs for speed; make the bytes durable before
        # the rename makes them the corpus.
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private; a corpus is shared data, readable like any output.
        os.chmod(tmp, out_path.stat().st_mode & 0o777 if out_path.exists() else 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return count


def _write(
    path: Path,
    readers: list[SourceReader],
    *,
    wiki: bool,
    on_progress: Callable[[int, int], None] | None,
) -> int:
    total = sum(r.total for r in readers)
    conn = sqlite3.connect(path)
    try:
        # A crash discards the temp file anyway, so durability during the build buys nothing.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(DDL)
        seen: set[str] = set()
        done = skipped = 0
        batch: list[tuple[int, DocRecord, str]] = []
        for record in _records(readers):
            done += 1
            key = url_key(record.url)
            if key in seen or not record.text:
                skipped += 1
            else:
                seen.add(key)
                batch.append((len(seen), record, key))
            if len(batch) >= _BATCH:
                _insert(conn, batch)
                batch.clear()
                if on_progress is not None:
                    on_progress(done, total)
        _insert(conn, batch)
        conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)", _meta(readers, len(seen), skipped, wiki)
        )
        conn.execute("INSERT INTO docs_fts(docs_fts) VALUES ('optimize')")
        conn.commit()
    finally:
        conn.close()
    if on_progress is not None:
        on_progress(done, max(total, done))
    return len(seen)


def _records(readers: list[SourceReader]) -> Iterator[DocRecord]:
    for reader in readers:
        yield from reader.read()


def _insert(conn: sqlite3.Connection, batch: list[tuple[int, DocRecord, str]]) -> None:
    conn.executemany(
        "INSERT INTO docs(id, url, url_key, title, text) VALUES (?, ?, ?, ?, ?)",
        [(i, r.url, key, r.title, r.text) for i, r, key in batch],
    )
    conn.executemany(
        "INSERT INTO docs_fts(rowid, title, body, extra) VALUES (?, ?, ?, ?)",
        [(i, segment_cjk(r.title), segment_cjk(r.text), segment_cjk(r.extra)) for i, r, _ in batch],
    )


def _meta(readers: list[SourceReader], count: int, skipped: int, wiki: bool) -> list[tuple[str, str]]:
    local = [r.name for r in readers if r.kind != "wiki"]
    notes = [WIKI_ATTRIBUTION] if wiki else []
    if local:
        notes.append("Local documents from: " + ", ".join(local) + ".")
    return [
        ("schema_version", SCHEMA_VERSION),
        ("built_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        ("doc_count", str(count)),
        ("skipped", str(skipped)),
        ("sources", json.dumps([{"name": r.name, "kind": r.kind} for r in readers])),
        ("license", WIKI_LICENSE if wiki else "see the local documents' own terms"),
        ("attribution", " ".join(notes)),
    ]
