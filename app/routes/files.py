"""Uploads under /v1/files: store a file for jobs to read with parse_file; inspect; delete.

Files live in the backend (memory or Redis), so the worker that runs a job reads the file an
API process stored. Who may see a file is decided in `visible_file` and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Response, UploadFile

from app.deps import BackendDep, CallerDep, SettingsDep, caller
from app.errors import ERROR_RESPONSES
from app.schemas import ErrorResponse, FileView
from workers.backend.base import Backend
from workers.errors import FileNotFound, FileRejected
from workers.files.kinds import ACCEPTED
from workers.files.store import store_upload
from workers.models import FileRecord

router = APIRouter(prefix="/v1", tags=["files"], dependencies=[Depends(caller)], responses=ERROR_RESPONSES)

FileId = Annotated[str, Path(description="The file's id, as returned by `POST /v1/files`.")]


def file_owner(caller_id: str | None) -> str | None:
    """The owner recorded on a new upload. No tenants yet: None, a file everyone may use."""
    return None


async def visible_file(backend: Backend, file_id: str, caller_id: str | None) -> FileRecord:
    """The one ownership check of files: another tenant's file answers 404 exactly like an
    unknown one, so ids cannot be probed. Today `owner` is always None (no tenants)."""
    record = await backend.get_file(file_id)
    if record is None or (record.owner is not None and record.owner != file_owner(caller_id)):
        raise FileNotFound(file_id)
    return record


def file_view(record: FileRecord) -> FileView:
    return FileView(
        id=record.id,
        name=record.name,
        kind=record.kind,
        content_type=record.content_type,
        bytes=record.size,
        sha256=record.sha256,
        created_at=datetime.fromtimestamp(record.created_at, UTC),
        expires_at=datetime.fromtimestamp(record.expires_at, UTC),
    )


@router.post(
    "/files",
    status_code=201,
    response_model=FileView,
    summary="Upload a file for jobs to read with parse_file",
    description=(
        f"A multipart form with one field `file`. Accepted: {ACCEPTED}. The size limit is the server "
        "setting `files.max_bytes` (20 MiB by default); the file is deleted after `files.ttl_seconds`."
    ),
    responses={
        413: {"model": ErrorResponse, "description": "The file is over the size limit."},
        415: {
            "model": ErrorResponse,
            "description": "Not a type parse_file reads, or not what it claims to be.",
        },
    },
)
async def upload_file(
    file: Annotated[UploadFile, File(description="The file.")],
    backend: BackendDep,
    settings: SettingsDep,
    caller_id: CallerDep,
) -> FileView:
    limit = settings.files.max_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise FileRejected(f"the file is over the upload limit of {limit} bytes", 413)
    record = await store_upload(
        backend,
        settings.files,
        name=file.filename or "upload",
        content_type=file.content_type or "",
        data=data,
        owner=file_owner(caller_id),
    )
    return file_view(record)


@router.get("/files/{file_id}", response_model=FileView, summary="An uploaded file's metadata")
async def get_file(file_id: FileId, backend: BackendDep, caller_id: CallerDep) -> FileView:
    return file_view(await visible_file(backend, file_id, caller_id))


@router.delete("/files/{file_id}", status_code=204, summary="Delete an uploaded file")
async def delete_file(file_id: FileId, backend: BackendDep, caller_id: CallerDep) -> Response:
    await visible_file(backend, file_id, caller_id)
    await backend.delete_file(file_id)
    return Response(status_code=204)
