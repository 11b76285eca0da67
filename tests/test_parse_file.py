"""parse_file and the upload checks: every format through the tool, bad files as clear errors."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.sample_files import MARKER, SAMPLES, encrypted_pdf
from workers.backend.memory import MemoryBackend
from workers.errors import FileRejected, ToolError
from workers.files.parse import parse
from workers.files.store import store_upload
from workers.models import FileRecord, JobRecord, ResearchRequest
from workers.settings import FilesSettings
from workers.tools.base import ToolContext
from workers.tools.parse_file import ParseFileTool, question_with_uploads

pytestmark = pytest.mark.anyio


async def job_with(
    backend: MemoryBackend, *files: tuple[str, str, bytes]
) -> tuple[ToolContext, list[FileRecord]]:
    records = [
        await store_upload(backend, FilesSettings(), name=name, content_type=ctype, data=data)
        for name, ctype, data in files
    ]
    request = ResearchRequest(query="q", files=[r.id for r in records])
    await backend.create_job(JobRecord(id="job_files", request=request))
    return ToolContext(job_id="job_files", agent=0, backend=backend), records


@pytest.mark.parametrize("kind", sorted(SAMPLES))
async def test_every_format_is_read_registered_and_cited(kind: str) -> None:
    backend = MemoryBackend()
    name = SAMPLES[kind][0]
    ctx, [record] = await job_with(backend, SAMPLES[kind])
    assert record.kind == kind
    out = await ParseFileTool()({"files": [name]}, ctx)
    assert MARKER in out.text
    assert out.text.startswith(f"[S1] {name} (")
    assert out.sources[0].url == f"upload://{record.id}/{name}"
    assert (await backend.get_sources("job_files"))["S1"].title == name


async def test_format_details_survive() -> None:
    assert "## Sheet: Ledger\nyear | entries | note\n1901 | 4217 |" in parse(
        "xlsx", SAMPLES["xlsx"][2], "l.xlsx"
    )
    docx = parse("docx", SAMPLES["docx"][2], "l.docx")
    assert docx.startswith("# Ledger summary\n") and "1901 | 4217" in docx
    pptx = parse("pptx", SAMPLES["pptx"][2], "l.pptx")
    assert pptx.startswith("## Slide 1\nLedger\n") and "Notes: Speaker notes: count again." in pptx
    assert parse("pdf", SAMPLES["pdf"][2], "l.pdf").startswith("## Page 1\nBrandvik ledger.")
    assert '"entries": 4217' in parse("json", SAMPLES["json"][2], "l.json")
    html = parse("html", SAMPLES["html"][2], "l.html")
    assert MARKER in html and "var x" not in html and "Home | About" not in html


async def test_names_ids_and_paths_pick_the_jobs_files_only() -> None:
    backend = MemoryBackend()
    ctx, records = await job_with(backend, SAMPLES["txt"], SAMPLES["md"])
    other = await store_upload(
        backend, FilesSettings(), name="secret.txt", content_type="text/plain", data=b"x"
    )
    tool = ParseFileTool()
    out = await tool({"files": [records[1].id, "./eval_data/ledger.txt", "secret.txt", other.id]}, ctx)
    blocks = out.text.split("\n\n")
    assert blocks[0].startswith("[S1] ledger.md") and "[S2] ledger.txt" in out.text
    assert (
        "[not found] secret.txt: not among this job's uploaded files ('ledger.txt', 'ledger.md')" in out.text
    )
    assert f"[not found] {other.id}:" in out.text
    with pytest.raises(ToolError, match="non-empty list"):
        await tool({"files": []}, ctx)


async def test_a_job_without_files_gets_a_tool_error() -> None:
    backend = MemoryBackend()
    await backend.create_job(JobRecord(id="job_none", request=ResearchRequest(query="q")))
    with pytest.raises(ToolError, match="no uploaded files"):
        await ParseFileTool()({"files": ["a.pdf"]}, ToolContext("job_none", 0, backend))


async def test_encrypted_and_corrupt_files_are_tool_errors_to_the_model_not_crashes() -> None:
    backend = MemoryBackend()
    broken_docx = io.BytesIO()
    with zipfile.ZipFile(broken_docx, "w") as archive:
        archive.writestr("hello.txt", "not a document")
    ctx, _ = await job_with(
        backend,
        ("locked.pdf", "application/pdf", encrypted_pdf()),
        ("broken.pdf", "application/pdf", b"%PDF-1.4\n this is not really a pdf"),
        ("broken.docx", "", broken_docx.getvalue()),
        SAMPLES["txt"],
    )
    out = await ParseFileTool()({"files": ["locked.pdf", "broken.pdf", "broken.docx", "ledger.txt"]}, ctx)
    assert "[unreadable] locked.pdf: locked.pdf is an encrypted PDF" in out.text
    assert "[unreadable] broken.pdf: broken.pdf could not be read" in out.text
    assert "[unreadable] broken.docx: broken.docx could not be read" in out.text
    assert MARKER in out.text and [s.title for s in out.sources] == ["ledger.txt"]


async def test_the_budget_trims_long_files() -> None:
    backend = MemoryBackend()
    long = ("A sentence about the Brandvik ledger. " * 2000).encode()
    ctx, _ = await job_with(backend, ("long.txt", "text/plain", long))
    out = await ParseFileTool(max_chars=1000)({"files": ["long.txt"]}, ctx)
    assert out.text.endswith("… [trimmed]") and len(out.text) < 1200


@pytest.mark.parametrize(
    ("name", "ctype", "data", "status", "message"),
    [
        ("big.txt", "text/plain", b"x" * 2048, 413, "over the upload limit of 1024 bytes"),
        ("photo.png", "image/png", b"\x89PNG\r\n", 415, "unsupported file type"),
        ("fake.pdf", "application/pdf", b"hello", 415, "is not a PDF"),
        ("fake.docx", "", b"hello", 415, "not a ZIP-based Office file"),
        ("notes.txt", "application/pdf", b"hello", 415, "does not match the file name"),
        ("binary.txt", "text/plain", b"ab\x00cd", 415, "holds binary data"),
        ("empty.txt", "text/plain", b"", 415, "empty"),
    ],
)
async def test_uploads_are_checked(name: str, ctype: str, data: bytes, status: int, message: str) -> None:
    with pytest.raises(FileRejected, match=message) as caught:
        await store_upload(
            MemoryBackend(), FilesSettings(max_bytes=1024), name=name, content_type=ctype, data=data
        )
    assert caught.value.status == status


async def test_a_generic_content_type_takes_the_kinds_own_and_folders_are_dropped() -> None:
    record = await store_upload(
        MemoryBackend(), FilesSettings(), name="C:\\Users\\me\\ledger.md", content_type="", data=b"# hi"
    )
    assert (record.name, record.kind, record.content_type) == ("ledger.md", "md", "text/markdown")


def test_the_question_lists_uploads_as_the_released_code_does() -> None:
    assert question_with_uploads("Hello!", ["hello.txt"]) == "(Uploaded 1 file: ['hello.txt'])\n\nHello!"
    assert question_with_uploads("Q", ["a.pdf", "b.csv"]) == "(Uploaded 2 files: ['a.pdf', 'b.csv'])\n\nQ"
    assert question_with_uploads("Q", []) == "Q"
