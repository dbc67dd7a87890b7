"""The configuration schema: every section, its defaults and the checks across sections.

Loading (the embedded defaults, the YAML file, ``BASTION__SECTION__KEY`` environment
overrides, errors naming the key and line) lives in ``config_load.py``; ``load_config`` and
``find_config`` are re-exported here.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .config_load import DEFAULT_CONFIG_FILE, default_config, find_config, load_config
from .providers.azure import resource_base

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "Config",
    "DeploymentConfig",
    "FeatureConfig",
    "ModelConfig",
    "ProviderConfig",
    "ServerConfig",
    "StateConfig",
    "StoreConfig",
    "TimeoutConfig",
    "default_config",
    "find_config",
    "load_config",
]

ProviderKind = Literal[
    "anthropic", "openai", "openai-compatible", "azure-openai", "bedrock", "gemini", "sim"
]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """The HTTP server, including the limits that hold against a hostile client.

    Request headers are bounded in size, count and time (431, 408), the body in size and time
    (413, 408), and each write to a client in time (a client that stops reading is cut, and its
    upstream connection released, by the call's deadline at the latest). Open streams are
    limited per key and per user in each process (429): keep ``max_concurrent_streams_per_key``
    below every provider's ``max_connections`` so that one key cannot hold a provider's whole
    pool. Keys this process resolved keep working for ``key_stale_seconds`` while the record
    store is down; keys it never saw fail closed. On SIGTERM the server stops accepting
    connections and gives the calls in flight ``shutdown_drain_seconds`` to finish before it
    cuts them, flushes the call records and exits; a second signal exits at once.
    """

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    admin_key_env: str = "BASTION_ADMIN_KEY"
    key_cache_seconds: float = Field(2.0, ge=0)
    key_stale_seconds: float = Field(300.0, ge=0)  # 0: no stale answers during a store outage
    max_header_bytes: int = Field(32 * 1024, ge=1024)  # request line plus all header lines
    max_header_count: int = Field(100, ge=8)
    header_timeout_seconds: float = Field(10.0, gt=0)  # from the first byte to the end of headers
    body_timeout_seconds: float = Field(60.0, gt=0)
    send_timeout_seconds: float = Field(30.0, gt=0)  # one write to a client that stopped reading
    max_concurrent_streams_per_key: int | None = Field(64, ge=1)  # None: no limit
    max_concurrent_streams_per_user: int | None = Field(16, ge=1)
    # after SIGTERM: how long calls in flight (streams included) may finish before they are cut
    shutdown_drain_seconds: float = Field(30.0, ge=0)
    # `serve --workers N`: the supervisor pings each worker's event loop every interval; a
    # worker that leaves `worker_ping_misses` pings in a row unanswered (each within the
    # timeout) is stopped or wedged, and is killed and restarted. 0 misses: no pings
    worker_ping_interval_seconds: float = Field(1.0, gt=0)
    worker_ping_timeout_seconds: float = Field(2.0, gt=0)
    worker_ping_misses: int = Field(5, ge=0)
    # live drills (`bastion check --url`): callers may ask simulated deployments for a paced
    # stream (x-sim-ttft-ms, x-sim-chunk-ms, x-sim-reply-tokens) or a failure
    # (x-bastion-drill-fail: provider/model or *); real providers never see these. Off: ignored
    drill_headers: bool = False
    # one access line per call (every status) on stderr; json: one object per line
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"


class StoreConfig(_Strict):
    url: str = "sqlite:///bastion.db"


class TimeoutConfig(_Strict):
    """Seconds; ``total`` bounds one attempt, the feature's ``deadline`` bounds the whole call.

    ``first_token`` bounds a stream from sending to its first output (headers included): a
    deployment silent that long is left for the next one, well inside the deadline. Raise it
    for deployments that think for long before their first visible token. A non-streaming
    answer sends its headers only once fully generated, so it is bounded by ``total`` and its
    share of the deadline instead (see ``reliability/policy.py``).
    """

    connect: float = Field(5.0, gt=0)
    first_token: float = Field(15.0, gt=0)
    idle: float = Field(60.0, gt=0)
    total: float = Field(600.0, gt=0)


class ProviderConfig(_Strict):
    """One provider. ``azure-openai``: ``base_url`` is the resource endpoint, ``api_version`` its
    data-plane version (``v1``: the /openai/v1/ surface), and the credential either a resource
    key (``api_key_env``, sent as ``api-key``) or a Microsoft Entra token (``token_env``, sent as
    ``Authorization: Bearer``); a deployment's ``model`` is the Azure deployment name."""

    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    token_env: str | None = None
    api_version: str | None = Field(None, min_length=1, max_length=64)
    # bedrock: the AWS region requests are sent to and signed for (SigV4, service "bedrock")
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderConfig:
        if self.kind == "openai-compatible" and not self.base_url:
            raise ValueError("an openai-compatible provider needs base_url")
        if self.kind == "azure-openai":
            if not self.base_url:
                raise ValueError("base_url: an azure-openai provider needs its resource endpoint")
            if self.api_key_env and self.token_env:
                raise ValueError("token_env: give api_key_env or token_env, not both")
            if not (self.api_key_env or self.token_env):
                raise ValueError("api_key_env: an azure-openai provider needs it (or token_env)")
        elif self.token_env or self.api_version:
            key = "token_env" if self.token_env else "api_version"
            raise ValueError(f"{key}: only an azure-openai provider takes it")
        if self.kind == "bedrock" and not self.region:
            raise ValueError("region: a bedrock provider needs its AWS region (e.g. us-east-1)")
        if self.region and self.kind != "bedrock":
            raise ValueError("region: only a bedrock provider takes it")
        return self

    def resolved_base_url(self) -> str:
        if self.kind == "azure-openai" and self.base_url:
            return resource_base(self.base_url, self.api_version)
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.kind == "bedrock":
            return f"https://bedrock-runtime.{self.region}.amazonaws.com"
        return {
            "anthropic": "https://api.anthropic.com",
            "openai": "https://api.openai.com/v1",
            "gemini": "https://generativelanguage.googleapis.com",
            "sim": "sim://local",
        }.get(self.kind, "")

    def api_key(self) -> str | None:
        """The credential; an Entra token keeps its ``Bearer`` scheme (see providers/azure.py)."""
        if self.token_env:
            token = os.environ.get(self.token_env)
            return "Bearer " + token if token else None
        return os.environ.get(self.api_key_env) if self.api_key_env else None


# How a stream cut mid-answer is carried on at this deployment when it is the fallback:
# "prefill" sends the partial answer as the assistant's turn to be continued, "none" restarts
# the request (the client keeps its text only if the new answer reproduces it), "auto"
# prefills where the format has it (Anthropic) until the deployment refuses one, then restarts.
PrefillMode = Literal["prefill", "none", "auto"]


class DeploymentConfig(_Strict):
    provider: str
    model: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    enabled_env: str | None = None
    prefill: PrefillMode = "auto"
    # an embedding deployment's vector length: the alias serves /v1/embeddings, and failover
    # goes only to deployments of the first one's dimension (vectors of another cannot mix)
    dimensions: int | None = Field(None, gt=0, le=65536)

    def enabled(self) -> bool:
        """A deployment gated by an env flag is used only when the flag is set to a true value."""
        if self.enabled_env is None:
            return True
        return os.environ.get(self.enabled_env, "").lower() in {"1", "true", "yes", "on"}


class ModelConfig(_Strict):
    """A client-facing name (``*`` allowed as a glob) mapped to ordered deployments.

    In a deployment's ``model``, ``{model}`` is replaced by the name the client sent.
    """

    deployments: list[DeploymentConfig] = Field(min_length=1)
    description: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ModelConfig:
        """An alias embeds or chats: every deployment declares ``dimensions``, or none does."""
        declared = [d.dimensions is not None for d in self.deployments]
        if any(declared) and not all(declared):
            i = declared.index(False)
            raise ValueError(
                f"deployments.{i}.dimensions: an embedding model's deployments all need one"
            )
        return self


class RetryConfig(_Strict):
    attempts_per_deployment: int = Field(2, ge=1, le=10)
    max_attempts: int = Field(6, ge=1, le=50)
    backoff_base: float = Field(0.2, ge=0)
    backoff_max: float = Field(4.0, ge=0)
    max_retry_after: float = Field(30.0, ge=0)  # a longer Retry-After moves to the next deployment


class BreakerConfig(_Strict):
    enabled: bool = True
    failure_threshold: int = Field(5, ge=0)
    error_rate: float = Field(0.5, gt=0, le=1)
    window_seconds: float = Field(30.0, gt=0)
    min_calls: int = Field(20, ge=1)
    cooldown_seconds: float = Field(10.0, gt=0)


class DegradedConfig(_Strict):
    """What a caller gets when no deployment can answer: a typed error, or a canned message."""

    mode: Literal["error", "message"] = "error"
    message: str = "AI assistance is unavailable right now, please continue manually."


class FeatureSafetyConfig(_Strict):
    """Per-feature safety policy (defaults: flag injections, watch for system-prompt leaks)."""

    injection_action: Literal["off", "flag", "block"] = "flag"
    injection_doc_action: Literal["flag", "block", "drop"] = "drop"
    injection_threshold: float = Field(0.5, gt=0, le=1)
    scope_guard: bool = False  # refuse clearly out-of-scope requests (malware, credential theft...)
    scope_deny_patterns: list[str] = Field(default_factory=list)
    leak_action: Literal["off", "flag", "redact", "block"] = "block"
    # share of the system prompt's shingles an answer may reproduce before it is a leak
    leak_threshold: float = Field(0.1, gt=0, le=1)
    json_repair: bool = True  # an answer that fails its JSON schema gets one repair attempt
    sql_tools: dict[str, str] = Field(default_factory=dict)  # tool name -> argument holding SQL
    sql_grants: dict[str, dict[str, list[str] | Literal["*"]]] = Field(
        default_factory=dict
    )  # role -> table -> cols
    sql_max_rows: int = Field(1000, ge=1)
    sql_dialect: str = "postgres"
    sql_action: Literal["block", "flag"] = "block"
    # tool name -> functions its SQL may call beyond the dialect's allow-list (the deny floor
    # still wins: version(), pg_* and the like stay refused)
    sql_functions: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sql_functions_name_sql_tools(self) -> FeatureSafetyConfig:
        unknown = sorted(set(self.sql_functions) - set(self.sql_tools))
        if unknown:
            raise ValueError(f"sql_functions names tools missing from sql_tools: {unknown}")
        return self


class LatencyBudgetConfig(_Strict):
    """Per-stage budgets in ms, in the spirit of the seed's table (None: no budget)."""

    auth_routing_ms: float | None = Field(50.0, gt=0)
    guards_ms: float | None = Field(None, gt=0)
    retrieval_ms: float | None = Field(300.0, gt=0)
    first_token_ms: float | None = Field(800.0, gt=0)
    total_ms: float | None = Field(None, gt=0)


class FeatureConfig(_Strict):
    # what the feature is for, in a sentence: `bastion eval redteam` writes its attacks from it
    description: str | None = None
    latency_budget: LatencyBudgetConfig = Field(default_factory=LatencyBudgetConfig)
    safety: FeatureSafetyConfig = Field(default_factory=FeatureSafetyConfig)
    degraded: DegradedConfig = Field(default_factory=DegradedConfig)
    max_tokens_default: int = Field(800, gt=0)
    max_tokens_limit: int = Field(8192, gt=0)
    max_tokens_mode: Literal["clamp", "refuse"] = "clamp"
    deadline: float = Field(120.0, gt=0)
    daily_budget_usd: float | None = Field(None, ge=0)
    max_input_tokens: int | None = Field(None, gt=0)
    conversation_max_tokens: int | None = Field(None, gt=0)
    prompt_caching: bool = True
    pii_provider: bool = False  # scrub PII from what this feature sends to the provider
    # PII in answers (streams included): off; flag (count it); sensitive (replace card, bank
    # and government ids, secrets, e-mails and phone numbers, flag names and places); redact all
    pii_output: Literal["off", "flag", "sensitive", "redact"] = "sensitive"
    hedge_delay: float | None = Field(
        None, gt=0
    )  # start the next deployment if no first token by then
    model: str | None = None  # pin this feature to a (cheaper) model alias
    allowed_models: list[str] | None = None

    @model_validator(mode="after")
    def _default_within_limit(self) -> FeatureConfig:
        if self.max_tokens_default > self.max_tokens_limit:
            raise ValueError("max_tokens_default exceeds max_tokens_limit")
        return self


class StateConfig(_Strict):
    """Counters (budgets, rate limits, breakers, kill switch, idempotency)."""

    url: str = "sqlite:///bastion-state.db"
    prefix: str = "bastion"  # namespaces Redis keys, so several gateways can share one Redis
    fail_open: bool = False  # when the counter store is unreachable: refuse (default) or allow
    # settles the counter store could not take wait here until they land (per-process files)
    settle_journal: str | None = "bastion-settle-journal"


class PriceConfig(_Strict):
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(None, ge=0)
    cache_read: float | None = Field(None, ge=0)


class BucketConfig(_Strict):
    requests_per_minute: float | None = Field(None, gt=0)
    burst: float | None = Field(None, gt=0)
    calls_per_day: int | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)


