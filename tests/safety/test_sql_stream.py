"""SQL in a streamed tool call is held until its arguments are complete and checked like a whole
answer's: released (rewritten) when it may run, refused with an ``output_blocked`` error event
(or a 422 before the stream starts) when it may not, never released in part; text and other
tools stream on. In-process through the gateway, the provider scripted (``ToolScriptSim``) so
the tests choose where the tool call's arguments and the body's bytes are cut."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import sim_models

from bastion.call import Principal
from bastion.config import load_config
from bastion.errors import BastionError
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.providers.sim import Simulator
from bastion.providers.sim.result import SimResult
from bastion.providers.sse import SSEDecoder
from bastion.safety.sql_stream import MAX_HELD_CHARS

ANT, OAI = Format.ANTHROPIC, Format.OPENAI
SUPPORT = Principal(key_id="k-sql", name="agent", roles=("support",))
FORBIDDEN = "DELETE FROM orders WHERE id = 7"
ALLOWED = "SELECT id, status FROM orders WHERE status = 'open'"
REWRITTEN = "SELECT id, status FROM orders WHERE status = 'open' LIMIT 50"


@dataclass
class Tool:
    name: str
    arguments: str  # the JSON text the model streams
    cuts: list[int] = field(default_factory=list)  # where the arguments are split into deltas
    name_cuts: list[int] = field(default_factory=list)  # OpenAI: the name in pieces too


@dataclass
class Script:
    text: list[str] = field(default_factory=list)  # text deltas before the tool calls
    tools: list[Tool] = field(default_factory=list)
    byte_cuts: list[int] = field(default_factory=list)  # where the body's bytes are split
    # (the frames' text is ASCII: a cut never splits a character)
    gate_after: int | None = None  # frames sent before waiting for ``gate``
    gate: asyncio.Event | None = None
    cut_after: int | None = None  # frames sent before the connection drops


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c for c in cuts if 0 < c < len(text)})
    return [text[a:b] for a, b in itertools.pairwise([0, *points, len(text)])]


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return head.encode() + b"data: " + orjson.dumps(obj) + b"\n\n"


def _anthropic(model: str, s: Script) -> list[bytes]:
    msg: dict[str, Any] = {
        "id": "msg_script",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 1},
    }
    out = [_sse({"type": "message_start", "message": msg}, "message_start")]
    index = 0
    if s.text:
        text_block = {"type": "text", "text": ""}
        out.append(
            _sse(
                {"type": "content_block_start", "index": 0, "content_block": text_block},
                "content_block_start",
            )
        )
        for piece in s.text:
            delta = {"type": "text_delta", "text": piece}
            out.append(
                _sse(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            )
        out.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    for i, t in enumerate(s.tools, start=index):
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": f"toolu_{i}",
            "name": t.name,
            "input": {},
        }
        out.append(
            _sse(
                {"type": "content_block_start", "index": i, "content_block": block},
                "content_block_start",
            )
        )
        for piece in _split(t.arguments, t.cuts):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append(
                _sse(
                    {"type": "content_block_delta", "index": i, "delta": delta},
                    "content_block_delta",
                )
            )
        out.append(_sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    stop = "tool_use" if s.tools else "end_turn"
    final = {"stop_reason": stop, "stop_sequence": None}
    out.append(
        _sse(
            {"type": "message_delta", "delta": final, "usage": {"output_tokens": 12}},
            "message_delta",
        )
    )
    out.append(_sse({"type": "message_stop"}, "message_stop"))
    return out


def _openai(model: str, s: Script) -> list[bytes]:
    head = {
        "id": "chatcmpl-script",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**head, "choices": [choice]})

    out = [chunk({"role": "assistant", "content": "" if s.text else None})]
    out += [chunk({"content": p}) for p in s.text]
    for i, t in enumerate(s.tools):
        names = _split(t.name, t.name_cuts)
        first = {"index": i, "id": f"call_{i}", "type": "function"}
        out.append(
            chunk({"tool_calls": [{**first, "function": {"name": names[0], "arguments": ""}}]})
        )
        out += [chunk({"tool_calls": [{"index": i, "function": {"name": n}}]}) for n in names[1:]]
        for piece in _split(t.arguments, t.cuts):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    out.append(chunk({}, "tool_calls" if s.tools else "stop"))
    usage = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    out.append(_sse({**head, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out


class ToolScriptSim(Simulator):
    """The simulator, except that models named in ``scripts`` stream exactly what they say."""

    def __init__(self) -> None:
        super().__init__(seed=3)
        self.scripts: dict[str, Script] = {}

    async def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> SimResult:
        model = str(orjson.loads(body).get("model")) if body else ""
        s = self.scripts.get(model)
        if s is None:
            return await super().handle(method, path, headers, body)
        frames = _anthropic(model, s) if "/messages" in path else _openai(model, s)
        return SimResult(200, {"content-type": "text/event-stream"}, _body(frames, s))


async def _body(frames: list[bytes], s: Script) -> AsyncIterator[bytes]:
    if s.byte_cuts:  # the body's bytes cut anywhere (else one read per event, as providers flush)
        for part in _split(b"".join(frames).decode(), s.byte_cuts):
            yield part.encode()
        return
    for n, frame in enumerate(frames):
        if n == s.cut_after:
            raise ConnectionResetError("scripted cut")
        if n == s.gate_after and s.gate is not None:
            await s.gate.wait()
        yield frame


def _config(tmp: Path, action: str = "block") -> Any:
    return load_config(
        None,
        env={},
        overrides={
            "store": {"url": f"sqlite:///{tmp / 'bastion.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp / "spill.jsonl")},
            # the simulator also as a provider of one format each, so a client of the other
            # format is served through translation
            "providers": {
                "sim": {"kind": "sim"},
                "ant": {"kind": "anthropic", "base_url": "sim://local"},
                "oai": {"kind": "openai", "base_url": "sim://local/v1"},
            },
            "models": {
                **sim_models(),
                "cross-ant": {"deployments": [{"provider": "ant", "model": "cross-ant"}]},
                "cross-oai": {"deployments": [{"provider": "oai", "model": "cross-oai"}]},
            },
            "reliability": {"retry": {"attempts_per_deployment": 1}},
            "features": {
                "default": {
                    # the leak and PII watchers hold back a tail of text (their own hold, tested
                    # elsewhere); off here, so what the client gets is this filter's doing
                    "pii_output": "off",
                    "safety": {
                        "leak_action": "off",
                        "sql_tools": {"run_sql": "query"},
                        "sql_max_rows": 50,
                        "sql_action": action,
                        "sql_grants": {"support": {"orders": ["id", "status"]}},
                    },
                }
            },
        },
    )


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with Gateway(_config(tmp_path), simulator=ToolScriptSim()) as g:
        yield g


_models = itertools.count()


def _script(gw: Gateway, s: Script) -> str:
    model = f"sim-script-{next(_models)}"
    sim = gw.simulator
    assert isinstance(sim, ToolScriptSim)
    sim.scripts[model] = s
    return model


def _request(fmt: Format, model: str) -> bytes:
    tools: list[dict[str, Any]]
    schema = {"type": "object", "properties": {"query": {"type": "string"}}}
    if fmt is ANT:
        tools = [{"name": "run_sql", "input_schema": schema}]
        body: dict[str, Any] = {"model": model, "max_tokens": 300, "tools": tools}
    else:
        tools = [{"type": "function", "function": {"name": "run_sql", "parameters": schema}}]
        body = {"model": model, "tools": tools}
    body["messages"] = [{"role": "user", "content": "How many open orders?"}]
    body["stream"] = True
    return orjson.dumps(body)


@dataclass
class Seen:
    """What the client got: its events, the text, the tool calls, and how the stream ended."""

    events: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    raw: bytes = b""
    refused: tuple[str, str] | None = None  # (type, message) of a refusal, in-band or not
    status: int = 200


async def _stream(gw: Gateway, fmt: Format, model: str, who: Principal = SUPPORT) -> Seen:
    seen = Seen()
    try:
        reply = await gw.handle(fmt, _request(fmt, model), {}, principal=who)
    except BastionError as exc:
        seen.status = exc.http_status()
        seen.refused = (exc.anthropic_type if fmt is ANT else exc.openai_type, exc.message)
        return seen
    assert reply.stream is not None
    decoder = SSEDecoder()
    async for chunk in reply.stream:
        seen.raw += chunk
        for ev in decoder.feed(chunk):
            if ev.data == b"[DONE]":
                continue
            obj = orjson.loads(ev.data)
            seen.events.append((ev.event, obj))
            if ev.event == "error" or "error" in obj:
                err = obj["error"]
                seen.refused = (err["type"], err["message"])
    return seen


def _text(fmt: Format, seen: Seen) -> str:
    out = ""
    for _, obj in seen.events:
        if fmt is ANT:
            delta = obj.get("delta") or {}
            out += delta.get("text", "") if delta.get("type") == "text_delta" else ""
        elif obj.get("choices"):
            out += obj["choices"][0].get("delta", {}).get("content") or ""
    return out


def _tool_calls(fmt: Format, seen: Seen) -> dict[str, str]:
    """name -> arguments JSON, accumulated the way the official SDKs do."""
    if fmt is ANT:
        blocks: dict[int, list[str]] = {}
        names: dict[int, str] = {}
        for _, obj in seen.events:
            if (
                obj.get("type") == "content_block_start"
                and obj["content_block"]["type"] == "tool_use"
            ):
                names[obj["index"]] = obj["content_block"]["name"]
                blocks[obj["index"]] = []
            elif obj.get("type") == "content_block_delta" and obj["index"] in blocks:
                blocks[obj["index"]].append(obj["delta"].get("partial_json", ""))
        return {names[i]: "".join(parts) for i, parts in blocks.items()}
    calls: list[dict[str, str]] = []
    for _, obj in seen.events:
        for choice in obj.get("choices") or ():
            for tc in (choice.get("delta") or {}).get("tool_calls") or ():
                i = tc["index"]
                if i == len(calls):
                    calls.append({"name": "", "arguments": ""})
                fn = tc.get("function") or {}
                calls[i]["name"] += fn.get("name") or ""
                calls[i]["arguments"] += fn.get("arguments") or ""
    return {c["name"]: c["arguments"] for c in calls}


def _before_error(seen: Seen) -> bytes:
    """What the client got before the error event (the refusal's message may quote the SQL)."""
    cut = [i for i in (seen.raw.find(b"event: error"), seen.raw.find(b'data: {"error"')) if i >= 0]
    return seen.raw[: min(cut)] if cut else seen.raw


def _args(sql: str) -> str:
    return orjson.dumps({"query": sql}).decode()


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_forbidden_sql_alone_is_refused_before_the_stream_starts(
    gw: Gateway, fmt: Format
) -> None:
    model = _script(gw, Script(tools=[Tool("run_sql", _args(FORBIDDEN), cuts=[3, 9, 20])]))
    seen = await _stream(gw, fmt, model)
    assert seen.status == 422 and seen.refused is not None
    assert seen.refused[0] == "output_blocked" and "run_sql" in seen.refused[1]


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_text_before_a_forbidden_call_streams_and_the_stream_ends_with_an_error_event(
    gw: Gateway, fmt: Format
) -> None:
    s = Script(text=["Let me ", "check."], tools=[Tool("run_sql", _args(FORBIDDEN), cuts=[5])])
    seen = await _stream(gw, fmt, _script(gw, s))
    assert _text(fmt, seen) == "Let me check."
    assert seen.refused is not None and seen.refused[0] == "output_blocked"
    assert b"run_sql" not in _before_error(seen) and b"DELETE" not in _before_error(seen)
    assert seen.events[-1][1].get("error")  # the last thing the client got is the error


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_allowed_sql_is_released_whole_and_rewritten_to_what_may_run(
    gw: Gateway, fmt: Format
) -> None:
    s = Script(text=["Checking."], tools=[Tool("run_sql", _args(ALLOWED), cuts=[2, 7, 30])])
    seen = await _stream(gw, fmt, _script(gw, s))
    assert seen.refused is None
    assert orjson.loads(_tool_calls(fmt, seen)["run_sql"]) == {"query": REWRITTEN}


@pytest.mark.parametrize(("fmt", "model"), [(OAI, "cross-ant"), (ANT, "cross-oai")])
async def test_across_formats_the_upstreams_call_is_held_and_checked_before_translation(
    gw: Gateway, fmt: Format, model: str
) -> None:
    sim = gw.simulator
    assert isinstance(sim, ToolScriptSim)
    sim.scripts[model] = Script(text=["Sure."], tools=[Tool("run_sql", _args(ALLOWED), cuts=[9])])
    seen = await _stream(gw, fmt, model)
    assert seen.refused is None and _text(fmt, seen) == "Sure."
    assert orjson.loads(_tool_calls(fmt, seen)["run_sql"]) == {"query": REWRITTEN}
    sim.scripts[model] = Script(text=["Sure."], tools=[Tool("run_sql", _args(FORBIDDEN), cuts=[9])])
    seen = await _stream(gw, fmt, model)
    assert seen.refused is not None and seen.refused[0] == "output_blocked"
    assert _text(fmt, seen) == "Sure." and b"DELETE" not in _before_error(seen)


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_text_deltas_reach_the_client_while_a_tool_call_is_still_held(
    gw: Gateway, fmt: Format
) -> None:
    gate = asyncio.Event()
    frames_before_args_end = 7 if fmt is ANT else 5  # text sent, the SQL call begun, not ended
    s = Script(
        text=["Looking ", "that up."],
        tools=[Tool("run_sql", _args(ALLOWED), cuts=[4, 12])],
        gate_after=frames_before_args_end,
        gate=gate,
    )
    reply = await gw.handle(fmt, _request(fmt, _script(gw, s)), {}, principal=SUPPORT)
    assert reply.stream is not None
    got = b""
    it = reply.stream.__aiter__()
    while b"that up." not in got:  # would hang (the upstream waits on the gate) if text were held
        got += await asyncio.wait_for(it.__anext__(), 5)
    assert b"run_sql" not in got and b"SELECT" not in got  # the tool call is still held
    gate.set()
    rest = b"".join([c async for c in it])
    assert b"LIMIT 50" in rest


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_other_tools_are_not_held(gw: Gateway, fmt: Format) -> None:
    gate = asyncio.Event()
    s = Script(
        tools=[Tool("lookup_order", '{"order_id": "A-1234"}', cuts=[6])],
        gate_after=4 if fmt is ANT else 3,  # the call begun and part of its arguments sent
        gate=gate,
    )
    reply = await gw.handle(fmt, _request(fmt, _script(gw, s)), {}, principal=SUPPORT)
    assert reply.stream is not None
    got = b""
    it = reply.stream.__aiter__()
    while b"lookup_order" not in got:
        got += await asyncio.wait_for(it.__anext__(), 5)
    gate.set()
    async for c in it:
        got += c
    assert b"error" not in got


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_a_sql_call_after_another_tool_is_refused_in_band_after_the_first(
    gw: Gateway, fmt: Format
) -> None:
    s = Script(
        tools=[
            Tool("lookup_order", '{"order_id": "A-1234"}', cuts=[6]),
            Tool("run_sql", _args(FORBIDDEN), cuts=[6]),
        ]
    )
    seen = await _stream(gw, fmt, _script(gw, s))
    assert seen.refused is not None and seen.refused[0] == "output_blocked"
    assert set(_tool_calls(fmt, seen)) == {"lookup_order"}
    assert b"DELETE" not in _before_error(seen)


async def test_an_openai_tool_name_streamed_in_pieces_is_still_held(gw: Gateway) -> None:
    tool = Tool("run_sql", _args(FORBIDDEN), cuts=[4], name_cuts=[1, 4])
    seen = await _stream(gw, OAI, _script(gw, Script(text=["Hm."], tools=[tool])))
    assert seen.refused is not None and seen.refused[0] == "output_blocked"
    assert b"run" not in _before_error(seen) and b"DELETE" not in _before_error(seen)


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_a_stream_cut_while_a_call_is_held_never_releases_it(
    gw: Gateway, fmt: Format
) -> None:
    s = Script(
        text=["One moment."],
        tools=[Tool("run_sql", _args(ALLOWED), cuts=[4, 12])],
        cut_after=7 if fmt is ANT else 5,  # inside the call's arguments
    )
    seen = await _stream(gw, fmt, _script(gw, s))
    assert seen.refused is not None and seen.refused[0] != "output_blocked"  # an honest cut
    assert "run_sql" not in _tool_calls(fmt, seen) and b"SELECT" not in seen.raw


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_arguments_past_the_hold_bound_are_refused(gw: Gateway, fmt: Format) -> None:
    huge = _args("SELECT id FROM orders WHERE status = '" + "x" * MAX_HELD_CHARS + "'")
    s = Script(text=["Ok."], tools=[Tool("run_sql", huge, cuts=list(range(0, len(huge), 4096)))])
    seen = await _stream(gw, fmt, _script(gw, s))
    assert seen.refused is not None and seen.refused[0] == "output_blocked"
    assert "run_sql" not in _tool_calls(fmt, seen)


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_flag_mode_releases_the_call_as_written_and_records_it(
    tmp_path: Path, fmt: Format
) -> None:
    async with Gateway(_config(tmp_path, "flag"), simulator=ToolScriptSim()) as g:
        tool = Tool("run_sql", _args(FORBIDDEN), cuts=[3, 11])
        seen = await _stream(g, fmt, _script(g, Script(text=["Sure."], tools=[tool])))
        assert seen.refused is None
        assert orjson.loads(_tool_calls(fmt, seen)["run_sql"]) == {"query": FORBIDDEN}
        await g.recorder.flush()
        (rec,) = await g.store.recent_calls(1)
        (f,) = [f for f in rec.findings if f.kind == "sql_rejected"]
        assert (f.action, f.subject, f.where) == ("flagged", "tool:run_sql", "tool")


# -- any chunking is refused (or released) identically ----------------------------------------


def _cuts(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, max(1, n - 1)), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    fmt=st.sampled_from([ANT, OAI]),
    text=st.lists(st.sampled_from(["Let ", "me ", "look.", " Ok"]), max_size=3),
    sql=st.sampled_from(
        [FORBIDDEN, "SELECT email FROM customers", "SELECT id FROM orders; DROP TABLE orders"]
    ),
    arg_cuts=_cuts(60),
    name_cuts=st.lists(st.integers(1, 6), max_size=3),
    byte_cuts=_cuts(2000),
)
async def test_any_chunking_of_a_forbidden_sql_call_is_refused_identically(
    gw: Gateway,
    fmt: Format,
    text: list[str],
    sql: str,
    arg_cuts: list[int],
    name_cuts: list[int],
    byte_cuts: list[int],
) -> None:
    args = _args(sql)
    whole = await _stream(gw, fmt, _script(gw, Script(text=text, tools=[Tool("run_sql", args)])))
    tool = Tool("run_sql", args, cuts=arg_cuts, name_cuts=name_cuts)
    cut = await _stream(gw, fmt, _script(gw, Script(text=text, tools=[tool], byte_cuts=byte_cuts)))
    assert whole.refused is not None and whole.refused[0] == "output_blocked"
    assert (cut.status, cut.refused) == (whole.status, whole.refused)
    assert _text(fmt, cut) == "".join(text)  # the text before it arrived whole
    assert "run_sql" not in _tool_calls(fmt, cut)
    assert b"run_sql" not in _before_error(cut) and sql[:6].encode() not in _before_error(cut)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    fmt=st.sampled_from([ANT, OAI]),
    arg_cuts=_cuts(70),
    byte_cuts=_cuts(2000),
)
async def test_any_chunking_of_an_allowed_sql_call_releases_the_same_rewritten_call(
    gw: Gateway, fmt: Format, arg_cuts: list[int], byte_cuts: list[int]
) -> None:
    tool = Tool("run_sql", _args(ALLOWED), cuts=arg_cuts)
    seen = await _stream(gw, fmt, _script(gw, Script(tools=[tool], byte_cuts=byte_cuts)))
    assert seen.refused is None
    assert orjson.loads(_tool_calls(fmt, seen)["run_sql"]) == {"query": REWRITTEN}
