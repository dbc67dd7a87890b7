"""AWS Bedrock (Converse / ConverseStream): where a request goes, how it is signed, and how
its answers come back to the rest of the gateway.

Toward the gateway a Bedrock endpoint speaks Anthropic Messages (``adapters.endpoint_formats``):
Converse's blocks, stop reasons and usage are Anthropic's in other words, so the engine,
the stream relay, the guards, the output filters and stream recovery need no third format.
The Bedrock wire lives here and in ``translate._bedrock`` / ``_stream_bedrock``:

- ``build_request`` turns the Anthropic body into a Converse body for
  ``POST {base}/model/{modelId}/converse`` (``/converse-stream`` when streaming); the model
  id is one percent-encoded path segment (ids hold ``:``, ARNs ``/``).
- ``BedrockTransport`` wraps the HTTP (or simulator) transport: it signs each request with
  SigV4 for service ``bedrock`` and the provider's region by botocore itself (``SigV4Auth``
  over an ``AWSRequest``, credentials from botocore's session: the ``AWS_*`` environment,
  shared files, …), sends it, and reads the answer back as Anthropic: a Converse body becomes
  a Messages body, an eventstream becomes Messages SSE events, an error
  (``x-amzn-errortype``) an Anthropic error with the matching status. The provider's
  ``x-amzn-requestid`` is passed on as ``x-request-id``.

botocore is imported only when a bedrock provider is configured (start-up time is measured).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson

from ..errors import InvalidRequest, UpstreamConnectError
from .base import BufferedResponse, Format, Transport, UpstreamRequest, UpstreamResponse
from .eventstream import EventStreamDecoder, FramingError
from .sse import encode_event
from .translate import _bedrock, request_to
from .translate._anthropic import emit_response
from .translate._errors import render_error, target_status
from .translate._stream_anthropic import AnthropicStreamEmitter
from .translate._stream_bedrock import EXCEPTION, BedrockStreamParser
from .translate.model import ErrorKind, StopReason, StreamError, StreamFinish

__all__ = ["SERVICE", "BedrockSigner", "BedrockTransport", "build_request", "model_url"]

log = logging.getLogger("bastion.providers.bedrock")

SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
EVENTSTREAM = "application/vnd.amazon.eventstream"
_CONVERSE = "/converse"
_STREAM = "/converse-stream"
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # ToolSpecification.name, botocore's model


def model_url(base_url: str, model: object, *, stream: bool) -> str:
    """``{base}/model/{modelId}/converse[-stream]`` with the id as one encoded segment."""
    if not isinstance(model, str) or model in ("", ".", ".."):
        raise InvalidRequest(f"model: {model!r} cannot name a Bedrock model id", param="model")
    return f"{base_url}/model/{quote(model, safe='')}" + (_STREAM if stream else _CONVERSE)


def build_request(
    base_url: str, body: dict[str, Any], headers: Mapping[str, str], *, stream: bool
) -> UpstreamRequest:
    """The unsigned Converse request for an Anthropic-format ``body`` (signed on sending)."""
    model = body.get("model")
    url = model_url(base_url, model, stream=stream)
    _check_tool_names(body.get("tools"))
    _check_images(body.get("messages"))
    converse = request_to(Format.BEDROCK, body, source=Format.ANTHROPIC, model=str(model))
    out = {k: v for k, v in headers.items() if k not in ("anthropic-version", "anthropic-beta")}
    out["content-type"] = "application/json"
    out["accept"] = EVENTSTREAM if stream else "application/json"
    return UpstreamRequest("POST", url, out, orjson.dumps(converse), stream)


def _check_tool_names(tools: object) -> None:
    """Refuse a tool Converse would not take under its own name (``[a-zA-Z0-9_-]{1,64}``).

    Renaming it for Converse would answer the caller with a call to a tool it never defined
    (``get weather`` called as ``get_weather``), and two long names could become one.
    """
    if not isinstance(tools, list):
        return
    for i, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if isinstance(name, str) and not _TOOL_NAME.fullmatch(name):
            raise InvalidRequest(
                f"tools.{i}.name: {name[:80]!r} is not a tool name Bedrock accepts "
                "(1 to 64 letters, digits, '_' or '-')",
                param=f"tools.{i}.name",
            )


def _check_images(messages: object) -> None:
    """Refuse an image given by URL: Converse takes inline bytes only, and an answer written
    without the image the caller sent would read as an answer about it."""
    for i, msg in enumerate(messages if isinstance(messages, list) else ()):
        content = msg.get("content") if isinstance(msg, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(block, dict):
                continue
            inner = block.get("content") if block.get("type") == "tool_result" else None
            for part in [block, *(inner if isinstance(inner, list) else ())]:
                if not isinstance(part, dict) or part.get("type") != "image":
                    continue
                source = part.get("source")
                if isinstance(source, dict) and source.get("type") != "base64":
                    raise InvalidRequest(
                        f"messages.{i}.content.{j}: Bedrock takes images inline (base64 data), "
                        "not by URL or file id",
                        param=f"messages.{i}.content.{j}",
                    )


def model_of(url: str) -> str:
    """The model id a Converse URL names."""
    path = urlsplit(url).path
    for tail in (_STREAM, _CONVERSE):
        if path.endswith(tail):
            path = path[: -len(tail)]
            break
    return unquote(path.rsplit("/model/", 1)[-1])


class BedrockSigner:
    """SigV4 by botocore for one region; credentials are resolved on first use and refreshed
    by botocore when they are temporary ones."""

    __slots__ = ("_credentials", "_fallback", "region")

    def __init__(self, region: str, *, fallback: tuple[str, str] | None = None) -> None:
        # botocore's signer (~0.5 s to import) loads with the provider, not on its first call
        import botocore.auth
        import botocore.awsrequest
        import botocore.session  # noqa: F401

        self.region = region
        self._credentials: Any = None
        self._fallback = fallback  # simulator-only: test credentials when none are configured

    def _resolve(self) -> Any:
        if self._credentials is None:
            from botocore.credentials import Credentials

            found = _local_credentials()
            if found is None and self._fallback is not None:
                found = Credentials(*self._fallback)
            if found is None:
                err = UpstreamConnectError(
                    "no AWS credentials for the bedrock provider (set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or a profile)"
                )
                err.reached = False  # nothing was sent: nothing to bill, fail over at once
                raise err
            self._credentials = found
        return self._credentials

    def sign(self, request: UpstreamRequest) -> dict[str, str]:
        """``request``'s headers plus ``Authorization``, ``X-Amz-Date`` (and the session token)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        # the host is signed as a header of its own, so every transport sends what was signed
        headers = {**request.headers, "host": urlsplit(request.url).netloc}
        aws = AWSRequest(method=request.method, url=request.url, data=request.body, headers=headers)
        SigV4Auth(self._resolve(), SERVICE, self.region).add_auth(aws)
        return {k.lower(): v for k, v in aws.headers.items()}


