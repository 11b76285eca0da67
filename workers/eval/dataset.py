"""Evaluation datasets: the released format (`.jsonl` / `.json` with `question` and `answer`,
or the `messages` fallback of the released runner) and CSV files with the same columns.

A line that cannot be read is reported with its line number and skipped: one bad line never
stops a run. Optional columns: `id` (kept in the records; default: a hash of the question) and
a file attachment (`file`, `files` or `file_name`: paths relative to the dataset, `;`-separated
in CSV) for `parse_file` questions.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.errors import DatasetError

FILE_COLUMNS = ("files", "file", "file_name")


@dataclass(frozen=True)
class BadLine:
    """One item the harness skipped, and why: what the user sees and fixes."""

    line: int  # 1-based line of a .jsonl/.csv file; the 1-based position in a .json list
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class EvalItem:
    index: int  # position among the dataset's good items, from 0
    line: int
    question: str
    answer: str
    id: str
    files: tuple[str, ...] = ()


@dataclass
class Dataset:
    path: Path
    items: list[EvalItem] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def question_id(question: str) -> str:
    return hashlib.sha256(question.strip().encode()).hexdigest()[:16]


def _question(row: Mapping[str, Any]) -> str:
    question = str(row.get("question") or "").strip()
    if question:
        return question
    # The released runner's fallback: the user turn of a chat transcript, after "User:".
    messages = row.get("messages")
    if isinstance(messages, list) and len(messages) > 1 and isinstance(messages[1], Mapping):
        text = str(messages[1].get("content") or "")
        return (text.split("User:", 1)[1] if "User:" in text else text).strip()
    return ""


def _files(row: Mapping[str, Any], base: Path) -> tuple[str, ...]:
    for column in FILE_COLUMNS:
        value = row.get(column)
        if not value:
            continue
        names = value if isinstance(value, list) else str(value).split(";")
        paths = []
        for name in (str(n).strip() for n in names):
            if not name:
                continue
            path = Path(name) if Path(name).is_absolute() else base / name
            if not path.is_file():
                raise ValueError(f"attached file {name!r} not found (looked at {path})")
            paths.append(str(path))
        return tuple(paths)
    return ()


def _item(row: object, line: int, index: int, base: Path) -> EvalItem:
    if not isinstance(row, Mapping):
        raise ValueError(f"expected an object with 'question' and 'answer', got {type(row).__name__}")
    question = _question(row)
    if not question:
        raise ValueError("no 'question' (nor a 'messages' list with the user's question)")
    if "answer" not in row or row["answer"] is None or str(row["answer"]).strip() == "":
        raise ValueError("no 'answer'")
    answer = row["answer"]
    text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    ident = str(row.get("id") or row.get("task_id") or question_id(question))
    return EvalItem(index, line, question, text.strip(), ident, _files(row, base))


def _rows(path: Path) -> Iterator[tuple[int, object | ValueError]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    yield number, json.loads(raw)
                except json.JSONDecodeError as exc:
                    yield number, ValueError(f"not JSON ({exc.msg} at column {exc.colno})")
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, list):
            raise DatasetError(f"{path}: a .json dataset must be a list of objects")
        yield from enumerate(data, 1)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"question", "answer"} - set(reader.fieldnames or ())
            if missing:
                raise DatasetError(f"{path}: the CSV header lacks {', '.join(sorted(missing))}")
            for row in reader:
                # The header is line 1; a quoted cell may span lines, so ask the reader.
                yield reader.line_num, row
    else:
        raise DatasetError(f"{path}: unknown dataset format {suffix!r}; use .jsonl, .json or .csv")


def load_dataset(path: Path) -> Dataset:
    if not path.is_file():
        raise DatasetError(f"dataset {path} not found")
    dataset = Dataset(path)
    seen: dict[str, int] = {}
    for line, row in _rows(path):
        try:
            if isinstance(row, ValueError):
                raise row
            item = _item(row, line, len(dataset.items), path.parent)
            if item.question in seen:
                raise ValueError(f"the same question as line {seen[item.question]}")
        except ValueError as exc:
            dataset.bad.append(BadLine(line, str(exc)))
            continue
        seen[item.question] = line
        dataset.items.append(item)
    return dataset
