"""The SQLite backend: the durable embedded default. One file (WAL mode) holds job records,
event logs, the queue with its leases, checkpoints, sources, cancel flags, idempotency keys,
the tool cache and locks; `serve` and any number of `heavyresearch worker` processes on one box
can share it.

Semantics match `MemoryBackend` and `RedisBackend` (the contract suite runs against all
three). Every operation is one function of the connection run on the database thread
(`sqlite_db.py`), inside a transaction when it writes, so two processes never interleave
half-done updates:

- events: `seq` is max(seq)+1 for the job in the same transaction as the insert, so it is
  gapless; a keyed event is dropped when its key is already in the log (unique index);
- queue: a row per job until `ack`; claiming sets the worker and a wall-clock lease end;
  a lapsed lease is taken over by the next claim, `release` puts the job first in line;
- wake-ups: a local write sets the waiters' events at once; writes by another process are
  noticed by the database thread's `data_version` poll (`sqlite.poll_interval`);
- TTLs: a terminal save sets the job's expiry; reads treat an expired job as gone and a
  periodic prune deletes it with everything it owns.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio

from workers.backend.base import check_sources
from workers.backend.sqlite_db import Database
from workers.backend.sqlite_schema import JOB_TABLES
from workers.errors import QueueFull
from workers.events import Event, NewEvent
from workers.llm.limiter import Limiter
from workers.models import AgentCheckpoint, FileRecord, JobRecord, JobStatus, Source
from workers.settings import Settings

_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_PRUNE_EVERY = 60.0


class SQLiteBackend:
    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        max_queued_jobs: int = 1000,
        lease_seconds: float = 30.0,
        job_ttl_seconds: float = 7 * 86400,
        busy_timeout: float = 5.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.path = Path(path).expanduser()
        self._max_queued = max_queued_jobs
        self._lease = lease_seconds
        self._job_ttl = job_ttl_seconds
        self._next_prune = 0.0
        self._db = Database(self.path, busy_timeout=busy_timeout, poll_interval=poll_interval)
        self._db.on_change = self._changed_elsewhere
        self._job_waits: dict[str, anyio.Event] = {}
        self._queue_wait = anyio.Event()
        self._lock_tokens: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLiteBackend:
        return cls(
            settings.sqlite.resolved_path(),
            max_queued_jobs=settings.server.max_queued_jobs,
            lease_seconds=settings.worker.lease_seconds,
            job_ttl_seconds=settings.job_ttl_seconds,
            busy_timeout=settings.sqlite.busy_timeout,
            poll_interval=settings.sqlite.poll_interval,
        )

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def database(self) -> Database:
        """The database thread, for other shared state on the same file (the LLM limiter)."""
        return self._db

    # -- wake-ups ---------------------------------------------------------------------------------
    def _job_event(self, job_id: str) -> anyio.Event:
        event = self._job_waits.get(job_id)
        if event is None:
            event = self._job_waits[job_id] = anyio.Event()
        return event

    def _wake_job(self, job_id: str) -> None:
        event = self._job_waits.pop(job_id, None)
        if event is not None:
            event.set()

    def _wake_queue(self) -> None:
        event, self._queue_wait = self._queue_wait, anyio.Event()
        event.set()

    def _changed_elsewhere(self, job_ids: set[str]) -> None:
        """Another process committed: wake streams of jobs that got events, and claimers."""
        for job_id in job_ids:
            self._wake_job(job_id)
        self._wake_queue()

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open and check the file at start: raises `BackendBroken` with what to do."""
        await self._db.open()

    def shared_limiter(self, *, patience: float) -> AbstractAsyncContextManager[Limiter] | None:
        # Imported here: the limiter module builds on this one.
        from workers.backend.sqlite_limiter import SQLiteLimiter

        return SQLiteLimiter.from_backend(self, patience=patience)

    async def ping(self) -> None:
        await self._db.read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._db.close()
        for job_id in list(self._job_waits):
            self._wake_job(job_id)
        self._wake_queue()

    # -- job store ------------------------------------------------------------------------------
    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete finished jobs past their TTL, and expired cache entries and locks."""
        if now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY
        expired = [row[0] for row in conn.execute("SELECT id FROM jobs WHERE expires_at <= ?", (now,))]
        for job_id in expired:
            _delete_job(conn, job_id)
        conn.execute("DELETE FROM cache WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM locks WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM files WHERE expires_at <= ?", (now,))

    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        key = record.idempotency_key
        raw = record.model_dump_json()

        def create(conn: sqlite3.Connection) -> str | None:
            now = time.time()
            self._prune(conn, now)
            if key is not None:
                row = conn.execute(
                    f"SELECT id, record, expires_at FROM jobs WHERE idem_key = ? AND {_LIVE}", (key, now)
                ).fetchone()
                if row is not None:
                    return str(row[1])
                # An expired job that still holds the key gives it up.
                for (old,) in conn.execute("SELECT id FROM jobs WHERE idem_key = ?", (key,)).fetchall():
                    _delete_job(conn, old)
            conn.execute(
                "INSERT INTO jobs (id, status, idem_key, expires_at, record) VALUES (?, ?, ?, NULL, ?)",
                (record.id, record.status.value, key, raw),
            )
            return None

        existing = await self._db.write(create)
        if existing is not None:
            return JobRecord.model_validate_json(existing), False
        return record, True

    async def get_job(self, job_id: str) -> JobRecord | None:
        def get(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                f"SELECT record FROM jobs WHERE id = ? AND {_LIVE}", (job_id, time.time())
            ).fetchone()
            return None if row is None else str(row[0])

        raw = await self._db.read(get)
        return JobRecord.model_validate_json(raw) if raw is not None else None

    async def save_job(self, record: JobRecord) -> None:
        raw = record.model_dump_json()
        terminal = record.status.terminal

        def save(conn: sqlite3.Connection) -> None:
            expires = time.time() + self._job_ttl if terminal else None
            conn.execute(
                "UPDATE jobs SET status = ?, expires_at = ?, record = ? WHERE id = ?",
                (record.status.value, expires, raw, record.id),
            )

        await self._db.write(save)

    async def list_jobs(
        self, status: JobStatus | None, cursor: str | None, limit: int, owner: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        if limit < 1:
            return [], None

        def page(conn: sqlite3.Connection) -> list[str]:
            sql = f"SELECT record FROM jobs WHERE {_LIVE}"
            args: list[object] = [time.time()]
            if status is not None:
                sql += " AND status = ?"
                args.append(status.value)
            if cursor is not None:
                sql += " AND id < ?"
                args.append(cursor)
            if owner is not None:
                # The tenant lives in the record only (no column, no migration).
                sql += " AND json_extract(record, '$.owner') = ?"
                args.append(owner)
            sql += " ORDER BY id DESC LIMIT ?"
            args.append(limit + 1)  # one past the page tells whether there is a next page
            return [str(row[0]) for row in conn.execute(sql, args)]

        raws = await self._db.read(page)
        records = [JobRecord.model_validate_json(raw) for raw in raws[:limit]]
        more = len(raws) > limit
        return records, (records[-1].id if more else None)

    async def delete_job(self, job_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return _delete_job(conn, job_id)

        deleted = await self._db.write(delete)
        self._wake_job(job_id)
        return deleted

    async def save_checkpoint(self, job_id: str, checkpoint: AgentCheckpoint) -> None:
        raw = checkpoint.model_dump_json()

        def save(conn: sqlite3.Connection) -> None:
            _save_checkpoint(conn, job_id, checkpoint.agent, raw)

        await self._db.write(save)

    async def load_checkpoints(self, job_id: str) -> dict[int, AgentCheckpoint]:
        def load(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            sql = "SELECT agent, data FROM checkpoints WHERE job_id = ? ORDER BY agent"
            return [(int(row[0]), str(row[1])) for row in conn.execute(sql, (job_id,))]

        rows = await self._db.read(load)
        return {agent: AgentCheckpoint.model_validate_json(raw) for agent, raw in rows}

    async def register_source(self, job_id: str, url: str, title: str) -> Source:
        def register(conn: sqlite3.Connection) -> tuple[int, str]:
            row = conn.execute(
                "SELECT n, title FROM sources WHERE job_id = ? AND url = ?", (job_id, url)
            ).fetchone()
            if row is not None:
                return int(row[0]), str(row[1])
            (n,) = conn.execute(
                "SELECT coalesce(max(n), 0) + 1 FROM sources WHERE job_id = ?", (job_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO sources (job_id, n, url, title) VALUES (?, ?, ?, ?)", (job_id, n, url, title)
            )
            return int(n), title

        n, stored_title = await self._db.write(register)
        return Source(id=f"S{n}", url=url, title=stored_title)

    async def get_sources(self, job_id: str) -> dict[str, Source]:
        def load(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
            sql = "SELECT n, url, title FROM sources WHERE job_id = ? ORDER BY n"
            return [(int(r[0]), str(r[1]), str(r[2])) for r in conn.execute(sql, (job_id,))]

        rows = await self._db.read(load)
        return {f"S{n}": Source(id=f"S{n}", url=url, title=title) for n, url, title in rows}

    async def request_cancel(self, job_id: str) -> None:
        def cancel(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO cancels (job_id) VALUES (?)", (job_id,))

        await self._db.write(cancel)

    async def is_cancelled(self, job_id: str) -> bool:
        def check(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM cancels WHERE job_id = ?", (job_id,)).fetchone() is not None

        return await self._db.read(check)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        def check(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            # SQLite caps a statement's parameters (999 in older builds).
            for start in range(0, len(job_ids), 500):
                batch = job_ids[start : start + 500]
                sql = f"SELECT job_id FROM cancels WHERE job_id IN ({','.join('?' * len(batch))})"
                found.update(str(row[0]) for row in conn.execute(sql, batch))
            return found

        return await self._db.read(check) if job_ids else set()

    # -- event log ------------------------------------------------------------------------------
    async def append_event(self, job_id: str, event: NewEvent) -> Event | None:
        appended = await self.commit_round(job_id, [event])
        return appended[0] if appended else None

    async def commit_round(
        self,
        job_id: str,
        events: Sequence[NewEvent],
        checkpoint: AgentCheckpoint | None = None,
        sources: Sequence[Source] = (),
    ) -> list[Event]:
        stored = [event.stamped(job_id) for event in events]
        rows = [
            (new.key, event.model_dump_json(include={"ts", "type", "agent", "round", "data"}))
            for new, event in zip(events, stored, strict=True)
        ]
        saved = (checkpoint.agent, checkpoint.model_dump_json()) if checkpoint is not None else None
        given = [(int(source.id[1:]), source) for source in sources]

        def commit(conn: sqlite3.Connection) -> list[int]:
            # One transaction: the sources, the events and the checkpoint land together or not.
            found = []
            for n, source in given:
                found += conn.execute(
                    "SELECT n, url FROM sources WHERE job_id = ? AND (n = ? OR url = ?)",
                    (job_id, n, source.url),
                ).fetchall()
            check_sources((Source(id=f"S{row[0]}", url=row[1]) for row in found), sources)
            conn.executemany(
                "INSERT OR IGNORE INTO sources (job_id, n, url, title) VALUES (?, ?, ?, ?)",
                [(job_id, n, source.url, source.title) for n, source in given],
            )
            (last,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM events WHERE job_id = ?", (job_id,)
            ).fetchone()
            seqs = []
            for key, payload in rows:
                if key is not None:
                    dup = conn.execute(
                        "SELECT 1 FROM events WHERE job_id = ? AND key = ?", (job_id, key)
                    ).fetchone()
                    if dup is not None:
                        seqs.append(0)
                        continue
                last += 1
                conn.execute(
                    "INSERT INTO events (job_id, seq, key, payload) VALUES (?, ?, ?, ?)",
                    (job_id, last, key, payload),
                )
                seqs.append(int(last))
            if saved is not None:
                _save_checkpoint(conn, job_id, *saved)
            return seqs

        seqs = await self._db.write(commit)
        appended = []
        for event, seq in zip(stored, seqs, strict=True):
            if seq:
                event.seq = seq
                appended.append(event)
        if appended:
            self._wake_job(job_id)
        return appended

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        if limit < 1:
            return []

        def read(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            sql = "SELECT seq, payload FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            return [(int(r[0]), str(r[1])) for r in conn.execute(sql, (job_id, max(after, 0), limit))]

        return _events(job_id, await self._db.read(read))

    async def wait_events(self, job_id: str, after: int, timeout: float) -> list[Event]:
        after = max(after, 0)
        deadline = anyio.current_time() + timeout

        def read(conn: sqlite3.Connection) -> tuple[bool, list[tuple[int, str]]]:
            sql = "SELECT seq, payload FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT 1000"
            rows = [(int(r[0]), str(r[1])) for r in conn.execute(sql, (job_id, after))]
            if rows:
                return True, rows
            known = conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is not None
            return known, rows

        while True:
            # Registered before the read, so an append landing in between still wakes us.
            changed = self._job_event(job_id)
            known, rows = await self._db.read(read)
            if rows or not known:
                return _events(job_id, rows)
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return []
            with anyio.move_on_after(remaining):
                await changed.wait()

    # -- queue ----------------------------------------------------------------------------------
    async def enqueue(self, job_id: str) -> None:
        def enqueue(conn: sqlite3.Connection) -> None:
            (waiting,) = conn.execute("SELECT count(*) FROM queue WHERE worker IS NULL").fetchone()
            if waiting >= self._max_queued:
                raise QueueFull(f"the queue holds {waiting} jobs, its limit")
            conn.execute(
                "INSERT INTO queue (job_id, pos, worker, lease_until) "
                "VALUES (?, (SELECT coalesce(max(pos), 0) + 1 FROM queue), NULL, NULL) "
                "ON CONFLICT (job_id) DO NOTHING",
                (job_id,),
            )

        await self._db.write(enqueue)
        self._wake_queue()

    async def claim(self, worker_id: str, timeout: float) -> str | None:
        lease = self._lease

        def take(conn: sqlite3.Connection) -> str | None:
            now = time.time()
            row = conn.execute(
                "SELECT job_id FROM queue WHERE worker IS NOT NULL AND lease_until < ? "
                "ORDER BY lease_until LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT job_id FROM queue WHERE worker IS NULL ORDER BY pos LIMIT 1"
                ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE queue SET worker = ?, lease_until = ? WHERE job_id = ?",
                (worker_id, now + lease, row[0]),
            )
            return str(row[0])

        deadline = anyio.current_time() + timeout
        while True:
            changed = self._queue_wait
            job_id = await self._db.write(take)
            if job_id is not None:
                return job_id
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return None
            # At least once a lease, so a lapsed lease is noticed with nobody writing.
            with anyio.move_on_after(min(remaining, lease)):
                await changed.wait()

    async def heartbeat(self, worker_id: str, job_id: str) -> bool:
        def beat(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE queue SET lease_until = ? WHERE job_id = ? AND worker = ?",
                (time.time() + self._lease, job_id, worker_id),
            )
            return cur.rowcount > 0

        return await self._db.write(beat)

    async def release(self, job_id: str) -> None:
        def release(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE queue SET worker = NULL, lease_until = NULL, "
                "pos = (SELECT coalesce(min(pos), 0) - 1 FROM queue) WHERE job_id = ? AND worker IS NOT NULL",
                (job_id,),
            )
            return cur.rowcount > 0

        if await self._db.write(release):
            self._wake_queue()

    async def ack(self, job_id: str) -> None:
        def ack(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM queue WHERE job_id = ?", (job_id,))

        await self._db.write(ack)

    async def queue_depth(self) -> int:
        def depth(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM queue WHERE worker IS NULL").fetchone()[0])

        return await self._db.read(depth)

    # -- cache ----------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> str | None:
        def get(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                f"SELECT value FROM cache WHERE key = ? AND {_LIVE}", (key, time.time())
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._db.read(get)

    async def cache_set(self, key: str, value: str, ttl: int) -> None:
        def put(conn: sqlite3.Connection) -> None:
            expires = time.time() + ttl if ttl > 0 else None
            conn.execute(
                "INSERT INTO cache (key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, value, expires),
            )

        await self._db.write(put)

    async def try_lock(self, key: str, ttl: float) -> bool:
        token = os.urandom(8).hex()

        def take(conn: sqlite3.Connection) -> bool:
            now = time.time()
            conn.execute("DELETE FROM locks WHERE key = ? AND expires_at <= ?", (key, now))
            cur = conn.execute(
                "INSERT OR IGNORE INTO locks (key, token, expires_at) VALUES (?, ?, ?)",
                (key, token, now + ttl),
            )
            return cur.rowcount > 0

        taken = await self._db.write(take)
        if taken:
            self._lock_tokens[key] = token
        return taken

    async def unlock(self, key: str) -> None:
        # Only our own lock: one that expired and was then taken elsewhere is not ours to drop.
        token = self._lock_tokens.pop(key, None)
        if token is None:
            return

        def drop(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM locks WHERE key = ? AND token = ?", (key, token))

        await self._db.write(drop)

    # -- uploaded files -------------------------------------------------------------------------
    async def put_file(self, record: FileRecord, data: bytes) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO files (id, expires_at, record, data) VALUES (?, ?, ?, ?)",
                (record.id, record.expires_at, record.model_dump_json(), sqlite3.Binary(data)),
            )

        await self._db.write(put)

    async def get_file(self, file_id: str) -> FileRecord | None:
        def get(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT record FROM files WHERE id = ? AND expires_at > ?", (file_id, time.time())
            ).fetchone()
            return None if row is None else str(row[0])

        raw = await self._db.read(get)
        return None if raw is None else FileRecord.model_validate_json(raw)

    async def read_file(self, file_id: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT data FROM files WHERE id = ? AND expires_at > ?", (file_id, time.time())
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._db.read(read)

    async def delete_file(self, file_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

        return await self._db.write(delete)

    # -- metrics --------------------------------------------------------------------------------
    async def job_counts(self) -> dict[JobStatus, int]:
        rows = await self._db.read(lambda conn: conn.execute("SELECT status, n FROM job_counts").fetchall())
        counts = dict.fromkeys(JobStatus, 0)
        counts.update(
            {JobStatus(status): int(n) for status, n in rows if status in JobStatus._value2member_map_}
        )
        return counts

    # -- counters ---------------------------------------------------------------------------------
    async def counter_add(self, key: str, amount: int, ttl: int) -> int:
        # Counters share the cache table (their own key prefix): a row with a value and an expiry.
        name = f"counter:{key}"

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                f"SELECT value FROM cache WHERE key = ? AND {_LIVE}", (name, time.time())
            ).fetchone()
            return 0 if row is None else int(row[0])

        def add(conn: sqlite3.Connection) -> int:
            value = read(conn) + amount
            conn.execute(
                "INSERT INTO cache (key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = "
                "CASE WHEN cache.expires_at > ? THEN cache.expires_at ELSE excluded.expires_at END",
                (name, str(value), time.time() + max(ttl, 1), time.time()),
            )
            return value

        if amount == 0:
            return await self._db.read(read)
        return await self._db.write(add)


def _save_checkpoint(conn: sqlite3.Connection, job_id: str, agent: int, raw: str) -> None:
    conn.execute(
        "INSERT INTO checkpoints (job_id, agent, data) VALUES (?, ?, ?) "
        "ON CONFLICT (job_id, agent) DO UPDATE SET data = excluded.data",
        (job_id, agent, raw),
    )


def _delete_job(conn: sqlite3.Connection, job_id: str) -> bool:
    cur = conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    for table in JOB_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))  # table names are constants
    return cur.rowcount > 0


def _events(job_id: str, rows: list[tuple[int, str]]) -> list[Event]:
    events = []
    for seq, raw in rows:
        payload = json.loads(raw)
        payload["job_id"] = job_id
        payload["seq"] = seq
        events.append(Event.model_validate(payload))
    return events
