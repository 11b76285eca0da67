"""Storing an upload: checks (size, type), then the backend, so any worker can read it."""

from __future__ import annotations

import hashlib
import time

from workers.backend.base import Backend, new_file_id
from workers.errors import FileRejected
from workers.files.kinds import clean_name, kind_of
from workers.models import FileRecord
from workers.settings import FilesSettings

DEFAULT_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "csv": "text/csv",
    "html": "text/html",
    "md": "text/markdown",
    "txt": "text/plain",
    "json": "application/json",
}


def check_upload(settings: FilesSettings, *, name: str, content_type: str, data: bytes) -> tuple[str, str]:
    """The upload's cleaned name and kind; `FileRejected` when it is too large or not readable."""
    if len(data) > settings.max_bytes:
        raise FileRejected(f"the file is over the upload limit of {settings.max_bytes} bytes", 413)
    if not data:
        raise FileRejected("the file is empty", 415)
    name = clean_name(name)
    return name, kind_of(name, content_type, data[:4096])


async def store_upload(
    backend: Backend,
    settings: FilesSettings,
    *,
    name: str,
    content_type: str,
    data: bytes,
    owner: str | None = None,
) -> FileRecord:
    """Check and store one file; `FileRejected` (413 too large, 415 wrong type) otherwise."""
    name, kind = check_upload(settings, name=name, content_type=content_type, data=data)
    mime = content_type.split(";", 1)[0].strip().lower()
    now = time.time()
    record = FileRecord(
        id=new_file_id(),
        name=name,
        kind=kind,
        content_type=DEFAULT_TYPES[kind] if mime in ("", "application/octet-stream") else mime,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        created_at=now,
        expires_at=now + settings.ttl_seconds,
        owner=owner,
    )
    await backend.put_file(record, data)
    return record
