"""Response headers: the fast checks (the gateway's own names, printable ASCII values) send
and drop exactly what the regex-only check did (issue 16)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bastion.server.headers import _OWN_HEADERS, header_list

NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
VALUE = re.compile(r"[\t\x20-\x7e]*")


def _reference(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (k.encode("ascii"), v.encode("ascii"))
        for k, v in headers.items()
        if k != "content-type" and NAME.fullmatch(k) and VALUE.fullmatch(v)
    ]


names = st.one_of(
    st.sampled_from(sorted(_OWN_HEADERS | {"content-type", "x-y", "Bad Name", "ü", ""})),
    st.text(max_size=12),
)
values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x80), max_size=20),
    st.text(max_size=20),
    st.sampled_from(["a\tb", "a\r\nb", "\x7f", "req_abc", "", "é"]),
)


@given(st.dictionaries(names, values, max_size=8))
def test_same_headers_as_the_regex_check(headers: dict[str, str]) -> None:
    assert header_list(headers) == _reference(headers)


def test_own_names_are_valid_token_names() -> None:
    """The names let through without the regex would pass it."""
    assert all(NAME.fullmatch(n) for n in _OWN_HEADERS)
