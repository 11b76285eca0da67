"""The Redis backend: job store, event log, queue and cache shared by any number of processes.

Every key is named in `keys.py`; every multi-step change is one Lua script (`lua.py`), so two
processes can never interleave half-done updates. Semantics match `MemoryBackend` (the
contract suite runs against both); the Redis structures are:

- events: one Stream per job whose entry ids are `<seq>-0`, so `seq` is gapless, assigned in
  the same atomic step as the XADD, and `after=N` is simply the stream id `N-0`;
- queue: one Stream read through a consumer group. A claimed entry stays pending under the
  worker until `ack`; `heartbeat` resets its idle time and the job's lease key together; an
  entry idle for a whole lease (dead worker, or `release`) is taken over with XAUTOCLAIM;
- TTLs: when a job is saved with a terminal status its record and all its keys expire after
  `job_ttl_seconds`; writes that land later inherit the remaining TTL.

Connection failures and timeouts surface as `BackendUnavailable` (socket timeouts bound every
call, and blocking reads are chunked below them); the pool reconnects on its own once Redis is
back. Calls that are safe to repeat are retried once on a fresh connection first.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import redis.exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from workers.backend import lua
from workers.backend.keys import QUEUE_GROUP, RELEASED_CONSUMER, RedisKeys
from workers.errors import BackendUnavailable, QueueFull, SourceConflict
from workers.events import Event, NewEvent
from workers.llm.limiter import Limiter
from workers.models import AgentCheckpoint, FileRecord, JobRecord, JobStatus, Source
from workers.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

_EVENTS_PER_WAKE = 1000
_OWNER_SCAN_STEP = 200
# A consumer (worker id) with nothing pending and idle this long belongs to a dead worker.
_STALE_CONSUMER_MS = 24 * 3600 * 1000


def redacted(url: str) -> str:
    """`host:port/db` of a Redis URL, without credentials, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@asynccontextmanager
async def unavailable_on_failure(where: str) -> AsyncIterator[None]:
    """Turn redis-py's connection errors and timeouts into `BackendUnavailable`."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise BackendUnavailable(f"redis at {where} is unavailable: {exc}") from exc


def connect(
    url: str,
    *,
    socket_timeout: float = 5.0,
    connect_timeout: float = 2.0,
    health_check_interval: int = 10,
    max_connections: int = 1000,
) -> Redis:
    """A pooled client that fails fast instead of hanging or retrying blindly.

    redis-py's own retries are off: they would repeat non-idempotent scripts (an event
    appended twice) after a lost reply; `RedisBackend` retries only what is safe to repeat.
    Pooled connections are checked before use and reconnect by themselves after a restart.
    The pool blocks for a free connection at its limit instead of failing: every open event
    stream holds one for the length of a blocking read, and a burst of them must queue, not
    turn into 503s.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=health_check_interval,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


