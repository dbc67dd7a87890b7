"""The safety track as gateway guards, built once from config: server-side prompt templates
(backed by the store's registry), injection scanning, scope, and system-prompt leak watching.

Each piece's logic lives in its own module (``prompting``, ``pii``); this module only maps
config onto them and adapts the leak watcher to the relay's output-filter protocol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any, Literal

from ..call import Call
from ..config import Config, FeatureSafetyConfig
from ..errors import InvalidRequest, NotFound, OutputBlocked
from ..store import PromptVersion, RecordStore
from .prompting import InjectionPolicy, LeakWatcher, Template, TemplateRegistry
from .prompting.canary import LeakVerdict
from .prompting.guards import (
    InjectionGuard,
    LeakGuard,
    LeakPolicy,
    ScopeRequestGuard,
    leak_finding,
    require_selectable,
)
from .prompting.leak import ShinglePolicy
from .prompting.scope import ScopeGuard
from .sql_guard import SqlToolCheck, SqlToolGuard

_LEAK_ACTED: dict[str, Literal["flagged", "blocked", "redacted"]] = {
    "block": "blocked",
    "redact": "redacted",
}


class LeakFilter:
    """A leak watcher as an output filter: blocked output ends the answer with output_blocked."""

    __slots__ = ("_call", "_seen", "_watcher")

    def __init__(self, watcher: LeakWatcher, call: Call) -> None:
        self._watcher = watcher
        self._call = call
        self._seen: frozenset[str] = frozenset()

    def _note(self, v: LeakVerdict) -> None:
        """A finding when a signal first fires (``shingle:0.62`` and ``shingle:0.7`` are one)."""
        reasons = v.reasons
        signals = frozenset(r.split(":", 1)[0] for r in reasons)
        if signals - self._seen:
            self._seen |= signals
            acted = _LEAK_ACTED.get(self._watcher.action, "flagged")
            where: Literal["stream", "response"] = "stream" if self._call.stream else "response"
            self._call.add_finding(leak_finding(reasons, acted, where, v.score))

    def feed(self, text: str) -> str:
        v = self._watcher.feed(text)
        self._note(v)
        if v.blocked:
            raise OutputBlocked("the answer was withheld: it disclosed the system prompt")
        return v.emit

    def flush(self) -> str:
        v = self._watcher.finish()
        self._note(v)
        if v.blocked:  # the tail completed a leak: end the answer, never a clean cut
            raise OutputBlocked("the answer was withheld: it disclosed the system prompt")
        return v.emit


class LeakOutputGuard:
    """Plants a leak watcher on every answer whose feature has a leak policy."""

    name = "leak"

    def __init__(self, leak: LeakGuard) -> None:
        self._leak = leak
        self.active = leak.active

    async def before(self, call: Call) -> None:
        w = self._leak.watcher(call)
        if w is not None:
            call.output_filters.append(LeakFilter(w, call))

    async def after(self, call: Call, error: BaseException | None) -> None:
        if any(isinstance(f, LeakFilter) for f in call.output_filters):
            return  # the answer was already watched as it went out
        await self._leak.after(call, error)


class PromptService:
    """Templates by name and label or version, from the store; labels re-read every few seconds
    so a label moved on one replica takes effect on all."""

    def __init__(self, store: RecordStore, secret: str, *, label_ttl: float = 2.0) -> None:
        self.store = store
        self.registry = TemplateRegistry(secret)
        self._label_ttl = label_ttl
        self._labels: dict[tuple[str, str], tuple[float, int]] = {}

    async def _version(self, name: str, ref: str) -> int:
        if ref.isdigit():
            return int(ref)
        if ref == "latest":
            v = await self.store.latest_prompt_version(name)
        else:
            now = time.monotonic()
            hit = self._labels.get((name, ref))
            if hit is not None and hit[0] > now:
                return hit[1]
            v = await self.store.prompt_label(name, ref)
            if v is not None:
                self._labels[(name, ref)] = (now + self._label_ttl, v)
        if v is None:
            raise NotFound(f"prompt template {name!r} has no version {ref!r}")
        return v

    async def template(self, name: str, ref: str) -> Template:
        version = await self._version(name, ref)
        if version not in self.registry.versions(name):
            pv = await self.store.get_prompt_version(name, version)
            if pv is None:
                raise NotFound(f"prompt template {name}@{version} does not exist")
            spotlight: Any = pv.spotlight
            self.registry.register(name, pv.instructions, version=pv.version, spotlight=spotlight)
        return self.registry.get(name, version)

    async def publish(
        self, name: str, instructions: str, *, labels: tuple[str, ...] = (), who: str | None = None
    ) -> int:
        """Store a new version (the same text as the latest is not a new version) and move labels."""
        latest = await self.store.latest_prompt_version(name)
        version = (latest or 0) + 1
        if latest is not None:
            last = await self.store.get_prompt_version(name, latest)
            if last is not None and last.instructions == instructions:
                version = latest
        self.registry.register(name, instructions, version=version)  # validates the template
        await self.store.create_prompt_version(
            PromptVersion(name=name, version=version, instructions=instructions, created_by=who)
        )
        for label in labels:
            await self.store.set_prompt_label(name, label, version)
        return version


class TemplateGuard:
    """Renders a named template server-side (the ``bastion`` request field), so apps never
    concatenate untrusted text into instructions; records the version that was live."""

    name = "template"

    def __init__(self, prompts: PromptService) -> None:
        self._prompts = prompts

    async def before(self, call: Call) -> None:
        ext = call.body.pop("bastion", None)
        if ext is None:
            return
        if not isinstance(ext, dict) or not isinstance(ext.get("prompt"), str):
            raise InvalidRequest(
                "bastion.prompt: the template name is required", param="bastion.prompt"
            )
        ref = str(ext.get("version") or ext.get("label") or "production")
        require_selectable(ext["prompt"], ref, call.principal.roles)  # drafts need the role
        variables = ext.get("variables") or {}
        user_content = ext.get("user_content") or ""
        docs = ext.get("documents") or []
        if (
            not isinstance(variables, dict)
            or not isinstance(user_content, str)
            or not isinstance(docs, list)
        ):
            raise InvalidRequest(
                "bastion: variables (object), user_content (string), documents (list)"
            )
        doc_pairs = []
        for i, d in enumerate(docs):
            if (
                not isinstance(d, dict)
                or not isinstance(d.get("id"), str)
                or not isinstance(d.get("text"), str)
            ):
                raise InvalidRequest(
                    f"bastion.documents.{i}: needs string id and text", param="bastion.documents"
                )
            doc_pairs.append((d["id"], d["text"]))
        t = await self._prompts.template(ext["prompt"], ref)
        try:
            prompt = self._prompts.registry.render(
                t.name, t.version, variables, doc_pairs, user_content
            )
        except ValueError as exc:
            raise InvalidRequest(f"bastion.variables: {exc}", param="bastion.variables") from None
        history = [m for m in call.body.get("messages") or () if isinstance(m, dict)]
        call.dialect.place_prompt(call.body, prompt, history)
        call.prompt_version = t.ref
        call.flags["prompt_name"] = t.name


def canary_secret(config: Config) -> str:
    """Canaries must agree across replicas: from the env (recommended), else from the store URL."""
    return (
        os.environ.get(config.safety.canary_secret_env)
        or hashlib.sha256(config.store.url.encode()).hexdigest()
    )


def _sql_check(s: FeatureSafetyConfig) -> SqlToolCheck:
    """A feature's SQL tools, grants and limits; a tool listed in sql_functions gets its own."""
    from .validation.sql import SqlPolicy  # sqlglot: only for a feature with SQL tools

    policy = SqlPolicy(
        roles={role: dict(tables) for role, tables in s.sql_grants.items()},
        max_rows=s.sql_max_rows,
        dialect=s.sql_dialect,
    )
    tools = {
        tool: dataclasses.replace(policy, extra_functions=frozenset(names))
        for tool, names in s.sql_functions.items()
    }
    return SqlToolCheck(s.sql_tools, policy, block=s.sql_action == "block", tool_policies=tools)


