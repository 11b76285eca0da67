"""`parse_file(files: string[])`: the text of the job's uploaded files, each a cited source.

The model names files the way the question lists them (`(Uploaded 1 file: ['report.pdf'])`),
so a name, or a file id, picks one of *this job's* files; nothing else can be read. Each file
read is registered in the job's source registry under `upload://<file id>/<name>`.

Observation, one block per file, blocks separated by a blank line::

    [S4] report.pdf (PDF, 20311 bytes)
    URL: upload://file_…/report.pdf
    the text, trimmed to the file's share of the budget

and ``[not found] NAME: …`` for a name that is not among the job's files, or
``[unreadable] NAME: why`` for an encrypted or corrupt file.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import anyio.to_thread

from workers.backend.base import Backend
from workers.errors import ToolError
from workers.files.kinds import LABELS
from workers.files.parse import parse
from workers.models import FileRecord, Source
from workers.tools.base import ToolContext, ToolOutput, string_list
from workers.tools.local import add_source, unique
from workers.tools.render import join_blocks, trim_text

PROVIDER = "upload"


def uploads_line(names: list[str]) -> str:
    """How the released code tells the model about uploads, ahead of the question."""
    noun = "file" if len(names) == 1 else "files"
    return f"(Uploaded {len(names)} {noun}: {names!r})"


def question_with_uploads(question: str, names: list[str]) -> str:
    return f"{uploads_line(names)}\n\n{question}" if names else question


def source_url(file: FileRecord) -> str:
    return f"upload://{file.id}/{quote(file.name)}"


async def files_of(backend: Backend, file_ids: list[str]) -> list[FileRecord]:
    """The files still stored among `file_ids`, in order (expired ones are left out)."""
    files = [await backend.get_file(file_id) for file_id in file_ids]
    return [f for f in files if f is not None]


async def job_files(ctx: ToolContext) -> list[FileRecord]:
    record = await ctx.backend.get_job(ctx.job_id)
    return await files_of(ctx.backend, record.request.files) if record is not None else []


def _pick(wanted: str, files: list[FileRecord]) -> FileRecord | None:
    for file in files:
        if wanted in (file.id, file.name):
            return file
    tail = wanted.replace("\\", "/").rsplit("/", 1)[-1]  # "./eval_data/x.pdf", as models write
    return next((f for f in files if f.name == tail), None)


class ParseFileTool:
    name = "parse_file"
    description = (
        "parse_file(files: string[]) — read uploaded files (PDF, DOCX, XLSX, CSV, PPTX, HTML, MD, TXT, JSON) "
        "by the names the question lists; returns their text with source ids"
    )

    def __init__(self, max_chars: int = 6000, *, max_files: int = 5) -> None:
        self.max_chars = max_chars
        self.max_files = max_files

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        wanted = unique(string_list(arguments, "files"))
        files = await job_files(ctx)
        if not files:
            raise ToolError("this job has no uploaded files to parse")
        dropped = wanted[self.max_files :]
        wanted = wanted[: self.max_files]
        budget = max(200, self.max_chars // len(wanted))
        blocks: list[str] = []
        sources: list[Source] = []
        known = ", ".join(repr(f.name) for f in files)
        for name in wanted:
            file = _pick(name, files)
            if file is None:
                blocks.append(f"[not found] {name}: not among this job's uploaded files ({known})")
                continue
            data = await ctx.backend.read_file(file.id)
            if data is None:
                blocks.append(f"[not found] {name}: the upload is no longer stored (deleted or expired)")
                continue
            try:
                text = await anyio.to_thread.run_sync(parse, file.kind, data, file.name)
            except ToolError as exc:
                blocks.append(f"[unreadable] {file.name}: {exc}")
                continue
            source = await ctx.register_source(source_url(file), file.name)
            add_source(sources, source)
            header = f"[{source.id}] {file.name} ({LABELS.get(file.kind, file.kind)}, {file.size} bytes)"
            body = trim_text(text, budget) if text else "(no text found in the file)"
            blocks.append(f"{header}\nURL: {source.url}\n{body}")
        if dropped:
            blocks.append(f"(Only the first {self.max_files} files were read; ask for the rest separately.)")
        return ToolOutput(text=join_blocks(blocks), sources=sources, provider=PROVIDER)
