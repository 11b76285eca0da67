"""The sqlite backend when its file misbehaves: corrupt or read-only at start (a clear error, the
process does not start), locked by another process or on a full disk while running (503 with
Retry-After for new requests, running jobs wait and finish: nothing lost, nothing hangs).

The API runs on a real uvicorn in this process (`tests/server.py`) on a file in the test's
temporary folder. A full disk is stood in for by `PRAGMA max_page_count` on the server's own
connection: SQLite then fails writes with the very error a full disk gives (SQLITE_FULL).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.procs import ApiProcess, clean_environ
from tests.server import LiveServer, api_settings, live_server, run_to_end, wait_for_event
from tests.test_scaleout import check_log
from workers.backend.sqlite import SQLiteBackend
from workers.errors import BackendBroken, BackendUnavailable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

BODY = {"query": "What is the capital of Valdoria?", "agents": 2, "max_rounds": 6}


@contextmanager
def sqlite_server(path: Path, corpus: Path, **sqlite: Any) -> Iterator[LiveServer]:
    settings = api_settings(
        corpus,
        backend="sqlite",
        sqlite={"path": str(path), **sqlite},
        sim={"latency": 0.2, "min_rounds": 3},
    )
    with live_server(settings) as server:
        yield server


def serve_process(tmp_path: Path, path: Path, corpus: Path) -> ApiProcess:
    env = clean_environ()
    env.update(
        HR_BACKEND="sqlite",
        HR_SQLITE__PATH=str(path),
        HR_CORPUS__PATH=str(corpus),
        HR_CORPUS__AUTO_BUILD="false",
    )
    return ApiProcess("serve", env, tmp_path / "serve.log")


def test_a_corrupt_file_stops_the_start_with_what_to_do(tmp_path: Path, mini_corpus: Path) -> None:
    path = tmp_path / "heavyresearch.sqlite"
    path.write_bytes(b"this is no database, just bytes " * 512)
    api = serve_process(tmp_path, path, mini_corpus)
    api.start()
    try:
        assert api.wait_exit(60) != 0
    finally:
        api.kill()
    log = api.log_text()
    assert f"cannot use the sqlite database {path}" in log
    assert "corrupt" in log and "move it aside" in log
    # The file is left as it was, for its owner to inspect.
    assert path.read_bytes().startswith(b"this is no database")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files: nothing to refuse")
async def test_a_read_only_file_stops_the_start_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "ro" / "heavyresearch.sqlite"
    made = SQLiteBackend(path)
    await made.open()
    await made.close()
    path.chmod(0o444)
    path.parent.chmod(0o555)
    try:
        backend = SQLiteBackend(path)
        with pytest.raises(BackendBroken, match="read-only"):
            await backend.open()
        await backend.close()
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)


async def test_a_locked_database_answers_503_and_running_jobs_finish(
    tmp_path: Path, mini_corpus: Path
) -> None:
    path = tmp_path / "heavyresearch.sqlite"
    with sqlite_server(path, mini_corpus, busy_timeout=0.3) as server:
        async with server.client() as client:
            running = (await client.post("/v1/research", json=BODY)).json()["id"]
            await wait_for_event(client, running, "round.started", round_=1)

            # Another process takes the write lock and keeps it.
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                refused = await client.post("/v1/research", json=BODY)
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == str(BackendUnavailable.retry_after)
                assert "locked" in refused.json()["error"]["message"]
                # Reads go on beside the lock (WAL): status and health still answer.
                assert (await client.get(f"/v1/research/{running}")).status_code == 200
                assert (await client.get("/healthz")).json()["backend"] == "sqlite"
            finally:
                other.execute("ROLLBACK")
                other.close()

            accepted = await client.post("/v1/research", json=BODY)
            assert accepted.status_code == 202, accepted.text
            for job_id in (running, accepted.json()["id"]):
                events = await run_to_end(client, job_id)
                check_log(events, agents=2)
                assert events[-1]["type"] == "job.succeeded"


async def test_a_full_disk_answers_503_and_running_jobs_finish(tmp_path: Path, mini_corpus: Path) -> None:
    path = tmp_path / "heavyresearch.sqlite"
    with sqlite_server(path, mini_corpus) as server:
        backend = server.app.state.engine.backend
        assert isinstance(backend, SQLiteBackend)
        async with server.client() as client:
            running = (await client.post("/v1/research", json=BODY)).json()["id"]
            await wait_for_event(client, running, "round.started", round_=1)

            await fill_the_disk(backend)
            # A record larger than a page must grow the file: refused, like any write on a full disk.
            long = {**BODY, "query": "What is the capital of Valdoria, and why? " * 90}
            refused = await client.post("/v1/research", json=long)
            assert refused.status_code == 503, refused.text
            assert "retry-after" in refused.headers
            assert "full" in refused.json()["error"]["message"]
            assert (await client.get(f"/v1/research/{running}")).status_code == 200

            await set_max_pages(backend, 1 << 30)  # space is freed
            accepted = await client.post("/v1/research", json=BODY)
            assert accepted.status_code == 202, accepted.text
            for job_id in (running, accepted.json()["id"]):
                events = await run_to_end(client, job_id)
                check_log(events, agents=2)
                assert events[-1]["type"] == "job.succeeded"


async def set_max_pages(backend: SQLiteBackend, pages: int) -> int:
    def apply(conn: sqlite3.Connection) -> int:
        return int(conn.execute(f"PRAGMA max_page_count = {int(pages)}").fetchone()[0])

    return await backend._db.read(apply)


async def fill_the_disk(backend: SQLiteBackend) -> None:
    """No page may be added, and the free pages inside the file are used up."""

    def page_count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])

    await set_max_pages(backend, await backend._db.read(page_count))
    errors: list[str] = []
    for size in (2000, 500, 100, 30):
        for i in range(10_000):
            try:
                await backend.cache_set(f"filler-{size}-{i}", "x" * size, 0)
            except BackendUnavailable as exc:
                errors.append(str(exc))
                break
    assert len(errors) == 4, "the database never filled up"
    assert all("full" in error for error in errors), errors
