"""Response headers as the server writes them: bytes, and never a value that could split or
break the response."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

log = logging.getLogger("bastion.server")

_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_OWN_HEADERS = frozenset(
    {
        "x-request-id",
        "x-client-request-id",
        "request-id",
        "traceparent",
        "x-bastion-deployment",
        "x-bastion-attempts",
        "x-bastion-drill",
        "x-bastion-degraded",
    }
)


def header_list(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Response headers as bytes; any value outside visible ASCII is dropped, never sent.

    Values normally come from config or are minted here; this is the last line against one
    built from a client string (a CR/LF would split the response, a non-Latin-1 character
    would fail the write after the call was already paid for).
    """
    out = []
    for k, v in headers.items():
        if k == "content-type":
            continue
        # the names the gateway sets, and plain printable values, pass without a regex
        if (k not in _OWN_HEADERS and _HEADER_NAME.fullmatch(k) is None) or (
            not (v.isascii() and v.isprintable()) and _HEADER_VALUE.fullmatch(v) is None
        ):
            log.warning("dropped response header %r: not a plain ASCII value", k[:64])
            continue
        out.append((k.encode("ascii"), v.encode("ascii")))
    return out
