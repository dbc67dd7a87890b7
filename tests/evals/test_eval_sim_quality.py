"""The simulator tells models and prompts apart: facts kept by quality profile, instructions followed only when given."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.providers.sim import Simulator
from bastion.providers.sim.quality import (
    EvalDirective,
    Instructions,
    QualityProfile,
    compose_quality_answer,
    profile_for,
    read_directive,
    read_instructions,
)

FACTS = ["refunds take 14 days", "shipping is free over 50 euros", "returns need a receipt"]
CITE = "Answer from the documents. Cite the document id in square brackets."
PLAIN = "Answer from the documents."


def _ask(
    sim: Simulator,
    model: str,
    system: str,
    seed: int,
    *,
    facts: list[str] = FACTS,
    api: str = "anthropic",
    directive: bool = True,
) -> str:
    text = "What is the refund policy?"
    if directive:
        text = f"[[sim:facts={'|'.join(facts)}]][[sim:seed={seed}]][[sim:docs=kb-1]]\n{text}"
    if api == "anthropic":
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 300,
            "system": system,
            "messages": [{"role": "user", "content": text}],
        }
        path, headers = "/v1/messages", {"anthropic-version": "2023-06-01"}
    else:
        body = {
            "model": model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
        path, headers = "/v1/chat/completions", {}

    async def go() -> bytes:
        res = await sim.handle("POST", path, headers, orjson.dumps(body))
        return b"".join([chunk async for chunk in res.body])

    data = orjson.loads(asyncio.run(go()))
    if api == "anthropic":
        return "".join(b["text"] for b in data["content"] if b["type"] == "text")
    return str(data["choices"][0]["message"]["content"])


def _recall(sim: Simulator, model: str, seeds: range) -> float:
    found = 0
    for s in seeds:
        answer = _ask(sim, model, PLAIN, s).lower()
        found += sum(f in answer for f in FACTS)
    return found / (len(FACTS) * len(seeds))


def test_the_same_seed_gives_the_same_answer_and_another_seed_may_not() -> None:
    sim = Simulator()
    a = [_ask(sim, "claude-haiku-5-5", CITE, s) for s in range(12)]
    assert a == [_ask(sim, "claude-haiku-5-5", CITE, s) for s in range(12)]
    assert len(set(a)) > 1  # a weak model's answers vary from sample to sample


def test_a_weaker_model_drops_facts_more_often_than_a_stronger_one() -> None:
    sim = Simulator()
    strong = _recall(sim, "claude-sonnet-5", range(40))
    weak = _recall(sim, "claude-haiku-5-5", range(40))
    assert strong >= 0.93 and weak <= 0.8 and strong - weak >= 0.15


def test_a_cheaper_model_is_no_longer_byte_identical() -> None:
    sim = Simulator()
    same = sum(
        _ask(sim, "claude-sonnet-5", CITE, s) == _ask(sim, "claude-haiku-5-5", CITE, s)
        for s in range(20)
    )
    assert same < 20


def test_citations_appear_only_when_the_system_prompt_asks_for_them() -> None:
    sim = Simulator()
    for api in ("anthropic", "openai"):
        cited = [_ask(sim, "claude-sonnet-5", CITE, s, api=api) for s in range(10)]
        plain = [_ask(sim, "claude-sonnet-5", PLAIN, s, api=api) for s in range(10)]
        assert sum("[kb-1]" in a for a in cited) >= 9, cited
        assert not any("[kb-1]" in a for a in plain), plain


def test_a_word_limit_and_bullets_are_followed_when_given() -> None:
    sim = Simulator(quality={"m": QualityProfile(1.0, 1.0)})
    limited = _ask(sim, "m", "Reply in at most 6 words, as bullet points.", 1)
    assert len(limited.replace("- ", "").split()) <= 6 and limited.startswith("- ")
    free = _ask(sim, "m", PLAIN, 1)
    assert len(free.split()) > 6 and not free.startswith("- ")


def test_configured_profiles_override_the_name_guess() -> None:
    perfect = Simulator(quality={"claude-haiku-5-5": QualityProfile(1.0, 1.0)})
    assert _recall(perfect, "claude-haiku-5-5", range(10)) == 1.0
    hopeless = Simulator(quality={"claude-sonnet-5": QualityProfile(0.0, 0.0)})
    assert _recall(hopeless, "claude-sonnet-5", range(10)) == 0.0


def test_without_an_eval_directive_the_answer_is_the_old_one() -> None:
    """Other tests' simulated answers must not move: no directive, no quality model."""
    with_profiles = Simulator(quality={"claude-haiku-5-5": QualityProfile(0.0, 0.0)})
    plain = Simulator()
    a = _ask(with_profiles, "claude-haiku-5-5", CITE, 1, directive=False)
    b = _ask(plain, "claude-haiku-5-5", CITE, 1, directive=False)
    c = _ask(plain, "claude-sonnet-5", CITE, 1, directive=False)
    assert a == b == c and "[" not in a


def test_profiles_are_guessed_from_model_tiers() -> None:
    assert profile_for("claude-haiku-5-5").fact_recall < profile_for("claude-sonnet-5").fact_recall
    assert profile_for("gpt-4.1-mini").fact_recall < profile_for("gpt-4.1").fact_recall
    assert profile_for("x", {"x": QualityProfile(0.5, 0.5)}) == QualityProfile(0.5, 0.5)


_fact = st.text(st.sampled_from("abcdefghij0123456789 "), min_size=3).filter(
    lambda f: f.strip() != ""
)


@settings(max_examples=60, deadline=None)
@given(
    facts=st.lists(_fact, min_size=1, max_size=4),
    seed=st.integers(0, 10**6),
    cite=st.booleans(),
    recall=st.floats(0.0, 1.0),
)
def test_property_a_perfect_follower_states_every_fact_and_cites_iff_asked(
    facts: list[str], seed: int, cite: bool, recall: float
) -> None:
    d = EvalDirective(tuple(f.strip() for f in facts), ("d1",), str(seed))
    ins = Instructions(cite=cite)
    text = compose_quality_answer(d, ins, QualityProfile(1.0, 1.0), model="m", request_key="q")
    low = text.lower()
    assert all(f.strip().lower() in low for f in facts)
    assert ("[d1]" in text) == cite
    # determinism: the same inputs give the same text at any profile
    p = QualityProfile(recall, recall)
    assert compose_quality_answer(d, ins, p, model="m", request_key="q") == compose_quality_answer(
        d, ins, p, model="m", request_key="q"
    )


def test_directives_and_instructions_parse() -> None:
    d = read_directive("[[sim:facts=a b|c]][[sim:docs=x, y]][[sim:seed=4-2]] hi")
    assert d == EvalDirective(("a b", "c"), ("x", "y"), "4-2")
    assert read_directive("no directive") is None
    ins = read_instructions("Please cite sources. Keep it under 40 words in bullet points.")
    assert ins == Instructions(cite=True, max_words=40, bullets=True)
    assert read_instructions("Be helpful.") == Instructions()
