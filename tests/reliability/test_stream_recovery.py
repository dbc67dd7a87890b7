"""A stream cut after the client got text is carried on at a fallback, for both client formats
and every provider kind: by prefill where the fallback takes it, else by a restart whose text
must reproduce what the client already has; otherwise it ends with an in-band error naming
the failure class. The client's usage and the record sum both parts; each attempt is billed
on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.reliability._recovery_fakes import (
    ANT,
    INPUT_TOKENS,
    OAI,
    Received,
    Script,
    ScriptedSimulator,
    config,
    dep,
    run,
    words,
)

from bastion.config import Config
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.recovery import CUT, DIVERGED, RESET, STALLED

ANSWER = "The quick brown fox jumps over the lazy dog and keeps on running far away"
SENT = "".join(words(ANSWER)[:5])  # what the client has when the primary is cut
MORE = " and then it rests"


def _gateway(
    tmp: Path, scripts: dict[str, Script], models: dict[str, Any], **extra: Any
) -> Gateway:
    cfg = Config.model_validate(config(tmp, models, **extra))
    return Gateway(cfg, simulator=ScriptedSimulator(scripts))


def _one_opening(got: Received) -> None:
    """The client saw one message: one message_start / role chunk, one id throughout."""
    if got.fmt is ANT:
        names = [n for n, _ in got.events]
        assert names.count("message_start") == 1
        assert names.count("content_block_start") == 1
        return
    chunks = [o for _, o in got.events if isinstance(o, dict) and "choices" in o]
    roles = [c for c in chunks if any((ch.get("delta") or {}).get("role") for ch in c["choices"])]
    assert len(roles) == 1
    assert len({c["id"] for c in chunks}) == 1 and len({c["model"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1


# client format, provider of the fallback, how it carries on
MATRIX = [
    (ANT, "ant", "prefill"),  # Anthropic fallback: prefill (auto)
    (ANT, "sim", "prefill"),  # the simulator speaks the client's format: Anthropic, prefill
    (ANT, "oai", "restart"),  # OpenAI has no prefill: restart, translated
    (OAI, "oai", "restart"),
    (OAI, "sim", "restart"),
    (OAI, "ant", "prefill"),  # OpenAI client carried on by prefill at an Anthropic fallback
]


@pytest.mark.parametrize(("fmt", "fallback", "mode"), MATRIX)
async def test_a_cut_stream_is_carried_on_as_one_whole_answer(
    tmp_path: Path, fmt: Format, fallback: str, mode: str
) -> None:
    primary_kind = "ant" if fmt is ANT else "oai"
    scripts = {
        "primary": Script(ANSWER, cut_after=5),
        "backup": Script(ANSWER, continuation=MORE),
    }
    models = {"m": {"deployments": [dep(primary_kind, "primary"), dep(fallback, "backup")]}}
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, fmt, "m", include_usage=True)
    assert not got.errored and got.clean_end, got.raw
    _one_opening(got)
    expected = SENT + MORE if mode == "prefill" else ANSWER
    assert got.text == expected
    call = got.call
    assert call.flags["recovered"] == mode and call.flags["continued"] is True
    assert "".join(call.output_text) == expected
    (req,) = scripts["backup"].requests
    if mode == "prefill":
        assert req["messages"][-1] == {"role": "assistant", "content": SENT}
    else:
        assert req["messages"][-1]["role"] == "user"
    # billing: the cut attempt is unknown (billed at its reservation), the fallback's is its own
    first, second = call.attempts
    assert first.usage is None
    assert second.kind == ("continuation" if mode == "prefill" else "restart")
    part2 = len(words(MORE if mode == "prefill" else ANSWER))
    assert second.usage is not None and second.usage.output_tokens == part2
    # the client and the record are told the sum of both parts
    part1 = len(SENT) // 4
    assert call.usage.output_tokens == part1 + part2
    # the fallback read the prompt again (plus the prefill); an OpenAI primary's input, never
    # reported before the cut, is counted as the same prompt
    inputs = 2 * INPUT_TOKENS + (part1 if mode == "prefill" else 0)
    assert call.usage.input_tokens == inputs
    usage = got.usage()
    assert usage is not None
    if fmt is ANT:
        assert usage["output_tokens"] == part1 + part2
        assert usage["input_tokens"] == inputs
    else:
        assert usage["completion_tokens"] == part1 + part2
        assert usage["prompt_tokens"] == inputs
    # the official SDK's accumulator reads one message with the whole text and usage
    assert got.sdk() == (expected, part1 + part2)


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_a_restart_that_diverges_ends_with_an_error_event_not_a_clean_end(
    tmp_path: Path, fmt: Format
) -> None:
    scripts = {
        "primary": Script(ANSWER, cut_after=5),
        "backup": Script("A different answer altogether, with other words"),
    }
    models = {"m": {"deployments": [dep("oai", "primary"), dep("oai", "backup")]}}
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, fmt, "m")
    assert got.errored and not got.clean_end
    assert got.text == SENT  # nothing of the other answer reached the client
    assert got.error_message == DIVERGED
    assert got.call.flags["stream_error"] == DIVERGED


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_a_restart_that_ends_short_of_the_sent_text_is_an_error(
    tmp_path: Path, fmt: Format
) -> None:
    scripts = {
        "primary": Script(ANSWER, cut_after=5),
        "backup": Script("".join(words(ANSWER)[:3])),  # a prefix of what the client has
    }
    models = {"m": {"deployments": [dep("oai", "primary"), dep("oai", "backup")]}}
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, fmt, "m")
    assert got.errored and not got.clean_end and got.text == SENT


async def test_auto_learns_a_prefill_refusal_and_restarts_there_from_then_on(
    tmp_path: Path,
) -> None:
    scripts = {
        "primary": Script(ANSWER, cut_after=5),
        "picky": Script(ANSWER, continuation=MORE, refuse_prefill=True),
    }
    models = {"m": {"deployments": [dep("ant", "primary"), dep("ant", "picky")]}}
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, ANT, "m")
        assert got.clean_end and got.text == ANSWER
        assert got.call.flags["recovered"] == "restart"
        assert got.call.flags["prefill_refused"].startswith("ant/picky")
        kinds = [a.kind for a in got.call.attempts]
        assert kinds == ["first", "continuation", "restart"]
        assert got.call.attempts[1].status == 400 and got.call.attempts[1].usage is not None
        refused, restarted = scripts["picky"].requests
        assert refused["messages"][-1]["role"] == "assistant"
        assert restarted["messages"][-1]["role"] == "user"
        # remembered for the gateway's lifetime: the next cut goes straight to a restart
        again = await run(gw, OAI, "m")
        assert again.clean_end and again.text == ANSWER
        assert [a.kind for a in again.call.attempts] == ["first", "restart"]
        assert len(scripts["picky"].requests) == 3


@pytest.mark.parametrize(
    ("setting", "fallback", "mode"),
    [("none", "ant", "restart"), ("prefill", "oai", "prefill"), ("auto", "oai", "restart")],
)
async def test_the_per_deployment_prefill_setting_decides_how_it_carries_on(
    tmp_path: Path, setting: str, fallback: str, mode: str
) -> None:
    scripts = {
        "primary": Script(ANSWER, cut_after=5),
        "backup": Script(ANSWER, continuation=MORE),
    }
    backup = dep(fallback, "backup", prefill=setting)
    models = {"m": {"deployments": [dep("ant", "primary"), backup]}}
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, ANT, "m")
    assert got.clean_end and got.call.flags["recovered"] == mode
    assert got.text == (SENT + MORE if mode == "prefill" else ANSWER)


async def test_without_a_fallback_the_error_event_names_the_failure_class(
    tmp_path: Path,
) -> None:
    internals = aiohttp.ClientPayloadError(
        "Response payload is not completed: <TransferEncodingError: 400, "
        "message='Not enough data for satisfy transfer length header.'>"
    )
    scripts = {
        "cut": Script(ANSWER, cut_after=3),
        "stall": Script(ANSWER, stall_after=3),
        "reset": Script(
            ANSWER, fail_after=3, failure=ConnectionResetError(104, "Connection reset by peer")
        ),
        "lib": Script(ANSWER, fail_after=3, failure=internals),
    }
    idle = {"timeouts": {"idle": 0.3}}
    models = {name: {"deployments": [dep("sim", name, **idle)]} for name in scripts}
    expect = {"cut": CUT, "stall": STALLED, "reset": RESET, "lib": RESET}
    async with _gateway(tmp_path, scripts, models) as gw:
        for fmt in (ANT, OAI):
            for name, message in expect.items():
                got = await run(gw, fmt, name)
                assert got.errored and not got.clean_end, (fmt, name)
                assert got.error_message == message, (fmt, name, got.raw)
                assert b"aiohttp" not in got.raw and b"TransferEncoding" not in got.raw
                assert b"Connection reset by peer" not in got.raw
                assert got.call.flags["stream_error"] == message


async def test_a_hedged_winner_cut_mid_stream_is_carried_on_and_every_attempt_is_settled(
    tmp_path: Path,
) -> None:
    scripts = {
        "slow": Script(ANSWER, continuation=MORE, delay=0.6),
        "fast": Script(ANSWER, cut_after=5),
    }
    models = {"m": {"deployments": [dep("ant", "slow"), dep("ant", "fast")]}}
    features = {"features": {"default": {"hedge_delay": 0.05, "pii_output": "flag"}}}
    async with _gateway(tmp_path, scripts, models, **features) as gw:
        got = await run(gw, ANT, "m")
        call = got.call
        assert got.clean_end and got.text == SENT + MORE
        assert call.flags["hedged"] is True and call.flags["recovered"] == "prefill"
        # the fallback's attempt belongs to the recorded call (not to the hedge's shadow)
        kinds = sorted(a.kind for a in call.attempts)
        assert kinds == ["continuation", "first", "hedge"], kinds
        assert call.deployment is not None and call.deployment.startswith("ant/slow")
        assert all(a.reservation_id is None for a in call.attempts), "every hold settled"
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        assert rec.attempts == 3 and rec.flags["recovered"] == "prefill"
