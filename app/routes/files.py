"""Uploads under /v1/files: store a file for jobs to read with parse_file; inspect; delete.

Files live in the backend (memory or Redis), so the worker that runs a job reads the file an
API process stored. Who may see a file is decided in `visible_file`, by the rule jobs follow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Response, UploadFile

from app.auth import Principal, PrincipalDep, ensure_visible
from app.deps import BackendDep, SettingsDep
from app.errors import ERROR_RESPONSES
from app.schemas import ErrorResponse, FileView
from workers.backend.base import Backend
from workers.errors import FileNotFound, FileRejected
from workers.files.kinds import ACCEPTED
from workers.files.store import store_upload
from workers.models import FileRecord

# Every route authenticates itself (`PrincipalDep`): a file belongs to the tenant that uploaded it.
router = APIRouter(prefix="/v1", tags=["files"], responses=ERROR_RESPONSES)

FileId = Annotated[str, Path(description="The file's id, as returned by `POST /v1/files`.")]


async def visible_file(backend: Backend, file_id: str, principal: Principal) -> FileRecord:
    """The file, if `principal` may see it: another tenant's file answers 404 exactly like an
    unknown one, so ids cannot be probed (the same rule as jobs, `app.auth.ensure_visible`)."""
    record = await backend.get_file(file_id)
    if record is None:
        raise FileNotFound(file_id)
    ensure_visible(principal, record.owner, FileNotFound(file_id))
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
        400: {"model": ErrorResponse, "description": "The body is not a well-formed multipart form."},
        413: {"model": ErrorResponse, "description": "The file is over the size limit."},
        415: {
            "model": ErrorResponse,
            "description": "Not a type parse_file reads, or not what it claims to be.",
        },
    },
)
async def upload_file(
    file: Annotated[
        UploadFile, File(description="The file (not empty).", json_schema_extra={"minLength": 1})
    ],
    backend: BackendDep,
    settings: SettingsDep,
    principal: PrincipalDep,
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
        owner=principal.tenant,
    )
    return file_view(record)


_NO_FILE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such file (or not the caller's)."}
}


@router.get(
    "/files/{file_id}", response_model=FileView, summary="An uploaded file's metadata", responses=_NO_FILE
)
async def get_file(file_id: FileId, backend: BackendDep, principal: PrincipalDep) -> FileView:
    return file_view(await visible_file(backend, file_id, principal))


@router.delete("/files/{file_id}", status_code=204, summary="Delete an uploaded file", responses=_NO_FILE)
async def delete_file(file_id: FileId, backend: BackendDep, principal: PrincipalDep) -> Response:
    await visible_file(backend, file_id, principal)
    await backend.delete_file(file_id)
    return Response(status_code=204)
