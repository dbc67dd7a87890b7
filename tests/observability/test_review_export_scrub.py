"""A review item leaves as an eval case with every field scrubbed, identifiers included."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bastion.call import Call, Principal
from bastion.observability.review import (
    InMemoryReviewQueue,
    ReviewGuard,
    ReviewItem,
    ReviewSampler,
    scrub_all,
)
from bastion.providers.base import Format
from bastion.safety.pii import Scrubber, ScrubberConfig

EMAIL = "ann@example.com"
PHONE = "+1 415 555 0100"
CARD = "4111 1111 1111 1111"
RAW = (EMAIL, PHONE, CARD, "4111111111111111", "415 555 0100")


def regex_scrub(s: str) -> str:
    s = re.sub(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "[EMAIL]", s)
    s = re.sub(r"\b(?:\d[ -]?){12,18}\d\b", "[CARD]", s)
    return re.sub(r"\+?\d[\d -]{7,}\d", "[PHONE]", s)


SCRUBBERS: dict[str, Callable[[str], str]] = {
    "regex": regex_scrub,
    "bastion": Scrubber(ScrubberConfig()).redact,
}


def hostile_call() -> Call:
    """A call whose client-influenced identifiers all carry PII."""
    call = Call(
        request_id=f"req_{EMAIL}",
        trace_id=f"trace {PHONE}",
        span_id="b7ad6b7169203331",
        client_format=Format.OPENAI,
        principal=Principal(key_id="key_abc", name="app"),
        body={"model": "m", "messages": [{"role": "user", "content": f"card {CARD} please"}]},
        requested_model=f"model-{EMAIL}",
        stream=False,
        feature=f"billing {PHONE}",
        prompt_version=f"v-{CARD}",
        flags={f"pii {EMAIL}": True},
    )
    call.output_text.append(f"Charged {CARD}, receipt to {EMAIL}.")
    return call


def leaks(value: Any) -> list[str]:
    text = orjson.dumps(value).decode()
    return [raw for raw in RAW if raw in text]


@pytest.mark.parametrize("name", SCRUBBERS)
@pytest.mark.parametrize("verdict", ["good", "bad"])
async def test_no_field_of_an_exported_case_carries_pii(name: str, verdict: str) -> None:
    scrub = SCRUBBERS[name]
    queue = InMemoryReviewQueue(scrub)
    sampler = ReviewSampler(default_rate=1.0, flags=frozenset({f"pii {EMAIL}"}))
    guard = ReviewGuard(sampler, queue, scrub)
    call = hostile_call()
    await guard.after(call, None)
    await queue.mark(call.request_id, verdict, note=f"ring {PHONE} or mail {EMAIL}")  # type: ignore[arg-type]
    case = await queue.export_as_eval_case(call.request_id)
    assert leaks(case) == []
    assert case["label"] == verdict
    assert case["metadata"]["reasons"][0] == "sample" and len(case["metadata"]["reasons"]) == 2


@pytest.mark.parametrize("name", SCRUBBERS)
async def test_an_item_queued_raw_is_still_scrubbed_on_export(name: str) -> None:
    # a store-backed queue, or items queued before a scrubber fix, may hold raw identifiers
    queue = InMemoryReviewQueue(SCRUBBERS[name])
    item = ReviewItem(
        request_id=f"req-{CARD}",
        trace_id=EMAIL,
        ts=0.0,
        feature=f"support {EMAIL}",
        model=f"m {PHONE}",
        prompt_version=EMAIL,
        reasons=(f"flag:{EMAIL}",),
        input_text=f"my card is {CARD}",
        output_text=f"call {PHONE}",
        status="good",
        note=EMAIL,
    )
    await queue.add(item)
    case = await queue.export_as_eval_case(item.request_id)
    assert leaks(case) == []
    assert case["id"] != item.request_id and case["id"].startswith("req-")


async def test_identifiers_are_scrubbed_when_an_item_enters_the_queue() -> None:
    queue = InMemoryReviewQueue(regex_scrub)
    guard = ReviewGuard(ReviewSampler(default_rate=1.0), queue, regex_scrub)
    call = hostile_call()
    await guard.after(call, None)
    item = await queue.get(call.request_id)  # still found by the id the gateway minted
    assert item is not None
    assert leaks([item.trace_id, item.feature, item.model, item.prompt_version, item.reasons]) == []
    assert item.feature == "billing [PHONE]"


async def test_plain_identifiers_pass_through_unchanged() -> None:
    queue = InMemoryReviewQueue(SCRUBBERS["bastion"])
    guard = ReviewGuard(ReviewSampler(default_rate=1.0), queue, SCRUBBERS["bastion"])
    call = hostile_call()
    call.request_id, call.feature, call.prompt_version = "req_0af7651916cd43dd", "chat", "v7"
    call.trace_id, call.requested_model = "0af7651916cd43dd8448eb211c80319c", "gpt-4.1-mini"
    await guard.after(call, None)
    await queue.mark("req_0af7651916cd43dd", "good")
    case = await queue.export_as_eval_case("req_0af7651916cd43dd")
    assert case["id"] == "req_0af7651916cd43dd"
    assert case["metadata"]["feature"] == "chat"
    assert case["metadata"]["model"] == "gpt-4.1-mini"
    assert case["metadata"]["prompt_version"] == "v7"
    assert case["metadata"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_scrub_all_reaches_every_string_and_leaves_other_values() -> None:
    value = {"a": [EMAIL, ("x", EMAIL)], "b": {"c": EMAIL}, "n": 3, "z": None, "t": True}
    assert scrub_all(value, regex_scrub) == {
        "a": ["[EMAIL]", ["x", "[EMAIL]"]],
        "b": {"c": "[EMAIL]"},
        "n": 3,
        "z": None,
        "t": True,
    }
