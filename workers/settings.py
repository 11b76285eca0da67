"""Settings: `config/default.toml`, overridden by `HR_…` environment variables (`__` nests).

Every setting is documented in `config/default.toml`; this module only gives them types.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def config_dir() -> Path:
    """The folder holding `default.toml` and `prompts/` (repo checkout or installed wheel)."""
    override = os.environ.get("HR_CONFIG_DIR")
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parents[1] / "config"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parent / "_config"


def _delays_ordered(section: str, base: float, most: float) -> None:
    if base > most:
        raise ValueError(
            f"{section}.retry_base_delay ({base:g}) is more than {section}.retry_max_delay ({most:g})"
        )


class Section(BaseModel):
    """A settings section: an unknown key (a typo such as `[llm.synthesis] modle`) is an error
    naming it, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# The model id the simulated server answers to (workers.sim); a job on it is labelled simulated.
SIMULATED_MODEL_ID = "heavyresearch-sim"


class EndpointSettings(Section):
    """One OpenAI-compatible chat-completions endpoint."""

    base_url: str = ""
    api_key: str = ""
    model: str = ""
    timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=100, ge=0, le=10000)
    max_concurrency: int = Field(default=32, ge=1)
    requests_per_minute: int = Field(default=0, ge=0)
    stream: bool = True
    # Seconds a call may go without receiving a byte (streamed calls); `timeout` bounds the whole.
    read_timeout: float = Field(default=30.0, gt=0)
    # Seconds an endpoint's failing attempts may take before the next endpoint is tried.
    retry_budget: float = Field(default=120.0, ge=0)
    # Tokens of the model's context window; 0 = ask the server (`/v1/models`, `/props`).
    context_length: int = Field(default=0, ge=0)


class LLMSettings(EndpointSettings):
    """The research endpoint, plus optional per-role overrides and fallbacks.

    A role left with an empty `base_url` uses the research endpoint.
    """

    synthesis: EndpointSettings = EndpointSettings()
    summariser: EndpointSettings = EndpointSettings()
    # The evaluation judge (`heavyresearch eval`); empty base_url = the research endpoint.
    judge: EndpointSettings = EndpointSettings()
    fallbacks: list[EndpointSettings] = []
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    presence_penalty: float = Field(default=1.1, ge=-2, le=2)
    max_output_tokens: int = Field(default=8192, ge=16)
    retry_base_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=20.0, ge=0)
    # Characters per token when a prompt's size must be guessed before sending (conservative).
    chars_per_token: float = Field(default=3.0, gt=0)
    # Fewest completion tokens worth a call: a prompt leaving less than this is trimmed first.
    min_output_tokens: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> LLMSettings:
        _delays_ordered("llm", self.retry_base_delay, self.retry_max_delay)
        for role in ("synthesis", "summariser", "judge"):
            override: EndpointSettings = getattr(self, role)
            # Without its own base_url a role runs on the research endpoint; only a model of
            # its own is honoured there (the others belong to a host of the role's own).
            stray = sorted(override.model_fields_set - {"base_url", "model"})
            if not override.base_url and stray:
                raise ValueError(
                    f"llm.{role} sets {', '.join(stray)} but no base_url: a role without its own "
                    f"base_url uses the research endpoint (set llm.{role}.base_url, or drop them)"
                )
        return self


class SimSettings(Section):
    """The simulated model used when no LLM is configured."""

    latency: float = Field(default=0.0, ge=0)
    tokens_per_second: float = Field(default=0.0, ge=0)
    fault_rate: float = Field(default=0.0, ge=0, le=1)
    min_rounds: int = Field(default=3, ge=2)
    seed: int = 0


class CorpusSettings(Section):
    path: str = "~/.cache/heavyresearch/corpus.sqlite"
    auto_build: bool = True
    # Searches that have recently taken under this many ms run in the event loop, not a thread.
    inline_search_ms: float = Field(default=1.0, ge=0, le=50)


class SearchProviderSettings(Section):
    """One web search API. `base_url` is overridable so tests and proxies can stand in for it."""

    base_url: str = ""
    api_key: str = ""
    timeout: float = Field(default=10.0, gt=0)


SEARCH_PROVIDERS = ("local", "searxng", "serper", "tavily", "brave")


