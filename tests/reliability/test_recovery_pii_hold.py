"""Stream recovery under the default PII output filter, which holds the word being written.

At a cut the held word never reached the client, so the fallback carries on from the text the
client has; and a card number cut in half is judged whole in the carried-on answer. A stream
whose only output so far is held is not silent: it is judged by the idle bound, not by the
(much longer) first-token bound.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.reliability._recovery_fakes import ANT, OAI, Script, ScriptedSimulator, config, dep, run

from bastion.config import Config
from bastion.gateway import Gateway


def _gateway(tmp: Path, scripts: dict[str, Script], models: dict[str, object]) -> Gateway:
    cfg = config(tmp, models)
    cfg["features"] = {"default": {"pii_output": "sensitive"}}  # the shipped default
    return Gateway(Config.model_validate(cfg), simulator=ScriptedSimulator(scripts))


async def test_the_fallback_carries_on_from_what_the_client_has_not_what_was_held(
    tmp_path: Path,
) -> None:
    scripts = {
        # cut after "...fox jumps": "jumps" is still held by the filter at the cut
        "primary": Script("The quick brown fox jumps over the lazy dog", cut_after=5),
        # a model continues from its prefill: here "The quick brown fox"
        "backup": Script("unused", continuation=" jumps over the lazy dog"),
    }
    models = {"m": {"deployments": [dep("ant", "primary"), dep("ant", "backup")]}}
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, ANT, "m")
    assert not got.errored and got.clean_end, got.raw
    assert got.text == "The quick brown fox jumps over the lazy dog"
    (req,) = scripts["backup"].requests
    assert req["messages"][-1] == {"role": "assistant", "content": "The quick brown fox"}


async def test_a_card_cut_in_half_is_redacted_whole_in_the_carried_on_answer(
    tmp_path: Path,
) -> None:
    scripts = {
        "primary": Script("Your card 4111 1111 1111 1111 is on file", cut_after=4),
        "backup": Script("unused", continuation=" 4111 1111 1111 1111 is on file"),
    }
    models = {"m": {"deployments": [dep("ant", "primary"), dep("ant", "backup")]}}
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, ANT, "m")
    assert not got.errored and got.clean_end, got.raw
    assert "4111" not in got.text and "[CARD_" in got.text, got.text
    assert got.text.startswith("Your card ") and got.text.endswith(" is on file")


async def test_a_stall_after_held_output_is_judged_by_the_idle_bound(tmp_path: Path) -> None:
    # one unfinished word, then silence: nothing reached the client, so the call moves on to
    # the fallback after the idle bound (0.3 s), well before the first-token bound (15 s)
    scripts = {
        "staller": Script("x", pieces=["Unfinished", "word", " and more"], stall_after=2),
        "backup": Script("A whole answer"),
    }
    models = {
        "m": {
            "deployments": [
                dep("oai", "staller", timeouts={"idle": 0.3}),
                dep("oai", "backup"),
            ]
        }
    }
    async with _gateway(tmp_path, scripts, models) as gw:
        t0 = time.monotonic()
        got = await run(gw, OAI, "m")
        took = time.monotonic() - t0
    assert not got.errored and got.text == "A whole answer", got.raw
    assert took < 10, took


async def test_a_hedged_loser_held_word_never_reaches_the_winners_answer(tmp_path: Path) -> None:
    # the primary writes half a word (held by the filter), then goes quiet; the hedge answers.
    # Each hedged stream has its own filter, so the loser's held text cannot leak into it.
    scripts = {
        "primary": Script("x", pieces=["Unfinished", "word"], stall_after=1),
        "hedge": Script("A whole answer"),
    }
    models = {"m": {"deployments": [dep("oai", "primary"), dep("oai", "hedge")]}}
    cfg = config(tmp_path, models)
    cfg["features"] = {"default": {"pii_output": "sensitive", "hedge_delay": 0.05}}
    async with Gateway(Config.model_validate(cfg), simulator=ScriptedSimulator(scripts)) as gw:
        got = await run(gw, OAI, "m")
    assert not got.errored and got.text == "A whole answer", got.raw
