"""Per-request knobs of the simulator: faults and pacing, read from headers and the model name.

A fault is chosen by the ``x-sim-fault`` header (so a deployment can add it as an
extra header) or by a model suffix, ``sim-small+fault=cut_after:3``; both use the
same syntax: items joined by ``;``, each ``name`` or ``name:value``::

    status:503                    fail with this status (the provider's error body)
    status:429                    rate limited, rate-limit reset headers but no Retry-After
    status:429;retry_after:2      ... plus Retry-After
    status:529                    Anthropic overloaded_error
    reset                         connection reset before any header
    silence                       accept the connection, never send headers (until cancelled)
    slow_first:MS                 time to first token (stream) / to headers (unary)
    stall_after:N                 after N body chunks, wait forever
    cut_after:N                   after N body chunks, drop the connection
    malformed_after:N             after N body chunks, send one chunk that is not JSON
    error_after:N                 after N body chunks, send the provider's in-stream error
    no_final                      send everything but message_stop / [DONE] (after the chunk
                                  with finish_reason, and the usage chunk if asked for)
    spaced_json                   JSON written json.dumps-style (``"choices": []``), in streams
                                  and bodies, as many OpenAI-compatible servers write it
    no_prefill                    Anthropic: 400 when the last message is an assistant prefill,
                                  as for models that do not support one
    context_length                400: the prompt is over the context window
    content_policy                400: refused by the content policy
    fail_first:N                  the first N requests with this fault string fail (500)
    fail_every:N                  flapping: the Nth, 2Nth, ... requests fail (503), the rest pass
    flap:SECONDS                  fail (503) for SECONDS after the first request, then recover
    fail_rate:P;seed:S            fail a deterministic pseudo-random fraction P (500)
    rate_limit:R;rate_window:W    a real request limit: R requests per fixed window of W seconds
                                  (default 60), then 429 until the window resets; every answer
                                  carries the provider's rate-limit headers (see ``ratelimit``)

Requests are counted per fault string. With ``fail_first``/``fail_every``/``flap``/
``fail_rate``, a ``status:N`` item picks the status they fail with instead of the default.
Header and model faults are merged, the model's items last. Pacing headers:
``x-sim-ttft-ms``, ``x-sim-chunk-ms``, ``x-sim-reply-tokens``; ``x-sim-scenario`` names the
request for ``request_count``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FAULT_HEADER = "x-sim-fault"
SCENARIO_HEADER = "x-sim-scenario"
TTFT_HEADER = "x-sim-ttft-ms"
CHUNK_HEADER = "x-sim-chunk-ms"
REPLY_TOKENS_HEADER = "x-sim-reply-tokens"
MODEL_FAULT_MARK = "+fault="

_FLAGS = frozenset(
    {
        "reset",
        "silence",
        "no_final",
        "spaced_json",
        "no_prefill",
        "context_length",
        "content_policy",
    }
)
_INTS = frozenset(
    {
        "status",
        "slow_first",
        "stall_after",
        "cut_after",
        "malformed_after",
        "error_after",
        "fail_first",
        "fail_every",
        "seed",
        "rate_limit",
    }
)
_FLOATS = frozenset({"retry_after", "flap", "fail_rate", "rate_window"})


class ScenarioError(ValueError):
    """A fault or pacing value the simulator cannot understand (answered with a 400)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """The parsed fault of one request; ``key`` is its canonical string, for per-fault counters."""

    key: str = ""
    status: int | None = None
    retry_after: float | None = None
    reset: bool = False
    silence: bool = False
    slow_first_ms: int | None = None
    stall_after: int | None = None
    cut_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    no_final: bool = False
    spaced_json: bool = False
    no_prefill: bool = False
    context_length: bool = False
    content_policy: bool = False
    fail_first: int | None = None
    fail_every: int | None = None
    flap_s: float | None = None
    fail_rate: float | None = None
    seed: int = 0
    rate_limit: int | None = None
    rate_window_s: float = 60.0

    @property
    def conditional(self) -> bool:
        """Whether failing depends on history (``status`` then only picks the code)."""
        return (
            self.fail_first is not None
            or self.fail_every is not None
            or self.flap_s is not None
            or self.fail_rate is not None
        )


NO_FAULT = Fault()


