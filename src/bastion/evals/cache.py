"""A response cache for eval runs, keyed by request, model and seed, so a re-run costs nothing.

One JSON file per key under a directory (reviewable, safe to delete, shareable between
CI jobs as an artifact). The key hashes the exact request body, the API shape, the
model actually asked for and the run's seed, plus a fingerprint of the gateway's
config (its guards and routes decide the answer too; store and state locations do
not count): change any of them and the call is made again. Failed calls are never
stored, so an outage is not replayed as an answer.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from .scorers import Output

__all__ = ["ResponseCache", "cache_key", "config_fingerprint"]

_NOT_ANSWER = {"store", "state", "observability", "server"}

CACHE_FORMAT = 1


def cache_key(api: str, body: dict[str, Any], model: str, seed: str, config: str = "") -> str:
    """A stable hash of what decides the answer (key order in ``body`` does not matter)."""
    raw = orjson.dumps(
        {"v": CACHE_FORMAT, "api": api, "body": body, "model": model, "seed": seed, "cfg": config},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(raw).hexdigest()


def config_fingerprint(config: BaseModel) -> str:
    """A hash of the config sections that can change an answer."""
    data = config.model_dump(mode="json", exclude=_NOT_ANSWER)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class ResponseCache:
    """Stores one successful ``Output`` per key; counts hits and misses for the run's notes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.config = ""  # the fingerprint of the gateway config answers are stored under

    def bind(self, config: BaseModel) -> None:
        """Key what follows on this gateway config (a run does this before its first call)."""
        self.config = config_fingerprint(config)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Output | None:
        try:
            data = orjson.loads(self._path(key).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            self.misses += 1
            return None
        if not isinstance(data, dict) or data.get("v") != CACHE_FORMAT:
            self.misses += 1
            return None
        fields = {k: v for k, v in data["output"].items() if k in Output.__dataclass_fields__}
        fields["tool_calls"] = [(n, a) for n, a in fields.get("tool_calls", [])]
        self.hits += 1
        return Output(**fields)

    def put(self, key: str, out: Output) -> None:
        if out.error is not None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps({"v": CACHE_FORMAT, "output": asdict(out)})
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
