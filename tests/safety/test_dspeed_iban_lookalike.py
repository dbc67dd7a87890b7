"""A mistyped IBAN is not read as a phone number (issue 13's look-alikes).

"nl38 djtu 0314 4726 67" has the shape and length of a Dutch IBAN but fails its check
digits; its trailing digit groups were reported as a phone number. A look-alike (known
country, the country's length, a letter past the check digits) now hides no phone; a valid
IBAN is still an IBAN and a phone number elsewhere in the text is still a phone number.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.safety.pii._types import PiiType
from bastion.safety.pii._validators import IBAN_LENGTHS, iban_match

SCRUBBER = Scrubber(ScrubberConfig())


def types(text: str) -> list[PiiType]:
    return [f.type for f in SCRUBBER.scrub(text).findings]


def test_the_reported_lookalike_is_not_a_phone() -> None:
    for text in (
        "iban nl38 djtu 0314 4726 67 typo",
        "IBAN NL38 DJTU 0314 4726 67",
        "pay to nl38djtu0314472667 please",
    ):
        assert PiiType.PHONE not in types(text), text


def test_a_phone_after_the_lookalike_is_still_found() -> None:
    assert types("NL38 DJTU 0314 4726 67, call me on 0314 4726 67") == [PiiType.PHONE]
    assert types("call 0314 4726 67") == [PiiType.PHONE]


def test_a_valid_iban_is_still_an_iban() -> None:
    assert types("gb82 west 1234 5698 7654 32") == [PiiType.IBAN]
    assert types("NL91 ABNA 0417 1643 00") == [PiiType.IBAN]


def _grouped(compact: str, lower: bool) -> str:
    text = " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return text.lower() if lower else text


@st.composite
def lookalikes(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(IBAN_LENGTHS)))
    n = IBAN_LENGTHS[country] - 4
    letters = draw(st.text(string.ascii_uppercase, min_size=1, max_size=4))
    digits = draw(st.text(string.digits, min_size=n - len(letters), max_size=n - len(letters)))
    check = draw(st.text(string.digits, min_size=2, max_size=2))
    compact = country + check + letters + digits
    return _grouped(compact, draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(lookalikes(), st.sampled_from(["", "iban ", "account: ", "pay to "]))
def test_no_iban_lookalike_hides_a_phone(iban: str, lead: str) -> None:
    found = types(f"{lead}{iban} thanks")
    if iban_match(iban.upper()) is None:
        assert PiiType.PHONE not in found
        assert found == []
    else:  # the drawn check digits happen to be right
        assert found == [PiiType.IBAN]
