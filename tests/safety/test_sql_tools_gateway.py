"""SQL in a tool call is validated in the gateway with the caller's roles before the app sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import sim_models

import bastion
from bastion.call import Principal
from bastion.errors import OutputBlocked
from bastion.providers.base import Format

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
