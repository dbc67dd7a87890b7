"""Any Python str reaches the scrubber through the library API, lone surrogates included.

The name tagger hashed its features with ``str.encode()``, which raises on a lone surrogate
(``"\\ud800"``), so ``Scrubber().scrub`` crashed on such text. JSON bodies at the gateway are
refused earlier by orjson, but the library path and any text built in process are not.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import Scrubber

_SCRUBBER = Scrubber()


def test_lone_surrogate_between_names_is_scrubbed_not_raised() -> None:
    out = _SCRUBBER.scrub("Hi, I am Maria \ud800 Lopez, mail maria.lopez@example.com")
    assert "maria.lopez@example.com" not in out.text
    assert "\ud800" in out.text  # the odd code point itself is kept, not mangled
    assert out.counts.get("EMAIL") == 1


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["Maria", "Lopez", "Paris", "John Smith", "alice@example.com", " "]),
            st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
            st.text(max_size=8),
        ),
        max_size=12,
    )
)
def test_scrub_never_raises_and_keeps_non_findings(parts: list[str]) -> None:
    text = " ".join(parts)
    out = _SCRUBBER.scrub(text)
    # every surrogate of the input survives: scrubbing replaces findings, nothing else
    surrogates = [c for c in text if 0xD800 <= ord(c) <= 0xDFFF]
    assert [c for c in out.text if 0xD800 <= ord(c) <= 0xDFFF] == surrogates
    assert "alice@example.com" not in out.text