class RateLimitConfig(_Strict):
    per_user: BucketConfig = Field(default_factory=BucketConfig)
    per_key: BucketConfig = Field(default_factory=BucketConfig)
    global_: BucketConfig = Field(default_factory=BucketConfig, alias="global")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CapsConfig(_Strict):
    global_daily_usd: float | None = Field(None, ge=0)
    per_user_daily_usd: float | None = Field(None, ge=0)
    per_key_daily_usd: float | None = Field(None, ge=0)
    # per-user caps and limits count each end user named by a key with the `end_users` role
    # (scoped to that key); off: such a key's end users share its anonymous subject
    end_user_caps: bool = False


class AlertConfig(_Strict):
    webhooks: list[str] = Field(default_factory=list)
    forecast_usd: float | None = Field(None, ge=0)  # else the trailing 7-day average
    forecast_multiple: float = Field(2.0, gt=0)
    cap_percent: list[float] = Field(default_factory=lambda: [50.0, 80.0, 100.0])
    check_interval: float = Field(30.0, gt=0)


class CostConfig(_Strict):
    timezone: str = "UTC"
    caps: CapsConfig = Field(default_factory=CapsConfig)
    provider_caps_usd: dict[str, float] = Field(default_factory=dict)
    # the period each provider's console cap resets over: `bastion check` compares like with like
    provider_caps_period: dict[str, Literal["day", "month"]] = Field(default_factory=dict)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    lease_grace_seconds: float = Field(60.0, gt=0)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class ObservabilityConfig(_Strict):
    spill_path: str = "bastion-spill.jsonl"
    body_max_chars: int = Field(4000, ge=0)
    # records held in memory for the writer; past it they wait in the spill file and are
    # replayed (every record is journaled on disk anyway): ~1 s of a writer at 2,000 a second,
    # and what keeps a gateway whose writer cannot keep up (a saturated box) under 120 MB
    # (bench/startup.py's soak: 118.5 MB flat, where 20,000 grew to 153 MB)
    queue_max: int = Field(2_000, gt=0)
    metrics_max_label_values: int = Field(200, ge=1)
    otlp_endpoint: str | None = None  # full URL, e.g. http://collector:4318/v1/traces
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    service_name: str = "bastion"
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)
    trace_user_id: bool = False  # user.id on spans (scrubbed): off, a user id may name a person
    # gen_ai.input.messages / output.messages / system_instructions on call spans: scrubbed,
    # each attribute at most otel_content_max_chars (JSON kept whole, oldest messages first out)
    otel_capture_content: bool = False
    otel_content_max_chars: int = Field(16_000, ge=512)
    bodies_retention_days: float | None = Field(30.0, ge=0)
    metadata_retention_days: float | None = Field(400.0, ge=0)
    retention_interval_seconds: float = Field(3600.0, gt=0)
    review_rate: float = Field(0.01, ge=0, le=1)
    review_rates: dict[str, float] = Field(default_factory=dict)
    review_injection_threshold: float = 0.5
    review_max_items: int = Field(10_000, ge=1)
    quality_rate: float = Field(
        0.05, ge=0, le=1
    )  # share of answers scored online (plus every flagged one)
    quality_rates: dict[str, float] = Field(default_factory=dict)
    # /metrics shows spend per feature and model: only to the admin key unless turned off
    # (Prometheus: `authorization: {credentials: <admin key>}` in the scrape config)
    metrics_require_admin: bool = True


