"""What every readiness item shares: results, the per-feature view of the config, the sandbox.

An item judges the *app*: each feature on the effective config of every alias it can reach
("the app uses X": PASS / WARN / FAIL). What Bastion can do but the config does not show the
app using is INFO ("Bastion offers X"), never PASS.

A drill runs against a sandbox built from the user's config: the same features, guards and
settings, with every provider replaced by the in-process simulator (same names, so every
alias still routes) and throwaway record and counter stores. Alert webhooks are dropped, and
unless a drill asks to keep them, spend caps and rate limits are lifted (a drill tests one
guard at a time; the cap and rate-limit drills keep the user's and shrink their values).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from ..call import Principal
from ..config import Config, DeploymentConfig
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
    "app_code_uses",
    "ask",
    "enabled_deployments",
    "feature_aliases",
    "feature_model",
    "model_alias",
    "worst",
]

Status = Literal["INFO", "PASS", "WARN", "FAIL"]
# INFO never raises an item to PASS: an item with INFO lines only stays INFO
_RANK: dict[Status, int] = {"INFO": 0, "PASS": 1, "WARN": 2, "FAIL": 3}
# drills name end users of their own, counted per user as an app's trusted key would be
CHECK_PRINCIPAL = Principal(
    key_id="bastion-check", name="bastion-check", roles=("check", "end_users")
)
_SKIP_DIRS = frozenset(
    {".git", ".venv", "venv", "node_modules", "site-packages", "tests", "__pycache__", ".tox"}
)
_MAX_SCANNED = 5000
_MAX_FILE_BYTES = 1_000_000


def worst(*statuses: Status) -> Status:
    return max(statuses, key=lambda s: _RANK[s]) if statuses else "INFO"


@dataclass(slots=True)
class ItemResult:
    """One checklist line: its status and the evidence behind it (config facts, drill outcomes)."""

    id: str
    track: str
    item: str
    status: Status = "INFO"
    evidence: list[str] = field(default_factory=list)
    failing_features: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def add(self, status: Status, line: str) -> None:
        self.status = worst(self.status, status)
        self.evidence.append(f"{status.lower()}: {line}" if status != "PASS" else line)

    def app(self, status: Status, line: str, *, features: tuple[str, ...] = ()) -> None:
        """A verdict on what the app's config does; names the features that fail it."""
        self.add(status, f"app: {line}")
        if status in ("WARN", "FAIL"):
            self.failing_features += [f for f in features if f not in self.failing_features]

    def offers(self, line: str) -> None:
        """What Bastion can do, which the config does not show the app using: INFO, never PASS."""
        self.add("INFO", f"Bastion offers: {line}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "track": self.track,
            "item": self.item,
            "status": self.status,
            "failing_features": self.failing_features,
            "evidence": self.evidence,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


@dataclass(frozen=True, slots=True)
class Item:
    """A checklist item (``id`` is stable, for ``--only`` and tests) and the coroutine judging it."""

    id: str
    track: str
    name: str
    run: Callable[[CheckContext, ItemResult], Awaitable[None]]


def model_alias(config: Config, model: str) -> str | None:
    """The config key that routes ``model`` (exact first, then globs in order)."""
    if model in config.models:
        return model
    return next((a for a in config.models if fnmatch.fnmatchcase(model, a)), None)


def _concrete(alias: str) -> str:
    return alias.replace("*", "check").replace("?", "x").replace("[", "").replace("]", "")


def feature_aliases(config: Config, feature: str) -> tuple[list[str], list[str]]:
    """The aliases a feature's calls can reach, and the model names it allows that route nowhere.

    A pinned feature reaches its pin only; an allow-list reaches what it lists; otherwise the
    client may send any model, so every alias is reachable.
    """
    f = config.feature(feature)
    if f.model is not None:
        names = [f.model]
    elif f.allowed_models is not None:
        names = list(f.allowed_models)
    else:
        return list(config.models), []
    aliases: list[str] = []
    unrouted: list[str] = []
    for n in names:
        a = model_alias(config, n)
        if a is None:
            unrouted.append(n)
        elif a not in aliases:
            aliases.append(a)
    return aliases, unrouted


def feature_model(config: Config, feature: str, alias: str) -> str:
    """A model name which, sent with this feature's header, is served by ``alias``."""
    f = config.feature(feature)
    if f.model is not None:
        return f.model
    if f.allowed_models is not None:
        for m in f.allowed_models:
            if model_alias(config, m) == alias:
                return m
    return alias if not any(c in alias for c in "*?[") else _concrete(alias)


def enabled_deployments(config: Config, alias: str) -> list[DeploymentConfig]:
    """The deployments of ``alias`` that serve here (an env-gated one only when its flag is on)."""
    return [d for d in config.models[alias].deployments if d.enabled()]


def app_code_uses(project_dir: Path, pattern: str) -> list[str]:
    """App source files (not tests, not virtualenvs) matching ``pattern``, relative to the project."""
    rx = re.compile(pattern)
    found: list[str] = []
    for i, p in enumerate(_py_files(project_dir)):
        if i >= _MAX_SCANNED:
            break
        try:
            if p.stat().st_size > _MAX_FILE_BYTES:
                continue
            if rx.search(p.read_text(errors="replace")):
                found.append(str(p.relative_to(project_dir)))
        except OSError:
            continue
    return sorted(found)


def _py_files(root: Path) -> Iterator[Path]:
    """Python files of the app, pruning virtualenvs, dependencies, tests and hidden folders."""
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root).parts
        dirs[:] = [
            d
            for d in sorted(dirs)
            if d not in _SKIP_DIRS and not d.startswith(".") and (*rel, d) != ("src", "bastion")
        ]
        for name in sorted(files):
            if name.endswith(".py") and not name.startswith("test_"):
                yield Path(here) / name


