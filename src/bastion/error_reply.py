"""Errors as the client's own API would have sent them, a provider's error answer included.

A provider that answered with an error status becomes an ``UpstreamStatusError`` carrying its
body in the provider's format; ``render_error`` turns any error into the status, headers and
body of the client's format (a provider's error keeps its status and meaning, translated when
the formats differ; our own errors are rendered by the client's dialect).
"""

from __future__ import annotations

import orjson

from .dialects import dialect_for
from .errors import BastionError, UpstreamError
from .providers import translate
from .providers.adapters import retry_after
from .providers.base import Format
from .upstream import provider_id_headers, provider_request_id

__all__ = ["UpstreamStatusError", "render_error"]


class UpstreamStatusError(UpstreamError):
    """A provider answered with an error status; ``fmt`` is the format of its body."""

    def __init__(self, status: int, body: bytes, fmt: Format, headers: dict[str, str]) -> None:
        super().__init__(
            f"upstream returned HTTP {status}",
            upstream_status=status,
            upstream_body=body,
            retry_after=retry_after(headers),
        )
        self.fmt = fmt
        self.provider_request_id = provider_request_id(headers)

    def http_status(self) -> int:
        return self.upstream_status or 502


def render_error(err: BaseException, client: Format) -> tuple[int, dict[str, str], bytes]:
    """An error as the client's API would have sent it; provider errors keep their status and meaning."""
    dialect = dialect_for(client)
    if isinstance(err, UpstreamStatusError) and err.upstream_body is not None:
        status = err.upstream_status or 502
        headers = {"content-type": "application/json"}
        if err.retry_after is not None:
            headers["retry-after"] = str(max(1, round(err.retry_after)))
        headers.update(provider_id_headers(client, err.provider_request_id))
        cred = UpstreamError("the upstream provider rejected the gateway's credentials")
        if status in (401, 403):
            # the provider rejected *our* credentials: not the client's fault
            return 502, headers, dialect.render_error(cred)
        if err.fmt is client:
            return status, headers, err.upstream_body
        status, body = translate.error_to(client, status, err.upstream_body, source=err.fmt)
        if status in (401, 403):  # said in the body only (Gemini: 400 API_KEY_INVALID)
            return 502, headers, dialect.render_error(cred)
        return status, headers, orjson.dumps(body)
    if isinstance(err, BastionError):
        headers = {"content-type": "application/json", **err.headers()}
        return err.http_status(), headers, dialect.render_error(err)
    internal = BastionError("internal error")
    return 500, {"content-type": "application/json"}, dialect.render_error(internal)