def safety_guards(
    config: Config, store: RecordStore
) -> tuple[PromptService, list[object], SqlToolGuard]:
    """The prompt service, the request/output guards of the safety track in chain order, and
    the SQL check the gateway applies to whole answers."""
    prompts = PromptService(store, canary_secret(config))
    # a configured feature that turns a guard off gets None, so it is not guarded by the
    # default feature's policy (the fallback is for feature names the config does not know)
    inj: dict[str, InjectionPolicy | None] = {}
    scopes: dict[str, ScopeGuard | None] = {}
    leaks: dict[str, LeakPolicy | None] = {}
    for name, f in config.features.items():
        s = f.safety
        inj[name] = None
        if s.injection_action != "off":
            inj[name] = InjectionPolicy(
                threshold=s.injection_threshold,
                user_action=s.injection_action,
                doc_action=s.injection_doc_action,
            )
        scopes[name] = None
        if s.scope_guard:
            scopes[name] = ScopeGuard(deny_patterns=s.scope_deny_patterns)
        leaks[name] = None
        if s.leak_action != "off":
            shingles = ShinglePolicy(threshold=s.leak_threshold)
            leaks[name] = LeakPolicy(action=s.leak_action, shingles=shingles)
    sql_checks = {
        name: _sql_check(f.safety) for name, f in config.features.items() if f.safety.sql_tools
    }
    guards: list[object] = [
        TemplateGuard(prompts),
        ScopeRequestGuard(scopes),
        InjectionGuard(inj),
        LeakOutputGuard(LeakGuard(leaks)),
    ]
    return prompts, guards, SqlToolGuard(sql_checks)
