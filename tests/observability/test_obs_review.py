"""Review sampling: deterministic hash sample at each feature's rate, plus every flagged call."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from bastion.call import Call, Principal
from bastion.errors import NotFound
from bastion.observability.review import InMemoryReviewQueue, ReviewGuard, ReviewSampler
from bastion.providers.base import Format


def scrub_email(s: str) -> str:
    return re.sub(r"\S+@\S+", "[EMAIL]", s)


def scrub_phone(s: str) -> str:
    return re.sub(r"\+?\d[\d -]{7,}\d", "[PHONE]", s)


def make_call(request_id: str = "req_r1", feature: str | None = "chat", **fields: Any) -> Call:
    call = Call(
        request_id=request_id,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        client_format=Format.OPENAI,
        principal=Principal(key_id="key_abc", name="app"),
        body={
            "model": "gpt-4.1-mini",
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "mail me at ann@example.com or +1 415 555 0100"},
            ],
        },
        requested_model="gpt-4.1-mini",
        stream=False,
        feature=feature,
        prompt_version="v7",
    )
    call.served_model = "gpt-4.1-mini-2025"
    call.output_text.append("Sure, ann@example.com noted.")
    for k, v in fields.items():
        setattr(call, k, v)
    return call


def test_the_sample_decision_is_deterministic_across_sampler_instances() -> None:
    ids = [f"req_{i}" for i in range(2000)]
    a = [ReviewSampler().sampled(r, "chat") for r in ids]
    b = [ReviewSampler().sampled(r, "chat") for r in ids]
    assert a == b
    assert any(a) and not all(a)


def test_the_default_rate_is_one_percent() -> None:
    s = ReviewSampler()
    n = 100_000
    hits = sum(s.sampled(uuid.UUID(int=i).hex, None) for i in range(n))
    assert 0.008 * n <= hits <= 0.012 * n


def test_each_feature_has_its_own_rate() -> None:
    s = ReviewSampler(rates={"legal": 0.5, "spam": 0.0, "audit": 1.0})
    ids = [f"r{i}" for i in range(20_000)]
    legal = sum(s.sampled(r, "legal") for r in ids)
    assert 0.47 * len(ids) <= legal <= 0.53 * len(ids)
    assert not any(s.sampled(r, "spam") for r in ids)
    assert all(s.sampled(r, "audit") for r in ids)
    # a feature without its own rate uses the default
    assert s.rate("other") == 0.01


def test_rates_outside_zero_to_one_are_refused() -> None:
    with pytest.raises(ValueError):
        ReviewSampler(default_rate=1.5)
    with pytest.raises(ValueError):
        ReviewSampler(rates={"x": -0.1})


@pytest.mark.parametrize(
    ("flags", "reasons"),
    [
        ({"pii": {"email": 2}}, ("flag:pii",)),
        ({"injection_score": 0.9}, ("flag:injection_score",)),
        ({"injection_score": 0.2}, ()),
        ({"canary_leak": True}, ("flag:canary_leak",)),
        ({"stream_error": "upstream stalled"}, ("flag:stream_error",)),
        ({"degraded": "kill_switch"}, ("flag:degraded",)),
        ({"pii": {}}, ()),
        ({"max_tokens_injected": 800, "reserved_usd": 0.01}, ()),
    ],
)
def test_every_call_a_guard_flagged_is_queued_whatever_the_rate(
    flags: dict[str, Any], reasons: tuple[str, ...]
) -> None:
    s = ReviewSampler(default_rate=0.0)
    assert s.reasons(make_call(flags=flags)) == reasons


async def test_a_call_is_queued_once_even_if_seen_twice() -> None:
    queue = InMemoryReviewQueue(scrub_email)
    guard = ReviewGuard(ReviewSampler(default_rate=1.0), queue, scrub_email)
    call = make_call(flags={"pii": {"email": 1}})
    await guard.after(call, None)
    await guard.after(call, None)
    items = await queue.list()
    assert len(items) == 1
    assert items[0].reasons == ("sample", "flag:pii")


async def test_unsampled_unflagged_calls_are_not_queued() -> None:
    queue = InMemoryReviewQueue(scrub_email)
    guard = ReviewGuard(ReviewSampler(default_rate=0.0), queue, scrub_email)
    await guard.after(make_call(), None)
    assert await queue.list() == []


async def test_text_is_scrubbed_on_entry_and_scrubbed_again_on_export() -> None:
    # the guard's scrubber misses phone numbers; the export scrubber (a later fix) catches them
    queue = InMemoryReviewQueue(lambda s: scrub_phone(scrub_email(s)))
    guard = ReviewGuard(ReviewSampler(default_rate=1.0), queue, scrub_email)
    await guard.after(make_call(), None)
    (item,) = await queue.list()
    assert "ann@example.com" not in item.input_text + item.output_text
    assert item.input_text == "mail me at [EMAIL] or +1 415 555 0100"  # last user turn only
    await queue.mark(item.request_id, "good", note="call +1 415 555 0199 if unclear")
    case = await queue.export_as_eval_case(item.request_id)
    assert case["input"] == "mail me at [EMAIL] or [PHONE]"
    assert case["expected"] == "Sure, [EMAIL] noted."
    assert case["rejected"] is None
    assert case["note"] == "call [PHONE] if unclear"
    assert case["label"] == "good"
    assert case["metadata"]["prompt_version"] == "v7"
    assert case["metadata"]["model"] == "gpt-4.1-mini-2025"


async def test_mark_list_and_export_follow_the_reviewers_verdict() -> None:
    queue = InMemoryReviewQueue(scrub_email)
    guard = ReviewGuard(ReviewSampler(default_rate=1.0), queue, scrub_email)
    for rid, feature in (("a", "chat"), ("b", "chat"), ("c", "legal")):
        await guard.after(make_call(rid, feature), None)
    marked = await queue.mark("b", "bad", "made up a refund policy")
    assert marked.status == "bad" and marked.reviewed_at is not None
    assert [i.request_id for i in await queue.list()] == ["c", "b", "a"]
    assert [i.request_id for i in await queue.list(status="pending")] == ["c", "a"]
    assert [i.request_id for i in await queue.list(status="bad")] == ["b"]
    assert [i.request_id for i in await queue.list(feature="legal")] == ["c"]
    bad = await queue.export_as_eval_case("b")
    assert bad["expected"] is None and bad["rejected"] == "Sure, [EMAIL] noted."
    with pytest.raises(NotFound):
        await queue.mark("zzz", "good")
    with pytest.raises(NotFound):
        await queue.export_as_eval_case("zzz")
    with pytest.raises(ValueError):
        await queue.mark("a", "meh")  # type: ignore[arg-type]


async def test_the_in_memory_queue_is_bounded_dropping_the_oldest() -> None:
    queue = InMemoryReviewQueue(scrub_email, max_items=2)
    guard = ReviewGuard(ReviewSampler(default_rate=1.0), queue, scrub_email)
    for rid in ("a", "b", "c"):
        await guard.after(make_call(rid), None)
    assert [i.request_id for i in await queue.list()] == ["c", "b"]
    assert await queue.get("a") is None
