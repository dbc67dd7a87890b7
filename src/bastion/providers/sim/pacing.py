"""Bodies delivered over time: time to first token, gaps between chunks, mid-body faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import orjson

from ..base import Format
from ..sse import encode_event
from .result import Frame, SimCut
from .scenario import Fault, Pacing
from .wire_errors import anthropic_stream_error, openai_stream_error

_MALFORMED = {
    Format.ANTHROPIC: b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"\n\n',
    Format.OPENAI: b'data: {"id":"chatcmpl-malformed","object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{"content":"\n\n',
}


async def forever() -> None:
    """Wait until cancelled: a peer that holds the connection open and says nothing."""
    await asyncio.Event().wait()


def first_token_ms(pacing: Pacing, fault: Fault) -> float:
    """``slow_first`` replaces the configured time to first token."""
    return float(fault.slow_first_ms) if fault.slow_first_ms is not None else pacing.ttft_ms


async def paced_stream(
    frames: Sequence[Frame], pacing: Pacing, fault: Fault, fmt: Format
) -> AsyncIterator[bytes]:
    """Yield one frame per chunk: TTFT before the first, the chunk gap before each token after it.

    Faults count frames already sent: ``cut_after:N`` raises ``SimCut`` where the
    connection drops, ``stall_after:N`` waits forever, ``malformed_after:N`` slips
    in one non-JSON event, ``error_after:N`` sends the provider's in-stream error
    and ends, ``no_final`` withholds the terminating event.
    """
    ttft = first_token_ms(pacing, fault) / 1000.0
    gap = pacing.chunk_ms / 1000.0
    seen_content = False
    for n, frame in enumerate(frames):
        if fault.no_final and frame.final:
            return
        if n == fault.cut_after:
            raise SimCut(f"simulated connection drop after {n} chunks")
        if n == fault.stall_after:
            await forever()
        if n == fault.error_after:
            yield _error_event(fmt, fault.status)
            return
        if n == fault.malformed_after:
            yield _MALFORMED[fmt]
        if n == 0:
            if ttft > 0:
                await asyncio.sleep(ttft)
        elif frame.content and seen_content and gap > 0:
            await asyncio.sleep(gap)
        seen_content = seen_content or frame.content
        yield frame.data


def unary_delay_s(pacing: Pacing, fault: Fault, output_tokens: int) -> float:
    """A non-streaming answer arrives whole: TTFT plus a gap per further token."""
    return (first_token_ms(pacing, fault) + pacing.chunk_ms * max(0, output_tokens - 1)) / 1000.0


async def unary_body(body: bytes, fault: Fault) -> AsyncIterator[bytes]:
    """A JSON body; with ``cut_after``/``stall_after`` only its first half is ever sent."""
    if fault.cut_after is None and fault.stall_after is None:
        yield body
        return
    yield body[: len(body) // 2]
    if fault.cut_after is not None:
        raise SimCut("simulated connection drop mid-body")
    await forever()


def malformed_unary(body: bytes) -> bytes:
    """A body that is cut short and garbled, yet delivered as complete."""
    return body[: len(body) // 2] + b"\x00<malformed>"


def _error_event(fmt: Format, status: int | None) -> bytes:
    if fmt is Format.ANTHROPIC:
        payload = anthropic_stream_error(status or 529)
        return encode_event(orjson.dumps(payload), "error")
    return encode_event(orjson.dumps(openai_stream_error(status or 500)))
