"""Reading a provider's answer for what the call must know: text, tool calls, usage, the end.

A streamed answer is read event by event (``StreamWatcher``), a whole one at once
(``observe_body``); both fill the same fields of the call, so a trace or a record cannot tell
how the answer came.

A ``StreamWatcher`` observes one provider format's events and never changes them. It
is also where a stream's health is judged: an event whose data is not the JSON its
format promises raises ``MalformedEvent`` (the relay skips it and goes on), and an
OpenAI-compatible stream that sent its ``finish_reason`` and usage but closed without
``data: [DONE]`` is recognised as complete (``ended_cleanly``), not as a cut.
"""

from __future__ import annotations

from typing import Any

import orjson

from .call import Call, ToolCallOut, Usage
from .output import MalformedEvent
from .providers.adapters import usage_from_anthropic, usage_from_openai
from .providers.base import Format
from .providers.sse import SSEEvent

__all__ = ["MalformedEvent", "StreamWatcher", "observe_body"]


class StreamWatcher:
    """Observes one provider format's events; ``observe`` says whether one carried model output.

    ``text`` receives the answer's text (the call's own list, unless a recovery decides
    what of a fallback's text reaches the client).
    """

    __slots__ = (
        "_call",
        "_final",
        "_tools",
        "_usage_seen",
        "errored",
        "finished",
        "fmt",
        "stop_reason",
        "text",
        "text_only",
    )

    def __init__(self, call: Call, fmt: Format, text: list[str] | None = None) -> None:
        self._call = call
        self.fmt = fmt
        self.text = call.output_text if text is None else text
        self.finished = False
        self.errored = False
        self.stop_reason: str | None = None
        # one text answer so far (no tool call, second block or choice): it can be carried on
        self.text_only = True
        self._final = False  # an OpenAI finish_reason was seen
        self._usage_seen = False
        self._tools: dict[int, ToolCallOut] = {}  # by block (or tool call) index

    def adopt(self, call: Call) -> None:
        """Write into the winning call from now on (hedged attempts run on shadows)."""
        self._call = call
        self.text = call.output_text

    @property
    def ended_cleanly(self) -> bool:
        """The body ended without ``[DONE]`` after a finish_reason and the usage chunk.

        Bastion always asks OpenAI-format upstreams for usage, so those two are the whole
        answer; some compatible servers just close the connection instead of saying done.
        """
        return self.fmt is Format.OPENAI and self._final and self._usage_seen

    def observe(self, ev: SSEEvent) -> bool:
        """Take what the event says into the call; raises ``MalformedEvent`` for a broken one."""
        if self.fmt is Format.ANTHROPIC:
            return self._anthropic(ev)
        return self._openai(ev)

    def _anthropic(self, ev: SSEEvent) -> bool:
        name = ev.event
        obj = _loads(ev.data)
        if obj is None:
            raise MalformedEvent(f"{name or 'unnamed'} event is not a JSON object")
        call = self._call
        if name == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text")
                if isinstance(text, str):
                    self.text.append(text)
                elif isinstance(part := delta.get("partial_json"), str) and (
                    tool := self._tools.get(obj.get("index", 0))
                ):
                    tool.arguments += part
            return True
        if name == "content_block_start":
            block = obj.get("content_block")
            is_tool = isinstance(block, dict) and block.get("type") != "text"
            if is_tool or obj.get("index", 0) != 0:
                self.text_only = False
            if isinstance(block, dict) and block.get("type") == "tool_use":
                tool = ToolCallOut(_text(block.get("id")), _text(block.get("name")))
                self._tools[obj.get("index", 0)] = tool
                call.tool_calls.append(tool)
            return is_tool
        if name == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                model = msg.get("model")
                if isinstance(model, str):
                    call.served_model = model
                rid = msg.get("id")
                if isinstance(rid, str) and rid:
                    call.response_id = rid
                u = msg.get("usage")
                if isinstance(u, dict):
                    usage_from_anthropic(u, call.usage)
            return False
        if name == "message_delta":
            u = obj.get("usage")
            if isinstance(u, dict):
                usage_from_anthropic(u, call.usage)
            d = obj.get("delta")
            if isinstance(d, dict) and isinstance(d.get("stop_reason"), str):
                self.stop_reason = call.finish_reason = d["stop_reason"]
            return True
        if name == "message_stop":
            self.finished = True
            return True
        if name == "error":
            self.errored = True
            self.finished = True
            return True
        return False

    def _openai(self, ev: SSEEvent) -> bool:
        data = ev.data
        if data.strip() == b"[DONE]":
            self.finished = True
            return True
        obj = _loads(data)
        if obj is None:
            raise MalformedEvent("chunk is not a JSON object")
        if obj.get("error"):
            self.errored = True
            self.finished = True
            return True
        call = self._call
        model = obj.get("model")
        if isinstance(model, str):
            call.served_model = model
        rid = obj.get("id")
        if isinstance(rid, str) and rid:
            call.response_id = rid
        u = obj.get("usage")
        if isinstance(u, dict):
            usage_from_openai(u, call.usage)
            self._usage_seen = True
        choices = obj.get("choices")
        return self._choices(choices) if isinstance(choices, list) else False

    def _choices(self, choices: list[Any]) -> bool:
        content = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:
                self.text_only = False  # n > 1: several answers cannot be carried on as one
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content")
                if isinstance(text, str) and text:
                    self.text.append(text)
                    content = True
                if delta.get("tool_calls") or delta.get("refusal"):
                    self.text_only = False
                    content = True
                    if choice.get("index", 0) == 0:
                        self._tool_deltas(delta.get("tool_calls"))
            fr = choice.get("finish_reason")
            if isinstance(fr, str):
                self.stop_reason = self._call.finish_reason = fr
                self._final = True
                content = True
        return content

    def _tool_deltas(self, deltas: Any) -> None:
        """OpenAI streams a tool call as pieces by index: the id and name first, then arguments."""
        if not isinstance(deltas, list):
            return
        for d in deltas:
            if not isinstance(d, dict):
                continue
            fn = d.get("function")
            if not isinstance(fn, dict):
                fn = {}
            tool = self._tools.get(d.get("index", 0))
            if tool is None:
                tool = ToolCallOut(_text(d.get("id")), _text(fn.get("name")))
                self._tools[d.get("index", 0)] = tool
                self._call.tool_calls.append(tool)
            if isinstance(args := fn.get("arguments"), str):
                tool.arguments += args