@dataclass(slots=True)
class CheckContext:
    """The audited config, where it came from, and a factory for sandbox gateways."""

    config: Config
    config_path: Path | None
    project_dir: Path
    drills: bool = True
    url: str | None = None  # the public URL for live drills (``check --url``), when given
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

    @property
    def features(self) -> list[str]:
        return list(self.config.features)

    def drill_data(self, *, keep_limits: bool = False) -> dict[str, Any]:
        """The user's config as data, every provider simulated and all state throwaway."""
        data = self.config.model_dump(by_alias=True, exclude_none=True)
        self._n += 1
        n = self._n
        data["providers"] = {name: {"kind": "sim"} for name in data.get("providers", {})}
        data["store"] = {"url": f"sqlite:///{self._dir() / f'drill{n}.db'}"}
        data["state"] = {**data.get("state", {}), "url": "memory://", "settle_journal": None}
        data["observability"] = {
            **data.get("observability", {}),
            "spill_path": str(self._dir() / f"spill{n}.jsonl"),
        }
        data["observability"].pop("otlp_endpoint", None)  # drills export no traces
        cost = data.setdefault("cost", {})
        cost.setdefault("alerts", {})["webhooks"] = []
        if not keep_limits:
            cost["rate_limits"] = {}
            # no cap refuses a drill's call, but end users are still counted as the app counts them
            cost["caps"] = {"end_user_caps": cost.get("caps", {}).get("end_user_caps", False)}
            for f in data.get("features", {}).values():
                for k in ("daily_budget_usd", "max_input_tokens", "conversation_max_tokens"):
                    f.pop(k, None)
        for alias, m in data.get("models", {}).items():
            real = self.config.models[alias].deployments
            on = [d for d, c in zip(m["deployments"], real, strict=True) if c.enabled()]
            m["deployments"] = on or m["deployments"]
            for d in m["deployments"]:
                d.pop("enabled_env", None)
        return data

    @contextlib.asynccontextmanager
    async def drill(
        self,
        edit: Callable[[dict[str, Any]], None] | None = None,
        *,
        obey_injections: bool = False,
        keep_limits: bool = False,
    ) -> AsyncIterator[Gateway]:
        """A gateway built from the (edited) sandbox config, with an in-process simulator."""
        data = self.drill_data(keep_limits=keep_limits)
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
    extra: Mapping[str, Any] | None = None,
) -> tuple[Reply, bytes]:
    """One Anthropic-format call through the whole pipeline; returns the reply and its body bytes."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        **(extra or {}),
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
