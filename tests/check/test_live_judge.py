"""The streaming verdict of `bastion check --url`, from arrival times alone (no clock, no network)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.check.live import CLUSTER_S, MIN_JUDGE_S, StreamTiming, judge_stream


def paced(n: int, gap_ms: float, start: float = 0.05) -> tuple[float, ...]:
    return tuple(start + i * gap_ms / 1000.0 for i in range(n))


def test_a_stream_arriving_as_paced_passes() -> None:
    status, why = judge_stream(StreamTiming(paced(12, 100.0), paced_ms=100.0))
    assert status == "PASS", why
    assert "12 deltas arrived over 1100 ms, at most 1 in one read" in why


def test_every_delta_in_one_read_is_buffering() -> None:
    # what the issue saw: nginx delivered all 12 deltas in one read at 1.66 s
    status, why = judge_stream(StreamTiming((1.66,) * 12, paced_ms=100.0))
    assert status == "FAIL"
    assert why.startswith("buffered by something between you and Bastion")
    assert "at most 12 in one read" in why and "100 ms apart" in why


def test_a_gzipped_event_stream_fails_whatever_its_timing() -> None:
    status, why = judge_stream(
        StreamTiming(paced(12, 100.0), paced_ms=100.0, content_encoding="gzip")
    )
    assert status == "FAIL" and "Content-Encoding: gzip" in why
    assert "(pass on timing: 12 deltas arrived over 1100 ms" in why  # it says it was in time
    status, why = judge_stream(StreamTiming((1.66,) * 12, paced_ms=100.0, content_encoding="gzip"))
    assert status == "FAIL" and why.startswith("buffered by something between you and Bastion")
    assert why.endswith(
        "and it came compressed (Content-Encoding: gzip): turn compression off for text/event-stream"
    )
    assert judge_stream(StreamTiming(paced(12, 100.0), 100.0, "identity"))[0] == "PASS"


def test_half_the_deltas_held_back_into_one_batch_is_buffering() -> None:
    # a proxy that flushes when its buffer fills: the first half paced, the rest in one lump
    times = paced(6, 100.0) + (1.2,) * 6
    status, _ = judge_stream(StreamTiming(times, paced_ms=100.0))
    assert status == "PASS"  # six of twelve together is not yet most of the answer
    times = paced(5, 100.0) + (1.2,) * 7
    status, why = judge_stream(StreamTiming(times, paced_ms=100.0))
    assert status == "FAIL" and "at most 7 in one read" in why


def test_an_unpaced_quick_answer_is_skipped_with_the_reason() -> None:
    status, why = judge_stream(StreamTiming((0.01, 0.011, 0.012, 0.013)))
    assert status == "SKIP"
    assert "too quick" in why and "server.drill_headers" in why


def test_a_long_unpaced_answer_is_judged_by_its_batches() -> None:
    assert judge_stream(StreamTiming(paced(40, 30.0)))[0] == "PASS"
    assert judge_stream(StreamTiming((2.0,) * 40))[0] == "FAIL"


def test_too_few_deltas_fail_a_paced_stream_and_skip_an_unpaced_one() -> None:
    assert judge_stream(StreamTiming((0.1, 0.2), paced_ms=100.0))[0] == "FAIL"
    assert judge_stream(StreamTiming((0.1, 0.2)))[0] == "SKIP"


@given(
    n=st.integers(3, 60),
    gap_ms=st.floats(3 * CLUSTER_S * 1000, 500.0),
    ttft=st.floats(0.0, 5.0),
    jitter=st.lists(st.floats(-0.2, 0.2), min_size=60, max_size=60),
)
def test_any_paced_stream_with_modest_jitter_passes(
    n: int, gap_ms: float, ttft: float, jitter: list[float]
) -> None:
    """Scheduling jitter of up to a fifth of the gap, and any first-token delay, never fail it."""
    gap = gap_ms / 1000.0
    times = tuple(ttft + i * gap + jitter[i] * gap for i in range(n))
    status, why = judge_stream(StreamTiming(times, paced_ms=gap_ms))
    assert status == "PASS", why


@given(
    n=st.integers(3, 60),
    gap_ms=st.floats(1.0, 500.0),
    at=st.floats(0.0, 30.0),
    spread=st.floats(0.0, CLUSTER_S),
    paced_known=st.booleans(),
)
def test_any_stream_arriving_in_one_read_fails(
    n: int, gap_ms: float, at: float, spread: float, paced_known: bool
) -> None:
    """However long it took, deltas that reach the client together were held on the way."""
    times = tuple(at + spread * i / n for i in range(n))
    timing = StreamTiming(times, paced_ms=gap_ms if paced_known else None)
    status, _ = judge_stream(timing)
    if not paced_known and times[-1] < MIN_JUDGE_S:
        assert status == "SKIP"
    else:
        assert status == "FAIL"


@given(
    times=st.lists(st.floats(0.0, 60.0), min_size=0, max_size=40).map(lambda t: tuple(sorted(t))),
    encoding=st.sampled_from(["gzip", "br", "deflate", "zstd", "GZIP "]),
    paced_ms=st.one_of(st.none(), st.floats(1.0, 500.0)),
)
def test_any_compressed_stream_fails(
    times: tuple[float, ...], encoding: str, paced_ms: float | None
) -> None:
    status, why = judge_stream(StreamTiming(times, paced_ms, encoding))
    assert status == "FAIL" and "compressed" in why
