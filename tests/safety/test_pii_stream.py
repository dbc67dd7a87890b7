"""A streamed output is scrubbed exactly like the whole text, wherever the chunks split it."""

from __future__ import annotations

import random

import pytest

from bastion.safety.pii import Scrubber, ScrubberConfig, StreamScrubber
from bastion.safety.pii._stream import NER_BATCH, NER_HOLD

SCRUBBER = Scrubber()
# The hold-back tests below pin what the *pattern* detectors need held; the name tagger
# holds NER_HOLD more chars of right context (test_names_hold_back_their_right_context).
PATTERNS = Scrubber(ScrubberConfig(ner="off"))

TEXT = (
    "Sure! Reach Ann at ann.lee@example.com or +44 20 7946 0958 (call me on 4155552671). "
    "Card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6789.\n"
    "Servers: 203.0.113.7 and 2001:db8::8a2e:370:7334; version 1.2.3.4 and TICKET-12345 stay.\n"
    "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
    "password: Hunter2!x Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl\n"
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oJ5Hz1hC1ZK0oAoGCCqGSM49\n"
    "AwEHoUQDQgAE2Dsq3Xh0lZ8TzdAgH6vXjzV1MNJQTAOq2wBvGqEBcEQ=\n-----END EC PRIVATE KEY-----\n"
    "Done, order ORD-2024-000123 ships 2024-06-01 12:30:45. Mail bob@example.org"
)


def stream_all(chunks: list[str], scrubber: Scrubber = SCRUBBER) -> tuple[str, StreamScrubber]:
    s = scrubber.stream()
    out = "".join(s.feed(c) for c in chunks) + s.flush()
    return out, s


def spans(findings: list) -> list[tuple[object, ...]]:  # type: ignore[type-arg]
    return [(f.type, f.start, f.end, f.placeholder) for f in findings]


def test_whole_text_in_one_chunk_matches_batch() -> None:
    batch = SCRUBBER.scrub(TEXT)
    out, s = stream_all([TEXT])
    assert out == batch.text
    assert spans(s.findings) == spans(batch.findings)
    assert s.counts == batch.counts


def test_every_split_point_gives_the_batch_result() -> None:
    batch = SCRUBBER.scrub(TEXT)
    expected = spans(batch.findings)
    for i in range(len(TEXT) + 1):
        out, s = stream_all([TEXT[:i], TEXT[i:]])
        assert out == batch.text, f"split at {i}: {TEXT[max(0, i - 20) : i]!r}|{TEXT[i : i + 20]!r}"
        assert spans(s.findings) == expected, f"split at {i}"


def test_one_character_at_a_time_gives_the_batch_result() -> None:
    out, _ = stream_all(list(TEXT))
    assert out == SCRUBBER.scrub(TEXT).text


@pytest.mark.parametrize("seed", range(20))
def test_random_chunkings_give_the_batch_result(seed: int) -> None:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(TEXT):
        j = i + rng.randint(1, 12)
        chunks.append(TEXT[i:j])
        i = j
    assert stream_all(chunks)[0] == SCRUBBER.scrub(TEXT).text


def test_nothing_of_a_split_value_is_emitted_before_it_is_complete() -> None:
    s = PATTERNS.stream()
    emitted = s.feed("mail ann.lee@exa") + s.feed("mple.com now ")
    emitted += s.feed("card 4111 1111 ") + s.feed("1111 1111 thanks ")
    assert "ann" not in emitted and "4111" not in emitted
    assert emitted == "mail [EMAIL_1] now card [CARD_1] thanks "


def test_plain_text_is_released_up_to_the_last_word() -> None:
    s = PATTERNS.stream()
    assert s.feed("Hello there, how ") == "Hello there, how "
    assert s.feed("are yo") == "are "
    assert s.feed("u") == ""
    assert s.feed(" today?") == "you "
    assert s.flush() == "today?"


def test_names_hold_back_their_right_context() -> None:
    s = SCRUBBER.stream()
    out = s.feed("Thanks for writing in. Best regards, Maria ")
    assert "Maria" not in out  # "Maria Lopez" may still follow
    out += s.feed("Lopez from the support team, see you soon. ")
    assert s.held < NER_HOLD + NER_BATCH + 8
    out += s.flush()
    assert "Maria" not in out and "Lopez" not in out
    assert (
        out
        == SCRUBBER.scrub(
            "Thanks for writing in. Best regards, Maria Lopez from the support team, see you soon. "
        ).text
    )


def test_hold_back_is_bounded_for_an_endless_token() -> None:
    s = Scrubber(ScrubberConfig(stream_max_token=512)).stream()
    out = "".join(s.feed("x" * 100) for _ in range(50))
    assert s.held <= 512 + 100
    assert len(out) + s.held == 5000


def test_a_private_key_is_replaced_as_soon_as_its_header_is_complete() -> None:
    s = PATTERNS.stream()
    out = s.feed("here: -----BEGIN RSA PRIV") + s.feed("ATE KEY-----\nMIIEow")
    assert out == "here: [SECRET_1]"
    for _ in range(200):  # a long body streams through without growing the hold-back
        assert s.feed("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0\n") == ""
        assert s.held <= 128
    out = s.feed("-----END RSA PRI") + s.feed("VATE KEY-----\nbye ")
    assert out == "\nbye "
    assert [f.type.value for f in s.findings] == ["SECRET"]


def test_flag_mode_passes_text_through_at_once_and_reports() -> None:
    s = SCRUBBER.stream(mode="flag")
    chunks = [TEXT[i : i + 7] for i in range(0, len(TEXT), 7)]
    out = "".join(s.feed(c) for c in chunks) + s.flush()
    assert out == TEXT
    assert spans(s.findings) == spans(SCRUBBER.scrub(TEXT).findings)


def test_stream_shares_the_session_numbering_with_the_prompt() -> None:
    session = SCRUBBER.session()
    assert session.scrub("write to ann@example.com").text == "write to [EMAIL_1]"
    s = session.stream()
    out = s.feed("I wrote to bob@exa") + s.feed("mple.org and ann@example.com.") + s.flush()
    assert out == "I wrote to [EMAIL_2] and [EMAIL_1]."
