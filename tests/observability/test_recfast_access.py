"""Access lines scrubbed value by value (issue 16): every chosen value is scrubbed, each distinct
value once, and the handler's PII filter skips only the lines marked as scrubbed."""

from __future__ import annotations

import logging

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.observability.access import SCRUBBED_ATTR, AccessEntry, AccessLog
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.safety.pii.guard import PiiLogFilter

SCRUBBER = Scrubber(ScrubberConfig())
EMAIL = "alice.smith@example.com"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logger(name: str, *filters: logging.Filter) -> tuple[logging.Logger, _Capture]:
    log = logging.getLogger(f"bastion.test.recfast.{name}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    cap = _Capture()
    for f in filters:
        cap.addFilter(f)
    log.addHandler(cap)
    return log, cap


def _entry(**kw: object) -> AccessEntry:
    base: dict[str, object] = {
        "ts": 1_700_000_000.0,
        "request_id": "req_" + "ab" * 16,
        "status": 200,
        "key": "bench",
        "user": EMAIL,
        "feature": "default",
        "model": "gpt-4.1",
        "deployment": "sim/gpt-4.1",
        "input_tokens": 5,
        "output_tokens": 7,
        "cost_usd": 0.0001,
        "latency_ms": 3.0,
    }
    base.update(kw)
    return AccessEntry(**base)


def test_a_user_email_is_scrubbed_in_text_and_json_lines_without_the_line_filter() -> None:
    for fmt in ("text", "json"):
        log, cap = _logger(fmt)  # no PiiLogFilter: the access log alone must scrub
        AccessLog(fmt, log, scrub=SCRUBBER.redact).emit(_entry())
        (rec,) = cap.records
        line = rec.getMessage()
        assert EMAIL not in line
        assert getattr(rec, SCRUBBED_ATTR) is True
        if fmt == "json":
            assert orjson.loads(line)["user"] != EMAIL


def test_the_line_filter_skips_only_records_marked_scrubbed() -> None:
    log, cap = _logger("filter", PiiLogFilter(SCRUBBER))
    log.info("raw %s", EMAIL)  # an ordinary line: scrubbed by the filter as before
    # a scrub that lets the e-mail through: the filter trusts the mark and does not scan again
    AccessLog("text", log, scrub=lambda s: s).emit(_entry())
    raw, marked = cap.records
    assert EMAIL not in raw.getMessage()
    assert f"user={EMAIL}" in marked.getMessage()
    # without a scrubber nothing is marked, so the filter still scans the whole line
    AccessLog("text", log).emit(_entry())
    assert not hasattr(cap.records[2], SCRUBBED_ATTR)
    assert EMAIL not in cap.records[2].getMessage()


def test_each_distinct_value_is_scrubbed_once_and_the_memory_is_bounded() -> None:
    seen: list[str] = []

    def scrub(s: str) -> str:
        seen.append(s)
        return s.upper()

    log, cap = _logger("memo")
    access = AccessLog("text", log, scrub=scrub, memo_max=8)
    for i in range(50):
        access.emit(_entry(request_id=f"req_{i}"))
    assert sorted(seen) == sorted({*seen})  # no value scrubbed twice
    assert len(access._memo) <= 8
    for i in range(50):
        access.emit(_entry(user=f"user-{i}"))
    assert len(access._memo) <= 8
    assert all("USER-" in r.getMessage() for r in cap.records[50:])


_TEXT = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["", "a\nb", EMAIL]))


@settings(max_examples=200, deadline=None)
@given(
    key=_TEXT,
    user=_TEXT,
    feature=_TEXT,
    model=_TEXT,
    deployment=_TEXT,
    path=_TEXT,
    reason=_TEXT,
    error=_TEXT,
    flags=st.lists(st.text(max_size=6), max_size=3).map(tuple),
    fmt=st.sampled_from(["text", "json"]),
)
def test_a_scrubbed_line_is_the_line_of_the_entry_with_each_chosen_value_scrubbed(
    key: str | None,
    user: str | None,
    feature: str | None,
    model: str | None,
    deployment: str | None,
    path: str | None,
    reason: str | None,
    error: str | None,
    flags: tuple[str, ...],
    fmt: str,
) -> None:
    def scrub(s: str) -> str:
        return f"<{len(s)}>"

    def sc(v: str | None) -> str | None:
        return None if v is None else scrub(v)

    kw = {"key": key, "user": user, "feature": feature, "model": model}
    kw |= {"deployment": deployment, "path": path, "reason": reason, "error": error}
    entry = _entry(**kw, flags=flags, method="POST")
    by_hand = _entry(
        **{k: sc(v) for k, v in kw.items()}, flags=tuple(map(scrub, flags)), method=scrub("POST")
    )
    scrubbed = AccessLog(fmt, scrub=scrub).render(entry)
    assert scrubbed == AccessLog(fmt).render(by_hand)
