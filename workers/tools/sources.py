"""A running job's source registry, kept in the process that runs the job.

One worker process runs a job at a time (its lease), so ids are handed out here with no round
trip: `S1, S2, …` in the order urls are first seen, the same url keeping its id. The registry
starts from what the store already holds (an earlier run's sources), and each agent's round
commit (`Backend.commit_round`) carries every source not yet confirmed stored, whichever agent
registered it: a committed event never names a source the store lacks.
"""

from __future__ import annotations

from collections.abc import Iterable

from workers.backend.base import Backend
from workers.models import Source


class JobSources:
    def __init__(self, stored: Iterable[Source] = ()) -> None:
        self._by_url: dict[str, Source] = {}
        for source in sorted(stored, key=lambda s: int(s.id[1:])):
            self._by_url[source.url] = source
        self._unconfirmed: dict[str, Source] = {}
        # Past the highest id ever given, not the count: ids are never reused.
        self._last = max((int(s.id[1:]) for s in self._by_url.values()), default=0)

    @classmethod
    async def load(cls, backend: Backend, job_id: str) -> JobSources:
        return cls((await backend.get_sources(job_id)).values())

    def register(self, url: str, title: str) -> Source:
        """The url's id in this job; a new url gets the next one."""
        known = self._by_url.get(url)
        if known is not None:
            return known
        self._last += 1
        source = Source(id=f"S{self._last}", url=url, title=title)
        self._by_url[url] = source
        self._unconfirmed[source.id] = source
        return source

    def unconfirmed(self) -> list[Source]:
        """Sources no commit has stored yet, in id order."""
        return list(self._unconfirmed.values())

    def confirm(self, sources: Iterable[Source]) -> None:
        """These are stored now (their commit succeeded)."""
        for source in sources:
            self._unconfirmed.pop(source.id, None)

    def __len__(self) -> int:
        return len(self._by_url)
