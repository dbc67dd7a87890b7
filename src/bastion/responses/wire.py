"""The gateway's chat view of a Responses call, on a wire that speaks the Responses API.

Guards judge (and rewrite) the Chat Completions body ``request.to_chat`` made of a Responses
request; the attempt sent to an ``openai`` deployment is then written back as a Responses
request from that guarded body (``request_from_chat``), so every rewrite (PII placeholders,
token-limit clamps, rendered templates) is in the items the provider gets. Its answer is read
back into the chat view the output guards, the meter and the records read
(``chat_from_response`` for a body, ``ChatFromResponses`` for a stream).

``extras`` are the Responses fields a chat body has no room for that change what the provider
does (``truncation``, ``max_tool_calls``) or keep with its answer (``metadata``): they are
copied from the caller's request as sent. Fields asking for output the chat view cannot carry
back (``include``, ``top_logprobs``, ``reasoning.summary``) are not sent: the provider would
be asked, and billed, for what the caller never gets. ``store`` is always false upstream: the gateway answers
``store: false`` and refuses ``previous_response_id``, so nothing is kept at the provider.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequest
from ..providers.sse import SSEDecoder, encode_event
from ..providers.translate._common import as_dict, as_int, as_list, as_str, loads_object

__all__ = [
    "EXTRA_FIELDS",
    "ChatFromResponses",
    "chat_from_response",
    "extras_of",
    "request_from_chat",
]

# Responses request fields with no chat counterpart, sent upstream as the caller gave them
EXTRA_FIELDS = ("metadata", "truncation", "max_tool_calls")
_PLAIN = ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key", "service_tier")
_INCOMPLETE_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}


def extras_of(body: dict[str, Any]) -> dict[str, Any]:
    """What of a Responses request (checked by ``to_chat``) the chat view does not carry."""
    n = body.get("max_tool_calls")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        # checked here, before anything is sent (metadata and truncation: request.to_chat)
        raise InvalidRequest("max_tool_calls: must be a positive integer", param="max_tool_calls")
    return {k: body[k] for k in EXTRA_FIELDS if body.get(k) is not None}


def request_from_chat(chat: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    """A (guarded) chat body as the Responses request to send upstream."""
    out: dict[str, Any] = {"model": chat.get("model")}
    items: list[dict[str, Any]] = []
    messages = [m for m in as_list(chat.get("messages")) if isinstance(m, dict)]
    if (
        messages
        and messages[0].get("role") == "system"
        and isinstance(messages[0].get("content"), str)
        and messages[0]["content"]  # empty instructions are no instructions
    ):
        out["instructions"] = messages[0]["content"]
        messages = messages[1:]
    for m in messages:
        items += _items(m)
    out["input"] = items
    tools = [_tool(t) for t in as_list(chat.get("tools")) if isinstance(t, dict)]
    if tools:
        out["tools"] = tools
    choice = chat.get("tool_choice")
    if isinstance(choice, str):
        out["tool_choice"] = choice
    elif isinstance(choice, dict):
        out["tool_choice"] = {
            "type": "function",
            "name": as_dict(choice.get("function")).get("name"),
        }
    if isinstance(chat.get("parallel_tool_calls"), bool):
        out["parallel_tool_calls"] = chat["parallel_tool_calls"]
    limits = [
        v
        for k in ("max_completion_tokens", "max_tokens")
        if isinstance(v := chat.get(k), int) and not isinstance(v, bool)
    ]
    if limits:
        out["max_output_tokens"] = min(limits)  # a guard may have clamped either field
    for name in _PLAIN:
        if chat.get(name) is not None:
            out[name] = chat[name]
    text: dict[str, Any] = {}
    fmt = as_dict(chat.get("response_format"))
    if fmt.get("type") == "json_object":
        text["format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        text["format"] = {"type": "json_schema", **as_dict(fmt.get("json_schema"))}
    if chat.get("verbosity") is not None:
        text["verbosity"] = chat["verbosity"]
    if text:
        out["text"] = text
    if chat.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": chat["reasoning_effort"]}
    out.update(extras)
    out["store"] = False
    if chat.get("stream") is True:
        out["stream"] = True
    return out


def _items(m: dict[str, Any]) -> list[dict[str, Any]]:
    role = m.get("role")
    content = m.get("content")
    if role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": as_str(m.get("tool_call_id")),
                "output": _text(content),
            }
        ]
    out: list[dict[str, Any]] = []
    if role == "user" and isinstance(content, list):
        parts = [_part(p) for p in content if isinstance(p, dict)]
        out.append({"type": "message", "role": "user", "content": parts})
    elif role != "assistant" or _text(content):  # an empty assistant turn carries nothing
        out.append({"type": "message", "role": role, "content": _text(content)})
    for call in as_list(m.get("tool_calls")):
        fn = as_dict(as_dict(call).get("function"))
        out.append(
            {
                "type": "function_call",
                "call_id": as_str(as_dict(call).get("id")),
                "name": as_str(fn.get("name")),
                "arguments": as_str(fn.get("arguments")),
            }
        )
    return out


def _part(p: dict[str, Any]) -> dict[str, Any]:
    if p.get("type") == "image_url":
        image = as_dict(p.get("image_url"))
        part = {"type": "input_image", "image_url": image.get("url"), "detail": "auto"}
        if isinstance(image.get("detail"), str):
            part["detail"] = image["detail"]
        return part
    return {"type": "input_text", "text": as_str(p.get("text"))}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    return "".join(as_str(as_dict(p).get("text")) for p in as_list(content))


def _tool(t: dict[str, Any]) -> dict[str, Any]:
    fn = as_dict(t.get("function"))
    out: dict[str, Any] = {"type": "function", "name": fn.get("name")}
    for key in ("description", "parameters", "strict"):
        if fn.get(key) is not None:
            out[key] = fn[key]
    return out


# -- the answer ---------------------------------------------------------------------------------


def _chat_usage(usage: object) -> dict[str, Any] | None:
    u = as_dict(usage)
    if not u:
        return None
    inp, out = as_int(u.get("input_tokens")), as_int(u.get("output_tokens"))
    return {
        "prompt_tokens": inp,
        "completion_tokens": out,
        "total_tokens": inp + out,
        "prompt_tokens_details": {
            "cached_tokens": as_int(as_dict(u.get("input_tokens_details")).get("cached_tokens"))
        },
        "completion_tokens_details": {
            "reasoning_tokens": as_int(
                as_dict(u.get("output_tokens_details")).get("reasoning_tokens")
            )
        },
    }


def _finish(response: dict[str, Any], has_calls: bool) -> str:
    if response.get("status") == "incomplete":
        reason = as_str(as_dict(response.get("incomplete_details")).get("reason"))
        return _INCOMPLETE_FINISH.get(reason, "length")
    return "tool_calls" if has_calls else "stop"


def _head(response: dict[str, Any], obj: str) -> dict[str, Any]:
    return {
        "id": as_str(response.get("id")),
        "object": obj,
        "created": as_int(response.get("created_at")),
        "model": as_str(response.get("model")),
    }


def chat_from_response(response: dict[str, Any]) -> dict[str, Any] | None:
    """A Responses ``response`` object as a ``chat.completion``; None for a failed response."""
    if response.get("status") == "failed" or response.get("error"):
        return None
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in as_list(response.get("output")):
        item = as_dict(item)
        if item.get("type") == "message":
            for part in as_list(item.get("content")):
                part = as_dict(part)
                if part.get("type") == "output_text":
                    texts.append(as_str(part.get("text")))
                elif part.get("type") == "refusal":
                    refusals.append(as_str(part.get("refusal")))
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": as_str(item.get("call_id")),
                    "type": "function",
                    "function": {
                        "name": as_str(item.get("name")),
                        "arguments": as_str(item.get("arguments")),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": "".join(refusals) or None,
    }
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "finish_reason": _finish(response, bool(calls))}
    out = {**_head(response, "chat.completion"), "choices": [choice]}
    usage = _chat_usage(response.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def failure_of(response: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI error body a failed response stands for."""
    err = as_dict(response.get("error"))
    return {
        "error": {
            "message": as_str(err.get("message")) or "the response failed upstream",
            "type": "server_error",
            "param": None,
            "code": err.get("code"),
        }
    }


