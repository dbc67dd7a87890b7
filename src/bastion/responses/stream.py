"""The gateway's Chat Completions stream as the Responses API's event sequence.

Chunks are parsed by the chat stream parser the translation layer already has (tool call
deltas, in-band errors, finish reasons), and written as OpenAI documents the sequence:
``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` → (``response.content_part.added`` →
``response.output_text.delta``… → ``response.output_text.done`` →
``response.content_part.done``) or ``response.function_call_arguments.delta``… →
``response.function_call_arguments.done`` → ``response.output_item.done``, and last
``response.completed`` (``response.incomplete`` when the token limit or a content filter
ended it). Every event carries ``sequence_number``, from 0.

A stream never lies: an in-band error from the gateway, or a chat stream that ends without
its ``[DONE]``, becomes an ``error`` event followed by ``response.failed`` — never a
``response.completed`` of a truncated answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..providers.sse import SSEDecoder, encode_event
from ..providers.translate._common import loads_object
from ..providers.translate._stream_openai import OpenAIStreamParser
from ..providers.translate.model import (
    ErrorKind,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamFinish,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from . import response as R

CUT_MESSAGE = "the stream ended before the response was complete"
_STOP_TO_FINISH = {StopReason.MAX_TOKENS: "length", StopReason.REFUSAL: "content_filter"}
_ERROR_CODES = {ErrorKind.RATE_LIMIT: "rate_limit_exceeded"}


class _Item:
    """One output item being streamed: a message with one text part, or a function call."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "status", "text")

    def __init__(self, kind: str, item_id: str, index: int, call_id: str = "", name: str = ""):
        self.kind = kind
        self.id = item_id
        self.index = index
        self.call_id = call_id
        self.name = name
        self.text = ""  # answer text, or the arguments so far
        self.status = "in_progress"  # until its output_item.done: completed or incomplete

    def as_item(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            return R.message_item(self.id, [R.text_part(self.text)], status)
        return R.call_item(self.id, self.call_id, self.name, self.text, status)


class ResponsesEmitter:
    """Turns chat SSE chunks into Responses SSE events; one instance per response."""

    def __init__(self, resp_id: str, echo: dict[str, Any], *, created_at: int) -> None:
        self._id = resp_id
        self._echo = echo
        self._created = created_at
        self._parser = OpenAIStreamParser()
        self._decoder = SSEDecoder()
        self._seq = 0
        self._started = False
        self._ended = False
        self._items: list[_Item] = []
        self._open: _Item | None = None
        self._calls: dict[int, _Item] = {}  # tool key -> its item
        self._messages = 0
        self._stop: StopReason | None = None
        self._usage: dict[str, Any] | None = None
        self._model: str | None = None

    @property
    def ended(self) -> bool:
        """Whether a terminal event (completed, incomplete or failed) was written."""
        return self._ended

    def feed(self, chunk: bytes) -> list[bytes]:
        """Translate one piece of the chat stream (any split) into zero or more events."""
        out: list[bytes] = []
        for ev in self._decoder.feed(chunk):
            if self._ended:
                break
            # only the first chunk (id, model, time) and usage chunks are read here; the
            # parser reads every chunk for text, tool calls, finish and errors
            wanted = not self._started or b'"usage":{' in ev.data or b'"usage": {' in ev.data
            data = loads_object(ev.data) if wanted and ev.data.strip() != b"[DONE]" else None
            if data is not None:
                self._model = self._model or (data.get("model") or None)
                created = data.get("created")
                if not self._started and isinstance(created, int) and created > 0:
                    self._created = created  # the answer's own time: a replay keeps it
                if isinstance(data.get("usage"), dict):
                    self._usage = R.usage(data["usage"])
            out += self._start()
            for parsed in self._parser.parse(ev):
                out += self._event(parsed)
        return out

    def finish(self) -> list[bytes]:
        """End of the chat stream: nothing if a terminal event went out, else a failure."""
        if self._ended:
            return []
        return [*self._start(), *self._fail("server_error", CUT_MESSAGE)]

    # -- events ----------------------------------------------------------------------------

    def _emit(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return encode_event(orjson.dumps(data), kind)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return R.build(
            self._id,
            self._echo,
            created_at=self._created,
            status=status,
            output=[i.as_item(_settled(i.status)) for i in self._items]
            if status != "in_progress"
            else [],
            model=self._model,
            **extra,
        )

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [
            self._emit("response.created", {"response": self._response("in_progress")}),
            self._emit("response.in_progress", {"response": self._response("in_progress")}),
        ]

    def _event(self, ev: StreamEvent) -> list[bytes]:
        if isinstance(ev, TextDelta):
            return self._text(ev.text) if ev.text else []
        if isinstance(ev, ToolCallStart):
            return self._call_start(ev)
        if isinstance(ev, ToolCallDelta):
            return self._call_delta(ev)
        if isinstance(ev, StreamFinish):
            self._stop = ev.stop_reason
        elif isinstance(ev, StreamEnd):
            return self._complete()
        elif isinstance(ev, StreamError):
            return self._fail(_ERROR_CODES.get(ev.kind, "server_error"), ev.message)
        return []

    def _open_item(self, item: _Item) -> list[bytes]:
        out = self._close_open()
        self._items.append(item)
        self._open = item
        added = item.as_item("in_progress")
        if item.kind == "message":
            added["content"] = []  # as documented: its part comes with content_part.added
        out.append(
            self._emit("response.output_item.added", {"output_index": item.index, "item": added})
        )
        if item.kind == "message":
            out.append(
                self._emit(
                    "response.content_part.added",
                    {
                        "item_id": item.id,
                        "output_index": item.index,
                        "content_index": 0,
                        "part": R.text_part(""),
                    },
                )
            )
        return out

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        item = self._open
        if item is None or item.kind != "message":
            item = _Item("message", R.message_item_id(self._id, self._messages), len(self._items))
            self._messages += 1
            out += self._open_item(item)
        item.text += text
        out.append(
            self._emit(
                "response.output_text.delta",
                {
                    "item_id": item.id,
                    "output_index": item.index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
            )
        )
        return out

    def _call_start(self, ev: ToolCallStart) -> list[bytes]:
        item = _Item(
            "function_call",
            R.call_item_id(self._id, len(self._calls)),
            len(self._items),
            call_id=ev.id,
            name=ev.name,
        )
        self._calls[ev.key] = item
        return self._open_item(item)

    def _call_delta(self, ev: ToolCallDelta) -> list[bytes]:
        item = self._calls.get(ev.key)
        if item is None or not ev.arguments:
            return []
        item.text += ev.arguments
        return [
            self._emit(
                "response.function_call_arguments.delta",
                {"item_id": item.id, "output_index": item.index, "delta": ev.arguments},
            )
        ]

    def _close_open(self, status: str = "completed") -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        item.status = status
        out: list[bytes] = []
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            out.append(
                self._emit(
                    "response.output_text.done",
                    {**where, "content_index": 0, "text": item.text, "logprobs": []},
                )
            )
            out.append(
                self._emit(
                    "response.content_part.done",
                    {**where, "content_index": 0, "part": R.text_part(item.text)},
                )
            )
        else:
            out.append(
                self._emit(
                    "response.function_call_arguments.done",
                    {**where, "name": item.name, "arguments": item.text},
                )
            )
        out.append(
            self._emit(
                "response.output_item.done",
                {"output_index": item.index, "item": item.as_item(status)},
            )
        )
        return out

    def _complete(self) -> list[bytes]:
        status, details = R.status_of(_STOP_TO_FINISH.get(self._stop) if self._stop else None)
        out = self._close_open("completed" if status == "completed" else "incomplete")
        self._ended = True
        now = int(time.time())
        final = self._response(
            status,
            usage=self._usage,
            incomplete_details=details,
            completed_at=now if status == "completed" else None,
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._emit(kind, {"response": final}))
        return out

    def _fail(self, code: str, message: str) -> list[bytes]:
        self._ended = True
        self._open = None  # an item cut short is never "done": it stays incomplete
        error = {"code": code, "message": message}
        return [
            self._emit("error", {"code": code, "message": message, "param": None}),
            self._emit(
                "response.failed",
                {"response": self._response("failed", error=error, usage=self._usage)},
            ),
        ]


def _settled(status: str) -> str:
    """An item's status in a terminal response: one never finished is incomplete."""
    return "incomplete" if status == "in_progress" else status


class ResponsesStream:
    """An async iterator of Responses SSE bytes over the gateway's chat stream.

    A class, not a generator, so ``aclose`` always reaches the chat stream (its cleanup settles
    the budget and writes the record), even if this was never iterated. Each read yields the
    events one chat chunk produced, in one write.
    """

    def __init__(self, inner: AsyncIterator[bytes], emitter: ResponsesEmitter) -> None:
        self._inner = inner
        self._emitter = emitter
        self._done = False

    def __aiter__(self) -> ResponsesStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            try:
                chunk = await anext(self._inner)
            except StopAsyncIteration:
                self._done = True
                tail = self._emitter.finish()
                if tail:
                    return b"".join(tail)
                break
            out = self._emitter.feed(chunk)
            if out:
                return b"".join(out)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._done = True
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()