class SearchSettings(Section):
    providers: list[str] = ["local"]
    top_k: int = Field(default=5, ge=1, le=50)
    cache_ttl: int = Field(default=86400, ge=0)
    coalesce_wait: float = Field(default=15.0, gt=0)
    searxng: SearchProviderSettings = SearchProviderSettings()
    serper: SearchProviderSettings = SearchProviderSettings(base_url="https://google.serper.dev")
    tavily: SearchProviderSettings = SearchProviderSettings(base_url="https://api.tavily.com", timeout=15.0)
    brave: SearchProviderSettings = SearchProviderSettings(base_url="https://api.search.brave.com/res/v1")

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        names = [v.strip().lower() for v in value]
        unknown = [n for n in names if n not in SEARCH_PROVIDERS]
        if unknown:
            raise ValueError(f"unknown search provider(s) {unknown}; known: {list(SEARCH_PROVIDERS)}")
        if not names:
            raise ValueError('at least one search provider is needed (offline: ["local"])')
        return list(dict.fromkeys(names))

    @property
    def offline(self) -> bool:
        """Only the local corpus: nothing may leave the machine."""
        return self.providers == ["local"]


class VisitSettings(Section):
    max_chars: int = Field(default=6000, ge=200)
    cache_ttl: int = Field(default=86400, ge=0)
    coalesce_wait: float = Field(default=60.0, gt=0)
    timeout: float = Field(default=20.0, gt=0)
    max_bytes: int = Field(default=3_000_000, ge=1024)
    max_redirects: int = Field(default=5, ge=0, le=20)
    allow_hosts: list[str] = []
    user_agent: str = "Mozilla/5.0 (compatible; heavyresearch/0.1; research agent)"
    pdf: bool = True
    reader_base_url: str = ""
    reader_api_key: str = ""
    summary_page_tokens: int = Field(default=12000, ge=100)
    summary_max_tokens: int = Field(default=2048, ge=64)
    summary_retries: int = Field(default=2, ge=0, le=10)


class WebhookSettings(Section):
    """How a job's `webhook_url` is called once the job ends."""

    secret: str = ""
    secrets: list[str] = []
    timeout: float = Field(default=10.0, gt=0)
    attempts: int = Field(default=4, ge=1, le=20)
    retry_base_delay: float = Field(default=1.0, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)
    allow_hosts: list[str] = []

    @field_validator("secrets")
    @classmethod
    def _base64_secrets(cls, value: list[str]) -> list[str]:
        for secret in value:
            try:
                key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
            except ValueError:
                raise ValueError('webhook secrets are base64 (optionally after "whsec_")') from None
            if len(key) < 16:
                raise ValueError("a webhook secret needs at least 16 bytes of key")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebhookSettings:
        _delays_ordered("webhooks", self.retry_base_delay, self.retry_max_delay)
        return self


class SandboxSettings(Section):
    """PythonInterpreter: where model-written code runs (`workers/tools/python/`)."""

    # "embedded" (bubblewrap on this machine), "remote" (SandboxFusion endpoints), "auto"
    # (remote when endpoints are set, else embedded), or "off".
    mode: Literal["auto", "embedded", "remote", "off"] = "auto"
    bwrap: str = "bwrap"
    python: str = ""  # "" = the first of /usr/local/bin/python3, /usr/bin/python3
    ro_binds: list[str] = ["/usr", "/lib", "/lib64", "/bin"]
    cpu_seconds: int = Field(default=10, ge=1, le=3600)
    wall_seconds: float = Field(default=20.0, gt=0, le=3600)
    memory_mb: int = Field(default=512, ge=64)
    max_processes: int = Field(default=32, ge=1, le=4096)
    max_output_bytes: int = Field(default=65536, ge=1024)
    tmp_mb: int = Field(default=64, ge=1)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    uid_base: int = Field(default=60000, ge=1000)
    endpoints: list[str] = []
    remote_timeout: float = Field(default=60.0, gt=0)
    observation_max_chars: int = Field(default=6000, ge=200)


SCHOLAR_PROVIDERS = ("openalex", "semanticscholar", "arxiv", "serper", "local")


