"""The degraded answer: when no deployment can answer, the product around the AI keeps working.

In ``error`` mode the caller gets a 503 with the stable type ``ai_unavailable``;
in ``message`` mode a normal-looking assistant message carrying the configured
text, marked by the ``x-bastion-degraded`` header, streamed if a stream was asked.
"""

from __future__ import annotations

import time
import uuid

import orjson

from ..providers.base import Format
from ..providers.sse import encode_event


def canned_body(fmt: Format, model: str, text: str) -> bytes:
    if fmt is Format.ANTHROPIC:
        return orjson.dumps(
            {
                "id": "msg_degraded_" + uuid.uuid4().hex[:16],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        )
    return orjson.dumps(
        {
            "id": "chatcmpl-degraded-" + uuid.uuid4().hex[:16],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )


def canned_stream(fmt: Format, model: str, text: str, include_usage: bool) -> list[bytes]:
    if fmt is Format.ANTHROPIC:
        mid = "msg_degraded_" + uuid.uuid4().hex[:16]
        start = {
            "type": "message_start",
            "message": {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }
        events = [
            ("message_start", start),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 0},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [encode_event(orjson.dumps(d), name) for name, d in events]
    cid = "chatcmpl-degraded-" + uuid.uuid4().hex[:16]
    base = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    chunks = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if include_usage:
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )
    return [encode_event(orjson.dumps(c)) for c in chunks] + [encode_event(b"[DONE]")]
