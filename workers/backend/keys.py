"""Every Redis key heavyresearch uses, under one configurable prefix (`settings.redis_prefix`).

    <p>:job:<id>                  JobRecord as JSON (a string)
    <p>:job:<id>:events           the job's event log: a Stream whose entry ids are `<seq>-0`
    <p>:job:<id>:event-keys       dedupe keys already appended (a set)
    <p>:job:<id>:checkpoints      agent number -> AgentCheckpoint JSON (a hash)
    <p>:job:<id>:source-urls      url -> source id `S<n>` (a hash; its length is the counter)
    <p>:job:<id>:sources          source id -> Source JSON (a hash)
    <p>:job:<id>:cancel           cancel flag
    <p>:job:<id>:lease            worker id holding the job, expires after `lease_seconds`
    <p>:idem:<key>                Idempotency-Key -> job id
    <p>:jobs                      every job id (a sorted set, all scores 0: ordered by id)
    <p>:jobs:<status>             job ids by status (same shape)
    <p>:queue                     the job queue: a Stream read by the consumer group `workers`
    <p>:queue:entries             job id -> its current queue entry id (a hash)
    <p>:file:<id>                 an uploaded file's FileRecord as JSON (expires with the file)
    <p>:file:<id>:data            its bytes, base64 (the client decodes replies as text)
    <p>:cache:<key>               tool-result cache (strings with a TTL)
    <p>:lock:<key>                short-lived locks (SET NX PX)
    <p>:counter:<key>             shared integer counters with a TTL (tenant usage per day)
    <p>:limiter:<endpoint>:slots  LLM concurrency holders: token -> expiry ms (a sorted set)
    <p>:limiter:<endpoint>:pace   LLM request pacing: GCRA theoretical arrival time

Job ids from `new_job_id` are fixed-width and time-ordered, so the index sorted sets use
lexicographic order (ZRANGEBYLEX) and need no score. When a job reaches a terminal status
every `<p>:job:<id>…` key, its lease and its idempotency key get the job TTL; index entries
of expired jobs are dropped lazily when a listing meets them.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.models import JobStatus

# The consumer group every worker reads the queue through.
QUEUE_GROUP = "workers"
# Released jobs are parked under this consumer with a long idle time, so the next claim
# takes them first (the memory backend's "back to the front of the queue").
RELEASED_CONSUMER = "~released"


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "hr"

    # -- per job --------------------------------------------------------------------------------
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def event_keys(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:event-keys"

    def checkpoints(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:checkpoints"

    def source_urls(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:source-urls"

    def sources(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:sources"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:cancel"

    def lease(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:lease"

    def lease_affixes(self) -> tuple[str, str]:
        """What comes before and after the job id in a lease key, for scripts that only learn
        the job id from the queue entry they claim."""
        head, tail = self.lease("\0").split("\0")
        return head, tail

    def job_keys(self, job_id: str) -> list[str]:
        """Every key that lives and dies with the job, the record first."""
        return [
            self.job(job_id),
            self.events(job_id),
            self.event_keys(job_id),
            self.checkpoints(job_id),
            self.source_urls(job_id),
            self.sources(job_id),
            self.cancel(job_id),
            self.lease(job_id),
        ]

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    # -- listing --------------------------------------------------------------------------------
    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    def jobs_by_status(self, status: JobStatus) -> str:
        return f"{self.prefix}:jobs:{status.value}"

    def all_status_indexes(self) -> list[str]:
        return [self.jobs_by_status(status) for status in JobStatus]

    # -- queue ----------------------------------------------------------------------------------
    @property
    def queue(self) -> str:
        return f"{self.prefix}:queue"

    @property
    def queue_entries(self) -> str:
        return f"{self.prefix}:queue:entries"

    # -- uploaded files ---------------------------------------------------------------------------
    def file(self, file_id: str) -> str:
        return f"{self.prefix}:file:{file_id}"

    def file_data(self, file_id: str) -> str:
        return f"{self.prefix}:file:{file_id}:data"

    # -- cache, locks, limiter --------------------------------------------------------------------
    def cache(self, key: str) -> str:
        return f"{self.prefix}:cache:{key}"

    def lock(self, key: str) -> str:
        return f"{self.prefix}:lock:{key}"

    def counter(self, key: str) -> str:
        return f"{self.prefix}:counter:{key}"

    def limiter_slots(self, endpoint_key: str) -> str:
        return f"{self.prefix}:limiter:{endpoint_key}:slots"

    def limiter_pace(self, endpoint_key: str) -> str:
        return f"{self.prefix}:limiter:{endpoint_key}:pace"

    def limiter_queue(self, endpoint_key: str) -> str:
        """Waiters refused a slot, by first ask (ms): the order slots are handed out in."""
        return f"{self.prefix}:limiter:{endpoint_key}:queue"

    def limiter_queue_ttl(self, endpoint_key: str) -> str:
        """The same waiters by when they lapse (ms) unless they ask again."""
        return f"{self.prefix}:limiter:{endpoint_key}:queue-ttl"
