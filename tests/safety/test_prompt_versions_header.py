"""The ``X-Bastion-Prompt-Version`` header: a record names a prompt version only if the
registry has it (a label is recorded as the version it named); anything else is dropped and
flagged, so records cannot be spoofed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import sim_models

import bastion
from bastion.call import Principal
from bastion.providers.base import Format
from bastion.safety.prompting.guards import UNRESOLVED_FLAG
from bastion.store import CallRecord

V1 = "You are the Acme support drafter for {product}. Version one."
V2 = "You are the Acme support drafter for {product}. Version two, not yet released."
PLAIN = Principal(key_id="k-plain", name="plain")
AV = {"anthropic-version": "2023-06-01"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[bastion.Gateway]:
    cfg = bastion.load_config(
        None,
        overrides={
            "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp_path / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": sim_models(),
        },
    )
    g = bastion.Gateway(cfg)
    await g.start()
    try:
        assert await g.prompts.publish("drafter", V1, labels=("production",)) == 1
        assert await g.prompts.publish("drafter", V2) == 2  # a draft: no label points at it
        yield g
    finally:
        await g.aclose()


def _templated(**ref: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5",
        "max_tokens": 50,
        "bastion": {
            "prompt": "drafter",
            **ref,
            "variables": {"product": "Acme Cloud"},
            "user_content": "Where is my refund?",
        },
    }


def _plain() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Where is my refund?"}],
    }


async def _call(
    gw: bastion.Gateway, body: dict[str, Any], who: Principal, **headers: str
) -> CallRecord:
    """One call; its record."""
    hs = {**AV, **{k.replace("_", "-"): v for k, v in headers.items()}}
    reply = await gw.handle(Format.ANTHROPIC, orjson.dumps(body), hs, principal=who)
    assert reply.status == 200
    await gw.recorder.flush()
    recs: list[CallRecord] = await gw.store.recent_calls(50)
    return next(r for r in recs if r.request_id == reply.headers["x-request-id"])


# -- the X-Bastion-Prompt-Version header ------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "recorded"),
    [
        ("drafter@1", "drafter@1"),
        ("drafter@production", "drafter@1"),  # a label is recorded as the version it named
        ("drafter@2", "drafter@2"),  # a draft the app rendered itself is still a real version
    ],
)
async def test_a_header_naming_a_registry_version_is_recorded_as_that_version(
    gw: bastion.Gateway, claim: str, recorded: str
) -> None:
    rec = await _call(gw, _plain(), PLAIN, x_bastion_prompt_version=claim)
    assert rec.prompt_version == recorded and rec.prompt_name == "drafter"
    assert UNRESOLVED_FLAG not in rec.flags


@pytest.mark.parametrize(
    "claim",
    [
        "drafter@7",  # no such version
        "other@1",  # no such template
        "v3",  # no name at all
        "drafter@",
        "drafter@canary",  # no such label
        "drafter@99999999999999999999999",
        "<script>@1",
        "drafter@1\r\nx-injected: 1",
        "d" * 500 + "@1",
    ],
)
async def test_a_header_naming_no_registry_version_is_dropped_and_flagged(
    gw: bastion.Gateway, claim: str
) -> None:
    rec = await _call(gw, _plain(), PLAIN, x_bastion_prompt_version=claim)
    assert rec.prompt_version is None and rec.prompt_name is None
    assert rec.flags[UNRESOLVED_FLAG] is True
    assert claim not in orjson.dumps(rec.flags).decode()  # the claim itself is not kept


async def test_a_template_records_its_own_version_whatever_the_header_says(
    gw: bastion.Gateway,
) -> None:
    rec = await _call(gw, _templated(), PLAIN, x_bastion_prompt_version="drafter@2")
    assert rec.prompt_version == "drafter@1" and UNRESOLVED_FLAG not in rec.flags


async def test_the_library_header_context_is_checked_too(gw: bastion.Gateway) -> None:
    await gw.messages(_plain(), prompt_version="drafter@7")
    await gw.messages(_plain(), prompt_version="drafter@production")
    await gw.recorder.flush()
    new, old = (await gw.store.recent_calls(2))[:2]
    assert new.prompt_version == "drafter@1"
    assert old.prompt_version is None and old.flags[UNRESOLVED_FLAG]
