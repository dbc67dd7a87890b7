"""A call's prompt and answer as the OTel GenAI content attributes: scrubbed, bounded, valid JSON.

``gen_ai.input.messages``, ``gen_ai.output.messages`` and ``gen_ai.system_instructions`` are
JSON strings (the Python SDK takes no structured attribute values) in the conventions' parts
structure (semconv 1.41: ``gen-ai-input-messages.json`` and its siblings)::

    [{"role": "user", "parts": [{"type": "text", "content": "..."}]}]

Nothing raw is written: every string a person or a model wrote (message text, tool arguments
and results, numbers inside tool arguments) passes through the gateway's PII scrubber before it
is kept. Each text is scrubbed whole up to the attribute's bound; a longer one is cut first,
with a margin dropped from the scrubbed end so a card number or address split by the cut can
never survive half-visible. The attribute then fits its bound as whole JSON: the oldest
messages go first, then long texts are shortened. Media is named by its kind, never inlined.
A conversation resends its history every turn, so scrubbed texts are remembered by digest
(bounded, least recently used out; the raw text is never kept): only new messages cost a
scrub (``bench/otel_content.py``: 2.1 ms a call instead of 13.9 ms over 20-turn conversations).
Which piece of a request is text, a tool call or a tool result is the client dialect's to say
(``Dialect.trace_messages``); this module builds and scrubs the parts and knows no format.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import orjson

from ..call import Call

__all__ = ["ContentCapture", "finish_reason"]

Scrub = Callable[[str], str]

# the conventions' FinishReason values for each provider's own (both formats map alike)
FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "stop": "stop",
    "max_tokens": "length",
    "length": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_call",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "refusal": "content_filter",
    "content_filter": "content_filter",
}
# a PII item is far shorter than this: what a pre-cut may have split lies within it of the end
_CUT_MARGIN: Final = 512
_ELLIPSIS: Final = "…"
_MIN_TEXT: Final = 32
# scrubbed texts kept by digest (never the raw text): a conversation resends its whole history
# each turn, and only its new messages need the scrubber
_MEMO_ITEMS: Final = 4096
_MEDIA: Final[Mapping[str, str]] = {
    "image": "image",
    "image_url": "image",
    "input_audio": "audio",
    "audio": "audio",
    "document": "file",
    "file": "file",
}


def finish_reason(raw: str | None, *, failed: bool) -> str:
    """The conventions' finish reason: ``error`` for a call that failed or was cut, else the
    provider's reason mapped (unknown ones as they are); an answer Bastion served without a
    provider's reason (the degraded message, an idempotent replay) ended normally: ``stop``."""
    if failed:
        return "error"
    if raw is None:
        return "stop"
    return FINISH_REASONS.get(raw, raw)


