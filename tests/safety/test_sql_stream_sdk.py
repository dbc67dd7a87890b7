"""Model-written SQL is checked on streams as on whole answers, through a real ``bastion serve`` and
the official SDKs: a forbidden query never reaches the app (a 422 before the stream, or an
``output_blocked`` error event after what was already sent), an allowed one arrives rewritten
to the form that may run, identical streamed or not, in both wire formats."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config

FORBIDDEN = "DELETE FROM orders WHERE id = 7"
ALLOWED = "SELECT id, status FROM orders WHERE status = 'open'"
REWRITTEN = "SELECT id, status FROM orders WHERE status = 'open' LIMIT 50"
BOTH = "Where is order A-1234, and how many are open? [[sim:tools=all]]"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    safety = {
        "sql_tools": {"run_sql": "query"},
        "sql_max_rows": 50,
        "sql_grants": {"support": {"orders": ["id", "status"]}},
    }
    cfg = write_config(
        tmp_path_factory.mktemp("sqlstream"), features={"default": {"safety": safety}}
    )
    g = start_gateway(cfg, roles="support")
    yield g
    stop(g.proc)


def _schema(sql: str) -> dict[str, Any]:
    # the simulator fills tool arguments from the schema: a one-value enum scripts the SQL
    return {
        "type": "object",
        "properties": {"query": {"type": "string", "enum": [sql]}},
        "required": ["query"],
    }


LOOKUP = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "enum": ["A-1234"]}},
    "required": ["order_id"],
}


def _openai_tools(sql: str, lookup: bool = False) -> Any:
    tools = [("lookup_order", LOOKUP)] if lookup else []
    tools.append(("run_sql", _schema(sql)))
    return [{"type": "function", "function": {"name": n, "parameters": p}} for n, p in tools]


def _anthropic_tools(sql: str, lookup: bool = False) -> Any:
    tools = [("lookup_order", LOOKUP)] if lookup else []
    tools.append(("run_sql", _schema(sql)))
    return [{"name": n, "input_schema": p} for n, p in tools]


def _oai(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)


def _ant(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)


def test_openai_sdk_gets_allowed_sql_rewritten_streamed_and_not(gw: RunningGateway) -> None:
    client = _oai(gw)
    kw: Any = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "How many orders are open?"}],
        "tools": _openai_tools(ALLOWED),
        "tool_choice": "required",
    }
    whole = client.chat.completions.create(**kw)
    (call,) = whole.choices[0].message.tool_calls or []
    assert orjson.loads(call.function.arguments) == {"query": REWRITTEN}
    with client.chat.completions.stream(**kw) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert streamed.function.name == "run_sql"
    assert orjson.loads(streamed.function.arguments) == {"query": REWRITTEN}


def test_openai_sdk_stream_of_forbidden_sql_is_refused_and_never_delivered(
    gw: RunningGateway,
) -> None:
    client = _oai(gw)
    kw: Any = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "Tidy up order 7."}],
        "tools": _openai_tools(FORBIDDEN),
        "tool_choice": "required",
    }
    with pytest.raises(openai.UnprocessableEntityError) as whole:
        client.chat.completions.create(**kw)
    assert whole.value.code == "output_blocked"
    with pytest.raises(openai.UnprocessableEntityError) as streamed:  # nothing sent yet: a 422
        list(client.chat.completions.create(**kw, stream=True))
    assert streamed.value.code == "output_blocked" and "run_sql" in streamed.value.message


def test_openai_sdk_stream_ends_with_an_error_after_the_tool_call_before_it(
    gw: RunningGateway,
) -> None:
    client = _oai(gw)
    chunks: list[Any] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": BOTH}],
            tools=_openai_tools(FORBIDDEN, lookup=True),
            stream=True,
        ):
            chunks.append(chunk)
    body: Any = err.value.body
    assert body["type"] == "output_blocked" and "run_sql" in err.value.message
    names = [
        tc.function.name
        for c in chunks
        for ch in c.choices
        for tc in ch.delta.tool_calls or ()
        if tc.function and tc.function.name
    ]
    assert names == ["lookup_order"]  # the first call streamed; the SQL call never went out
    assert "DELETE" not in repr([c.model_dump() for c in chunks])


def test_anthropic_sdk_gets_allowed_sql_rewritten_streamed_and_not(gw: RunningGateway) -> None:
    client = _ant(gw)
    kw: Any = {
        "model": "claude-sonnet-5",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "How many orders are open?"}],
        "tools": _anthropic_tools(ALLOWED),
        "tool_choice": {"type": "any"},
    }
    whole = client.messages.create(**kw)
    (use,) = [b for b in whole.content if b.type == "tool_use"]
    assert use.input == {"query": REWRITTEN}
    with client.messages.stream(**kw) as s:
        final = s.get_final_message()
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    assert streamed.name == "run_sql" and streamed.input == {"query": REWRITTEN}


def test_anthropic_sdk_stream_of_forbidden_sql_is_refused_and_never_delivered(
    gw: RunningGateway,
) -> None:
    client = _ant(gw)
    kw: Any = {
        "model": "claude-sonnet-5",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Tidy up order 7."}],
        "tools": _anthropic_tools(FORBIDDEN),
        "tool_choice": {"type": "any"},
    }
    with pytest.raises(anthropic.UnprocessableEntityError) as whole:
        client.messages.create(**kw)
    assert "output_blocked" in str(whole.value.body)
    with (
        pytest.raises(anthropic.UnprocessableEntityError) as streamed,
        client.messages.stream(**kw),
    ):
        pass  # nothing was sent yet: the 422 comes with the response
    assert "run_sql" in streamed.value.message


def test_anthropic_sdk_stream_ends_with_an_error_after_the_tool_call_before_it(
    gw: RunningGateway,
) -> None:
    client = _ant(gw)
    events: list[Any] = []
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        client.messages.stream(
            model="claude-sonnet-5",
            max_tokens=300,
            messages=[{"role": "user", "content": BOTH}],
            tools=_anthropic_tools(FORBIDDEN, lookup=True),
            tool_choice={"type": "any"},
        ) as s,
    ):
        for ev in s:
            events.append(ev)
    assert "output_blocked" in str(err.value.body)
    started = [
        e.content_block.name
        for e in events
        if e.type == "content_block_start" and e.content_block.type == "tool_use"
    ]
    assert started == ["lookup_order"]
    assert "DELETE" not in repr([e.model_dump() for e in events])
