"""SQL the model asks a tool to run is validated in the gateway before the app ever sees it.

Per feature, config names the tools whose argument carries SQL. In each answer's tool
calls (Anthropic ``tool_use`` input, OpenAI ``function.arguments``) that SQL is checked
with the caller's roles (``validation.sql``): a valid query is rewritten to the form that
may run (row limit enforced, ``*`` expanded); an invalid one withholds the answer
(``output_blocked``) or, in flag mode, is passed on marked. Streams get the same check:
``sql_stream`` holds a streamed call of a SQL tool until its arguments are complete, then
releases it (rewritten) or ends the stream with an ``output_blocked`` error event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..call import Call
from ..dialects import Wire, wire_for
from ..errors import OutputBlocked
from ..findings import Finding
from .sql_stream import SqlStreamFilter

if TYPE_CHECKING:  # sqlglot loads with the first feature that has SQL tools
    from .validation import SqlPolicy

# the SQL check's revision, carried by every SQL finding on a call record
VERSION = "sql-2026.12.04"


class SqlToolCheck:
    """One feature's SQL tools and grants, built once at start-up.

    ``tool_policies`` overrides ``policy`` for the tools it names (a tool whose config extends
    the function allow-list). A finding's reasons are the validator's stable codes
    (``function_denied``, ``tautology``); the messages go to the model in block mode.
    """

    def __init__(
        self,
        tools: Mapping[str, str],
        policy: SqlPolicy,
        *,
        block: bool,
        tool_policies: Mapping[str, SqlPolicy] | None = None,
    ) -> None:
        self.tools = dict(tools)
        self.policy = policy
        self.block = block
        self.tool_policies = dict(tool_policies or {})

    def check(self, call: Call, name: str, sql: Any) -> str | None:
        """The SQL that may run, or None after flagging (and raising in block mode)."""
        if not isinstance(sql, str):
            self.reject(
                call,
                name,
                ["the SQL argument is missing or not a string"],
                ["sql_argument_missing"],
            )
            return None
        from .validation.sql import validate_sql  # loaded with the policy at start-up

        policy = self.tool_policies.get(name, self.policy)
        verdict = validate_sql(sql, policy, call.principal.roles)
        if verdict.ok:
            return verdict.sql
        self.reject(call, name, list(verdict.reasons), list(verdict.codes))
        return None

    _check = check  # the name earlier callers (and tests) use

    def reject(self, call: Call, name: str, reasons: list[str], codes: list[str]) -> None:
        """Record a rejected SQL tool call; in block mode withhold the answer (``OutputBlocked``)."""
        action: Literal["blocked", "flagged"] = "blocked" if self.block else "flagged"
        call.add_finding(
            Finding(
                "sql", "sql_rejected", action, "tool", VERSION,
                reasons=tuple(codes[:5]), subject=f"tool:{name}",
            )
        )  # fmt: skip
        if self.block:
            err = OutputBlocked(
                f"the model's SQL for tool {name!r} was rejected: {'; '.join(reasons[:3])}"
            )
            err.guard = SqlToolGuard.name
            raise err

    def apply(self, call: Call, fmt: str | Wire, obj: dict[str, Any]) -> bool:
        """Validate (and rewrite) SQL in a whole answer's tool calls; True when the body changed."""

        def edit(name: str, args: Any) -> dict[str, Any] | None:
            arg = self.tools.get(name)
            if arg is None:
                return None
            if not isinstance(args, dict):  # arguments that are not a JSON object
                self.check(call, name, None)
                return None
            safe = self.check(call, name, args.get(arg))
            return {**args, arg: safe} if safe is not None and safe != args.get(arg) else None

        return wire_for(fmt).edit_tool_calls(obj, edit)


class SqlToolGuard:
    """Checks SQL in tool calls: whole answers in the gateway's reply path (``check_body``),
    streamed ones by a hold-and-check filter planted on the call (``before``)."""

    name = "sql_tools"

    def __init__(self, checks: Mapping[str, SqlToolCheck]) -> None:
        self._checks = dict(checks)
        self.active = bool(self._checks)

    def for_call(self, call: Call) -> SqlToolCheck | None:
        return self._checks.get(call.feature or "default", self._checks.get("default"))

    async def before(self, call: Call) -> None:
        check = self.for_call(call) if call.stream else None
        if check is not None:
            call.output_filters.append(SqlStreamFilter(check, call))

    def check_body(self, call: Call, fmt: str | Wire, raw: bytes) -> bytes:
        check = self.for_call(call)
        if check is None:
            return raw
        obj = orjson.loads(raw)
        return orjson.dumps(obj) if isinstance(obj, dict) and check.apply(call, fmt, obj) else raw
