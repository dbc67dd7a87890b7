"""The model only asks; this decides: permission, arguments, idempotency, timeout, fencing.

Every refusal is a result the model reads (``{"error": "permission_denied"}``), never data
and never an exception that ends the turn. Side-effecting tools run under an idempotency key
derived from who asked, in which conversation, which tool and which arguments, claimed in the
counter store, so a retried turn (a new model generation with new call ids) does not send the
email twice. Outcomes decide what a retry may do:

- success: the result is stored; a retry replays it without running the tool;
- ``ToolError`` or any other exception: the action did not happen, the claim is dropped;
- timeout or cancellation: the outcome is unknown, so the claim is kept until its lock lapses
  (the tool's timeout plus ``lock_margin``) and a retry in that window is told ``in_progress``.

Calls of one turn run concurrently, each under its own timeout. Whatever a model writes, a
call ends as a result, never as an exception that would take its turn's other results with it:
arguments that are not plain JSON (a number that reads as infinity, a lone surrogate, nesting
past ``MAX_DEPTH``) are refused as ``invalid_arguments``, the key is the argument's
``canonical`` bytes (injective, so distinct arguments never share a key), and a fault in the
executor itself becomes ``internal_error`` for that one call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.call import Principal
from bastion.errors import StateUnavailable
from bastion.state import CounterStore, IdemOutcome

from ..validation.jsonout import strict_loads
from . import _jsontext
from .canonical import canonical, json_problems
from .fence import fence_tool_result
from .registry import ToolContext, ToolError, ToolRegistry, ToolSpec

__all__ = ["ToolCall", "ToolExecutor", "ToolResult", "idempotency_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request; ``arguments`` is an object or the raw JSON text OpenAI sends."""

    id: str
    name: str
    arguments: Mapping[str, Any] | str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What the model gets back; ``text`` is the fenced form to put in the conversation."""

    call_id: str
    name: str
    ok: bool
    content: Any
    text: str
    error: str | None = None
    replayed: bool = False
    elapsed_ms: float = 0.0


def idempotency_key(principal: Principal, scope: str, tool: str, args: Mapping[str, Any]) -> str:
    """Stable across retries of one action: principal, conversation (or call), tool, arguments.

    Raises ``UnsupportedValue`` for arguments with no canonical form (the executor checks first).
    """
    parts = canonical([principal.key_id, principal.user, scope, tool, args])
    return "tool:" + hashlib.sha256(parts).hexdigest()


class ToolExecutor:
    """Runs a turn's tool calls for one principal, enforcing each tool's declaration."""

    def __init__(
        self,
        registry: ToolRegistry,
        state: CounterStore,
        *,
        idem_ttl: float = 86_400.0,
        lock_margin: float = 30.0,
        max_calls: int = 32,
        max_concurrency: int | None = None,
        max_result_chars: int = 100_000,
    ) -> None:
        self.registry = registry
        self._state = state
        self._idem_ttl = idem_ttl
        self._lock_margin = lock_margin
        self._max_calls = max_calls
        self._gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._max_chars = max_result_chars

    async def run_calls(
        self,
        calls: Sequence[ToolCall],
        principal: Principal,
        *,
        conversation_id: str | None = None,
    ) -> list[ToolResult]:
        """Results in the order of ``calls``; calls run concurrently, never raising."""
        runs = [
            self.run_call(call, principal, conversation_id=conversation_id)
            if i < self._max_calls
            else self._refused(call, "too_many_calls", limit=self._max_calls)
            for i, call in enumerate(calls)
        ]
        return list(await asyncio.gather(*runs))

    async def run_call(
        self, call: ToolCall, principal: Principal, *, conversation_id: str | None = None
    ) -> ToolResult:
        """One call, start to finish; every failure becomes an error result."""
        try:
            return await self._run_call(call, principal, conversation_id)
        except Exception:
            # A bug here must cost this call its answer, not the turn all of its answers.
            log.exception("tool call %r (%r) failed inside the executor", call.id, call.name)
            return await self._refused(call, "internal_error")

    async def _run_call(
        self, call: ToolCall, principal: Principal, conversation_id: str | None
    ) -> ToolResult:
        started = time.monotonic()
        spec = self.registry.get(call.name)
        if spec is None:
            return await self._refused(call, "unknown_tool")
        if not spec.allowed(principal):
            return await self._refused(call, "permission_denied")
        args, problems = _parse_arguments(call.arguments, spec)
        if args is None:
            return await self._refused(call, "invalid_arguments", details=problems)
        if self._gate is None:
            return await self._dispatch(spec, call, args, principal, conversation_id, started)
        async with self._gate:
            return await self._dispatch(spec, call, args, principal, conversation_id, started)

    async def _dispatch(
        self,
        spec: ToolSpec,
        call: ToolCall,
        args: dict[str, Any],
        principal: Principal,
        conversation_id: str | None,
        started: float,
    ) -> ToolResult:
        if not spec.side_effects:
            ctx = ToolContext(principal, call.id, conversation_id, None)
            ok, content, error = await self._invoke(spec, args, ctx)
            return self._result(call, ok, content, error, started=started)
        key = idempotency_key(principal, conversation_id or call.id, spec.name, args)
        return await self._run_once(spec, call, args, principal, conversation_id, key, started)

    async def _run_once(
        self,
        spec: ToolSpec,
        call: ToolCall,
        args: dict[str, Any],
        principal: Principal,
        conversation_id: str | None,
        key: str,
        started: float,
    ) -> ToolResult:
        fp = hashlib.sha256(canonical(args)).hexdigest()
        lock = spec.timeout + self._lock_margin
        deadline = started + spec.timeout
        try:
            while True:
                begin = await self._state.idem_begin(key, fp, self._idem_ttl, lock)
                if begin.outcome is IdemOutcome.NEW:
                    break
                if begin.outcome is IdemOutcome.DONE and begin.response is not None:
                    stored = _jsontext.loads(begin.response)
                    return self._result(call, True, stored, None, started=started, replayed=True)
                if begin.outcome is IdemOutcome.MISMATCH:
                    return await self._refused(call, "idempotency_conflict")
                if time.monotonic() >= deadline:
                    return await self._refused(call, "in_progress")
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        except StateUnavailable:
            log.warning("idempotency store unavailable; refusing side-effecting tool %s", spec.name)
            return await self._refused(call, "state_unavailable")
        ctx = ToolContext(principal, call.id, conversation_id, key)
        ok, content, error = await self._invoke(spec, args, ctx)
        try:
            if ok:
                await self._state.idem_complete(
                    key, fp, _jsontext.dumps(content).encode(), self._idem_ttl
                )
            elif error != "timeout":
                await self._state.idem_abandon(key)
        except StateUnavailable:
            log.warning("could not record the outcome of tool %s (key %s)", spec.name, key)
        return self._result(call, ok, content, error, started=started)

    async def _invoke(
        self, spec: ToolSpec, args: dict[str, Any], ctx: ToolContext
    ) -> tuple[bool, Any, str | None]:
        try:
            async with asyncio.timeout(spec.timeout):
                return True, await spec.func(args, ctx), None
        except TimeoutError:
            return False, {"error": "timeout", "timeout_seconds": spec.timeout}, "timeout"
        except ToolError as exc:
            return False, {"error": "tool_failed", "message": str(exc)}, "tool_failed"
        except Exception:
            log.exception("tool %s failed", spec.name)
            return False, {"error": "tool_failed"}, "tool_failed"

    def _result(
        self,
        call: ToolCall,
        ok: bool,
        content: Any,
        error: str | None,
        *,
        started: float,
        replayed: bool = False,
    ) -> ToolResult:
        text = fence_tool_result(call.name, content, max_chars=self._max_chars)
        elapsed = (time.monotonic() - started) * 1000.0
        return ToolResult(call.id, call.name, ok, content, text, error, replayed, elapsed)

    async def _refused(self, call: ToolCall, code: str, **extra: Any) -> ToolResult:
        content = {"error": code, **extra}
        return self._result(call, False, content, code, started=time.monotonic())


def _parse_arguments(
    raw: Mapping[str, Any] | str, spec: ToolSpec
) -> tuple[dict[str, Any] | None, list[str]]:
    """The validated arguments, or None and what is wrong with them (for the model to fix)."""
    if isinstance(raw, str):
        try:
            value = strict_loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError) as exc:
            return None, [f"arguments are not valid JSON: {exc}"]
    elif isinstance(raw, Mapping):
        value = dict(raw)
    else:
        value = raw
    if not isinstance(value, dict):
        return None, ["arguments must be a JSON object"]
    # Before the schema: it would pass an infinite "number" or a lone-surrogate "string".
    problems = json_problems(value) or spec.validator.errors(value)
    return (None, problems) if problems else (value, [])
