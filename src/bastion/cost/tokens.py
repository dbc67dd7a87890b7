"""Token bounds and estimates from a request body, without a tokenizer on the hot path.

``input_upper_bound`` must never be below the real count, because budgets
reserve against it: every byte-level BPE token (the tokenizers of both
providers) covers at least one UTF-8 byte, so the text's byte length bounds its
tokens, and the serialized body's length bounds the text's. Images are counted
at a fixed ceiling instead of their base64 size. ``estimate`` is the usual
~4 bytes per token, for caps that should not refuse honest traffic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..call import Usage

if TYPE_CHECKING:
    from ..call import Call

IMAGE_TOKEN_CEILING = 6_000  # above either provider's per-image maximum at full resolution
# when a body names no token limit at all: above every current model's output maximum
OUTPUT_CEILING = 200_000
LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
PER_MESSAGE_OVERHEAD = 8  # role and separator tokens around each message
BASE_OVERHEAD = 16
TOOL_CALL_OVERHEAD = 16  # the tokens that frame a tool call around its name and arguments


def _binary_payloads(messages: Iterable[Any]) -> tuple[int, int]:
    """(bytes of inline image/document data, number of image/document parts) in the messages.

    Every part counts at the ceiling, inline or by URL: a 40-byte image URL is thousands of
    tokens.
    """
    size = 0
    count = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            t = part.get("type")
            if t in ("image", "document"):
                src = part.get("source")
                data = src.get("data") if isinstance(src, dict) else None
                if isinstance(data, str):
                    size += len(data)
                count += 1
            elif t in ("image_url", "input_image", "file", "input_file", "input_audio"):
                iu = part.get("image_url")
                url = iu.get("url") if isinstance(iu, dict) else None
                if isinstance(url, str) and url.startswith("data:"):
                    size += len(url)
                count += 1
    return size, count


def input_upper_bound(body: dict[str, Any], body_bytes: int) -> int:
    """A number of input tokens the request cannot exceed (see module docstring)."""
    messages = body.get("messages")
    msgs = messages if isinstance(messages, list) else []
    binary, parts = _binary_payloads(msgs)
    return (
        max(0, body_bytes - binary)
        + parts * IMAGE_TOKEN_CEILING
        + len(msgs) * PER_MESSAGE_OVERHEAD
        + BASE_OVERHEAD
    )


def estimate_input(body: dict[str, Any], body_bytes: int) -> int:
    """A typical-case estimate (about 4 bytes a token) for caps meant to catch runaway prompts."""
    messages = body.get("messages")
    msgs = messages if isinstance(messages, list) else []
    binary, parts = _binary_payloads(msgs)
    return max(0, body_bytes - binary) // 4 + parts * 1_600 + len(msgs) * 4


def output_upper_bound(body: dict[str, Any]) -> int:
    """Output tokens one upstream request may bill: its largest token limit, times ``n``.

    Whichever limit field a provider honours, the largest one present bounds it; a body with
    none gets the ceiling (every call leaves with a limit injected, so that is a bug's bound).
    """
    limits = [
        v for f in LIMIT_FIELDS if isinstance(v := body.get(f), int) and not isinstance(v, bool)
    ]
    nested = body.get("generationConfig")  # Gemini: generationConfig.maxOutputTokens
    if isinstance(nested, dict) and isinstance(v := nested.get("maxOutputTokens"), int):
        limits.append(v)
    out = max(limits) if limits else OUTPUT_CEILING
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return max(out, 0) * choices


def relayed_output_bound(call: Call) -> int:
    """Output tokens the answer relayed so far cannot be under: its UTF-8 bytes (every
    byte-level BPE token covers at least one byte), each tool call's name and arguments with
    its framing. 0 when nothing was relayed."""
    total = sum(len(t.encode("utf-8", "surrogatepass")) for t in call.output_text)
    for tc in call.tool_calls:
        total += len(tc.name.encode("utf-8", "surrogatepass")) + TOOL_CALL_OVERHEAD
        total += len(tc.arguments.encode("utf-8", "surrogatepass"))
    return total


def estimated_usage(call: Call) -> Usage:
    """A conservative usage for an answer whose final usage never came (a stream cut, or
    dropped by its client, before the provider's usage event).

    Input: what the provider already reported (Anthropic's ``message_start``), else the
    admission bound of the request (``input_upper_bound``, what its reservation was priced at).
    Output: the larger of what was reported and ``relayed_output_bound``; the request's output
    limit (``output_upper_bound``) when nothing was relayed to count.
    """
    u = call.usage
    reported_input = u.input_tokens or u.cache_read_tokens or u.cache_write_tokens
    relayed = relayed_output_bound(call)
    return Usage(
        input_tokens=u.input_tokens
        if reported_input
        else input_upper_bound(call.body, call.body_bytes),
        output_tokens=max(u.output_tokens, relayed or output_upper_bound(call.body)),
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
    )