class ScholarSettings(Section):
    """google_scholar: its own provider chain, tried in order (`workers/tools/scholar/`)."""

    # "openalex", "semanticscholar", "arxiv", "serper" (needs search.serper.api_key), "local".
    providers: list[str] = ["openalex", "semanticscholar", "arxiv", "serper", "local"]
    top_k: int = Field(default=5, ge=1, le=50)
    mailto: str = ""
    openalex: SearchProviderSettings = SearchProviderSettings(base_url="https://api.openalex.org")
    semanticscholar: SearchProviderSettings = SearchProviderSettings(
        base_url="https://api.semanticscholar.org/graph/v1"
    )
    arxiv: SearchProviderSettings = SearchProviderSettings(base_url="https://export.arxiv.org/api")

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        names = [v.strip().lower() for v in value]
        unknown = [n for n in names if n not in SCHOLAR_PROVIDERS]
        if unknown:
            raise ValueError(f"unknown scholar provider(s) {unknown}; known: {list(SCHOLAR_PROVIDERS)}")
        return list(dict.fromkeys(names))


class FilesSettings(Section):
    """Uploads (`POST /v1/files`) and `parse_file`."""

    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    ttl_seconds: int = Field(default=7 * 86400, ge=60)
    max_files_per_job: int = Field(default=10, ge=1, le=100)
    parse_max_chars: int = Field(default=20000, ge=200)


class AgentSettings(Section):
    default_agents: int = Field(default=4, ge=1, le=16)
    max_agents: int = Field(default=16, ge=1, le=64)
    default_max_rounds: int = Field(default=32, ge=1, le=256)
    max_rounds_limit: int = Field(default=256, ge=1)
    agent_concurrency: int = Field(default=16, ge=1)
    observation_max_chars: int = Field(default=6000, ge=200)
    angles: list[str] = []
    forced_answer_grace: float = Field(default=20.0, gt=0)
    react_context_tokens: int = Field(default=110_000, ge=1000)
    react_tokenizer: str = ""
    # Seconds an agent waits before trying a model endpoint that stayed down for a whole call.
    outage_pause: float = Field(default=10.0, gt=0)
    # Seconds of outage a job rides out; past it, agents answer from their reports.
    outage_budget: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> AgentSettings:
        if self.default_agents > self.max_agents:
            raise ValueError(
                f"agent.default_agents ({self.default_agents}) is more than agent.max_agents "
                f"({self.max_agents})"
            )
        if self.default_max_rounds > self.max_rounds_limit:
            raise ValueError(
                f"agent.default_max_rounds ({self.default_max_rounds}) is more than "
                f"agent.max_rounds_limit ({self.max_rounds_limit})"
            )
        return self


class TenantQuotas(Section):
    """Per-tenant limits; 0 means no limit. Checked at submit, across all API processes."""

    max_running_jobs: int = Field(default=0, ge=0)
    max_queued_jobs: int = Field(default=0, ge=0)
    max_agent_rounds: int = Field(default=0, ge=0)
    max_tokens_per_day: int = Field(default=0, ge=0)


class TenantKey(Section):
    """One API key of a tenant: the key itself or (better) its SHA-256 in hex."""

    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    key: str = ""
    key_sha256: str = Field(default="", pattern=r"^([0-9a-fA-F]{64})?$")
    role: Literal["user", "admin"] = "user"
    quotas: TenantQuotas | None = None

    @field_validator("key_sha256")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _one_key(self) -> TenantKey:
        if bool(self.key) == bool(self.key_sha256):
            raise ValueError(f"server.tenants: tenant {self.tenant!r} needs exactly one of key_sha256 or key")
        return self


class BudgetSettings(Section):
    """How a job's `max_seconds` and `max_tokens` are shared out (see `workers.budget`)."""

    finish_share: float = Field(default=0.25, gt=0, lt=1)
    finish_max_seconds: float = Field(default=60.0, gt=0)
    forced_share: float = Field(default=0.4, gt=0, lt=1)
    finish_allowance_seconds: float = Field(default=2.0, ge=0)
    min_research_seconds: float = Field(default=1.0, ge=0)
    forced_round_tokens: int = Field(default=6144, ge=64)
    synthesis_tokens: int = Field(default=12288, ge=64)
    min_round_tokens: int = Field(default=2048, ge=64)
    round_completion_tokens: int = Field(default=4096, ge=16)
    forced_completion_tokens: int = Field(default=2048, ge=16)
    synthesis_completion_tokens: int = Field(default=4096, ge=16)
    min_completion_tokens: int = Field(default=128, ge=1)
    chars_per_token: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> BudgetSettings:
        # A reservation that cannot hold its own completion cap would never pay for its call.
        for cap, reserve in (
            ("forced_completion_tokens", "forced_round_tokens"),
            ("synthesis_completion_tokens", "synthesis_tokens"),
        ):
            if getattr(self, cap) >= getattr(self, reserve):
                raise ValueError(
                    f"budget.{cap} ({getattr(self, cap)}) must be less than budget.{reserve} "
                    f"({getattr(self, reserve)}): the reservation pays for the prompt too"
                )
        return self


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_queued_jobs: int = Field(default=1000, ge=1)
    max_query_chars: int = Field(default=4000, ge=1)
    sse_keepalive: float = Field(default=15.0, gt=0)
    # New events an SSE client may fall behind by while its socket stays full, then dropped.
    sse_client_buffer: int = Field(default=1000, ge=1)
    api_keys: list[str] = []
    tenants: list[TenantKey] = []
    default_quotas: TenantQuotas = TenantQuotas()
    stream_token_secret: str = ""
    stream_token_ttl: int = Field(default=600, ge=10, le=86400)
    protect_docs: bool = False
    protect_metrics: bool = False