def _local_credentials() -> Any:
    """botocore's credential chain without the instance-metadata and container probes (which
    would send requests to link-local addresses from wherever the gateway runs)."""
    from botocore.session import Session

    session = Session()
    resolver = session.get_component("credential_provider")
    for name in ("container-role", "iam-role"):
        resolver.remove(name)
    return session.get_credentials()


def credential_source(base_url: str) -> str | None:
    """Where the credentials a bedrock provider would sign with come from (botocore's name for
    the source: ``env``, ``shared-credentials-file`` …), or None when there are none."""
    found = _local_credentials()
    if found is not None:
        return str(found.method)
    return "the simulator's test key" if base_url.startswith("sim://") else None


class BedrockTransport:
    """Signs and sends Converse requests; answers are read back as Anthropic Messages."""

    __slots__ = ("_inner", "signer")

    def __init__(self, inner: Transport, signer: BedrockSigner) -> None:
        self._inner = inner
        self.signer = signer

    async def send(self, request: UpstreamRequest, *, timeout: float | None) -> UpstreamResponse:
        signed = UpstreamRequest(
            request.method, request.url, self.signer.sign(request), request.body, request.stream
        )
        resp = await self._inner.send(signed, timeout=timeout)
        headers = dict(resp.headers)
        rid = headers.get("x-amzn-requestid")
        if rid:
            headers.setdefault("x-request-id", rid)
        model = model_of(request.url)
        if resp.status != 200:
            try:
                raw = await resp.read()
            finally:
                await resp.aclose()
            return _error(resp.status, headers, raw)
        if request.stream:
            headers["content-type"] = "text/event-stream"
            return _StreamResponse(resp, headers, rid or "", model)
        try:
            raw = await resp.read()
        finally:
            await resp.aclose()
        body = _bedrock_body(raw)
        if body is None:
            return BufferedResponse(200, headers, raw)  # malformed: the engine says so
        resp_model = _bedrock.parse_response(body, id_=rid or "", model=model)
        if resp_model.stop_reason is StopReason.ERROR:  # a failed answer, never a clean finish
            failed = orjson.dumps(
                render_error(Format.ANTHROPIC, ErrorKind.API_ERROR, _failed(body))
            )
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(failed))
            return BufferedResponse(502, headers, failed)
        data = orjson.dumps(emit_response(resp_model, model))
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(data))
        return BufferedResponse(200, headers, data)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _bedrock_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _error(status: int, headers: dict[str, str], raw: bytes) -> BufferedResponse:
    """A Bedrock error as the Anthropic error it means (status mapped, headers kept)."""
    kind, message = _bedrock.parse_error(status, headers, raw)
    body = orjson.dumps(render_error(Format.ANTHROPIC, kind, message))
    out = {**headers, "content-type": "application/json", "content-length": str(len(body))}
    return BufferedResponse(target_status(Format.ANTHROPIC, kind, status), out, body)


