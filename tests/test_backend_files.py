"""The backend contract for uploaded files, on the memory backend and a real redis-server: two
backends on one Redis behave like an API process that stores a file and a worker that reads it."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.backend_contract import BackendMaker, eventually
from tests.redis_server import redis_server  # noqa: F401  (fixture)
from tests.test_backend_contract import backend, make  # noqa: F401  (fixtures)
from workers.backend import Backend
from workers.backend.base import new_file_id
from workers.models import FileRecord

pytestmark = pytest.mark.anyio


def record(data: bytes, *, ttl: float = 3600, name: str = "notes.txt") -> FileRecord:
    return FileRecord(
        id=new_file_id(),
        name=name,
        kind="txt",
        content_type="text/plain",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        expires_at=time.time() + ttl,
    )


async def test_put_get_read_delete(backend: Backend) -> None:  # noqa: F811
    data = bytes(range(256)) * 64 + os.urandom(1000)  # every byte value survives the trip
    file = record(data)
    await backend.put_file(file, data)
    assert await backend.get_file(file.id) == file
    assert await backend.read_file(file.id) == data
    assert await backend.delete_file(file.id)
    assert await backend.get_file(file.id) is None
    assert await backend.read_file(file.id) is None
    assert not await backend.delete_file(file.id)
    assert await backend.get_file("file_unknown") is None


async def test_a_file_stored_by_one_process_is_read_by_another(make: BackendMaker) -> None:  # noqa: F811
    api, worker = make(), make()
    data = b"%PDF-1.4 pretend"
    file = record(data, name="report.pdf")
    await api.put_file(file, data)
    if make.kind == "memory":
        worker = api  # one process: nothing is shared between two memory backends
    assert await worker.read_file(file.id) == data
    assert await worker.get_file(file.id) == file


async def test_files_expire(backend: Backend) -> None:  # noqa: F811
    file = record(b"short-lived", ttl=0.3)
    await backend.put_file(file, b"short-lived")
    assert await backend.get_file(file.id) is not None

    async def gone() -> bool:
        return await backend.get_file(file.id) is None and await backend.read_file(file.id) is None

    await eventually(gone, within=5)