class WorkerSettings(Section):
    max_jobs: int = Field(default=8, ge=1)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # `heavyresearch worker` serves its Prometheus metrics here (0 = not served).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @model_validator(mode="after")
    def _consistent(self) -> WorkerSettings:
        # A lease that lapses between two heartbeats hands a healthy worker's job to another.
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"worker.heartbeat_seconds ({self.heartbeat_seconds:g}) must be shorter than "
                f"worker.lease_seconds ({self.lease_seconds:g})"
            )
        return self


def user_data_dir() -> Path:
    """Where durable state lives by default: `$XDG_DATA_HOME/heavyresearch`, else
    `~/.local/share/heavyresearch`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "heavyresearch"


class SQLiteSettings(Section):
    """The sqlite backend: one file shared by `serve` and `heavyresearch worker` processes."""

    # Empty = `heavyresearch.sqlite` in the user's data folder (`user_data_dir()`).
    path: str = ""
    busy_timeout: float = Field(default=5.0, ge=0)
    poll_interval: float = Field(default=0.05, gt=0, le=5)

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else user_data_dir() / "heavyresearch.sqlite"


class EvalSettings(Section):
    """`heavyresearch eval`: defaults of its options, and how the judge is called."""

    rollouts: int = Field(default=3, ge=1, le=64)
    concurrency: int = Field(default=4, ge=1, le=256)
    scorer: Literal["llm", "exact", "normalized"] = "llm"
    judge_prompt: str = "browsecomp"
    judge_attempts: int = Field(default=3, ge=1, le=20)
    judge_max_tokens: int = Field(default=1024, ge=16)


class TracingSettings(Section):
    """OpenTelemetry traces (`workers/tracing.py`, the `otel` extra). Endpoint, headers,
    sampler, batching and service name come from the SDK's own OTEL_… variables."""

    enabled: bool = False
    # "otlp": OTLP over HTTP (protobuf) to OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT; "file": one
    # JSON object per span per line, appended to `file`.
    exporter: Literal["otlp", "file"] = "otlp"
    file: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> TracingSettings:
        if self.exporter == "file" and not self.file:
            raise ValueError('tracing.exporter is "file" but tracing.file is empty: name the file')
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HR_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    backend: Literal["sqlite", "memory", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "hr"
    redis_max_connections: int = Field(default=1000, ge=8)
    job_ttl_seconds: int = Field(default=7 * 86400, ge=60)
    log_level: str = "INFO"
    llm: LLMSettings = LLMSettings()
    sim: SimSettings = SimSettings()
    corpus: CorpusSettings = CorpusSettings()
    search: SearchSettings = SearchSettings()
    visit: VisitSettings = VisitSettings()
    webhooks: WebhookSettings = WebhookSettings()
    agent: AgentSettings = AgentSettings()
    server: ServerSettings = ServerSettings()
    worker: WorkerSettings = WorkerSettings()
    sandbox: SandboxSettings = SandboxSettings()
    scholar: ScholarSettings = ScholarSettings()
    files: FilesSettings = FilesSettings()
    sqlite: SQLiteSettings = SQLiteSettings()
    budget: BudgetSettings = BudgetSettings()
    eval: EvalSettings = EvalSettings()
    tracing: TracingSettings = TracingSettings()

    @property
    def simulated(self) -> bool:
        """True when the simulated model stands in for an LLM: none is configured (it then runs
        in-process), or the configured one is a `heavyresearch sim-llm` server."""
        return not self.llm.base_url or self.llm.model == SIMULATED_MODEL_ID

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_dir() / "default.toml")
        return (init_settings, env_settings, toml)


@lru_cache
def get_settings() -> Settings:
    return Settings()
