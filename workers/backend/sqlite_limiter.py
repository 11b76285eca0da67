"""`Limiter` shared by every process on one sqlite file: a per-endpoint concurrency cap and pace.

The same design as `RedisLimiter`, on the backend's file and database thread:

- Concurrency: a row per holder (`endpoint, token, expires_at`). Admission deletes lapsed
  holders and adds one if fewer than `max_concurrency` remain, in one transaction. The
  limiter's keeper task extends its live holders every `hold_seconds / 3`, so a call may run as
  long as it needs while a killed process's places free themselves within `hold_seconds`.
- Pace: GCRA, one stored theoretical arrival time per endpoint; a caller books the next
  admission and sleeps until it, still holding its place, so a burst never overshoots the cap.

The processes share one machine, so the wall clock is shared too. Waiting for a place polls
with capped, jittered exponential backoff, from a queue (`limiter_queue`, by first ask): a freed
place goes to the queue's head. `BackendUnavailable` (a locked or full file) is
raised at once unless `patience` is set: then admission waits up to that many seconds.

A released place stays this process's for `LINGER` seconds (see `workers.backend.held_slots`):
the next call to that endpoint takes it with no write to the file, and a waiter in another
process may wait up to that much longer for a place an idle process holds; a process that sees
others queued stops keeping places. The cap stays exact.

Use it as `async with SQLiteLimiter(...)`: the keeper and sweeper tasks live between enter and
exit, and exit gives back the idle places.
"""

from __future__ import annotations

import sqlite3
import time

from workers.backend.held_slots import ADMITTED, LINGER, QUEUE_TTL, HeldSlots
from workers.backend.sqlite import SQLiteBackend
from workers.backend.sqlite_db import Database


class SQLiteLimiter(HeldSlots):
    def __init__(
        self,
        db: Database,
        *,
        hold_seconds: float = 30.0,
        burst: int = 1,
        patience: float = 0.0,
        linger: float = LINGER,
    ) -> None:
        super().__init__(hold_seconds=hold_seconds, burst=burst, patience=patience, linger=linger)
        self._db = db

    @classmethod
    def from_backend(
        cls,
        backend: SQLiteBackend,
        *,
        hold_seconds: float = 30.0,
        burst: int = 1,
        patience: float = 0.0,
        linger: float = LINGER,
    ) -> SQLiteLimiter:
        return cls(backend.database, hold_seconds=hold_seconds, burst=burst, patience=patience, linger=linger)

    # -- the store's steps ----------------------------------------------------------------------
    async def _try_acquire(self, endpoint: str, token: str, max_concurrency: int) -> int:
        def admit(conn: sqlite3.Connection) -> int:
            now = time.time()
            conn.execute("DELETE FROM limiter_slots WHERE endpoint = ? AND expires_at <= ?", (endpoint, now))
            conn.execute("DELETE FROM limiter_queue WHERE endpoint = ? AND expires_at <= ?", (endpoint, now))
            (held,) = conn.execute(
                "SELECT count(*) FROM limiter_slots WHERE endpoint = ?", (endpoint,)
            ).fetchone()
            mine = conn.execute(
                "SELECT asked_at FROM limiter_queue WHERE endpoint = ? AND token = ?", (endpoint, token)
            ).fetchone()
            # The waiters ahead: all of them for a newcomer, the earlier ones for a waiter.
            (ahead,) = conn.execute(
                "SELECT count(*) FROM limiter_queue WHERE endpoint = ?"
                + ("" if mine is None else " AND (asked_at, token) < (?, ?)"),
                (endpoint,) if mine is None else (endpoint, mine[0], token),
            ).fetchone()
            if max_concurrency - held > ahead:
                conn.execute(
                    "INSERT INTO limiter_slots (endpoint, token, expires_at) VALUES (?, ?, ?)",
                    (endpoint, token, now + self._hold),
                )
                if mine is not None:
                    conn.execute(
                        "DELETE FROM limiter_queue WHERE endpoint = ? AND token = ?", (endpoint, token)
                    )
                return ADMITTED
            conn.execute(
                "INSERT INTO limiter_queue (endpoint, token, asked_at, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (endpoint, token) DO UPDATE SET expires_at = excluded.expires_at",
                (endpoint, token, now, now + QUEUE_TTL),
            )
            return int(ahead)

        return await self._db.write(admit)

    async def _leave(self, endpoint: str, token: str) -> None:
        def leave(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM limiter_queue WHERE endpoint = ? AND token = ?", (endpoint, token))

        await self._db.write(leave)

    async def _queued(self, endpoints: list[str]) -> dict[str, int]:
        def count(conn: sqlite3.Connection) -> dict[str, int]:
            marks = ",".join("?" * len(endpoints))
            rows = conn.execute(
                f"SELECT endpoint, count(*) FROM limiter_queue WHERE endpoint IN ({marks}) "
                "AND expires_at > ? GROUP BY endpoint",
                (*endpoints, time.time()),
            ).fetchall()
            return {endpoint: int(n) for endpoint, n in rows}

        return await self._db.read(count)

    async def _reserve(self, endpoint: str, rpm: int) -> float:
        interval = 60.0 / rpm
        burst = self._burst

        def book(conn: sqlite3.Connection) -> float:
            now = time.time()
            row = conn.execute("SELECT tat FROM limiter_pace WHERE endpoint = ?", (endpoint,)).fetchone()
            tat = max(float(row[0]) if row else 0.0, now)
            conn.execute(
                "INSERT INTO limiter_pace (endpoint, tat) VALUES (?, ?) "
                "ON CONFLICT (endpoint) DO UPDATE SET tat = excluded.tat",
                (endpoint, tat + interval),
            )
            return max(0.0, tat - (burst - 1) * interval - now)

        return await self._db.write(book)

    async def _release_many(self, held: list[tuple[str, str]]) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM limiter_slots WHERE endpoint = ? AND token = ?",
                [(endpoint, token) for token, endpoint in held],
            )

        await self._db.write(drop)

    async def _extend(self, held: list[tuple[str, str]]) -> list[str]:
        def extend(conn: sqlite3.Connection) -> list[str]:
            until = time.time() + self._hold
            found = []
            for token, endpoint in held:
                cur = conn.execute(
                    "UPDATE limiter_slots SET expires_at = ? WHERE endpoint = ? AND token = ?",
                    (until, endpoint, token),
                )
                if cur.rowcount:
                    found.append(token)
            return found

        return await self._db.write(extend)