def observe_body(call: Call, obj: dict[str, Any], fmt: Format) -> Usage:
    """A whole (non-streamed) answer, read as its stream would be: text, tool calls, usage, id
    and finish reason into the call; returns this attempt's own usage."""
    model = obj.get("model")
    if isinstance(model, str):
        call.served_model = model
    rid = obj.get("id")
    if isinstance(rid, str) and rid:
        call.response_id = rid
    u = obj.get("usage")
    own = Usage()
    if fmt is Format.ANTHROPIC:
        if isinstance(u, dict):
            usage_from_anthropic(u, own)
            usage_from_anthropic(u, call.usage)
        for block in obj.get("content") or ():
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                call.output_text.append(block["text"])
            elif block.get("type") == "tool_use":
                args = orjson.dumps(block.get("input")).decode()
                tool = ToolCallOut(_text(block.get("id")), _text(block.get("name")), args)
                call.tool_calls.append(tool)
        if isinstance(stop := obj.get("stop_reason"), str):
            call.finish_reason = stop
        return own
    if isinstance(u, dict):
        usage_from_openai(u, own)
        usage_from_openai(u, call.usage)
    choices = obj.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        msg = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(msg, dict) and isinstance(msg.get("content"), str):
            call.output_text.append(msg["content"])
    first = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(first, dict):
        return own
    if isinstance(fr := first.get("finish_reason"), str):
        call.finish_reason = fr  # the first choice's, as a stream reports it
    msg = first.get("message")
    for tc in (msg.get("tool_calls") if isinstance(msg, dict) else None) or ():
        fn = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(fn, dict):
            tool = ToolCallOut(_text(tc.get("id")), _text(fn.get("name")))
            tool.arguments = _text(fn.get("arguments"))
            call.tool_calls.append(tool)
    return own


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
