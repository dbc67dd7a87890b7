"""Scripted upstreams for the stream-recovery tests: exact texts, cut points and faults.

``ScriptedSimulator`` answers models named in its scripts itself (in whichever format the
request came: Anthropic ``/messages`` or OpenAI ``/chat/completions``) and hands every
other model to the real simulator. A script says what the model answers, where its
stream breaks and how, so the tests can check the text a client gets character by
character. ``run`` drives one call through an in-process gateway and parses what the
client received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter
from tests.conftest import sim_models

from bastion.call import Call
from bastion.gateway import LIBRARY_PRINCIPAL, Gateway
from bastion.providers.base import Format
from bastion.providers.sim import Simulator
from bastion.providers.sim.result import SimCut, SimResult
from bastion.providers.sse import SSEDecoder

ANT, OAI = Format.ANTHROPIC, Format.OPENAI
INPUT_TOKENS = 11
_RAW_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


@dataclass
class Script:
    """What one scripted model does with a request."""

    text: str  # the answer to a request that ends with a user turn
    continuation: str | None = None  # the answer to a prefill request (None: ``text``)
    pieces: list[str] | None = None  # how the answer is split into deltas (None: by word)
    cut_after: int | None = None  # drop the connection after this many text pieces
    stall_after: int | None = None  # go silent after this many text pieces
    fail_after: int | None = None  # raise ``failure`` from the body after this many pieces
    failure: BaseException | None = None
    malformed_after: int | None = None  # slip in one event that is not JSON
    refuse_prefill: bool = False  # 400 to a request ending with an assistant turn
    no_done: bool = False  # OpenAI: close after finish_reason (and usage) without [DONE]
    no_usage: bool = False  # OpenAI: no usage chunk even when asked for one
    spaced: bool = False  # OpenAI: JSON written with json.dumps' default spacing
    delay: float = 0.0  # seconds before the response headers (a slow first token)
    requests: list[dict[str, Any]] = field(default_factory=list)


def words(text: str) -> list[str]:
    """Split into pieces that join back to ``text`` (each word with its leading space)."""
    out: list[str] = []
    for i, w in enumerate(text.split(" ")):
        out.append(w if i == 0 else " " + w)
    return [p for p in out if p]


class ScriptedSimulator(Simulator):
    """The simulator, except for the models named in ``scripts``."""

    def __init__(self, scripts: Mapping[str, Script], **kw: Any) -> None:
        super().__init__(**kw)
        self.scripts = dict(scripts)

    async def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> SimResult:
        parsed = orjson.loads(body) if body else {}
        script = self.scripts.get(str(parsed.get("model")))
        if script is None:
            return await super().handle(method, path, headers, body)
        script.requests.append(parsed)
        if script.delay:
            await asyncio.sleep(script.delay)
        fmt = ANT if "/messages" in path else OAI
        msgs = parsed.get("messages") or []
        prefill = bool(msgs) and msgs[-1].get("role") == "assistant"
        if prefill and script.refuse_prefill:
            err = {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "This model does not support assistant message prefill.",
                },
            }
            return SimResult(400, {"content-type": "application/json"}, _once(orjson.dumps(err)))
        text = script.continuation if prefill and script.continuation is not None else script.text
        pieces = script.pieces if script.pieces is not None and not prefill else words(text)
        usage = bool((parsed.get("stream_options") or {}).get("include_usage"))
        # a prefill is part of the prompt: ~4 characters a token
        tokens = INPUT_TOKENS + (len(msgs[-1]["content"]) // 4 if prefill else 0)
        frames = (
            _anthropic(str(parsed["model"]), pieces, tokens)
            if fmt is ANT
            else _openai(str(parsed["model"]), pieces, script, usage, tokens)
        )
        headers_out = {"content-type": "text/event-stream"}
        return SimResult(200, headers_out, _body(frames, script, fmt))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _sse(obj: Any, event: str | None = None, spaced: bool = False) -> bytes:
    data = json.dumps(obj) if spaced else orjson.dumps(obj).decode()
    return ((f"event: {event}\n" if event else "") + f"data: {data}\n\n").encode()


def _anthropic(model: str, pieces: list[str], tokens: int) -> list[tuple[bytes, bool]]:
    """(frame, carries text) pairs of an Anthropic stream."""
    usage = {"input_tokens": tokens, "output_tokens": 1}
    start = {
        "id": "msg_fake" + model.replace("-", ""),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    out = [
        (_sse({"type": "message_start", "message": start}, "message_start"), False),
        (
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            False,
        ),
        (_sse({"type": "ping"}, "ping"), False),
    ]
    for p in pieces:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": p},
        }
        out.append((_sse(delta, "content_block_delta"), True))
    out.append((_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False))
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": len(pieces)},
    }
    out.append((_sse(final, "message_delta"), False))
    out.append((_sse({"type": "message_stop"}, "message_stop"), False))
    return out


def _openai(
    model: str, pieces: list[str], script: Script, usage: bool, tokens: int
) -> list[tuple[bytes, bool]]:
    head = {
        "id": "chatcmpl-fake" + model.replace("-", ""),
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**head, "choices": [choice]}, spaced=script.spaced)

    out = [(chunk({"role": "assistant", "content": ""}), False)]
    out += [(chunk({"content": p}), True) for p in pieces]
    out.append((chunk({}, "stop"), False))
    if usage and not script.no_usage:
        n = len(pieces)
        u = {"prompt_tokens": tokens, "completion_tokens": n, "total_tokens": tokens + n}
        out.append((_sse({**head, "choices": [], "usage": u}, spaced=script.spaced), False))
    if not script.no_done:
        out.append((b"data: [DONE]\n\n", False))
    return out


_MALFORMED = {
    ANT: b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"text":"\n\n',
    OAI: b'data: {"id":"chatcmpl-bad","choices":[{"index":0,"delta":{"content":"\n\n',
}


async def _body(
    frames: list[tuple[bytes, bool]], script: Script, fmt: Format
) -> AsyncIterator[bytes]:
    n = 0
    for frame, text in frames:
        if text:
            if n == script.cut_after:
                raise SimCut("scripted cut")
            if n == script.stall_after:
                await asyncio.Event().wait()
            if n == script.fail_after and script.failure is not None:
                raise script.failure
            if n == script.malformed_after:
                yield _MALFORMED[fmt]
            n += 1
        yield frame


def config(tmp: Path, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A gateway config: the simulator as three providers (both formats, Anthropic, OpenAI)."""
    return {
        "store": {"url": f"sqlite:///{tmp / 'c.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {
            "sim": {"kind": "sim"},
            "ant": {"kind": "anthropic", "base_url": "sim://local"},
            "oai": {"kind": "openai", "base_url": "sim://local/v1"},
        },
        "reliability": {"retry": {"backoff_base": 0.01, "backoff_max": 0.02}},
        "models": {**sim_models(), **models},
        # the scripts' fixed continuations assume the client saw every piece before the cut;
        # a PII filter holding the last word back is tested on its own (test_recovery_pii_hold)
        "features": {"default": {"pii_output": "flag"}},
        **extra,
    }


