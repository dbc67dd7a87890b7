"""uvicorn's httptools protocol plus the limits it lacks: header bytes, header count, header time.

uvicorn with httptools accepts request headers of any size (a 10 MB header is buffered
whole) and waits forever for a request that stalls mid-headers; both hold memory and a
connection for nothing, before the application ever sees the request. uvicorn offers no
option for either (``h11_max_incomplete_event_size`` covers size on h11 only, and
``timeout_keep_alive`` only idle time between requests), so this subclass adds them:
bytes are counted as they arrive, before httptools accumulates a header value, and a
timer runs from a connection's opening (or a request's first byte) to the end of its
headers. A request whose framing cannot be parsed (a bad request line, invalid header bytes,
broken chunked encoding, Content-Length with Transfer-Encoding), which uvicorn answers with a
text/plain 400, gets a JSON 400 too (``MalformedHttp``). A refusal is answered in the caller's
API format (judged from the path, when it was parsed), counted and logged as a refusal before
any call (``refusals``), and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..dialects import dialect_for
from ..errors import BastionError, HeadersTooLarge, InvalidRequest, RequestTimeout
from ..providers.base import Format

__all__ = ["HeaderLimits", "MalformedHttp", "RefusalSink", "limited_protocol", "refusal_format"]

log = logging.getLogger("bastion.server")

_LINGER_S = 2.0  # after a refusal, read and drop what the client still sends, so it sees the answer


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """What one request's head may cost: bytes (request line and headers), lines, seconds."""

    max_bytes: int
    max_count: int
    timeout: float


def refusal_format(path: bytes | str) -> Format:
    """The API format a request speaks, judged from its path alone (all a refusal may know)."""
    p = path.encode("latin-1", "replace") if isinstance(path, str) else path
    return Format.ANTHROPIC if p.startswith(b"/v1/messages") else Format.OPENAI


class MalformedHttp(InvalidRequest):
    """The request's HTTP framing cannot be parsed: refused before it reaches the app."""

    openai_code = "invalid_http_request"
    guard = "request"  # counted with the other refusals of a request's form


class RefusalSink(Protocol):
    """Where a refusal before any call is counted and logged (``RefusalObservers``)."""

    def unauthenticated(self, method: str, path: str, exc: BaseException) -> None: ...


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing once the request has been refused."""


class _LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HeaderLimits]
    refusals: ClassVar[RefusalSink | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = b""
        self._in_head = True  # between a request's first byte (or the connection) and its headers
        self._head_bytes = 0  # bytes received since the head began (may include a few of a body)
        self._head_sum = 0  # exact bytes of the parsed request line and header lines
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, plus the byte count of a head still in progress."""
        if self._refused:
            return  # lingering after a refusal: dropped unread
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._refused:
                return  # a callback refused the request and has answered already
            self._refuse(_malformed(exc))
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._head_bytes > self.limits.max_bytes:
            self._refuse(self._too_large())

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_sum = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_sum += len(url)
        if self._head_sum > self.limits.max_bytes:
            self._refuse(self._too_large())
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_sum += len(name) + len(value) + 4
        if self._head_sum > self.limits.max_bytes or len(self.headers) >= self.limits.max_count:
            self._refuse(self._too_large())
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self.url = b""  # a next request that breaks before its path is not judged by this one's

    # -- refusals --------------------------------------------------------------------------------

    def _too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"request headers exceed the limit of {self.limits.max_bytes} bytes "
            f"or {self.limits.max_count} lines"
        )

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.limits.timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0 and self.cycle is not None:
            return  # idle between requests: uvicorn's keep-alive timeout closes it
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined request stalls while a response runs: judge it after
            return
        self._refuse(
            RequestTimeout(f"request headers not received within {self.limits.timeout:g} seconds")
        )

    def _refuse(self, err: BastionError) -> None:
        """Answer in the caller's format and close: nothing of this request reaches the app."""
        if self._refused:
            return
        self._refused = True
        self._disarm()
        log.warning(
            "refused a request from %s: %s",
            self.client[0] if self.client else "?",
            err.message,
        )
        self._observe(err)
        cycle = self.cycle
        if cycle is not None and not self._in_head:  # the body of the request ``cycle`` runs
            if cycle.response_started:
                self.transport.close()  # it was answered (or is being): one answer per request
                return
            # its reading ends as a disconnect, what the app sends is dropped: the answer is ours
            cycle.disconnected = True
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            self.transport.close()  # a response is under way: do not write into it
            return
        body = dialect_for(refusal_format(self.url)).render_error(err)
        head = [STATUS_LINE[err.http_status()]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        # Closing now, with the client still sending, would reset the connection and lose the
        # answer: send it, half-close, drop what still arrives for a moment, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(_LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def _observe(self, err: BastionError) -> None:
        sink = self.refusals
        if sink is None:
            return
        method = "-"  # the parser names a method only once its URL began (else a default)
        if self.url:
            try:
                method = self.parser.get_method().decode("latin-1")
            except Exception:  # not readable after all: stays unnamed
                method = "-"
        path = self.url.split(b"?", 1)[0][:200].decode("latin-1")
        try:
            sink.unauthenticated(method, path or "-", err)
        except Exception:  # counting must never stop the answer
            log.exception("could not count a refused request")


def _malformed(exc: httptools.HttpParserError) -> MalformedHttp:
    """The refusal of a request httptools could not parse, naming what broke (llhttp's fixed
    words; a failure inside a parser callback is named only as such)."""
    if isinstance(exc, httptools.HttpParserCallbackError) or not str(exc):
        reason = "the request could not be parsed"
    else:
        reason = str(exc)[:120]
    return MalformedHttp(f"malformed HTTP request: {reason}")


def limited_protocol(
    limits: HeaderLimits, refusals: RefusalSink | None = None
) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, bound to these limits (and where
    its refusals are counted) at start-up."""
    return type(
        "BastionHttpProtocol",
        (_LimitedHttpToolsProtocol,),
        {"limits": limits, "refusals": refusals},
    )
