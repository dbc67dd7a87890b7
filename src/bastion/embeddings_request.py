"""An OpenAI embeddings request, validated: its inputs, their token bound, and PII scrubbing.

The wire shape (``POST /v1/embeddings``): ``input`` is a string, an array of strings, an array
of tokens or an array of token arrays (at most 2048 entries, none empty); ``model``; optional
``encoding_format`` (``float`` | ``base64``), ``dimensions`` (a positive integer) and ``user``.
Every refusal here is a 400 naming the field, before anything is counted or spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from .errors import InvalidRequest
from .findings import Finding
from .safety.pii import ScrubSession

MAX_INPUTS = 2048  # OpenAI's limit on the entries of one request
Shape = Literal["text", "texts", "tokens", "token_arrays"]
Item = str | tuple[int, ...]

__all__ = ["MAX_INPUTS", "EmbeddingsRequest", "parse_request", "scrub_inputs"]


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """The fields Bastion acts on; the inputs keep the shape the client sent them in."""

    model: str
    items: tuple[Item, ...]
    shape: Shape
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None

    def input_upper_bound(self) -> int:
        """Input tokens the request cannot exceed: a BPE token covers at least one UTF-8 byte."""
        return sum(
            len(it) if isinstance(it, tuple) else len(it.encode("utf-8", "surrogatepass")) + 1
            for it in self.items
        )

    def wire_input(self) -> Any:
        """The ``input`` field to send upstream, in the shape the client used."""
        if self.shape == "text":
            return self.items[0]
        if self.shape == "tokens":
            return list(self.items[0])
        return [list(it) if isinstance(it, tuple) else it for it in self.items]


def _token(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool) and t >= 0


def _items(value: Any) -> tuple[tuple[Item, ...], Shape]:
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input: must not be an empty string", param="input")
        return (value,), "text"
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "input: must be a non-empty string, array of strings, array of tokens "
            "or array of token arrays",
            param="input",
        )
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(
            f"input: at most {MAX_INPUTS} entries per request, got {len(value)}", param="input"
        )
    if all(_token(t) for t in value):
        return (tuple(value),), "tokens"
    if all(isinstance(s, str) for s in value):
        for i, s in enumerate(value):
            if not s:
                raise InvalidRequest(f"input[{i}]: must not be an empty string", param="input")
        return tuple(value), "texts"
    out: list[Item] = []
    for i, arr in enumerate(value):
        if not isinstance(arr, list) or not arr or not all(_token(t) for t in arr):
            raise InvalidRequest(
                f"input[{i}]: entries must all be strings, or all non-empty arrays of "
                "non-negative integer tokens",
                param="input",
            )
        out.append(tuple(arr))
    return tuple(out), "token_arrays"


def parse_request(body: Mapping[str, Any]) -> EmbeddingsRequest:
    """Validate a parsed body; raise ``InvalidRequest`` naming the first bad field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model name (string) is required", param="model")
    if "input" not in body:
        raise InvalidRequest("input: is required", param="input")
    items, shape = _items(body["input"])
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequest(
            f"encoding_format: must be 'float' or 'base64', not {str(fmt)[:40]!r}",
            param="encoding_format",
        )
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise InvalidRequest("dimensions: must be a positive integer", param="dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("user: must be a string", param="user")
    return EmbeddingsRequest(model, items, shape, fmt, dims)


def scrub_inputs(
    req: EmbeddingsRequest, session: ScrubSession, version: str
) -> tuple[EmbeddingsRequest, Finding | None]:
    """The request with PII in its texts replaced by placeholders, and what was found.

    Token arrays cannot be read without the provider's tokenizer, so a feature whose policy
    scrubs the provider's input refuses them rather than send them unread.
    """
    if req.shape in ("tokens", "token_arrays"):
        raise InvalidRequest(
            "input: this feature scrubs personal data before the provider sees it, and token "
            "arrays cannot be scrubbed; send the input as text",
            param="input",
        )
    items = tuple(
        session.scrub(it, mode="redact").text if isinstance(it, str) else it for it in req.items
    )
    counts = dict(session.counts)
    if not counts:
        return req, None
    finding = Finding(
        "pii",
        "pii",
        "redacted",
        "request",
        version,
        reasons=tuple(sorted(counts)),
        counts=tuple(sorted(counts.items())),
    )
    return replace(req, items=items), finding
