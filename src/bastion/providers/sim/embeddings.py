"""The simulator's ``POST /v1/embeddings``: OpenAI's wire format with deterministic vectors.

A vector depends only on its input (a string, or a token array) and its dimension: the
components come from a generator seeded by the input's digest, and the vector is scaled to
unit length (as OpenAI's embeddings are). The first ``k`` raw components are the same for
every dimension, so a vector asked for with ``dimensions: k`` is the unit-length prefix of a
longer one, like OpenAI's shortened ``text-embedding-3`` vectors. ``encoding_format: base64``
is the little-endian float32 array in base64, which the official SDK decodes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
from typing import Any

import orjson

from .cache import tokens_of
from .result import WireError

# native dimensions of the models the simulator knows; any other name ending in -<digits>
# (sim-embed-256) has that many, and the rest DEFAULT_DIMENSIONS
NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
DEFAULT_DIMENSIONS = 1536
MAX_INPUTS = 2048  # OpenAI's limit on the entries of one request
MAX_DIMENSIONS = 8192
_SUFFIX = re.compile(r"-(\d{1,4})$")

__all__ = ["EmbeddingsAnswer", "answer", "native_dimensions", "vector"]


def native_dimensions(model: str) -> int:
    """The dimension a model answers with when the request names none."""
    known = NATIVE_DIMENSIONS.get(model)
    if known is not None:
        return known
    m = _SUFFIX.search(model)
    return int(m.group(1)) if m and 0 < int(m.group(1)) <= MAX_DIMENSIONS else DEFAULT_DIMENSIONS


def _seed_bytes(item: str | list[int]) -> bytes:
    if isinstance(item, str):
        return b"text\0" + item.encode("utf-8", "surrogatepass")
    return b"tokens\0" + ",".join(str(t) for t in item).encode()


def vector(item: str | list[int], dimensions: int) -> list[float]:
    """The unit-length vector of one input: seeded by the input alone, never by the request."""
    seed = int.from_bytes(hashlib.blake2b(_seed_bytes(item), digest_size=16).digest(), "big")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(math.fsum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _inputs(value: Any) -> list[str | list[int]]:
    """The request's inputs as a list, or the provider's 400 for a shape it refuses."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(_is_token(t) for t in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise WireError("'input' must be a non-empty string or array", param="input")
    if len(items) > MAX_INPUTS:
        raise WireError(f"'input' has more than {MAX_INPUTS} entries", param="input")
    for item in items:
        ok = (isinstance(item, str) and item != "") or (
            isinstance(item, list) and item and all(_is_token(t) for t in item)
        )
        if not ok:
            raise WireError(
                "'input' entries must be non-empty strings or non-empty arrays of tokens",
                param="input",
            )
    return items


def _is_token(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool) and t >= 0


def _tokens(item: str | list[int]) -> int:
    return len(item) if isinstance(item, list) else tokens_of(len(item.encode("utf-8")))


class EmbeddingsAnswer:
    """One answered request: the body and how many input tokens it used."""

    __slots__ = ("body", "prompt_tokens")

    def __init__(self, body: bytes, prompt_tokens: int) -> None:
        self.body = body
        self.prompt_tokens = prompt_tokens


def answer(body: Any, model: str) -> EmbeddingsAnswer:
    """Answer one request body; raises ``WireError`` with OpenAI's 400 for a bad one."""
    if not isinstance(body, dict):
        raise WireError("the request body must be a JSON object")
    items = _inputs(body.get("input"))
    dims = body.get("dimensions")
    if dims is None:
        dims = native_dimensions(model)
    elif not isinstance(dims, int) or isinstance(dims, bool) or not 0 < dims <= MAX_DIMENSIONS:
        raise WireError("'dimensions' must be a positive integer", param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise WireError("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    data = []
    for i, item in enumerate(items):
        vec = vector(item, dims)
        emb: Any = (
            base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode("ascii")
            if fmt == "base64"
            else vec
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    prompt = sum(_tokens(item) for item in items)
    out = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return EmbeddingsAnswer(orjson.dumps(out), prompt)
