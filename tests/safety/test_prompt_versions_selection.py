"""Selecting a server-side template version: callers get released (labelled) versions only,
unless their key has the ``prompt_drafts`` role, so a draft never reaches production traffic
by a caller's choice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import sim_models

import bastion
from bastion.call import Principal
from bastion.errors import PermissionDenied
from bastion.providers.base import Format
from bastion.safety.prompting.guards import (
    DRAFTS_ROLE,
    require_selectable,
)
from bastion.safety.prompting.templates import is_label
from bastion.store import CallRecord

V1 = "You are the Acme support drafter for {product}. Version one."
V2 = "You are the Acme support drafter for {product}. Version two, not yet released."
PLAIN = Principal(key_id="k-plain", name="plain")
AUTHOR = Principal(key_id="k-author", name="author", roles=(DRAFTS_ROLE,))
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


def _sent_system(gw: bastion.Gateway) -> str:
    return str(gw.simulator.requests[-1].body["system"])


# -- selecting a template version -----------------------------------------------------------


@pytest.mark.parametrize("ref", [{"version": "2"}, {"version": "latest"}, {"label": "2"}])
async def test_a_plain_key_cannot_select_an_unlabelled_draft(
    gw: bastion.Gateway, ref: dict[str, str]
) -> None:
    n = gw.simulator.request_count()
    with pytest.raises(PermissionDenied) as ei:
        await _call(gw, _templated(**ref), PLAIN)
    assert DRAFTS_ROLE in ei.value.message and ei.value.http_status() == 403
    assert gw.simulator.request_count() == n, "the draft reached the model"


async def test_a_plain_key_selects_by_label(gw: bastion.Gateway) -> None:
    rec = await _call(gw, _templated(label="production"), PLAIN)
    assert "Version one." in _sent_system(gw)
    assert rec.prompt_version == "drafter@1" and rec.prompt_name == "drafter"
    rec = await _call(gw, _templated(), PLAIN)  # no reference: the production label
    assert rec.prompt_version == "drafter@1"


async def test_a_key_with_the_drafts_role_selects_a_draft(gw: bastion.Gateway) -> None:
    rec = await _call(gw, _templated(version="2"), AUTHOR)
    assert "Version two" in _sent_system(gw)
    assert rec.prompt_version == "drafter@2" and rec.prompt_name == "drafter"
    rec = await _call(gw, _templated(version="latest"), AUTHOR)
    assert rec.prompt_version == "drafter@2"


# -- the rule itself --------------------------------------------------------------------------


def test_only_labels_are_selectable_without_the_drafts_role() -> None:
    assert is_label("production") and is_label("canary")
    assert not is_label("3") and not is_label("latest") and not is_label("")
    require_selectable("p", "production", ())
    require_selectable("p", "3", (DRAFTS_ROLE,))
    require_selectable("p", "latest", ("admin", DRAFTS_ROLE))
    for ref in ("3", "latest"):
        with pytest.raises(PermissionDenied):
            require_selectable("p", ref, ("admin",))
