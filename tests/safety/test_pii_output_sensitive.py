"""The default for answers: sensitive PII (cards, bank and government ids, secrets, e-mails,
phones) is replaced before the client sees it; names and places are only flagged.

An answer is a path PII leaks by (a model repeating another customer's card from a retrieved
document); a hardening layer that masks it only in logs masks it on some paths only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import sim_models

import bastion
from bastion.safety.pii import Scrubber
from bastion.safety.pii._types import SENSITIVE

CARD = "4111 1111 1111 1111"
EMAIL = "jane.roe@example.com"
PHONE = "+44 20 7946 0958"
NAME = "Margaret Thornton"
REPLY = f"{NAME} paid with card {CARD}; write to {EMAIL} or call {PHONE}."
SCRUBBER = Scrubber()


def _cfg(tmp: Path, **feature: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp / 'p.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
    }
    if feature:
        out["features"] = {"default": feature}
    return out


def _sensitive_gone(text: str) -> None:
    for value in (CARD, EMAIL, PHONE):
        assert value not in text, text
    assert "[CARD_" in text and "[EMAIL_" in text and "[PHONE_" in text, text


async def test_the_default_replaces_sensitive_values_and_keeps_names(tmp_path: Path) -> None:
    ask = {"messages": [{"role": "user", "content": f"[[sim:reply={REPLY}]]"}]}
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        unary = await gw.chat_completions({"model": "gpt-4.1", **ask})
        text = unary["choices"][0]["message"]["content"]
        _sensitive_gone(text)
        assert NAME in text  # flagged, not replaced: ordinary answers are full of names
        streamed = "".join(
            (c["choices"][0]["delta"].get("content") or "")
            for c in [c async for c in gw.stream_chat_completions({"model": "gpt-4.1", **ask})]
            if c.get("choices")
        )
        assert streamed == text
        msg = await gw.messages({"model": "claude-sonnet-5", "max_tokens": 200, **ask})
        _sensitive_gone(msg["content"][0]["text"])
        await gw.recorder.flush()
        rec = (await gw.store.recent_calls(1))[0]
        pii = [f for f in rec.findings if f.detector == "pii"]
        assert pii and pii[-1].action == "redacted", rec.findings


async def test_flag_leaves_the_answer_alone_and_redact_replaces_names_too(tmp_path: Path) -> None:
    ask = {"model": "gpt-4.1", "messages": [{"role": "user", "content": f"[[sim:reply={REPLY}]]"}]}
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path / "f", pii_output="flag")) as gw:
        out = await gw.chat_completions(ask)
        assert out["choices"][0]["message"]["content"] == REPLY
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path / "r", pii_output="redact")) as gw:
        out = await gw.chat_completions(ask)
        text = out["choices"][0]["message"]["content"]
        _sensitive_gone(text)
        assert NAME not in text


def test_the_official_sdks_see_placeholders_through_a_real_gateway(gateway_proc: Any) -> None:
    content = f"[[sim:reply={REPLY}]]"
    oa = openai.OpenAI(base_url=f"{gateway_proc.url}/v1", api_key=gateway_proc.key, max_retries=0)
    chunks = oa.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": content}], stream=True
    )
    _sensitive_gone("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    an = anthropic.Anthropic(base_url=gateway_proc.url, api_key=gateway_proc.key, max_retries=0)
    with an.messages.stream(
        model="claude-sonnet-5", max_tokens=200, messages=[{"role": "user", "content": content}]
    ) as s:
        _sensitive_gone("".join(s.text_stream))


_piece = st.sampled_from([CARD, EMAIL, PHONE, NAME, " and ", ", ", "order 12345", "\n", "x"])


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_piece, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 400)))
def test_a_stream_in_sensitive_mode_matches_the_whole_text_wherever_it_is_cut(
    parts: list[str], cuts: list[int]
) -> None:
    text = "".join(parts)
    whole = SCRUBBER.session().scrub(text, mode="sensitive")
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    s = SCRUBBER.session().stream(mode="sensitive")
    out = "".join(s.feed(c) for c in chunks) + s.flush()
    assert out == whole.text
    for f in whole.findings:  # sensitive types replaced, the others only counted
        assert (f.placeholder in whole.text) == (f.type in SENSITIVE), (f, whole.text)
