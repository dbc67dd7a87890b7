"""What one attempt sends and what comes back with it: the upstream body, the provider's id.

The fast path keeps the client's body (a shallow copy, the admitted request stays frozen);
another provider format is translated; prompt caching, the token-limit field each model takes
and the usage request of OpenAI streams are added per deployment by the target format's wire
(``dialects``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .call import Call
from .dialects import dialect_for, find_wire
from .providers import translate
from .providers.base import Format
from .reliability.router import Deployment
from .schema import header_token

__all__ = ["provider_id_headers", "provider_request_id", "upstream_body"]


def provider_request_id(headers: Mapping[str, str]) -> str | None:
    """The provider's own id of a response (Anthropic ``request-id``, OpenAI ``x-request-id``),
    kept only if it is safe to echo in a header."""
    return header_token(headers.get("request-id") or headers.get("x-request-id"), 200)


def provider_id_headers(client: Format, rid: str | None) -> dict[str, str]:
    """Where each SDK looks for the request id: Anthropic's ``request-id`` is the provider's;
    OpenAI's ``x-request-id`` is Bastion's own (the record's key), so the provider's rides
    beside it."""
    return dialect_for(client).request_id_headers(rid)


def upstream_body(call: Call, dep: Deployment) -> dict[str, Any]:
    """The body as the deployment's provider expects it (same dict on the fast path)."""
    target = dep.endpoint.speaks(call.client_format)
    if target is call.client_format:
        body = dict(call.body)
        body["model"] = dep.model
    else:
        body = translate.request_to(target, call.body, source=call.client_format, model=dep.model)
    wire = find_wire(target)  # None: a format only a provider speaks gets no caching hints
    if call.prompt_caching and wire is not None:
        body = wire.prompt_caching(
            body,
            dep.endpoint.kind,
            stable_messages=call.stable_messages,
            feature=call.feature,
            model=dep.model,
        )
    if wire is not None:  # the limit field the model takes, usage asked for in a stream
        body = wire.upstream_fields(body, dep.model, stream=call.stream)
    return body
