"""The simulator's Responses API answers: the ``response`` object and its event stream.

Written from OpenAI's API reference for ``POST /v1/responses`` (the Response object and the
"Streaming events" page) and checked against the ``openai`` SDK's ``openai.types.responses``
models; it reads only the simulator's own Chat Completions answer, whose shape
``openai_wire`` writes, and shares nothing with the gateway's Responses code, so a mistake
there is not mirrored here.

A body: ``{id, object: "response", created_at, status, ..., output, usage}``, the request's
settings echoed around the answer; ``output`` holds a ``message`` item (one ``output_text``
part) when there is text, then one ``function_call`` item per call. ``status`` is
``completed``, or ``incomplete`` with ``incomplete_details.reason: "max_output_tokens"`` when
the token limit ended the answer.

A stream, every event with ``sequence_number`` from 0 and an ``event:`` line naming its type:
``response.created`` and ``response.in_progress`` (status ``in_progress``, no output), then per
item ``response.output_item.added`` (a message with ``content: []``, or a call with empty
``arguments``), for a message ``response.content_part.added``, ``response.output_text.delta``…,
``response.output_text.done``, ``response.content_part.done``, for a call
``response.function_call_arguments.delta``…, ``response.function_call_arguments.done``, then
``response.output_item.done``; last ``response.completed`` (or ``response.incomplete``) with the
whole response and its usage. The chat stream's in-band error becomes an ``error`` event and
``response.failed``; a chat stream that ends without ``[DONE]`` (the ``no_final`` fault) ends
this one without its terminal event; a malformed chat event becomes a malformed event here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..sse import SSEDecoder, encode_event

__all__ = ["EventWriter", "response_body"]

# chat finish reasons that end a response early, as incomplete_details.reason
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_MALFORMED = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"\n\n'
)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(item_id: str, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": parts,
    }


def _call(item_id: str, status: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _usage(chat_usage: Any) -> dict[str, Any] | None:
    """Chat usage as Responses usage: ``input_tokens`` counts the cached ones too."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = chat_usage.get("prompt_tokens_details") or {}
    completion = chat_usage.get("completion_tokens_details") or {}
    inp = int(chat_usage.get("prompt_tokens") or 0)
    out = int(chat_usage.get("completion_tokens") or 0)
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": int(prompt.get("cached_tokens") or 0),
            "cache_write_tokens": 0,  # OpenAI's prompt cache writes for free
        },
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": int(completion.get("reasoning_tokens") or 0)},
        "total_tokens": inp + out,
    }


def _response(
    resp_id: str,
    echo: dict[str, Any],
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    *,
    model: str | None = None,
    usage: dict[str, Any] | None = None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        **echo,
        "model": model or echo["model"],
        "output": output,
        "usage": usage,
    }


