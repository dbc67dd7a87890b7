"""What every readiness item shares: results, the drill gateway, and small call helpers.

A drill never touches what the config points at: providers become the in-process
simulator (same names, so every alias still routes), the record store and counters
become throwaway ones, and alert webhooks are dropped unless the drill brings its own.
Spend caps and rate limits are lifted too (a drill tests one guard at a time; the cap
and rate-limit drills set their own).
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from ..call import Principal
from ..config import Config
from ..engine import Reply
from ..gateway import Gateway
from ..providers.base import Format
from ..providers.sim import Simulator

__all__ = [
    "CHECK_PRINCIPAL",
    "CheckContext",
    "Item",
    "ItemResult",
    "Status",
    "ask",
    "drill_model",
    "optional",
    "worst",
]

Status = Literal["PASS", "WARN", "FAIL"]
_RANK: dict[Status, int] = {"PASS": 0, "WARN": 1, "FAIL": 2}
# drills name end users of their own, counted per user as an app's trusted key would be
CHECK_PRINCIPAL = Principal(
    key_id="bastion-check", name="bastion-check", roles=("check", "end_users")
)
NOT_BUILT = "not available in this build"


def worst(*statuses: Status) -> Status:
    return max(statuses, key=lambda s: _RANK[s]) if statuses else "PASS"


@dataclass(slots=True)
class ItemResult:
    """One checklist line: its status and the evidence behind it (config facts, drill outcomes)."""

    track: str
    item: str
    status: Status = "PASS"
    evidence: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def add(self, status: Status, line: str) -> None:
        self.status = worst(self.status, status)
        self.evidence.append(f"{status.lower()}: {line}" if status != "PASS" else line)

    def to_dict(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "item": self.item,
            "status": self.status,
            "evidence": self.evidence,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


@dataclass(frozen=True, slots=True)
class Item:
    """A checklist item and the coroutine that inspects config and runs its drill."""

    track: str
    name: str
    run: Callable[[CheckContext, ItemResult], Awaitable[None]]


def optional(module: str) -> Any | None:
    """A module of another track, or None while it is not built (or does not import)."""
    try:
        return importlib.import_module(module)
    except Exception:
        return None


def _concrete(alias: str) -> str:
    return alias.replace("*", "check").replace("?", "x").replace("[", "").replace("]", "")


def drill_model(config: Config, *, want_failover: bool = False) -> str | None:
    """A client-facing model name to drill with; prefers one with a fallback when asked."""
    aliases = list(config.models)
    if want_failover:
        multi = [a for a in aliases if len(config.models[a].deployments) >= 2]
        aliases = multi + [a for a in aliases if a not in multi]
    for a in aliases:
        if not any(c in a for c in "*?["):
            return a
    return _concrete(aliases[0]) if aliases else None


def model_alias(config: Config, model: str) -> str | None:
    """The config key that routes ``model`` (exact first, then globs in order)."""
    if model in config.models:
        return model
    return next((a for a in config.models if fnmatch.fnmatchcase(model, a)), None)


@dataclass(slots=True)
class CheckContext:
    """The audited config, where it came from, and a factory for drill gateways."""

    config: Config
    config_path: Path | None
    project_dir: Path
    drills: bool = True
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _n: int = 0

    def _dir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bastion-check-")
        return Path(self._tmp.name)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def drill_data(self) -> dict[str, Any]:
        """The config as data, with every provider simulated and all state throwaway."""
        data = self.config.model_dump(by_alias=True, exclude_none=True)
        self._n += 1
        n = self._n
        data["providers"] = {name: {"kind": "sim"} for name in data.get("providers", {})}
        data["store"] = {"url": f"sqlite:///{self._dir() / f'drill{n}.db'}"}
        data["state"] = {**data.get("state", {}), "url": "memory://"}
        data["observability"] = {
            **data.get("observability", {}),
            "spill_path": str(self._dir() / f"spill{n}.jsonl"),
        }
        cost = data.setdefault("cost", {})
        cost.setdefault("alerts", {})["webhooks"] = []
        # each drill exercises one guard: the others' limits must not refuse its calls
        cost["rate_limits"] = {}
        cost["caps"] = {}
        for f in data.get("features", {}).values():
            for k in ("daily_budget_usd", "max_input_tokens", "conversation_max_tokens"):
                f.pop(k, None)
        for m in data.get("models", {}).values():
            for d in m.get("deployments", []):
                d.pop("enabled_env", None)
        return data

    @contextlib.asynccontextmanager
    async def drill(
        self,
        edit: Callable[[dict[str, Any]], None] | None = None,
        *,
        obey_injections: bool = False,
    ) -> AsyncIterator[Gateway]:
        """A gateway built from the (edited) drill config, with an in-process simulator."""
        data = self.drill_data()
        if edit is not None:
            edit(data)
        cfg = Config.model_validate(data)
        async with Gateway(cfg, simulator=Simulator(obey_injections=obey_injections)) as gw:
            yield gw


def set_headers(data: dict[str, Any], alias: str, index: int, headers: Mapping[str, str]) -> None:
    """Add upstream headers (e.g. a simulator fault) to one deployment of ``alias``."""
    dep = data["models"][alias]["deployments"][index]
    dep["headers"] = {**dep.get("headers", {}), **headers}


async def ask(
    gw: Gateway,
    model: str,
    *,
    text: str = "ping",
    user: str = "check-user",
    feature: str | None = None,
    stream: bool = False,
    max_tokens: int | None = 32,
    system: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[Reply, bytes]:
    """One Anthropic-format call through the whole pipeline; returns the reply and its body bytes."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if system is not None:
        body["system"] = system
    if tools:
        body["tools"] = tools
    hs = {"x-bastion-user": user, **(headers or {})}
    if feature:
        hs["x-bastion-feature"] = feature
    reply = await gw.handle(Format.ANTHROPIC, orjson.dumps(body), hs, principal=CHECK_PRINCIPAL)
    if reply.stream is None:
        return reply, reply.body or b""
    chunks = [c async for c in reply.stream]
    return reply, b"".join(chunks)
