"""The error tree: every error class of the service, engine and HTTP layer alike.

HeavyResearchError
├── FeedbackError        fed back to the model as its next observation, never raised out of
│   └── ToolError        an agent (a malformed output is not raised at all: the parser
│       │                returns it as `ParsedOutput.error`)
│       ├── BlockedURL       the SSRF guard refuses the url (private, loopback, metadata, …)
│       ├── FetchError       a page could not be read (status, size, timeout, redirects)
│       ├── ExtractionError  a page was read but holds no text visit can use
│       └── ParseError       an uploaded file could not be turned into text
├── RetryableError       429 / 5xx / timeout / dropped connection: retried with backoff
├── WireError            a 2xx reply that is not a chat completion (also a ValueError)
├── LLMConfigError       401, 404 model, 400: fails fast, names the setting to fix
├── ContextOverflow      the prompt does not fit the model's context (a server's context-exceeded
│                        400, or known before sending): the caller trims it and calls again
├── ProviderError        one search provider failed a query: the fallback chain moves on
├── CorpusError          the local corpus cannot be built or opened: says what to do
├── BackendUnavailable   the job store cannot be reached (HTTP 503 with Retry-After)
├── BackendBroken        the job store's file is unusable (corrupt, read-only): fails at start
├── SourceConflict       a round's source ids are taken in the store by other urls: another
│                        process runs the job now, so this one stops it without writing
├── QueueFull            the queue is at capacity (HTTP 429 with Retry-After)
├── QuotaExceeded        a tenant is past one of its quotas (HTTP 429 with Retry-After)
├── JobNotFound          unknown job id (HTTP 404)
├── FileNotFound         unknown (or another tenant's, or expired) file id (HTTP 404)
├── FileRejected         an upload that is too large or of a type we cannot read (413 / 415)
├── JobConflict          idempotency key reused with another body, delete while running (409)
├── JobFailed            the job cannot finish: no agent answered (job.failed)
├── ShuttingDown         the API process is stopping and takes no new jobs (HTTP 503)
├── Unauthorized         no or an unknown API key (HTTP 401)
├── Forbidden            an admin-only operation asked with a tenant's key (HTTP 403)
├── DatasetError         `heavyresearch eval`: the dataset as a whole cannot be read
├── ResearchUnavailable  `heavyresearch eval`: a job could not be submitted or followed
├── JudgeError           `heavyresearch eval`: the judge is misconfigured
└── TracingUnavailable   tracing.enabled without the `otel` extra installed: fails at start

`app/errors.py` maps each of them to its HTTP answer.
"""

from __future__ import annotations

from workers.models import Usage


class HeavyResearchError(Exception):
    pass


class FeedbackError(HeavyResearchError):
    """The model did something wrong; the message goes back to it verbatim."""


class ToolError(FeedbackError):
    pass


class RetryableError(HeavyResearchError):
    """`charged`: the server had the request when the attempt failed (a reset, a stall, a cut
    stream), so it may have spent tokens on it. `usage`: what the failed attempts of a call are
    estimated to have cost (set on the error a whole call ends with). `attempts`: how many
    attempts the error sums up (an endpoint's retries, for the fallback chain's summary)."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        charged: bool = False,
        usage: Usage | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.charged = charged
        self.usage = usage
        self.attempts = attempts


class LLMConfigError(HeavyResearchError):
    pass


class ContextOverflow(HeavyResearchError):
    """The prompt is too long for the model's context window.

    `prompt_chars` is how many characters of prompt would fit, as well as the client can tell
    (from the server's own token counts when it gave them): the caller trims to that and retries.
    """

    def __init__(self, message: str, prompt_chars: int, context_length: int | None = None) -> None:
        super().__init__(message)
        self.prompt_chars = prompt_chars
        self.context_length = context_length


class BackendUnavailable(HeavyResearchError):
    retry_after = 2


class BackendBroken(HeavyResearchError):
    """The job store cannot be used as configured (a corrupt or read-only file): raised at
    start with what to do, never retried."""


class SourceConflict(HeavyResearchError):
    """A round's commit carried a source id the store already gives another url (or a url it
    gives another id). Ids are assigned in the process running the job, so this means a second
    process runs it too (this one outlived its lease): the commit wrote nothing, and this
    process stops the job as if its lease were lost."""


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


class FileNotFound(HeavyResearchError):
    pass


class FileRejected(HeavyResearchError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class JobConflict(HeavyResearchError):
    pass


class JobFailed(HeavyResearchError):
    """`outcome` is a machine-readable reason for clients ("no_answer": no agent answered)."""

    def __init__(self, message: str, outcome: str | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


# -- tools ------------------------------------------------------------------------------------------


class BlockedURL(ToolError):
    """The url may not be fetched; the message says why, for the model and the log."""


class FetchError(ToolError):
    """The page could not be read; the message is the reason the model sees for that url."""


class ExtractionError(ToolError):
    pass


class ParseError(ToolError):
    pass


class ProviderError(HeavyResearchError):
    """A provider could not serve a query (HTTP error, timeout, bad response): the chain moves on.

    `status` is the HTTP status when there was one (401/403 mean the key is wrong).
    """

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status


class CorpusError(HeavyResearchError):
    """The corpus cannot be built or opened; the message says what to do about it."""


# -- model client -----------------------------------------------------------------------------------


class WireError(HeavyResearchError, ValueError):
    """The endpoint answered 2xx with something that is not a chat completion. Also a
    ValueError: the reply's parsers treat it as one more malformed value."""


# -- HTTP layer -------------------------------------------------------------------------------------


class ShuttingDown(HeavyResearchError):
    """The service is stopping and takes no new jobs; retry against another instance."""

    retry_after = 5


class Unauthorized(HeavyResearchError):
    pass


class Forbidden(HeavyResearchError):
    pass


# -- eval -------------------------------------------------------------------------------------------


class DatasetError(HeavyResearchError):
    """The dataset as a whole cannot be read (missing, unknown format, not a list)."""


class ResearchUnavailable(HeavyResearchError):
    """The job could not be submitted or followed (the service refused it, or went away)."""


class JudgeError(HeavyResearchError):
    """The judge is misconfigured (no such prompt template, a template without placeholders)."""


class TracingUnavailable(HeavyResearchError):
    """Tracing is on but OpenTelemetry is not installed; the message says what to install."""
