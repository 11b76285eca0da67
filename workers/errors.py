"""The engine's error tree.

HeavyResearchError
├── FeedbackError        fed back to the model as its next observation, never raised out of
│   └── ToolError        an agent (a malformed output is not raised at all: the parser
│                        returns it as `ParsedOutput.error`)
├── RetryableError       429 / 5xx / timeout / dropped connection: retried with backoff
├── LLMConfigError       401, 404 model, 400: fails fast, names the setting to fix
├── BackendUnavailable   the job store cannot be reached (HTTP 503 with Retry-After)
├── BackendBroken        the job store's file is unusable (corrupt, read-only): fails at start
├── QueueFull            the queue is at capacity (HTTP 429 with Retry-After)
├── QuotaExceeded        a tenant is past one of its quotas (HTTP 429 with Retry-After)
├── JobNotFound          unknown job id (HTTP 404)
├── JobConflict          idempotency key reused with another body, delete while running (409)
└── JobFailed            the job cannot finish: every agent failed (job.failed)
"""

from __future__ import annotations


class HeavyResearchError(Exception):
    pass


class FeedbackError(HeavyResearchError):
    """The model did something wrong; the message goes back to it verbatim."""


class ToolError(FeedbackError):
    pass


class RetryableError(HeavyResearchError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMConfigError(HeavyResearchError):
    pass


class BackendUnavailable(HeavyResearchError):
    retry_after = 2


class BackendBroken(HeavyResearchError):
    """The job store cannot be used as configured (a corrupt or read-only file): raised at
    start with what to do, never retried."""


class QueueFull(HeavyResearchError):
    retry_after = 5


class QuotaExceeded(HeavyResearchError):
    """A tenant's quota refuses the job; `quota` is the setting's name (`max_running_jobs`, …)."""

    def __init__(self, quota: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.quota = quota
        self.retry_after = retry_after


class JobNotFound(HeavyResearchError):
    pass


class JobConflict(HeavyResearchError):
    pass


class JobFailed(HeavyResearchError):
    pass
