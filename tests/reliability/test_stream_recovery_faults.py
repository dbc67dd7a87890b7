"""Stream faults that are not cuts: a malformed event is skipped (the PII output filter, on by
default, no longer ends the answer), an OpenAI-compatible stream that closes after its
finish_reason and usage without ``[DONE]`` is complete, and a usage chunk the client did not
ask for is hidden however the server spaced its JSON. Each through the gateway, for both
client formats, on the fast path and across formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.reliability._recovery_fakes import (
    ANT,
    OAI,
    Script,
    ScriptedSimulator,
    config,
    dep,
    run,
)

from bastion.config import Config
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.recovery import CUT

FAULTS = ("malformed_after:4", "no_final", "spaced_json", "")


def _models() -> dict[str, Any]:
    """Per provider (the simulator in the client's format, Anthropic, OpenAI), one alias per fault."""
    models: dict[str, Any] = {}
    for provider in ("sim", "ant", "oai"):
        for fault in FAULTS:
            headers = {"x-sim-fault": fault} if fault else {}
            name = f"{provider}-{fault.split(':')[0] or 'clean'}"
            models[name] = {"deployments": [dep(provider, "sim-small", headers=headers)]}
    return models


@pytest.fixture
async def gw(tmp_path: Path) -> Any:
    scripts = {
        "finish-no-usage": Script("Short and complete.", no_done=True, no_usage=True),
        "finish-usage": Script("Short and complete.", no_done=True),
    }
    models = {
        **_models(),
        **{name: {"deployments": [dep("oai", name)]} for name in scripts},
    }
    cfg = Config.model_validate(config(tmp_path, models))
    async with Gateway(cfg, simulator=ScriptedSimulator(scripts)) as g:
        yield g


PATHS = [(ANT, "sim"), (OAI, "sim"), (ANT, "oai"), (OAI, "ant")]


@pytest.mark.parametrize(("fmt", "provider"), PATHS)
async def test_a_malformed_event_is_skipped_and_counted_and_the_answer_completes(
    gw: Gateway, fmt: Format, provider: str
) -> None:
    clean = await run(gw, fmt, f"{provider}-clean")
    got = await run(gw, fmt, f"{provider}-malformed_after")
    assert got.call.output_filters, "the PII output filter is on by default"
    assert got.clean_end and not got.errored, got.raw
    assert got.text == clean.text
    assert got.call.flags["malformed_events"] == 1
    assert "stream_error" not in got.call.flags and "stream_cut" not in got.call.flags
    assert "malformed_events" not in clean.call.flags
    assert got.sdk() == clean.sdk()


@pytest.mark.parametrize(("fmt", "provider"), [(OAI, "sim"), (OAI, "oai"), (ANT, "oai")])
@pytest.mark.parametrize("include_usage", [False, True])
async def test_an_openai_stream_closed_after_finish_and_usage_without_done_is_complete(
    gw: Gateway, fmt: Format, provider: str, include_usage: bool
) -> None:
    clean = await run(gw, fmt, f"{provider}-clean", include_usage=include_usage)
    got = await run(gw, fmt, f"{provider}-no_final", include_usage=include_usage)
    assert got.clean_end and not got.errored, got.raw
    assert got.text == clean.text and got.usage() == clean.usage()
    assert got.call.flags["upstream_no_done"] is True
    assert got.call.usage == clean.call.usage
    assert got.call.attempts[-1].usage == clean.call.attempts[-1].usage
    if include_usage or fmt is ANT:
        assert got.sdk() == clean.sdk()


async def test_a_finish_without_the_usage_chunk_bastion_asked_for_is_still_a_cut(
    gw: Gateway,
) -> None:
    for fmt in (OAI, ANT):
        got = await run(gw, fmt, "finish-no-usage")
        assert got.errored and not got.clean_end and got.error_message == CUT
        done = await run(gw, fmt, "finish-usage")
        assert done.clean_end and not done.errored


async def test_an_anthropic_stream_without_message_stop_is_still_a_cut(gw: Gateway) -> None:
    for fmt, provider in ((ANT, "sim"), (OAI, "ant")):
        got = await run(gw, fmt, f"{provider}-no_final")
        assert got.errored and not got.clean_end, (fmt, got.raw)


@pytest.mark.parametrize("provider", ["sim", "oai"])
async def test_a_spaced_usage_chunk_the_client_did_not_ask_for_is_hidden(
    gw: Gateway, provider: str
) -> None:
    got = await run(gw, OAI, f"{provider}-spaced_json")
    assert b'"choices": []' not in got.raw  # the sim really spaces its JSON when asked
    chunks = [o for _, o in got.events if isinstance(o, dict)]
    assert chunks and all(c["choices"] for c in chunks), "chunk.choices[0] would fail"
    assert got.clean_end and got.usage() is None
    text, tokens = got.sdk()  # every chunk has the choices the SDK indexes
    assert text and tokens == -1
    # asked for: the usage chunk goes through, as the server wrote it
    asked = await run(gw, OAI, f"{provider}-spaced_json", include_usage=True)
    usage = asked.usage()
    assert usage is not None and usage["completion_tokens"] > 0
    if provider == "sim":  # the fast path forwards the server's own bytes
        assert b'"choices": []' in asked.raw
