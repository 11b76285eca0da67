"""One SQLite connection owned by one dedicated thread: the event loop never touches the file.

Callers submit functions of the connection (`read` or `write`) and await their results. The
thread takes whatever is pending at once and runs all its writes in ONE transaction (group
commit): the events, checkpoint and sources that a job's agents write at the same moment land
in a single commit, so one fsync-free WAL append serves them all. Each write runs in a
savepoint of its own, so an error it raises on purpose (`QueueFull`) undoes only its work.

Between batches the thread watches `PRAGMA data_version`, which changes when another
connection (another process) commits. It then reports which jobs got new events, so streams
and claim loops in this process wake for writes made elsewhere; writes made here wake them
directly. SQLite errors become `BackendUnavailable` (locked, disk full, I/O errors: a 503
for the API, a retry for the engine), or `BackendBroken` when the file cannot be used at all
(not a database, read-only, newer schema): that is raised at start, with what to do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from workers.backend.sqlite_schema import CONNECTION_PRAGMAS, SCHEMA_VERSION, TABLES
from workers.errors import BackendBroken, BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
ChangeCallback = Callable[[set[str]], None]

# Most operations taken into one batch; bounds how long a batch holds the write lock.
MAX_BATCH = 256
# Messages of errors that mean "wait and try again", not "this file is unusable".
_TRANSIENT = ("locked", "busy", "disk is full", "disk i/o", "interrupted")


# What SQLite's own busy handler may wait per try, once the file is open (see `_begin`).
_BUSY_SLICE = 0.01


def _busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def transient(exc: sqlite3.Error) -> bool:
    return any(word in str(exc).lower() for word in _TRANSIENT)


@dataclass
class _Job:
    fn: Op
    write: bool
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class _Close:
    pass


class Database:
    """The thread and its connection. Start-up problems surface from `open()`."""

    def __init__(
        self, path: Path, *, busy_timeout: float, poll_interval: float, max_batch: int = MAX_BATCH
    ) -> None:
        self.path = path
        # 1 = a transaction per operation (what bench/bench_sqlite.py compares group commit with).
        self.max_batch = max_batch
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self.on_change: ChangeCallback | None = None
        self._inbox: queue.SimpleQueue[_Job | _Close] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._data_version = -1
        self._last_event_id = 0
        self._next_poll = 0.0
        self._thread = threading.Thread(target=self._run, name=f"hr-sqlite-{path.name}", daemon=True)
        self._thread.start()

    # -- the async side --------------------------------------------------------------------------
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, write=False)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, write=True)

    async def _submit(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        if self._closed:
            raise BackendUnavailable(f"the sqlite backend at {self.path} is closed")
        self._loop = asyncio.get_running_loop()
        job = _Job(fn, write)
        self._inbox.put(job)
        # Cancelling the wait cancels a job the thread has not started; one already running
        # completes (like a Redis reply lost in flight).
        result: T = await asyncio.wrap_future(job.future)
        return result

    async def open(self) -> None:
        """Open the file (creating it and its folder) and check it can be written."""
        await self.write(lambda conn: None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_Close())
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                first = self._inbox.get(timeout=self.poll_interval)
            except queue.Empty:
                self._poll()
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            jobs = [j for j in batch if isinstance(j, _Job) and j.future.set_running_or_notify_cancel()]
            self._execute(jobs)
            if any(isinstance(j, _Close) for j in batch):
                break
            if time.monotonic() >= self._next_poll:
                self._poll()
        self._drain_after_close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drain_after_close(self) -> None:
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job) and job.future.set_running_or_notify_cancel():
                job.future.set_exception(BackendUnavailable(f"the sqlite backend at {self.path} is closed"))

    def _execute(self, jobs: list[_Job]) -> None:
        try:
            conn = self._connection()
        except (BackendUnavailable, BackendBroken) as exc:
            for job in jobs:
                job.future.set_exception(exc)
            return
        writes = [j for j in jobs if j.write]
        if writes:
            self._write_batch(conn, writes)
        for job in jobs:
            if not job.write:
                try:
                    job.future.set_result(job.fn(conn))
                except sqlite3.Error as exc:
                    job.future.set_exception(self._unavailable(exc))
                except Exception as exc:
                    job.future.set_exception(exc)

    def _write_batch(self, conn: sqlite3.Connection, writes: list[_Job]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            self._begin(conn)
            try:
                for job in writes:
                    conn.execute("SAVEPOINT op")
                    try:
                        value = job.fn(conn)
                    except sqlite3.Error:
                        raise  # the whole batch fails: SQLite may have undone more than this op
                    except Exception as exc:
                        conn.execute("ROLLBACK TO op")
                        results.append((False, exc))
                    else:
                        results.append((True, value))
                    conn.execute("RELEASE op")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = self._unavailable(exc)
            for job in writes:
                job.future.set_exception(error)
            return
        for job, (ok, value) in zip(writes, results, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Take the write lock, waiting up to `busy_timeout` for another process to let go.

        SQLite's own busy handler sleeps longer and longer (up to 100 ms a try), so a writer
        that lost a few races to other processes would wait far longer than the lock is held.
        It is cut to short slices here and retried from the start, so waits stay in ms."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(random.uniform(0.0002, 0.001))

    def _unavailable(self, exc: sqlite3.Error) -> BackendUnavailable:
        log.warning("sqlite backend at %s: %s", self.path, exc)
        return BackendUnavailable(f"the sqlite database {self.path} is unavailable: {exc}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open_patiently()
        return self._conn

    def _open_patiently(self) -> sqlite3.Connection:
        """`_connect`, tried again while the file is locked, up to `busy_timeout`: two processes
        opening a new file race for its switch to WAL, and SQLite answers the loser "locked" at
        once, without waiting in its busy handler."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return self._connect()
            except BackendUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01 + random.random() * 0.04)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendBroken(
                f"cannot create the folder of the sqlite database {self.path}: {exc}"
            ) from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            for pragma in CONNECTION_PRAGMAS:
                conn.execute(pragma)
            conn.executescript(f"BEGIN IMMEDIATE;\n{TABLES}\nCOMMIT;")
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            stored = int(conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
            if stored > SCHEMA_VERSION:
                raise BackendBroken(
                    f"the sqlite database {self.path} has schema {stored}, newer than this "
                    f"heavyresearch understands ({SCHEMA_VERSION}): upgrade, or set HR_SQLITE__PATH elsewhere"
                )
            # From now on SQLite's busy handler waits only a slice; `_begin` does the rest.
            conn.execute(f"PRAGMA busy_timeout = {int(1000 * min(self.busy_timeout, _BUSY_SLICE))}")
            self._data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            self._last_event_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            if transient(exc):
                raise self._unavailable(exc) from exc
            raise BackendBroken(_broken_message(self.path, exc)) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        log.info("sqlite backend: %s (WAL mode)", self.path)
        return conn

    def _poll(self) -> None:
        """Notice commits by other processes and say which jobs got events."""
        self._next_poll = time.monotonic() + self.poll_interval
        conn, loop, callback = self._conn, self._loop, self.on_change
        if conn is None or loop is None or callback is None:
            return
        try:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if version == self._data_version:
                return
            self._data_version = version
            rows = conn.execute(
                "SELECT job_id, max(id) FROM events WHERE id > ? GROUP BY job_id", (self._last_event_id,)
            ).fetchall()
        except sqlite3.Error as exc:
            log.debug("sqlite backend: change poll failed: %s", exc)
            return
        jobs = {row[0] for row in rows}
        if rows:
            self._last_event_id = max(self._last_event_id, *(row[1] for row in rows))
        # A closed loop raises RuntimeError: nobody there is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, jobs)


def _broken_message(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    lowered = text.lower()
    writable = os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    if "readonly" in lowered or "read-only" in lowered or not writable:
        hint = "the file or its folder is read-only: make it writable, or set HR_SQLITE__PATH"
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        hint = (
            "the file is not a heavyresearch database or is corrupt: move it aside (or restore a "
            "backup) and restart; a fresh file is created"
        )
    elif "unable to open" in lowered:
        hint = "the file cannot be opened: check the path and its permissions, or set HR_SQLITE__PATH"
    else:
        hint = "check the file, or set HR_SQLITE__PATH to another path"
    return f"cannot use the sqlite database {path}: {text} ({hint})"
