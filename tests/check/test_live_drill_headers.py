"""Drill headers (`server.drill_headers`): off by default, and never past a simulated deployment.

`bastion check --url` asks a gateway for a paced stream and for a deployment's failure with
request headers. A gateway whose operator did not opt in must ignore them, and with the opt-in
they may reach the built-in simulator only, never a real provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.cost._cost_support import PRINCIPAL, inproc_config

from bastion.engine import render_error
from bastion.errors import AIUnavailable
from bastion.gateway import Gateway
from bastion.providers.adapters import DRILL_FAIL, DRILL_PACING, Endpoint, endpoint_formats
from bastion.providers.base import Format

DRILL = {"x-sim-chunk-ms": "7", "x-sim-reply-tokens": "5", DRILL_FAIL: "sim/primary"}
PAIR = {
    "chat": {
        "deployments": [
            {"provider": "sim", "model": "primary"},
            {"provider": "sim", "model": "backup"},
        ]
    }
}


def _config(tmp: Path, *, drills: bool | None, providers: dict[str, Any] | None = None) -> Any:
    extra: dict[str, Any] = {"models": PAIR}
    if drills is not None:
        extra["server"] = {"drill_headers": drills}
    if providers is not None:
        extra["providers"] = providers
    return inproc_config(tmp, **extra)


async def _call(gw: Gateway, headers: dict[str, str]) -> Any:
    body = {"model": "chat", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    return await gw.handle(Format.OPENAI, orjson.dumps(body), headers, principal=PRINCIPAL)


def _sent(gw: Gateway) -> list[dict[str, str]]:
    return [r.headers for r in gw.simulator.requests]


async def test_drill_headers_are_ignored_unless_the_operator_turns_them_on(tmp_path: Path) -> None:
    assert _config(tmp_path, drills=None).server.drill_headers is False
    async with Gateway(_config(tmp_path, drills=None)) as gw:
        reply = await _call(gw, DRILL)
        assert reply.status == 200
        assert reply.headers["x-bastion-deployment"] == "sim/primary#0"  # not failed
        assert "x-bastion-drill" not in reply.headers
        for sent in _sent(gw):
            assert not any(k.startswith("x-sim-") or k == DRILL_FAIL for k in sent)


async def test_with_drills_on_the_named_deployment_fails_and_the_fallback_answers(
    tmp_path: Path,
) -> None:
    async with Gateway(_config(tmp_path, drills=True)) as gw:
        plain = await _call(gw, {})
        assert plain.headers["x-bastion-deployment"] == "sim/primary#0"
        assert plain.headers["x-bastion-drill"] == "sim"
        gw.simulator.reset()
        reply = await _call(gw, DRILL)
        assert reply.status == 200
        assert reply.headers["x-bastion-deployment"] == "sim/backup#1"
        sent = _sent(gw)
        primary = [
            h for r, h in zip(gw.simulator.requests, sent, strict=True) if r.model == "primary"
        ]
        backup = [
            h for r, h in zip(gw.simulator.requests, sent, strict=True) if r.model == "backup"
        ]
        assert primary and all(h["x-sim-fault"] == "status:500" for h in primary)
        assert backup and all("x-sim-fault" not in h for h in backup)
        assert all(h["x-sim-chunk-ms"] == "7" and h["x-sim-reply-tokens"] == "5" for h in sent)
        gw.simulator.reset()
        with pytest.raises(AIUnavailable) as nothing:  # nothing could answer: the typed error
            await _call(gw, {DRILL_FAIL: "*"})
        status, _, body = render_error(nothing.value, Format.OPENAI)
        assert status >= 500 and orjson.loads(body)["error"]["type"]
        assert {r.model for r in gw.simulator.requests} == {"primary", "backup"}
        assert all(h["x-sim-fault"] == "status:500" for h in _sent(gw))


async def test_drill_headers_never_reach_a_real_provider_kind(tmp_path: Path) -> None:
    # an OpenAI-compatible provider served by the in-process simulator records what it was sent
    providers = {"sim": {"kind": "openai-compatible", "base_url": "sim://local"}}
    async with Gateway(_config(tmp_path, drills=True, providers=providers)) as gw:
        reply = await _call(gw, DRILL)
        assert reply.status == 200
        assert reply.headers["x-bastion-deployment"] == "sim/primary#0"
        assert reply.headers["x-bastion-drill"] == "openai-compatible"
        for sent in _sent(gw):
            assert not any(k.startswith("x-sim-") or k == DRILL_FAIL for k in sent)


_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)


@given(
    kind=st.sampled_from(["anthropic", "openai", "openai-compatible", "sim"]),
    passthrough=st.dictionaries(st.sampled_from([*DRILL_PACING, DRILL_FAIL]), _values),
    model=st.sampled_from(["primary", "backup"]),
    fmt=st.sampled_from([Format.ANTHROPIC, Format.OPENAI]),
)
def test_only_a_simulated_endpoint_is_ever_sent_drill_headers(
    kind: str, passthrough: dict[str, str], model: str, fmt: Format
) -> None:
    ep = Endpoint("sim", kind, endpoint_formats(kind), "sim://local", None, {})
    req = ep.build({"model": model}, fmt, stream=True, extra_headers={}, passthrough=passthrough)
    drilled = {k for k in req.headers if k.startswith("x-sim-") or k == DRILL_FAIL}
    if kind != "sim":
        assert not drilled
        return
    for h in DRILL_PACING:
        assert req.headers.get(h) == passthrough.get(h)
    target = passthrough.get(DRILL_FAIL, "").split("#", 1)[0].strip()
    fails = target in ("*", f"sim/{model}")
    assert (req.headers.get("x-sim-fault") == "status:500") is fails
    assert DRILL_FAIL not in req.headers