def dep(provider: str, model: str, **kw: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **kw}


@dataclass
class Received:
    """What one streaming client got: parsed events, raw bytes, and the call behind them."""

    fmt: Format
    raw: bytes
    events: list[tuple[str | None, Any]]
    call: Call

    @property
    def text(self) -> str:
        out = []
        for name, obj in self.events:
            if self.fmt is ANT:
                if name == "content_block_delta":
                    out.append(obj["delta"].get("text", ""))
            elif isinstance(obj, dict):
                for c in obj.get("choices") or ():
                    out.append((c.get("delta") or {}).get("content") or "")
        return "".join(out)

    @property
    def errored(self) -> bool:
        return any(
            name == "error" or (isinstance(obj, dict) and "error" in obj)
            for name, obj in self.events
        )

    @property
    def clean_end(self) -> bool:
        """The stream ended the way a complete answer ends in its format."""
        if not self.events:
            return False
        name, obj = self.events[-1]
        return name == "message_stop" if self.fmt is ANT else obj == "[DONE]"

    @property
    def error_message(self) -> str:
        for _name, obj in self.events:
            if isinstance(obj, dict) and "error" in obj:
                return str(obj["error"]["message"])
        return ""

    def sdk(self) -> tuple[str, int]:
        """The answer text and output tokens as the official SDK's own accumulator sees them."""
        if self.fmt is ANT:
            snapshot: Any = None
            bufs: dict[int, bytes] = {}
            for name, obj in self.events:
                if name != "ping":
                    event = _RAW_EVENT.validate_python(obj)
                    snapshot = accumulate_event(
                        event=event, current_snapshot=snapshot, json_bufs=bufs
                    )
            text = "".join(b.text for b in snapshot.content if b.type == "text")
            return text, int(snapshot.usage.output_tokens)
        state = ChatCompletionStreamState()
        for _name, obj in self.events:
            if isinstance(obj, dict):
                chunk = ChatCompletionChunk.model_validate(obj)
                list(state.handle_chunk(chunk))
        final = state.get_final_completion()
        tokens = final.usage.completion_tokens if final.usage is not None else -1
        return final.choices[0].message.content or "", tokens

    def usage(self) -> dict[str, Any] | None:
        """The final usage the client was told (message_delta / the usage chunk)."""
        found = None
        for name, obj in self.events:
            if not isinstance(obj, dict):
                continue
            if self.fmt is ANT and name == "message_delta":
                found = obj.get("usage")
            elif self.fmt is OAI and obj.get("usage"):
                found = obj["usage"]
        return found


async def run(
    gw: Gateway, fmt: Format, model: str, *, include_usage: bool = False, content: str = "tell me"
) -> Received:
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    if fmt is ANT:
        body["max_tokens"] = 500
    elif include_usage:
        body["stream_options"] = {"include_usage": True}
    reply = await gw.handle(fmt, orjson.dumps(body), {}, principal=LIBRARY_PRINCIPAL)
    assert reply.status == 200 and reply.stream is not None and reply.call is not None
    raw = b"".join([c async for c in reply.stream])
    events: list[tuple[str | None, Any]] = []
    for ev in SSEDecoder().feed(raw):
        events.append((ev.event, "[DONE]" if ev.data == b"[DONE]" else orjson.loads(ev.data)))
    return Received(fmt, raw, events, reply.call)
