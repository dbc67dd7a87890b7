"""Answers from a provider format no client speaks (Gemini), seen in the client's format.

Everything after the upstream response (output filters, the stream watcher, usage, stream
recovery, records) reads the client's or a client-speakable format. A provider that speaks
only its own format (``Format.GEMINI``) has its successful answer translated here, once, as
it arrives: a unary body is re-written whole, a stream is re-written event by event through
``translate.StreamTranslator`` (usage always included, so the watcher can bill it). A
stream that ends before the provider said it finished is passed on as cut: the missing final
marker is what the relay notices and recovers from, as for any provider. A Gemini answer
that stopped on the model's failure (``finishReason`` ``MALFORMED_FUNCTION_CALL``, ``OTHER``,
one not known) is never translated as a finish: streamed, it ends in an error event (the
stream parser); unary, ``providers.gemini.GeminiTransport`` made it a 502 before this.
Error answers are not wrapped; ``translate.error_to`` renders them from the provider's own
format, and ``error_headers`` lifts a retry delay said in the body into ``retry-after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import orjson

from . import translate
from .base import Format, UpstreamResponse
from .sse import SSEDecoder
from .translate._common import loads_object

__all__ = [
    "EDGE_TRANSLATED",
    "TranslatedResponse",
    "answer_format",
    "as_client",
    "error_headers",
]

# formats whose answers are translated here (a provider translated by its own transport,
# as Bedrock's is, hands the engine an answer already in the client's format)
EDGE_TRANSLATED = frozenset({Format.GEMINI})


def error_headers(provider: Format, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    """An error answer's headers, with the wait Gemini states only in its body (a
    ``google.rpc.RetryInfo`` detail, ``"retryDelay": "37s"``) as ``retry-after``."""
    out = dict(headers)
    if provider is not Format.GEMINI or "retry-after" in out:
        return out
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return out
    for detail in err.get("details") or () if isinstance(err, dict) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                continue
            if seconds >= 0:
                out["retry-after"] = f"{seconds:g}"
                break
    return out


def answer_format(provider: Format, client: Format) -> Format:
    """The format the rest of the call reads an answer in: the provider's, unless no client
    speaks it (then the client's own)."""
    return client if provider in EDGE_TRANSLATED else provider


def as_client(
    resp: UpstreamResponse, provider: Format, client: Format, *, stream: bool
) -> UpstreamResponse:
    """``resp`` as is when its format is readable, else translated to ``client``."""
    if provider not in EDGE_TRANSLATED:
        return resp
    return TranslatedResponse(resp, provider, client, stream=stream)


class TranslatedResponse:
    """An ``UpstreamResponse`` whose body is translated from ``source`` to ``target``."""

    __slots__ = ("_inner", "_source", "_stream", "_target", "headers", "status")

    def __init__(
        self, inner: UpstreamResponse, source: Format, target: Format, *, stream: bool
    ) -> None:
        self._inner = inner
        self._source = source
        self._target = target
        self._stream = stream
        self.status = inner.status
        self.headers: Mapping[str, str] = {
            k: v for k, v in inner.headers.items() if k != "content-length"
        }

    async def read(self) -> bytes:
        if self._stream:
            return b"".join([c async for c in self.iter_chunks()])
        raw = await self._inner.read()
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw  # malformed stays malformed: the engine reports it as such
        if not isinstance(obj, dict):
            return raw
        return orjson.dumps(translate.response_to(self._target, obj, source=self._source))

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        if not self._stream:
            yield await self.read()
            return
        tr = translate.StreamTranslator(self._source, self._target, model=None, include_usage=True)
        decoder = SSEDecoder()
        async for chunk in self._inner.iter_chunks():
            out: list[bytes] = []
            for ev in decoder.feed(chunk):
                if ev.data and loads_object(ev.data) is None:
                    out.append(ev.raw)  # not JSON: passed on for the relay to count and skip
                else:
                    out += tr.feed(ev)
            if out:
                yield b"".join(out)

    async def aclose(self) -> None:
        await self._inner.aclose()
