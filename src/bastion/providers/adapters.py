"""Provider adapters: how a body in a provider's format becomes an ``UpstreamRequest``,
and how its answers are read for usage, stop and errors.

Adapters never re-shape content; translation between formats lives in
``translate`` and happens only when the client's format differs from the provider's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..call import Usage
from . import azure, bedrock, gemini
from .base import Format, UpstreamRequest

ANTHROPIC_VERSION = "2023-06-01"
# live drills (server.drill_headers): pacing a simulated deployment may be asked for, and the
# header naming the deployment ("provider/model", "*" for all) whose simulator should fail
DRILL_PACING = ("x-sim-ttft-ms", "x-sim-chunk-ms", "x-sim-reply-tokens")
DRILL_FAIL = "x-bastion-drill-fail"


def drill_passthrough(headers: Mapping[str, str]) -> dict[str, str]:
    """The drill headers a client sent, to be carried to simulated deployments only."""
    return {h: v for h in (*DRILL_PACING, DRILL_FAIL) if (v := headers.get(h))}


def _sim_drill(passthrough: Mapping[str, str], target: str) -> dict[str, str]:
    """Simulator headers for a drill: the pacing asked for, a 500 when this deployment is named."""
    out = {h: passthrough[h] for h in DRILL_PACING if h in passthrough}
    fail = passthrough.get(DRILL_FAIL)
    if fail is not None and fail.split("#", 1)[0].strip() in ("*", target):
        out["x-sim-fault"] = "status:500"
    return out


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A provider endpoint, resolved at start-up (URL, format, auth headers)."""

    name: str
    kind: str
    formats: tuple[Format, ...]
    base_url: str
    api_key: str | None
    headers: Mapping[str, str]

    def speaks(self, client: Format) -> Format:
        """The format to send in: the client's own when the provider speaks it (no translation)."""
        return client if client in self.formats else self.formats[0]

    def build(
        self,
        body: dict[str, Any],
        fmt: Format,
        *,
        stream: bool,
        extra_headers: Mapping[str, str],
        passthrough: Mapping[str, str],
    ) -> UpstreamRequest:
        headers: dict[str, str] = {"content-type": "application/json", **self.headers}
        if self.kind == "bedrock":  # Converse: translated and signed there (providers/bedrock.py)
            headers.update(extra_headers)
            return bedrock.build_request(self.base_url, body, headers, stream=stream)
        if fmt is Format.ANTHROPIC:
            url = self.base_url + "/v1/messages"
            headers["anthropic-version"] = passthrough.get("anthropic-version", ANTHROPIC_VERSION)
            beta = passthrough.get("anthropic-beta")
            if beta:
                headers["anthropic-beta"] = beta
            if self.api_key:
                headers["x-api-key"] = self.api_key
        elif fmt is Format.GEMINI:
            url = gemini.url(self.base_url, body.get("model"), stream=stream)
            body = gemini.body(body)
            if self.api_key:
                headers["x-goog-api-key"] = self.api_key
        elif self.kind == "azure-openai":
            url = azure.chat_url(self.base_url, body.get("model"))
            headers.update(azure.auth_headers(self.api_key))
        else:
            url = self.base_url + (
                "/v1/chat/completions" if self.kind == "sim" else "/chat/completions"
            )
            if self.api_key:
                headers["authorization"] = "Bearer " + self.api_key
        tp = passthrough.get("traceparent")
        if tp:
            headers["traceparent"] = tp
        if stream:
            headers["accept"] = "text/event-stream"
        headers.update(extra_headers)
        if self.kind == "sim":
            headers.update(_sim_drill(passthrough, f"{self.name}/{body.get('model')}"))
        return UpstreamRequest("POST", url, headers, orjson.dumps(body), stream)


def endpoint_formats(kind: str) -> tuple[Format, ...]:
    """What a provider kind speaks natively; the simulator speaks both."""
    if kind == "sim":
        return (Format.ANTHROPIC, Format.OPENAI)
    if kind == "bedrock":  # Anthropic toward the gateway; Converse on the wire (bedrock.py)
        return (Format.ANTHROPIC,)
    if kind == "gemini":
        return (Format.GEMINI,)
    return (Format.ANTHROPIC,) if kind == "anthropic" else (Format.OPENAI,)


def usage_from_anthropic(u: Mapping[str, Any], into: Usage) -> None:
    """Anthropic usage: message_start carries input and cache tokens, message_delta the final output."""
    v = u.get("input_tokens")
    if isinstance(v, int) and v:
        into.input_tokens = v
    v = u.get("output_tokens")
    if isinstance(v, int):
        into.output_tokens = max(into.output_tokens, v)
    v = u.get("cache_read_input_tokens")
    if isinstance(v, int) and v:
        into.cache_read_tokens = v
    v = u.get("cache_creation_input_tokens")
    if isinstance(v, int) and v:
        into.cache_write_tokens = v


def usage_from_openai(u: Mapping[str, Any], into: Usage) -> None:
    """OpenAI usage: prompt_tokens includes cached tokens; we keep input exclusive of cache reads."""
    prompt = u.get("prompt_tokens")
    cached = 0
    details = u.get("prompt_tokens_details")
    if isinstance(details, Mapping):
        c = details.get("cached_tokens")
        if isinstance(c, int):
            cached = c
    if isinstance(prompt, int):
        into.input_tokens = max(0, prompt - cached)
        into.cache_read_tokens = cached
    out = u.get("completion_tokens")
    if isinstance(out, int):
        into.output_tokens = out


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asked us to wait (``retry-after``, ``retry-after-ms``)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return float(ra)
        except ValueError:
            return None
    return None