def response_body(chat: dict[str, Any], resp_id: str, echo: dict[str, Any], created: int) -> bytes:
    """A ``chat.completion`` body (the simulator's own) as a ``response`` object."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    incomplete = _INCOMPLETE.get(str(choice.get("finish_reason")))
    status = "incomplete" if incomplete else "completed"
    output: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(_message(_item_id("msg"), status, [_text_part(text)]))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(
            _call(
                _item_id("fc"),
                "completed",
                call.get("id", ""),
                fn.get("name", ""),
                fn.get("arguments", ""),
            )
        )
    obj = _response(
        resp_id,
        echo,
        created,
        status,
        output,
        model=chat.get("model"),
        usage=_usage(chat.get("usage")),
        incomplete=incomplete,
    )
    return orjson.dumps(obj)


class EventWriter:
    """The simulator's chat stream (its SSE bytes) as the Responses event stream."""

    def __init__(self, resp_id: str, echo: dict[str, Any], created: int) -> None:
        self._id = resp_id
        self._echo = echo
        self._created = created
        self._seq = 0
        self._model: str | None = None
        self._items: list[dict[str, Any]] = []  # every item so far, as it stands
        self._open: dict[str, Any] | None = None  # the item still streaming
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool call index -> item
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self.ended = False

    async def events(self, chat: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Each chat chunk's events, in one write; a cut (``SimCut``) passes through."""
        decoder = SSEDecoder()
        async for raw in chat:
            out: list[bytes] = []
            for ev in decoder.feed(raw):
                if not self.ended:
                    out += self._read(ev.data)
            if out:
                yield b"".join(out)

    def _emit(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return encode_event(orjson.dumps(data), kind)

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        output = [] if status == "in_progress" else self._items  # written out at once
        return _response(
            self._id, self._echo, self._created, status, output, model=self._model, **extra
        )

    def _read(self, data: bytes) -> list[bytes]:
        if data.strip() == b"[DONE]":
            return self._complete()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return [_MALFORMED]  # a malformed chat event stays malformed
        if not isinstance(chunk, dict):
            return [_MALFORMED]
        out: list[bytes] = []
        if self._seq == 0:
            self._model = chunk.get("model") or None
            start = self._snapshot("in_progress")
            out.append(self._emit("response.created", {"response": start}))
            out.append(self._emit("response.in_progress", {"response": start}))
        if isinstance(chunk.get("error"), dict):
            return out + self._fail(chunk["error"])
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._text(delta["content"])
            for tc in delta.get("tool_calls") or []:
                out += self._tool(tc)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _add(self, item: dict[str, Any]) -> list[bytes]:
        out = self._close("completed")
        self._items.append(item)
        self._open = item
        index = len(self._items) - 1
        added = {**item, "content": []} if item["type"] == "message" else item
        out.append(self._emit("response.output_item.added", {"output_index": index, "item": added}))
        if item["type"] == "message":
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(self._emit("response.content_part.added", {**where, "part": _text_part("")}))
        return out

    def _text(self, piece: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open is None or self._open["type"] != "message":
            out += self._add(_message(_item_id("msg"), "in_progress", [_text_part("")]))
        item = self._open
        assert item is not None
        item["content"][0]["text"] += piece
        where = {"item_id": item["id"], "output_index": len(self._items) - 1, "content_index": 0}
        out.append(
            self._emit("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
        )
        return out

    def _tool(self, tc: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = tc.get("index", 0)
        fn = tc.get("function") or {}
        if index not in self._calls:
            item = _call(_item_id("fc"), "in_progress", tc.get("id", ""), fn.get("name", ""), "")
            self._calls[index] = item
            out += self._add(item)
        item = self._calls[index]
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece
            at = self._items.index(item)
            out.append(
                self._emit(
                    "response.function_call_arguments.delta",
                    {"item_id": item["id"], "output_index": at, "delta": piece},
                )
            )
        return out

    def _close(self, status: str) -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        item["status"] = status
        index = self._items.index(item)
        where = {"item_id": item["id"], "output_index": index}
        out: list[bytes] = []
        if item["type"] == "message":
            text = item["content"][0]["text"]
            out.append(
                self._emit(
                    "response.output_text.done",
                    {**where, "content_index": 0, "text": text, "logprobs": []},
                )
            )
            out.append(
                self._emit(
                    "response.content_part.done",
                    {**where, "content_index": 0, "part": _text_part(text)},
                )
            )
        else:
            out.append(
                self._emit(
                    "response.function_call_arguments.done",
                    {**where, "arguments": item["arguments"]},
                )
            )
        out.append(self._emit("response.output_item.done", {"output_index": index, "item": item}))
        return out

    def _complete(self) -> list[bytes]:
        incomplete = _INCOMPLETE.get(str(self._finish))
        status = "incomplete" if incomplete else "completed"
        out = self._close("incomplete" if incomplete else "completed")
        self.ended = True
        final = self._snapshot(status, usage=self._usage, incomplete=incomplete)
        kind = "response.incomplete" if incomplete else "response.completed"
        return [*out, self._emit(kind, {"response": final})]

    def _fail(self, err: dict[str, Any]) -> list[bytes]:
        self.ended = True
        if self._open is not None:
            self._open["status"] = "incomplete"  # cut short: never done
            self._open = None
        code = "rate_limit_exceeded" if err.get("code") == "rate_limit_exceeded" else "server_error"
        message = str(err.get("message") or "The server had an error processing your request.")
        failed = self._snapshot("failed", error={"code": code, "message": message})
        return [
            self._emit("error", {"code": code, "message": message, "param": None}),
            self._emit("response.failed", {"response": failed}),
        ]
