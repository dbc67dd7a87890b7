"""The app's side of each wire format: how it sends a turn, reads an answer, returns tool results.

An app built on Bastion talks Anthropic Messages or OpenAI Chat Completions; the red-team
app does whichever the target asks, so the guards are measured on the path the app uses.
A streamed answer is read as the app reads it, event by event, up to an error event (what
reached the app before the stream was cut counts as said).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ...dialects import dialect_for
from ...providers.base import Format
from ...providers.sse import SSEDecoder
from ...safety.prompting import Prompt
from ...safety.tools import ToolResult, ToolSpec

__all__ = ["Answer", "Use", "Wire"]


@dataclass(frozen=True, slots=True)
class Use:
    """One tool call in an answer."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class Answer:
    """What came back: the text, the tool calls, the assistant turn to resend, or a stream error."""

    text: str = ""
    uses: list[Use] = field(default_factory=list)
    turn: dict[str, Any] = field(default_factory=dict)
    error: tuple[int, str, str] | None = None  # status, type, message of an in-stream error


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        obj = orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _stream_error(data: dict[str, Any]) -> tuple[int, str, str]:
    err = data.get("error") or {}
    etype = str(err.get("type", "api_error"))
    return (422 if etype == "output_blocked" else 502), etype, str(err.get("message", ""))


class Wire:
    """Request building and answer reading for one format."""

    def __init__(self, api: str) -> None:
        # a format a client speaks (one with a dialect); NoDialect for any other
        self.format: Format = dialect_for(api).format

    def tools(self, specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
        if self.format is Format.ANTHROPIC:
            return [
                {"name": s.name, "description": s.description, "input_schema": dict(s.parameters)}
                for s in specs
            ]
        return [
            {
                "type": "function",
                "function": {
                    "name": s.name,
                    "description": s.description,
                    "parameters": dict(s.parameters),
                },
            }
            for s in specs
        ]

    def user_turn(self, prompt: Prompt) -> dict[str, Any]:
        """The rendered user turn (documents and fenced user content)."""
        rendered = prompt.to_anthropic() if self.format is Format.ANTHROPIC else prompt.to_openai()
        turn: dict[str, Any] = rendered["messages"][-1]
        return turn

    def body(
        self,
        model: str,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        max_tokens: int,
        stream: bool,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream}
        if self.format is Format.ANTHROPIC:
            body.update(system=system, messages=messages)
        else:
            body["messages"] = [{"role": "system", "content": system}, *messages]
        if tools:
            body["tools"] = tools
        return body

    def read(self, obj: dict[str, Any]) -> Answer:
        """A whole answer."""
        if self.format is Format.ANTHROPIC:
            content = [b for b in obj.get("content") or () if isinstance(b, dict)]
            text = "".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
            uses = [
                Use(str(b.get("id")), str(b.get("name")), _arguments(b.get("input")))
                for b in content
                if b.get("type") == "tool_use"
            ]
            return Answer(text, uses, {"role": "assistant", "content": content})
        choices = obj.get("choices") or [{}]
        msg = choices[0].get("message") or {} if isinstance(choices[0], dict) else {}
        calls = [c for c in msg.get("tool_calls") or () if isinstance(c, dict)]
        uses = [
            Use(
                str(c.get("id")),
                str((c.get("function") or {}).get("name")),
                _arguments((c.get("function") or {}).get("arguments")),
            )
            for c in calls
        ]
        turn: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if calls:
            turn["tool_calls"] = calls
        return Answer(str(msg.get("content") or ""), uses, turn)

    def results(self, results: Sequence[ToolResult]) -> list[dict[str, Any]]:
        """The messages that hand tool results back (fenced by the sandbox)."""
        if self.format is Format.ANTHROPIC:
            blocks = [
                {"type": "tool_result", "tool_use_id": r.call_id, "content": r.text}
                for r in results
            ]
            return [{"role": "user", "content": blocks}]
        return [{"role": "tool", "tool_call_id": r.call_id, "content": r.text} for r in results]

    async def collect(self, stream: AsyncIterator[bytes]) -> Answer:
        """A streamed answer, read as the app reads it."""
        decoder = SSEDecoder()
        ans = Answer()
        async for chunk in stream:
            for event in decoder.feed(chunk):
                if event.data == b"[DONE]" or not event.data:
                    continue
                data = orjson.loads(event.data)
                if not isinstance(data, dict):
                    continue
                if data.get("type") == "error" or "error" in data:
                    ans.error = _stream_error(data)
                    return self._finish(ans)
                self._fold(ans, data)
        return self._finish(ans)

    def _fold(self, ans: Answer, data: dict[str, Any]) -> None:
        """Add one event to the answer being built (raw parts kept in ``turn``)."""
        parts: dict[int, dict[str, Any]] = ans.turn.setdefault("_parts", {})
        if self.format is Format.ANTHROPIC:
            index = data.get("index")
            if not isinstance(index, int):
                return
            if data.get("type") == "content_block_start":
                parts[index] = {**(data.get("content_block") or {}), "_json": ""}
            elif data.get("type") == "content_block_delta" and index in parts:
                delta = data.get("delta") or {}
                if delta.get("type") == "text_delta":
                    parts[index]["text"] = parts[index].get("text", "") + str(delta.get("text", ""))
                elif delta.get("type") == "input_json_delta":
                    parts[index]["_json"] += str(delta.get("partial_json", ""))
            return
        choices = data.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return
        delta = choices[0].get("delta") or {}
        if isinstance(delta.get("content"), str):
            ans.text += delta["content"]
        for tc in delta.get("tool_calls") or ():
            slot = parts.setdefault(int(tc.get("index", 0)), {"id": "", "name": "", "_json": ""})
            fn = tc.get("function") or {}
            slot["id"] = tc.get("id") or slot["id"]
            slot["name"] = fn.get("name") or slot["name"]
            slot["_json"] += str(fn.get("arguments") or "")

    def _finish(self, ans: Answer) -> Answer:
        parts: dict[int, dict[str, Any]] = ans.turn.pop("_parts", {})
        if self.format is Format.ANTHROPIC:
            content: list[dict[str, Any]] = []
            for i in sorted(parts):
                block = {k: v for k, v in parts[i].items() if k != "_json"}
                if block.get("type") == "tool_use":
                    block["input"] = _arguments(parts[i]["_json"])
                    ans.uses.append(
                        Use(str(block.get("id")), str(block.get("name")), block["input"])
                    )
                elif block.get("type") == "text":
                    ans.text += str(block.get("text", ""))
                content.append(block)
            ans.turn = {"role": "assistant", "content": content}
            return ans
        calls = []
        for i in sorted(parts):
            p = parts[i]
            ans.uses.append(Use(p["id"], p["name"], _arguments(p["_json"])))
            calls.append(
                {
                    "id": p["id"],
                    "type": "function",
                    "function": {"name": p["name"], "arguments": p["_json"] or "{}"},
                }
            )
        ans.turn = {"role": "assistant", "content": ans.text or None}
        if calls:
            ans.turn["tool_calls"] = calls
        return ans
