"""SQL in a tool call is validated in the gateway with the caller's roles before the app sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import sim_models

import bastion
from bastion.call import Call, Principal
from bastion.errors import OutputBlocked
from bastion.providers.base import Format
from bastion.safety.sql_guard import SqlToolCheck
from bastion.safety.validation import SqlPolicy

SUPPORT = Principal(key_id="k1", name="agent", roles=("support",))


def _cfg(tmp: Path, action: str = "block") -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'q.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {
            "default": {
                "safety": {
                    "sql_tools": {"run_sql": "query"},
                    "sql_max_rows": 50,
                    "sql_action": action,
                    "sql_grants": {"support": {"orders": ["id", "status"], "customers": ["id"]}},
                }
            }
        },
    }


def _tool(sql: str) -> dict[str, Any]:
    # the simulator fills tool arguments from the schema; a one-value enum scripts the SQL
    return {
        "type": "function",
        "function": {
            "name": "run_sql",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "enum": [sql]}},
                "required": ["query"],
            },
        },
    }


async def _ask(gw: bastion.Gateway, sql: str) -> dict[str, Any]:
    body = {
        "model": "gpt-4.1",
        "tools": [_tool(sql)],
        "tool_choice": "required",
        "messages": [{"role": "user", "content": "How many open orders?"}],
    }
    reply = await gw.handle(Format.OPENAI, orjson.dumps(body), {}, principal=SUPPORT)
    out: dict[str, Any] = orjson.loads(reply.body or b"{}")
    return out


def _sql_of(out: dict[str, Any]) -> str:
    args = out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    return str(orjson.loads(args)["query"])


async def test_allowed_query_is_rewritten_with_the_row_limit(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        out = await _ask(gw, "SELECT id, status FROM orders WHERE status = 'open'")
        sql = _sql_of(out)
        assert "LIMIT 50" in sql.upper() and "orders" in sql


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM orders WHERE id = 1",
        "SELECT id, email FROM customers",
        "SELECT id FROM orders; DROP TABLE orders",
        "SELECT secret FROM payroll",
    ],
)
async def test_unsafe_sql_withholds_the_answer(tmp_path: Path, sql: str) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        with pytest.raises(OutputBlocked):
            await _ask(gw, sql)


async def test_flag_mode_passes_it_on_marked(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, "flag")) as gw:
        out = await _ask(gw, "DELETE FROM orders")
        assert _sql_of(out) == "DELETE FROM orders"
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        (f,) = rec.findings
        assert f.kind == "sql_rejected" and f.subject == "tool:run_sql" and f.action == "flagged"


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT id, status FROM orders WHERE status = 'x' OR '1' = '1'", "tautology"),
        ("SELECT id FROM orders WHERE 1", "tautology"),
        ("SELECT version()", "function_denied"),
        ("SELECT id FROM orders WHERE md5(status) = 'x'", "function_not_allowed"),
    ],
)
async def test_injected_filters_and_metadata_calls_are_withheld_and_recorded_by_code(
    tmp_path: Path, sql: str, code: str
) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, "flag")) as gw:
        out = await _ask(gw, sql)
        assert _sql_of(out) == sql  # flag mode passes it on, marked
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        (finding,) = [f for f in rec.findings if f.kind == "sql_rejected"]
        assert finding.reasons == (code,)
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path / "block")) as gw:
        with pytest.raises(OutputBlocked):
            await _ask(gw, sql)


def _call() -> Call:
    return Call(
        request_id="req_sql",
        trace_id="a" * 32,
        span_id="a" * 16,
        client_format=Format.OPENAI,
        principal=SUPPORT,
        body={},
        requested_model="gpt-4.1",
        stream=False,
    )


def test_a_tool_can_extend_the_function_allow_list_for_itself_only() -> None:
    roles = {"support": {"orders": ["id", "status"]}}
    check = SqlToolCheck(
        {"run_sql": "query", "report_sql": "sql"},
        SqlPolicy(roles=roles),
        block=True,
        tool_policies={"report_sql": SqlPolicy(roles=roles, extra_functions=frozenset({"md5"}))},
    )
    sql = "SELECT md5(status) FROM orders"
    assert check._check(_call(), "report_sql", sql) == "SELECT MD5(status) FROM orders LIMIT 1000"
    with pytest.raises(OutputBlocked, match="md5"):
        check._check(_call(), "run_sql", sql)


async def test_config_extends_the_allow_list_per_tool_and_names_a_stray_tool(
    tmp_path: Path,
) -> None:
    cfg = _cfg(tmp_path)
    cfg["features"]["default"]["safety"]["sql_functions"] = {"run_sql": ["md5"]}
    async with bastion.Gateway.from_config(None, **cfg) as gw:
        assert "MD5(status)" in _sql_of(await _ask(gw, "SELECT md5(status) FROM orders"))
        with pytest.raises(OutputBlocked, match="version"):
            await _ask(gw, "SELECT version()")
    cfg["features"]["default"]["safety"]["sql_functions"] = {"other_tool": ["md5"]}
    with pytest.raises(Exception, match="sql_functions"):
        bastion.Gateway.from_config(None, **cfg)