class ChatFromResponses:
    """Reads a Responses event stream (bytes, any split) as Chat Completions SSE chunks.

    Text deltas become content chunks, function call items tool call chunks (index by order),
    the terminal event a finish chunk, a usage chunk and ``[DONE]``; ``error`` and
    ``response.failed`` become OpenAI's in-band error chunk. Lifecycle events with nothing
    for the chat view (``content_part.*``, ``*.done``, reasoning) are read and dropped.
    """

    __slots__ = ("_calls", "_decoder", "_ended", "_head", "_started")

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._head: dict[str, Any] = {"id": "", "object": "chat.completion.chunk"}
        self._calls: dict[str, int] = {}  # function call item id -> tool call index
        self._started = False
        self._ended = False

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        for ev in self._decoder.feed(chunk):
            if self._ended:
                break
            data = loads_object(ev.data)
            if data is None:
                continue
            out += self._event(as_str(data.get("type")) or (ev.event or ""), data)
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return encode_event(orjson.dumps({**self._head, "choices": [choice]}))

    def _event(self, kind: str, data: dict[str, Any]) -> list[bytes]:
        if kind == "response.created":
            response = as_dict(data.get("response"))
            self._head = _head(response, "chat.completion.chunk")
            self._started = True
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "response.output_text.delta":
            text = as_str(data.get("delta"))
            return [self._chunk({"content": text})] if text else []
        if kind == "response.refusal.delta":
            text = as_str(data.get("delta"))
            return [self._chunk({"refusal": text})] if text else []
        if kind == "response.output_item.added":
            item = as_dict(data.get("item"))
            if item.get("type") != "function_call":
                return []
            index = self._calls[as_str(item.get("id"))] = len(self._calls)
            call = {
                "index": index,
                "id": as_str(item.get("call_id")),
                "type": "function",
                "function": {"name": as_str(item.get("name")), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "response.function_call_arguments.delta":
            at = self._calls.get(as_str(data.get("item_id")))
            delta = as_str(data.get("delta"))
            if at is None or not delta:
                return []
            return [self._chunk({"tool_calls": [{"index": at, "function": {"arguments": delta}}]})]
        if kind in ("response.completed", "response.incomplete"):
            self._ended = True
            response = as_dict(data.get("response"))
            out = [self._chunk({}, _finish(response, bool(self._calls)))]
            usage = _chat_usage(response.get("usage"))
            if usage is not None:
                out.append(
                    encode_event(orjson.dumps({**self._head, "choices": [], "usage": usage}))
                )
            return [*out, encode_event(b"[DONE]")]
        if kind in ("error", "response.failed"):
            self._ended = True
            if kind == "error":
                err = {
                    "error": {
                        "message": as_str(data.get("message")) or "upstream stream error",
                        "type": "server_error",
                        "param": data.get("param"),
                        "code": data.get("code"),
                    }
                }
            else:
                err = failure_of(as_dict(data.get("response")))
            return [encode_event(orjson.dumps(err))]
        return []
