"""Property: whatever the cut point, the fallback's answer and how it carries on, a streaming
client either receives exactly one whole answer with a clean end, or ends with an error
event after a part of one, never a clean end of a truncated answer, and nothing of an
answer that diverged from what it already had."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.reliability._recovery_fakes import (
    ANT,
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

# few short words, so that a restarted answer often shares a prefix with the cut one
_TEXT = st.lists(st.sampled_from(["a", "b", "ab", "ba", "aa"]), min_size=1, max_size=10).map(
    " ".join
)


@dataclass(frozen=True)
class Case:
    fmt: Format
    primary: str  # provider of the cut deployment
    fallback: str  # provider of the fallback
    setting: str  # the fallback's prefill setting
    refuses: bool  # the fallback answers a prefill with a 400
    text: str  # the primary's answer
    cut: int  # text pieces the primary sends before its connection drops (>= 1)
    other: str  # the fallback's answer to the original request
    more: str  # the fallback's answer to a prefill request
    fallback_cut: int | None  # the fallback's stream drops too


@st.composite
def cases(draw: st.DrawFn) -> Case:
    text = draw(_TEXT)
    n = len(words(text))
    kind = draw(st.sampled_from(["same", "prefix", "extends", "random"]))
    if kind == "same":
        other = text
    elif kind == "prefix":
        other = "".join(words(text)[: draw(st.integers(1, n))])
    elif kind == "extends":
        other = text + " " + draw(_TEXT)
    else:
        other = draw(_TEXT)
    return Case(
        fmt=draw(st.sampled_from([ANT, OAI])),
        primary=draw(st.sampled_from(["ant", "oai", "sim"])),
        fallback=draw(st.sampled_from(["ant", "oai", "sim"])),
        setting=draw(st.sampled_from(["auto", "none", "prefill"])),
        refuses=draw(st.booleans()),
        text=text,
        cut=draw(st.integers(1, n + 1)),
        other=other,
        more=draw(_TEXT),
        fallback_cut=draw(st.none() | st.integers(0, 12)),
    )


def _speaks(provider: str, fmt: Format) -> Format:
    return {"ant": ANT, "oai": OAI}.get(provider, fmt)


async def _run(case: Case) -> Received:
    scripts = {
        "primary": Script(case.text, cut_after=case.cut),
        "backup": Script(
            case.other,
            continuation=case.more,
            refuse_prefill=case.refuses,
            cut_after=case.fallback_cut,
        ),
    }
    backup = dep(case.fallback, "backup", prefill=case.setting)
    models = {"m": {"deployments": [dep(case.primary, "primary"), backup]}}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.model_validate(config(Path(tmp), models))
        async with Gateway(cfg, simulator=ScriptedSimulator(scripts)) as gw:
            return await run(gw, case.fmt, "m", include_usage=True)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(cases())
def test_a_client_gets_one_whole_answer_or_an_error_never_a_truncated_clean_end(
    case: Case,
) -> None:
    got = asyncio.run(_run(case))
    pieces = words(case.text)
    sent = "".join(pieces[: case.cut])
    prefill = (
        case.setting == "prefill"
        or (case.setting == "auto" and _speaks(case.fallback, case.fmt) is ANT and not case.refuses)
    ) and not (case.setting == "prefill" and case.refuses)
    assert got.clean_end != got.errored, got.raw  # it ends, and says how
    if case.cut >= len(pieces):  # the primary was never cut
        assert got.clean_end and got.text == case.text
        return
    if got.clean_end:
        whole = sent + case.more if prefill else case.other
        assert got.text == whole, (case, got.text)
        assert got.sdk()[0] == whole  # one message to the official SDK's accumulator
        flag = got.call.flags["recovered"]
        assert flag == ("prefill" if prefill else "restart")
    else:
        assert got.text.startswith(sent)
        candidates = [sent + case.more] if prefill else [case.other]
        assert got.text == sent or any(c.startswith(got.text) for c in candidates), got.text
    # it carries on whenever it can: the fallback completes and (prefill or same start)
    refused_for_good = case.setting == "prefill" and case.refuses
    answer = case.more if prefill else case.other
    completes = case.fallback_cut is None or case.fallback_cut >= len(words(answer))
    if completes and not refused_for_good and (prefill or case.other.startswith(sent)):
        assert got.clean_end, (case, got.raw)