class RedisBackend:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "hr",
        max_queued_jobs: int = 1000,
        lease_seconds: float = 30.0,
        job_ttl_seconds: int = 7 * 86400,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        max_connections: int = 1000,
    ) -> None:
        self.keys = RedisKeys(prefix)
        self.client = connect(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
        )
        self.where = redacted(url)
        self._max_queued = max_queued_jobs
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._ttl_ms = job_ttl_seconds * 1000
        # Blocking reads must return before the socket timeout would cut them off.
        self._block_cap = max(0.05, socket_timeout / 2)
        self._group_ready = False
        self._lock_tokens: dict[str, str] = {}
        self._consumers: set[str] = set()
        self._closed = False
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisBackend:
        return cls(
            settings.redis_url,
            prefix=settings.redis_prefix,
            max_queued_jobs=settings.server.max_queued_jobs,
            lease_seconds=settings.worker.lease_seconds,
            job_ttl_seconds=settings.job_ttl_seconds,
            max_connections=settings.redis_max_connections,
        )

    # -- plumbing -------------------------------------------------------------------------------
    async def _call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a call that is safe to repeat; after a dropped connection it is tried once more."""
        async with unavailable_on_failure(self.where):
            try:
                return await fn(*args, **kwargs)
            except redis_errors.ConnectionError:
                # Typically a pooled connection that Redis closed (a restart): a fresh one may
                # work. Timeouts are not repeated; they already cost a whole socket timeout.
                pass
            return await fn(*args, **kwargs)

    async def _call_once(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a call whose repeat after a lost reply could double its effect: never repeated."""
        async with unavailable_on_failure(self.where):
            return await fn(*args, **kwargs)

    async def _script(self, source: str, keys: list[str], args: list[str | int | float]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            # redis-py reloads a script itself when a restarted server answers NOSCRIPT.
            script = self._scripts[source] = self.client.register_script(source)
        return await script(keys=keys, args=args)

    async def _queue_script(
        self, source: str, keys: list[str], args: list[str | int | float], *, repeatable: bool
    ) -> Any:
        """A queue script, recreating the consumer group if Redis lost it (flush, no persistence)."""
        call = self._call if repeatable else self._call_once
        for attempt in range(2):
            if not self._group_ready:
                await self._call(self._create_group)
            try:
                return await call(self._script, source, keys, args)
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt == 1:
                    raise
                self._group_ready = False
        raise AssertionError("unreachable")

    async def _create_group(self) -> None:
        try:
            # From id 0, so entries added before the group existed are still delivered.
            await self.client.xgroup_create(self.keys.queue, QUEUE_GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        return None  # connections are made on first use; an outage answers 503 until it ends

    def shared_limiter(self, *, patience: float) -> AbstractAsyncContextManager[Limiter] | None:
        # Imported here: the limiter module builds on this one.
        from workers.backend.redis_limiter import RedisLimiter

        return RedisLimiter.from_backend(self, patience=patience)

    async def ping(self) -> None:
        await self._call(self.client.ping)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._forget_consumers()
        except (BackendUnavailable, redis_errors.ResponseError) as exc:
            # Housekeeping only: the next clean shutdown of any worker sweeps them instead.
            log.info("redis backend: consumer clean-up skipped at close: %s", exc)
        finally:
            await self.client.aclose()

    async def _forget_consumers(self) -> None:
        if not self._consumers and not self._group_ready:
            return
        args: list[str | int | float] = [QUEUE_GROUP, _STALE_CONSUMER_MS, *sorted(self._consumers)]
        await self._queue_script(lua.FORGET_CONSUMERS, [self.keys.queue], args, repeatable=True)

    # -- job store ------------------------------------------------------------------------------
    def _index_keys(self, status: JobStatus) -> list[str]:
        return [self.keys.jobs, self.keys.jobs_by_status(status), *self.keys.all_status_indexes()]

    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        keys = [self.keys.job(record.id), *self._index_keys(record.status)]
        if record.idempotency_key is not None:
            keys.append(self.keys.idempotency(record.idempotency_key))
        args: list[str | int | float] = [
            record.model_dump_json(),
            record.id,
            len(JobStatus),
            "0" if record.idempotency_key is None else "1",
            self.keys.job(""),
        ]
        # Never repeated: a repeat would take its own first write for an earlier job with the
        # same idempotency key, and the caller would never enqueue the job.
        created, existing = await self._call_once(self._script, lua.CREATE_JOB, keys, args)
        if int(created):
            return record, True
        return JobRecord.model_validate_json(existing), False

    async def get_job(self, job_id: str) -> JobRecord | None:
        raw = await self._call(self.client.get, self.keys.job(job_id))
        return JobRecord.model_validate_json(raw) if raw is not None else None

    async def save_job(self, record: JobRecord) -> None:
        keys = [self.keys.job(record.id), *self._index_keys(record.status)]
        keys += self.keys.job_keys(record.id)[1:]
        if record.idempotency_key is not None:
            keys.append(self.keys.idempotency(record.idempotency_key))
        ttl = self._ttl_ms if record.status.terminal else 0
        args: list[str | int | float] = [record.model_dump_json(), record.id, len(JobStatus), ttl]
        await self._call(self._script, lua.SAVE_JOB, keys, args)

    async def list_jobs(
        self, status: JobStatus | None, cursor: str | None, limit: int, owner: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        if limit < 1:
            return [], None
        index = self.keys.jobs if status is None else self.keys.jobs_by_status(status)
        upper = f"({cursor}" if cursor is not None else "+"
        # One record past the page tells whether there is a next page.
        page: list[JobRecord] = []
        while len(page) <= limit:
            want = limit + 1 - len(page)
            # A tenant's jobs are filtered from the shared index, so read in larger steps.
            step = want if owner is None else max(want, _OWNER_SCAN_STEP)
            found = await self._call(self.client.zrevrangebylex, index, upper, "-", 0, step)
            ids = cast(list[str], found)  # decode_responses=True
            if not ids:
                break
            raws = await self._call(self.client.mget, [self.keys.job(i) for i in ids])
            expired = [job_id for job_id, raw in zip(ids, raws, strict=True) if raw is None]
            records = [JobRecord.model_validate_json(raw) for raw in raws if raw is not None]
            page += [r for r in records if owner is None or r.owner == owner]
            if expired:
                await self._call(self._drop_from_indexes, expired)
            upper = f"({ids[-1]}"
            if len(ids) < step:
                break
        more = len(page) > limit
        page = page[:limit]
        return page, (page[-1].id if more else None)

    async def _drop_from_indexes(self, job_ids: list[str]) -> None:
        """Forget ids whose records expired (the index entries have no TTL of their own)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for index in [self.keys.jobs, *self.keys.all_status_indexes()]:
                pipe.zrem(index, *job_ids)
            await pipe.execute()

    async def delete_job(self, job_id: str) -> bool:
        record = await self.get_job(job_id)
        if record is None:
            return False
        keys = [self.keys.job(job_id), self.keys.jobs, *self.keys.all_status_indexes()]
        keys += self.keys.job_keys(job_id)[1:]
        if record.idempotency_key is not None:
            keys.append(self.keys.idempotency(record.idempotency_key))
        args: list[str | int | float] = [
            job_id,
            len(JobStatus),
            "0" if record.idempotency_key is None else "1",
        ]
        # Never repeated: after a lost reply the repeat would report the job as unknown.
        deleted = await self._call_once(self._script, lua.DELETE_JOB, keys, args)
        return bool(int(deleted))

    async def save_checkpoint(self, job_id: str, checkpoint: AgentCheckpoint) -> None:
        keys = [self.keys.checkpoints(job_id), self.keys.job(job_id)]
        args: list[str | int | float] = [checkpoint.agent, checkpoint.model_dump_json(), self._ttl_ms]
        await self._call(self._script, lua.SAVE_CHECKPOINT, keys, args)

    async def load_checkpoints(self, job_id: str) -> dict[int, AgentCheckpoint]:
        raw = await self._call(self.client.hgetall, self.keys.checkpoints(job_id))
        checkpoints = {int(agent): AgentCheckpoint.model_validate_json(cp) for agent, cp in raw.items()}
        return dict(sorted(checkpoints.items()))

    async def register_source(self, job_id: str, url: str, title: str) -> Source:
        keys = [self.keys.source_urls(job_id), self.keys.sources(job_id), self.keys.job(job_id)]
        raw = await self._call(self._script, lua.REGISTER_SOURCE, keys, [url, title, self._ttl_ms])
        return Source.model_validate_json(raw)

    async def get_sources(self, job_id: str) -> dict[str, Source]:
        raw = await self._call(self.client.hgetall, self.keys.sources(job_id))
        sources = sorted(
            (Source.model_validate_json(value) for value in raw.values()), key=lambda s: int(s.id[1:])
        )
        return {source.id: source for source in sources}

    async def request_cancel(self, job_id: str) -> None:
        keys = [self.keys.cancel(job_id), self.keys.job(job_id)]
        await self._call(self._script, lua.REQUEST_CANCEL, keys, [self._ttl_ms])

    async def is_cancelled(self, job_id: str) -> bool:
        found: int = await self._call(self.client.exists, self.keys.cancel(job_id))
        return found > 0

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        flags = await self._call(self.client.mget, [self.keys.cancel(job_id) for job_id in job_ids])
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag is not None}

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
        args: list[str | int | float] = [self._ttl_ms, len(events)]
        for new, event in zip(events, stored, strict=True):
            payload = event.model_dump_json(include={"ts", "type", "agent", "round", "data"})
            args += [payload, new.key or "", "0" if new.key is None else "1"]
        args += ["", ""] if checkpoint is None else [checkpoint.agent, checkpoint.model_dump_json()]
        for source in sources:
            args += [source.id, source.url, source.model_dump_json()]
        keys = [
            self.keys.events(job_id),
            self.keys.event_keys(job_id),
            self.keys.job(job_id),
            self.keys.checkpoints(job_id),
            self.keys.source_urls(job_id),
            self.keys.sources(job_id),
        ]
        # Keyed events are safe to repeat (the repeat drops them as duplicates of the first;
        # the checkpoint and sources overwrite themselves); an unkeyed one could land twice.
        call = self._call if all(event.key is not None for event in events) else self._call_once
        reply = await call(self._script, lua.COMMIT_ROUND, keys, args)
        if not int(reply[0]):
            clashes = ", ".join(reply[1:])
            raise SourceConflict(f"job {job_id}: source ids already taken by other urls: {clashes}")
        appended: list[Event] = []
        for event, seq in zip(stored, reply[1:], strict=True):
            if int(seq):
                event.seq = int(seq)
                appended.append(event)
        return appended

    def _parse_events(self, job_id: str, entries: Any) -> list[Event]:
        """Events from stream entries `[(id, {'e': payload}), …]`."""
        events = []
        for entry_id, fields in entries:
            payload = json.loads(fields["e"])
            payload["job_id"] = job_id
            payload["seq"] = int(entry_id.split("-", 1)[0])
            events.append(Event.model_validate(payload))
        return events

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        if limit < 1:
            return []
        start = f"{max(after, 0) + 1}-0"
        entries = await self._call(self.client.xrange, self.keys.events(job_id), start, "+", limit)
        return self._parse_events(job_id, entries)

    async def wait_events(self, job_id: str, after: int, timeout: float) -> list[Event]:
        after = max(after, 0)
        if timeout <= 0:
            return await self.read_events(job_id, after)
        stream = self.keys.events(job_id)
        known: int = await self._call(self.client.exists, stream, self.keys.job(job_id))
        if not known:
            return []
        deadline = anyio.current_time() + timeout
        while (remaining := deadline - anyio.current_time()) > 0:
            block_ms = max(1, int(min(remaining, self._block_cap) * 1000))
            # Reading after the id `<after>-0` returns at once when newer entries already
            # exist, so an append landing between two calls is never missed.
            reply = await self._call(self.client.xread, {stream: f"{after}-0"}, _EVENTS_PER_WAKE, block_ms)
            if reply:
                return self._parse_events(job_id, _stream_entries(reply))
        return []

    # -- queue ----------------------------------------------------------------------------------
    async def enqueue(self, job_id: str) -> None:
        keys = [self.keys.queue, self.keys.queue_entries]
        args: list[str | int | float] = [QUEUE_GROUP, RELEASED_CONSUMER, self._max_queued, job_id]
        added, detail = await self._queue_script(lua.ENQUEUE, keys, args, repeatable=False)
        if not int(added):
            raise QueueFull(f"the queue holds {detail} jobs, its limit")

    async def claim(self, worker_id: str, timeout: float) -> str | None:
        keys = [self.keys.queue, self.keys.queue_entries]
        head, tail = self.keys.lease_affixes()
        args: list[str | int | float] = [QUEUE_GROUP, worker_id, self._lease_ms, head, tail]
        self._consumers.add(worker_id)
        deadline = anyio.current_time() + timeout
        while True:
            # Never repeated: a lost reply leaves the entry pending under this worker, and it
            # is reclaimed when its lease lapses, like a crashed worker's.
            claimed = await self._queue_script(lua.CLAIM, keys, args, repeatable=False)
            if claimed:
                return str(claimed[0])
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return None
            # Wakes at once for a new entry; otherwise the script runs again at least once a
            # lease, so lapsed and released jobs are noticed as in the memory backend.
            block = min(remaining, self._lease_ms / 1000, self._block_cap)
            try:
                reply = await self._call_once(
                    self.client.xreadgroup,
                    QUEUE_GROUP,
                    worker_id,
                    {self.keys.queue: ">"},
                    1,
                    max(1, int(block * 1000)),
                )
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._group_ready = False  # the next script call recreates it
                continue
            for entry_id, fields in _stream_entries(reply):
                job_id = fields.get("job")
                if job_id is not None:
                    await self._call(self._took, worker_id, job_id, entry_id)
                    return job_id

    async def _took(self, worker_id: str, job_id: str, entry_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.queue_entries, job_id, entry_id)
            pipe.set(self.keys.lease(job_id), worker_id, px=self._lease_ms)
            await pipe.execute()

    async def heartbeat(self, worker_id: str, job_id: str) -> bool:
        keys = [self.keys.queue, self.keys.queue_entries, self.keys.lease(job_id)]
        args: list[str | int | float] = [QUEUE_GROUP, worker_id, self._lease_ms, job_id]
        return bool(await self._queue_script(lua.HEARTBEAT, keys, args, repeatable=True))

    async def release(self, job_id: str) -> None:
        keys = [self.keys.queue, self.keys.queue_entries, self.keys.lease(job_id)]
        # Idle past a whole lease: the next claim's reclaim step takes it first.
        args: list[str | int | float] = [QUEUE_GROUP, RELEASED_CONSUMER, self._lease_ms + 1000, job_id]
        await self._queue_script(lua.RELEASE, keys, args, repeatable=True)

    async def ack(self, job_id: str) -> None:
        keys = [self.keys.queue, self.keys.queue_entries, self.keys.lease(job_id)]
        await self._queue_script(lua.ACK, keys, [QUEUE_GROUP, job_id], repeatable=True)

    async def queue_depth(self) -> int:
        keys = [self.keys.queue, self.keys.queue_entries]
        args: list[str | int | float] = [QUEUE_GROUP, RELEASED_CONSUMER]
        return int(await self._queue_script(lua.QUEUE_DEPTH, keys, args, repeatable=True))

    # -- cache ----------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> str | None:
        value = await self._call(self.client.get, self.keys.cache(key))
        return cast(str | None, value)  # decode_responses=True

    async def cache_set(self, key: str, value: str, ttl: int) -> None:
        await self._call(self.client.set, self.keys.cache(key), value, ex=ttl if ttl > 0 else None)

    async def try_lock(self, key: str, ttl: float) -> bool:
        token = os.urandom(8).hex()
        # Never repeated: after a lost reply the repeat would find its own lock and say "taken".
        taken = await self._call_once(
            self.client.set, self.keys.lock(key), token, nx=True, px=max(1, int(ttl * 1000))
        )
        if taken:
            self._lock_tokens[key] = token
        return bool(taken)

    async def unlock(self, key: str) -> None:
        # Only our own lock: one that expired and was then taken elsewhere is not ours to drop.
        token = self._lock_tokens.pop(key, None)
        if token is not None:
            await self._call(self._script, lua.UNLOCK, [self.keys.lock(key)], [token])

    # -- uploaded files -----------------------------------------------------------------------
    async def put_file(self, record: FileRecord, data: bytes) -> None:
        ttl_ms = max(1, int((record.expires_at - time.time()) * 1000))
        # One MULTI: a reader never sees the record without its bytes.
        async with unavailable_on_failure(self.where), self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.file_data(record.id), base64.b64encode(data).decode("ascii"), px=ttl_ms)
            pipe.set(self.keys.file(record.id), record.model_dump_json(), px=ttl_ms)
            await pipe.execute()

    async def get_file(self, file_id: str) -> FileRecord | None:
        raw = await self._call(self.client.get, self.keys.file(file_id))
        return FileRecord.model_validate_json(raw) if raw else None

    async def read_file(self, file_id: str) -> bytes | None:
        raw = await self._call(self.client.get, self.keys.file_data(file_id))
        return base64.b64decode(raw) if raw else None

    async def delete_file(self, file_id: str) -> bool:
        removed = await self._call(self.client.delete, self.keys.file(file_id), self.keys.file_data(file_id))
        return bool(removed)

    # -- metrics --------------------------------------------------------------------------------
    async def job_counts(self) -> dict[JobStatus, int]:
        """The status indexes' sizes (one round trip). An expired job stays counted until a
        listing meets it and drops it from its index."""
        statuses = list(JobStatus)

        async def sizes() -> list[int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for status in statuses:
                    pipe.zcard(self.keys.jobs_by_status(status))
                return [int(n) for n in await pipe.execute()]

        return dict(zip(statuses, await self._call(sizes), strict=True))

    # -- counters -------------------------------------------------------------------------------
    async def counter_add(self, key: str, amount: int, ttl: int) -> int:
        keys = [self.keys.counter(key)]
        args: list[str | int | float] = [amount, max(ttl, 1) * 1000]
        # A read (amount 0) is safe to repeat; an increment could count twice.
        call = self._call if amount == 0 else self._call_once
        return int(await call(self._script, lua.COUNTER_ADD, keys, args))


def _stream_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of a single-stream XREAD/XREADGROUP reply (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return cast(list[tuple[str, dict[str, str]]], next(iter(reply.values()))[0])
    return cast(list[tuple[str, dict[str, str]]], reply[0][1])
