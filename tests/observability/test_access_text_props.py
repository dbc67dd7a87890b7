"""The text access line is read from the entry's fields directly (no dict per call); for any
entry it must equal the line built the old way, from ``as_dict()``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.observability.access import AccessEntry, _one_line


def _line_from_dict(e: AccessEntry) -> str:
    """The previous ``AccessEntry.text`` (the specification), verbatim but for ``self``."""
    d = e.as_dict()
    parts = [d["ts"], _one_line(e.request_id or "-"), str(e.status)]
    for label in ("key", "user", "feature"):
        if label in d:
            parts.append(f"{label}={_one_line(d[label])}")
    if e.model is not None:
        model = _one_line(e.model)
        parts.append(model if e.deployment is None else f"{model}→{e.deployment}")
    elif e.path is not None:
        parts.append(f"{e.method} {_one_line(e.path)}")
    if e.input_tokens is not None or e.output_tokens is not None:
        parts.append(f"tokens={e.input_tokens or 0}/{e.output_tokens or 0}")
    if e.cost_usd is not None:
        parts.append(f"cost=${e.cost_usd:.6f}")
    if e.latency_ms is not None:
        parts.append(f"{e.latency_ms:.0f}ms")
    if e.ttft_ms is not None:
        parts.append(f"ttft={e.ttft_ms:.0f}ms")
    if e.attempts is not None and e.attempts > 1:
        parts.append(f"attempts={e.attempts}")
    if e.flags:
        parts.append("flags=" + ",".join(e.flags))
    if e.error is not None:
        parts.append(f"error={e.error}")
    if e.reason is not None:
        parts.append(f'reason="{_one_line(e.reason)}"')
    return " ".join(parts)


_TEXT = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["", "bob\nINFO forged", "é"]))
_NUM = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False))
_INT = st.one_of(st.none(), st.integers(min_value=0, max_value=10**9))

_ENTRIES = st.builds(
    AccessEntry,
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    request_id=_TEXT,
    status=st.integers(min_value=100, max_value=599),
    method=st.sampled_from(["POST", "GET"]),
    path=_TEXT,
    key=_TEXT,
    user=_TEXT,
    feature=_TEXT,
    model=_TEXT,
    deployment=_TEXT,
    input_tokens=_INT,
    output_tokens=_INT,
    cost_usd=_NUM,
    latency_ms=_NUM,
    ttft_ms=_NUM,
    attempts=_INT,
    error=_TEXT,
    reason=_TEXT,
    flags=st.lists(st.text(max_size=6), max_size=3).map(tuple),
)


@settings(max_examples=400, deadline=None)
@given(_ENTRIES)
def test_the_text_line_equals_the_one_built_from_as_dict(e: AccessEntry) -> None:
    assert e.text() == _line_from_dict(e)


def test_empty_names_are_still_shown() -> None:
    """A key, user or feature that is an empty string is shown as ``key=`` (only None is left out)."""
    line = AccessEntry(ts=0.0, request_id="r", status=200, key="", user=None, feature="f").text()
    assert " key= " in line and "user=" not in line and "feature=f" in line