class PiiConfig(_Strict):
    extra_allow_patterns: list[str] = Field(default_factory=list)  # never redacted (ticket ids...)
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR", "IN", "BR"])
    # names and locations: the shipped tagger by default; "off" leaves them in plaintext
    ner: Literal["off", "builtin", "auto", "spacy", "presidio"] = "builtin"


class SafetyConfig(_Strict):
    pii: PiiConfig = Field(default_factory=PiiConfig)
    canary_secret_env: str = "BASTION_CANARY_SECRET"


class SimulatorConfig(_Strict):
    """The built-in simulator's defaults (pacing; obeying unfenced injections, for demos and tests)."""

    ttft_ms: float = Field(0.0, ge=0)
    chunk_ms: float = Field(0.0, ge=0)
    obey_injections: bool = False


class ReliabilityConfig(_Strict):
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    kill_switch_poll_seconds: float = Field(0.25, gt=0, le=1.0)
    idempotency_ttl_seconds: float = Field(86400.0, gt=0)
    idempotency_wait_seconds: float = Field(10.0, ge=0)


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    reliability: ReliabilityConfig = Field(default_factory=ReliabilityConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    features: dict[str, FeatureConfig] = Field(default_factory=lambda: {"default": FeatureConfig()})

    @field_validator("features")
    @classmethod
    def _has_default(cls, v: dict[str, FeatureConfig]) -> dict[str, FeatureConfig]:
        if "default" not in v:
            v = {"default": FeatureConfig(), **v}
        return v

    @model_validator(mode="after")
    def _deployments_name_providers(self) -> Config:
        for alias, m in self.models.items():
            for i, d in enumerate(m.deployments):
                if d.provider not in self.providers:
                    raise ValueError(
                        f"models.{alias}.deployments.{i}.provider: unknown provider {d.provider!r}"
                        f" (known: {', '.join(sorted(self.providers)) or 'none'})"
                    )
                if d.dimensions is not None and self.providers[d.provider].kind == "anthropic":
                    raise ValueError(
                        f"models.{alias}.deployments.{i}.provider: {d.provider!r} is an "
                        "anthropic provider, which serves no embeddings"
                    )
        return self

    def feature(self, name: str | None) -> FeatureConfig:
        if name is not None:
            f = self.features.get(name)
            if f is not None:
                return f
        return self.features["default"]