def parse_fault(spec: str) -> Fault:
    """Parse ``name[:value];...`` into a ``Fault``; unknown names are an error, not ignored."""
    values: dict[str, object] = {}
    items: list[str] = []
    for raw in spec.split(";"):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition(":")
        if not sep:
            name, sep, value = item.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if name in _FLAGS:
            values[name] = True
        elif name in _INTS:
            values[name] = _int(name, value)
        elif name in _FLOATS:
            values[name] = _float(name, value)
        else:
            raise ScenarioError(f"unknown sim fault {name!r} in {spec!r}")
        items.append(f"{name}:{value}" if value else name)
    rate = values.get("fail_rate")
    if isinstance(rate, float) and not 0.0 <= rate <= 1.0:
        raise ScenarioError(f"fail_rate must be within [0, 1], got {rate}")
    every = values.get("fail_every")
    if isinstance(every, int) and every < 1:
        raise ScenarioError(f"fail_every must be >= 1, got {every}")
    limit, window = values.get("rate_limit"), values.get("rate_window", 60.0)
    if isinstance(limit, int) and limit < 1:
        raise ScenarioError(f"rate_limit must be >= 1, got {limit}")
    if isinstance(window, float) and not 0 < window < float("inf"):
        raise ScenarioError(f"rate_window must be a positive number of seconds, got {window}")
    status = values.get("status")
    if isinstance(status, int) and not 100 <= status <= 599:
        raise ScenarioError(f"status must be an HTTP status code, got {status}")
    return Fault(
        key=";".join(items),
        status=_opt_int(values.get("status")),
        retry_after=_opt_float(values.get("retry_after")),
        reset=bool(values.get("reset")),
        silence=bool(values.get("silence")),
        slow_first_ms=_opt_int(values.get("slow_first")),
        stall_after=_opt_int(values.get("stall_after")),
        cut_after=_opt_int(values.get("cut_after")),
        malformed_after=_opt_int(values.get("malformed_after")),
        error_after=_opt_int(values.get("error_after")),
        no_final=bool(values.get("no_final")),
        spaced_json=bool(values.get("spaced_json")),
        no_prefill=bool(values.get("no_prefill")),
        context_length=bool(values.get("context_length")),
        content_policy=bool(values.get("content_policy")),
        fail_first=_opt_int(values.get("fail_first")),
        fail_every=_opt_int(values.get("fail_every")),
        flap_s=_opt_float(values.get("flap")),
        fail_rate=_opt_float(values.get("fail_rate")),
        seed=_opt_int(values.get("seed")) or 0,
        rate_limit=_opt_int(values.get("rate_limit")),
        rate_window_s=_opt_float(values.get("rate_window")) or 60.0,
    )


def split_model(model: str) -> tuple[str, str | None]:
    """Split ``name+fault=spec`` into the model name and the fault spec (or None)."""
    base, mark, spec = model.partition(MODEL_FAULT_MARK)
    return (base, spec) if mark else (model, None)


@dataclass(frozen=True, slots=True)
class Pacing:
    """Latency and length of one answer, after constructor defaults and request headers."""

    ttft_ms: float
    chunk_ms: float
    reply_tokens: int


def read_pacing(
    headers: Mapping[str, str], *, ttft_ms: float, chunk_ms: float, reply_tokens: int
) -> Pacing:
    """Apply the ``x-sim-*`` pacing headers (lower-case names) over the defaults."""
    ttft = _header_float(headers, TTFT_HEADER, ttft_ms)
    gap = _header_float(headers, CHUNK_HEADER, chunk_ms)
    raw = headers.get(REPLY_TOKENS_HEADER)
    tokens = reply_tokens if raw is None else _int(REPLY_TOKENS_HEADER, raw)
    if tokens < 1:
        raise ScenarioError(f"{REPLY_TOKENS_HEADER} must be >= 1, got {tokens}")
    return Pacing(ttft_ms=ttft, chunk_ms=gap, reply_tokens=tokens)


def combined_fault(headers: Mapping[str, str], model_spec: str | None) -> Fault:
    """Merge the header's fault items with the model suffix's (the model's come last and win)."""
    parts = [p for p in (headers.get(FAULT_HEADER), model_spec) if p and p.strip()]
    return parse_fault(";".join(parts)) if parts else NO_FAULT


def _header_float(headers: Mapping[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    value = _float(name, raw)
    if value < 0:
        raise ScenarioError(f"{name} must be >= 0, got {value}")
    return value


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ScenarioError(f"sim {name} needs an integer, got {value!r}") from None


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ScenarioError(f"sim {name} needs a number, got {value!r}") from None


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: object) -> float | None:
    return value if isinstance(value, float) else None
