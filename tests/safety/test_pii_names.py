"""Names, locations and street addresses are scrubbed by default, by the shipped tagger."""

from __future__ import annotations

import pytest

from bastion.config import PiiConfig
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.safety.pii._names import BuiltinNer, handles, load_model

SCRUBBER = Scrubber()


def test_names_are_on_by_default_in_the_scrubber_and_the_config() -> None:
    assert SCRUBBER.ner_active
    assert PiiConfig().ner == "builtin"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi Maria, thanks for writing.", "Hi [PERSON_1], thanks for writing."),
        ("Kind regards,\nDaniel Okafor", "Kind regards,\n[PERSON_1]"),
        ("My name is Priya Patel and I", "My name is [PERSON_1] and I"),
        # no cue word at all: the gazetteers and the shape carry it
        ("Jennifer Lawson approved the refund.", "[PERSON_1] approved the refund."),
        ("I spoke to Ahmed Khan yesterday", "I spoke to [PERSON_1] yesterday"),
    ],
)
def test_person_names_become_person_placeholders(text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text).text == expected


def test_the_same_name_gets_the_same_placeholder_within_a_call() -> None:
    session = SCRUBBER.session()
    a = session.scrub("Hi John Smith, your order shipped.").text
    b = session.scrub("Thanks, John Smith").text
    assert a == "Hi [PERSON_1], your order shipped."
    assert b == "Thanks, [PERSON_1]"


def test_locations_are_scrubbed_as_locations() -> None:
    r = SCRUBBER.scrub("She moved from Chicago to Berlin last year.")
    assert r.text == "She moved from [LOCATION_1] to [LOCATION_2] last year."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He lives at 221B Baker Street, London.", "He lives at [ADDRESS_1], [LOCATION_1]."),
        ("Ship to 1600 Pennsylvania Ave NW please", "Ship to [ADDRESS_1] please"),
        ("Office: 350 5th Avenue, Suite 3300", "Office: [ADDRESS_1]"),
    ],
)
def test_street_addresses_are_found_as_whole_spans(text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "The API returns a PDF; IBAN checks run in the EU.",
        "Thanks for your patience. Our team will follow up on Monday.",
        "Please see TICKET-1234 and ORD-2024-000123 for details.",
        "Use @property or @dataclass here.",
        "Customer Support replied within the hour.",
        "Version 2 Drive mappings were updated.",
    ],
)
def test_ordinary_capitalised_text_is_left_alone(text: str) -> None:
    assert SCRUBBER.scrub(text).text == text


def test_mention_handles_are_people_but_decorators_are_not() -> None:
    text = "ping @jdoe_22 about it\n@property\ndef x(self): ...\nmail a@b.com"
    assert [text[s:e] for s, e in handles(text)] == ["@jdoe_22"]


def test_names_can_be_switched_off() -> None:
    off = Scrubber(ScrubberConfig(ner="off"))
    assert off.scrub("Hi Maria, call 415-555-2671").text == "Hi Maria, call [PHONE_1]"


def test_a_text_without_capitalised_candidates_costs_no_scoring() -> None:
    model = load_model()
    text = "all lower case words, no names here at all. " * 50
    assert list(model.tokens(text)) == []
    assert list(BuiltinNer(model).detect(text)) == []


def test_the_model_is_loaded_once_per_process() -> None:
    assert load_model() is load_model()


def test_streamed_names_match_the_batch_result() -> None:
    text = "Hello Maria Lopez, Daniel from Acme here. We ship from Denver to Austin. Bye, Daniel"
    for size in (1, 3, 7, 16):
        s = SCRUBBER.stream()
        out = "".join(s.feed(text[i : i + size]) for i in range(0, len(text), size)) + s.flush()
        assert out == SCRUBBER.scrub(text).text