class _StreamResponse:
    """A ConverseStream body read as Anthropic SSE events, frame by frame as it arrives."""

    __slots__ = ("_inner", "_model", "_rid", "headers", "status")

    def __init__(
        self, inner: UpstreamResponse, headers: Mapping[str, str], rid: str, model: str
    ) -> None:
        self._inner = inner
        self.status = 200
        self.headers = headers
        self._rid = rid
        self._model = model

    async def read(self) -> bytes:
        return b"".join([c async for c in self.iter_chunks()])

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        decoder = EventStreamDecoder()
        parser = BedrockStreamParser(id_=self._rid, model=self._model)
        emitter = AnthropicStreamEmitter(self._model)
        async for chunk in self._inner.iter_chunks():
            out: list[bytes] = []
            try:
                for frame in decoder.feed(chunk):
                    out += _frame_events(frame.headers, frame.payload, parser, emitter)
            except FramingError as exc:
                log.warning("bedrock stream: %s", exc)
                out += emitter.emit(StreamError(ErrorKind.API_ERROR, str(exc)))
                if out:
                    yield b"".join(out)
                return
            if out:
                yield b"".join(out)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _frame_events(
    headers: Mapping[str, Any],
    payload: bytes,
    parser: BedrockStreamParser,
    emitter: AnthropicStreamEmitter,
) -> list[bytes]:
    kind = headers.get(":message-type")
    name = headers.get(":exception-type") if kind == EXCEPTION else headers.get(":event-type")
    if not isinstance(name, str):
        return []
    data = _bedrock_body(payload) if payload else {}
    if data is None:
        return [encode_event(b"{", name)]  # not JSON: the relay counts it as malformed
    out: list[bytes] = []
    for ev in parser.parse(name, data, exception=kind == EXCEPTION):
        if isinstance(ev, StreamFinish) and ev.stop_reason is StopReason.ERROR:
            ev = StreamError(ErrorKind.API_ERROR, _failed(data))  # never a clean finish
        out += emitter.emit(ev)
    return out


def _failed(body: Mapping[str, Any]) -> str:
    """What a Converse answer that stopped on a failure (``malformed_tool_use``,
    ``malformed_model_output``) tells the caller."""
    return f"Bedrock ended the answer with stopReason {str(body.get('stopReason'))[:64]!r}"


def transport(inner: Transport, *, region: str, base_url: str) -> BedrockTransport:
    """The transport of a bedrock provider over ``inner``; a ``sim://`` one signs with the
    simulator's test credentials when no AWS credentials are configured (demos need no key)."""
    fallback = None
    if base_url.startswith("sim://"):
        from .sim.bedrock_wire import SIM_ACCESS_KEY_ID, SIM_SECRET_ACCESS_KEY

        fallback = (SIM_ACCESS_KEY_ID, SIM_SECRET_ACCESS_KEY)
    return BedrockTransport(inner, BedrockSigner(region, fallback=fallback))