class ContentCapture:
    """Builds the three content attributes of one call with one scrubber and one bound."""

    def __init__(self, scrub: Scrub, max_chars: int, *, memo_items: int = _MEMO_ITEMS) -> None:
        if max_chars < 2 * _MIN_TEXT:
            raise ValueError("content max_chars is too small to hold a message")
        self._raw_scrub = scrub
        self._max = max_chars
        self._memo: OrderedDict[bytes, str] = OrderedDict()
        self._memo_items = memo_items
        self._lock = threading.Lock()  # spans are built on worker threads

    def _scrub(self, text: str) -> str:
        """The scrubber's answer, remembered by the text's digest (least recently used out)."""
        if len(text) < _MIN_TEXT:
            return self._raw_scrub(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                return hit
        safe = self._raw_scrub(text)
        with self._lock:
            self._memo[key] = safe
            if len(self._memo) > self._memo_items:
                self._memo.popitem(last=False)
        return safe

    def attributes(self, call: Call, finish: str, *, failed: bool) -> dict[str, Any]:
        """The content attributes of the call (absent when there is nothing to say)."""
        # the client's dialect says what each piece of its messages is; this builds the parts
        system = call.dialect.trace_system(call.body, self)
        messages = self._fitting(call.dialect.trace_messages(call.body, self))
        attrs: dict[str, Any] = {}
        cut = False
        if messages:
            text, trimmed = fit(messages, self._max)
            attrs["gen_ai.input.messages"] = text
            cut |= trimmed
        if system:
            text, trimmed = fit(system, self._max, drop_oldest=False)
            attrs["gen_ai.system_instructions"] = text
            cut |= trimmed
        answer = "".join(call.output_text)
        if answer or call.tool_calls or not failed:
            parts = [self.text(answer)] if answer else []
            parts += [
                self.tool_call(t.id, t.name, _arguments(t.arguments)) for t in call.tool_calls
            ]
            out = [{"role": "assistant", "parts": parts, "finish_reason": finish}]
            text, trimmed = fit(out, self._max)
            attrs["gen_ai.output.messages"] = text
            cut |= trimmed
        if cut:
            attrs["bastion.content_truncated"] = True
        return attrs

    # -- scrubbing ------------------------------------------------------------------------

    def clip(self, text: str) -> str:
        """Scrubbed, and at most the bound (plus an ellipsis) long."""
        limit = self._max
        if len(text) <= limit + _CUT_MARGIN:
            safe = self._scrub(text)
            return safe if len(safe) <= limit else safe[:limit] + _ELLIPSIS
        safe = self._scrub(text[: limit + _CUT_MARGIN])
        return safe[: max(0, min(limit, len(safe) - _CUT_MARGIN))] + _ELLIPSIS

    def value(self, v: Any) -> Any:
        """A tool argument or result, every string and number in it scrubbed."""
        if isinstance(v, str):
            return self.clip(v)
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int | float):
            s = str(v)
            safe = self._scrub(s)
            fits = not isinstance(v, int) or -(2**63) <= v < 2**64  # what JSON output can hold
            return v if safe == s and fits else safe
        if isinstance(v, Mapping):
            return {self._scrub(str(k)): self.value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        return self.clip(str(v))

    # -- the conventions' parts (``TraceParts``: the dialect names each piece) ------------------

    def text(self, text: str) -> dict[str, Any]:
        return {"type": "text", "content": self.clip(text)}

    def reasoning(self, text: str) -> dict[str, Any]:
        return {"type": "reasoning", "content": self.clip(text)}

    def tool_call(self, id_: str, name: str, arguments: Any) -> dict[str, Any]:
        return {"type": "tool_call", "id": id_, "name": name, "arguments": self.value(arguments)}

    def tool_result(self, id_: str, response: Any) -> dict[str, Any]:
        return {"type": "tool_call_response", "id": id_, "response": self.value(response)}

    def media(self, kind: Any) -> dict[str, Any]:
        """A part Bastion does not inline (images, audio, files, unknown kinds), named by its kind."""
        name = kind if isinstance(kind, str) and kind else "unknown"
        modality = _MEDIA.get(name)
        return {"type": name, "modality": modality} if modality else {"type": name}

    def _fitting(self, newest_first: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
        """Messages in the order sent, converted newest first and only while they can fit."""
        kept: list[dict[str, Any]] = []
        size = 0
        for msg in newest_first:
            kept.append(msg)
            size += len(_dumps(msg))
            if size > self._max:  # older ones would be dropped by ``fit``: not scrubbed for nothing
                break
        kept.reverse()
        return kept


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def _arguments(raw: Any) -> Any:
    """Tool arguments as an object where the model sent parseable JSON (the conventions ask it)."""
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _shorten(v: Any, cap: int) -> Any:
    """Every string longer than ``cap`` cut to it (keys and structure kept)."""
    if isinstance(v, str):
        return v if len(v) <= cap else v[:cap] + _ELLIPSIS
    if isinstance(v, dict):
        return {k: _shorten(x, cap) for k, x in v.items()}
    if isinstance(v, list):
        return [_shorten(x, cap) for x in v]
    return v


def fit(items: list[dict[str, Any]], limit: int, *, drop_oldest: bool = True) -> tuple[str, bool]:
    """``items`` as JSON of at most ``limit`` characters, and whether anything was cut.

    The oldest items go first (the last one stays), then every long string is shortened by
    halves; what still does not fit loses its earliest items, down to ``[]``.
    """
    text = _dumps(items)
    if len(text) <= limit:
        return text, False
    kept = list(items)
    while drop_oldest and len(kept) > 1:
        kept.pop(0)
        text = _dumps(kept)
        if len(text) <= limit:
            return text, True
    cap = limit
    while cap >= _MIN_TEXT:
        text = _dumps(_shorten(kept, cap))
        if len(text) <= limit:
            return text, True
        cap //= 2
    shortened = _shorten(kept, _MIN_TEXT)
    while shortened:
        shortened.pop(0)
        text = _dumps(shortened)
        if len(text) <= limit:
            return text, True
    return "[]", True
