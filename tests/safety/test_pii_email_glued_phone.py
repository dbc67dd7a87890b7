"""A phone number written straight after an email address is found in the same pass.

A digit run glued to a word is refused as a phone ("ORD5551234567" is an order id), and the
"co" ending "a@b.co+44 20 7946 0958" counted as such a word: the first pass left the number
raw, and only a second pass over "[EMAIL_1]+44 ..." found it. Records scrub the raw text once,
so the number was stored in plaintext.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import Scrubber

_SCRUBBER = Scrubber()
_PHONES = ["+44 20 7946 0958", "+1 415 555 2671", "(415) 555-2671", "+49 30 901820"]
_EMAILS = ["a@b.co", "jane.doe@example.com", "x_y@mail.example.org"]


def test_phone_glued_to_email_is_scrubbed() -> None:
    out = _SCRUBBER.scrub("a@b.co+44 20 7946 0958")
    assert out.text == "[EMAIL_1][PHONE_1]"


def test_plus_run_glued_to_a_plain_word_is_still_refused() -> None:
    assert _SCRUBBER.scrub("x+44 20 7946 0958").text == "x+44 20 7946 0958"
    assert _SCRUBBER.scrub("ORD12345678").text == "ORD12345678"


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_EMAILS),
            st.sampled_from(["", " ", ", ", "; "]),
            st.sampled_from(_PHONES),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([" and ", "\n", " | "]),
)
def test_one_pass_finds_every_glued_pair(pairs: list[tuple[str, str, str]], joint: str) -> None:
    text = joint.join(e + sep + p for e, sep, p in pairs)
    out = _SCRUBBER.scrub(text)
    for e, _, p in pairs:
        assert e not in out.text
        assert p not in out.text
    assert _SCRUBBER.scrub(out.text).text == out.text  # nothing left for a second pass
