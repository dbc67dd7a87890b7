"""Placeholders are typed and stable per call, findings hold no values, allow-patterns win, NER is optional."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable

import pytest

from bastion.safety.pii import (
    DEFAULT_ALLOW_PATTERNS,
    NerDetector,
    NerSpan,
    PiiType,
    Scrubber,
    ScrubberConfig,
)

SCRUBBER = Scrubber()
TEXT = (
    "Hi, I'm Ann (ann@example.com, +1 415-555-2671). Card 4111 1111 1111 1111, "
    "IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, from 203.0.113.7. "
    "Again: ANN@EXAMPLE.COM, (415) 555-2671, bob@example.org, key ghp_16C7e42F292c6912E7710c838347Ae178B4a."
)


def test_each_type_gets_its_typed_numbered_placeholder() -> None:
    r = SCRUBBER.scrub(TEXT)
    assert r.text == (
        "Hi, I'm [PERSON_1] ([EMAIL_1], [PHONE_1]). Card [CARD_1], "
        "IBAN [IBAN_1], SSN [SSN_1], from [IP_1]. "
        "Again: [EMAIL_1], [PHONE_1], [EMAIL_2], key [SECRET_1]."
    )
    assert r.counts == {
        "PERSON": 1,
        "EMAIL": 3,
        "PHONE": 2,
        "CARD": 1,
        "IBAN": 1,
        "SSN": 1,
        "IP": 1,
        "SECRET": 1,
    }


def test_findings_carry_type_span_and_placeholder_but_never_the_value() -> None:
    r = SCRUBBER.scrub(TEXT)
    for f in r.findings:
        assert set(dataclasses.asdict(f)) == {"type", "start", "end", "placeholder", "source"}
        value = TEXT[f.start : f.end]
        assert value not in repr(f) and value not in repr(r.findings)
    assert "ann@example.com" not in repr(r)


def test_a_session_keeps_numbering_across_the_texts_of_one_call() -> None:
    session = SCRUBBER.session()
    prompt = session.scrub("Email bob@example.org and ann@example.com about 415-555-2671").text
    output = session.scrub(
        "I wrote to ann@example.com; bob@example.org and eve@example.net too"
    ).text
    log = session.scrub("sent to eve@example.net").text
    assert prompt == "Email [EMAIL_1] and [EMAIL_2] about [PHONE_1]"
    assert output == "I wrote to [EMAIL_2]; [EMAIL_1] and [EMAIL_3] too"
    assert log == "sent to [EMAIL_3]"
    assert session.counts == {"EMAIL": 6, "PHONE": 1}
    assert "example" not in repr(session)


def test_separate_calls_do_not_share_numbering() -> None:
    assert SCRUBBER.scrub("x ann@example.com").text == "x [EMAIL_1]"
    assert SCRUBBER.scrub("y bob@example.org").text == "y [EMAIL_1]"


def test_the_same_number_in_two_formats_gets_one_placeholder() -> None:
    r = SCRUBBER.scrub(
        "+1 415-555-2671 or (415) 555 2671; card 4111-1111-1111-1111 = 4111111111111111"
    )
    assert r.text == "[PHONE_1] or [PHONE_1]; card [CARD_1] = [CARD_1]"


def test_flag_mode_reports_but_does_not_change_the_text() -> None:
    flagging = Scrubber(ScrubberConfig(mode="flag"))
    r = flagging.scrub(TEXT)
    assert r.text == TEXT
    assert r.counts["EMAIL"] == 3
    assert SCRUBBER.scrub(TEXT, mode="flag").text == TEXT


def test_redact_is_the_plain_text_callable_for_log_writers() -> None:
    assert SCRUBBER.redact("mail ann@example.com") == "mail [EMAIL_1]"
    assert SCRUBBER.redact("nothing here") == "nothing here"


def test_scrubbing_scrubbed_text_changes_nothing() -> None:
    once = SCRUBBER.scrub(TEXT).text
    assert SCRUBBER.scrub(once).text == once
    assert SCRUBBER.scrub(once).findings == []


def test_default_allow_patterns_protect_ticket_and_order_numbers() -> None:
    text = "TICKET-12345 #12345 INC0012345 ORD-2024-000123 550e8400-e29b-41d4-a716-446655440000"
    assert SCRUBBER.scrub(text).text == text


def test_an_allowed_span_never_excuses_its_neighbour() -> None:
    r = SCRUBBER.scrub("TICKET-12345 415-555-2671 (2024-06-01) 415-555-2672 v1.2.3 10.0.0.7")
    assert r.text == "TICKET-12345 [PHONE_1] (2024-06-01) [PHONE_2] v1.2.3 [IP_1]"


def test_dotted_quad_is_an_ip_unless_it_reads_as_a_version() -> None:
    r = SCRUBBER.scrub("server 1.2.3.4; version 1.2.3.4; v1.2.3.4; build: 1.2.3.4")
    assert r.text == "server [IP_1]; version 1.2.3.4; v1.2.3.4; build: 1.2.3.4"


def test_extra_allow_patterns_add_to_the_defaults() -> None:
    s = Scrubber(
        ScrubberConfig(extra_allow_patterns=(r"support@acme\.example", r"\+1 800-555-0100"))
    )
    r = s.scrub("Mail support@acme.example or call +1 800-555-0100, not ann@example.com. TICKET-9")
    assert r.text == "Mail support@acme.example or call +1 800-555-0100, not [EMAIL_1]. TICKET-9"


def test_allow_patterns_replace_the_defaults() -> None:
    s = Scrubber(ScrubberConfig(allow_patterns=()))
    assert s.scrub("version 1.2.3.4").text == "version [IP_1]"
    assert DEFAULT_ALLOW_PATTERNS  # the defaults stay importable for users extending them


def test_a_bad_allow_pattern_fails_at_start_up_naming_it() -> None:
    with pytest.raises(ValueError, match=r"allow_patterns: invalid regex '\(unclosed'"):
        Scrubber(ScrubberConfig(extra_allow_patterns=("(unclosed",)))


@pytest.mark.parametrize("kwargs", [{"mode": "shout"}, {"ner": "bert"}, {"stream_max_token": 10}])
def test_bad_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="pii"):
        ScrubberConfig(**kwargs)  # type: ignore[arg-type]


def test_local_addresses_are_kept_unless_configured() -> None:
    assert SCRUBBER.scrub("127.0.0.1 ::1").findings == []
    strict = Scrubber(ScrubberConfig(ignore_local_ips=False))
    assert strict.scrub("127.0.0.1 ::1").text == "[IP_1] [IP_2]"


# -- NER -----------------------------------------------------------------------------------


def test_scrubber_works_without_any_ner_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # import fails even where it is installed
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
    for choice in ("off", "spacy", "presidio"):
        s = Scrubber(ScrubberConfig(ner=choice))
        assert not s.ner_active
        assert s.scrub("Ann Lee, ann@example.com").text == "Ann Lee, [EMAIL_1]"
    for choice in ("auto", "builtin"):  # "auto" falls back to the shipped tagger
        s = Scrubber(ScrubberConfig(ner=choice))
        assert s.ner_active
        assert s.scrub("Ann Lee, ann@example.com").text == "[PERSON_1], [EMAIL_1]"
    assert SCRUBBER.ner_active  # names are scrubbed by default


class FakeNer:
    """A stand-in NER backend: finds the names it is told about."""

    name = "fake"

    def __init__(self, names: dict[str, PiiType]) -> None:
        self.names = names

    def detect(self, text: str) -> Iterable[NerSpan]:
        for value, kind in self.names.items():
            i = text.find(value)
            while i != -1:
                yield NerSpan(kind, i, i + len(value))
                i = text.find(value, i + 1)


def test_a_plugged_in_ner_detector_adds_names_and_addresses() -> None:
    ner = FakeNer(
        {"Ann Lee": PiiType.PERSON, "12 Baker Street": PiiType.ADDRESS, "ann": PiiType.PERSON}
    )
    assert isinstance(ner, NerDetector)
    s = Scrubber(ScrubberConfig(ner_detector=ner))
    assert s.ner_active
    r = s.scrub("Ann Lee lives at 12 Baker Street; ann@example.com. Ann Lee again.")
    # the "ann" inside the email overlaps a pattern finding, which wins
    assert r.text == "[PERSON_1] lives at [ADDRESS_1]; [EMAIL_1]. [PERSON_1] again."


def test_ner_types_can_be_switched_off_even_with_a_backend() -> None:
    ner = FakeNer({"Ann Lee": PiiType.PERSON})
    s = Scrubber(ScrubberConfig(ner_detector=ner, entities=frozenset({PiiType.EMAIL})))
    assert not s.ner_active
    assert s.scrub("Ann Lee").text == "Ann Lee"
