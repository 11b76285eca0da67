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
├── JobNotFound          unknown job id (HTTP 404)
├── FileNotFound         unknown (or another tenant's, or expired) file id (HTTP 404)
├── FileRejected         an upload that is too large or of a type we cannot read (413 / 415)
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


class JobNotFound(HeavyResearchError):
    pass


class FileNotFound(HeavyResearchError):
    pass


class FileRejected(HeavyResearchError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class JobConflict(HeavyResearchError):
    pass


class JobFailed(HeavyResearchError):
    pass
