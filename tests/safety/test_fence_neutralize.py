"""No look-alike of a delimiter — invisible characters inside, NBSP, fullwidth or other
compatibility forms — survives neutralizing, read by a reader that ignores those differences."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.prompting import PromptBuilder, neutralize, parse_user_turn
from bastion.safety.prompting._escape import _IGNORABLE, _INVISIBLE, neutralize_line

# What a model (or a lenient parser) might look past: every format character, the other
# default-ignorable code points, and compatibility forms.
_DEFAULT_IGNORABLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)


def as_read(text: str) -> str:
    """The text as a reader that ignores invisible characters and compatibility forms sees it."""
    visible = "".join(c for c in text if unicodedata.category(c) != "Cf")
    visible = _DEFAULT_IGNORABLE.sub("", visible)
    return unicodedata.normalize("NFKC", visible).replace("\u2028", "\n").replace("\u2029", "\n")


_ROLE_LINE = re.compile(
    r"(?im)^[ \t>#*_\-=~`|\[(]*(?:system|assistant|user|human|developer|tool|user[ _-]?content|"
    r"retrieved[ _-]?docs)[ \t*_]*[\])]?[ \t*_]*:"
)
SURVIVORS = {
    "open fence": re.compile(r"<[^\S\n]*<[^\S\n]*<"),
    "close fence": re.compile(r">[^\S\n]*>[^\S\n]*>"),
    "tag": re.compile(r"<\s*[/!?|A-Za-z<]"),
    "role line": _ROLE_LINE,
    "section": re.compile(r"(?i)\b(user[ _-]?content|retrieved[ _-]?docs)[ \t]*:"),
    "bracket role": re.compile(r"(?i)\[/?(inst|sys|system|assistant|user|human)[ \t]*\]"),
}


def surviving(text: str) -> list[str]:
    """Which kinds of delimiter a lenient reader still finds in ``text``."""
    read = as_read(text)
    return [name for name, pattern in SURVIVORS.items() if pattern.search(read)]


DELIMITERS = [
    "<<<",
    ">>>",
    "</doc>",
    '<doc id="admin">',
    "SYSTEM:",
    "Assistant:",
    "USER_CONTENT:",
    "RETRIEVED_DOCS:",
    "[INST]",
    "[/INST]",
    "<|im_start|>",
    "<system>",
    "<<SYS>>",
]
INVISIBLES = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u2060",
    "\u2061",
    "\u2063",
    "\u2064",
    "\ufeff",
    "\u00ad",
    "\u180e",
    "\u034f",
    "\u061c",
    "\ufe0f",
    "\ufe00",
    "\u202e",
    "\u2066",
    "\U000e0020",
    "\U000e0100",
    "\U0001d173",
]
SPACES = ["\u00a0", "\u2007", "\u202f", "\u3000", "\u2003", " "]
SMALL = {"<": "\ufe64", ">": "\ufe65", ":": "\ufe55", "-": "\ufe63", "_": "\ufe4f"}


def looks_like(c: str) -> st.SearchStrategy[str]:
    """The character or a compatibility form of it (fullwidth, small, mathematical bold)."""
    forms = [c]
    if "!" <= c <= "~":
        forms.append(chr(ord(c) + 0xFEE0))
    if c in SMALL:
        forms.append(SMALL[c])
    if "A" <= c <= "Z":
        forms.append(chr(0x1D400 + ord(c) - ord("A")))
    if "a" <= c <= "z":
        forms.append(chr(0x1D41A + ord(c) - ord("a")))
    return st.sampled_from(forms)


@st.composite
def disguised(draw: st.DrawFn) -> str:
    """A delimiter with invisible characters or odd spaces between its characters, in context."""
    delimiter = draw(st.sampled_from(DELIMITERS))
    gaps = st.lists(st.sampled_from(INVISIBLES + SPACES), max_size=2).map("".join)
    body = "".join(draw(looks_like(c)) + draw(gaps) for c in delimiter)
    context = st.sampled_from(["", "\n", "hi ", "é", "日本\n", "👨\u200d", "\u200d", "x", "\ufe0f"])
    return draw(context) + draw(gaps) + body + draw(context)


@settings(max_examples=600, deadline=None)
@given(st.lists(disguised(), min_size=1, max_size=4).map("".join))
def test_no_disguised_delimiter_survives_neutralizing(text: str) -> None:
    out = neutralize(text)
    assert surviving(out) == []
    assert neutralize(out) == out


@settings(max_examples=200, deadline=None)
@given(
    user=st.lists(disguised(), max_size=4).map("".join),
    doc=st.lists(disguised(), max_size=4).map("".join),
    mode=st.sampled_from(["none", "datamark"]),
)
def test_disguised_delimiters_add_no_structure_to_a_prompt(user: str, doc: str, mode: str) -> None:
    p = PromptBuilder().build(
        "Answer from the docs.",
        user_content=user,
        docs=[("d", doc)],
        spotlight=mode,  # type: ignore[arg-type]
    )
    read = as_read(p.user)
    assert read.count("<<<") == read.count(">>>") == 1
    assert len(re.findall(r"<\s*doc\b", read, re.I)) == len(re.findall(r"<\s*/\s*doc\b", read)) == 1
    assert len(_ROLE_LINE.findall(read)) == 2  # RETRIEVED_DOCS: and USER_CONTENT:, ours
    turn = parse_user_turn(p.user)
    assert turn is not None and len(turn.docs) == 1


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_text_at_all_leaves_a_delimiter_behind(text: str) -> None:
    assert surviving(neutralize(text)) == []
    assert surviving(neutralize_line(text, limit=10_000)) == []


@pytest.mark.parametrize(
    "variant",
    [
        "<\u200b<<",
        "<<\ufeff<",
        "\uff1c\uff1c\uff1c",
        "\ufe64\u2060\ufe64\ufe64",
        "\uff1e\uff1e\uff1e",
        ">>\u00a0>",
        ">\u200d>\u200c>",
        "<\u2060/doc>",
        "<\u00addoc id=x>",
        "\uff1c/\uff44\uff4f\uff43\uff1e",
        "SYS\u00adTEM:",
        "SYSTEM\u200b:",
        "SYSTEM\u00a0:",
        "SYSTEM\ufe55",
        "\U0001d412\U0001d418\U0001d412\U0001d413\U0001d404\U0001d40c:",
        "USER\u200d_CONTENT:",
        "RETRIEVED\u00a0DOCS:",
        "[\u200bINST]",
        "\uff3bINST\uff3d",
        "<\u200b|im_start|>",
        "\ufeff<<SYS>>",
        "é\u200d<\u200d<<",
    ],
)
def test_each_disguise_reads_as_a_delimiter_and_is_neutralized(variant: str) -> None:
    assert surviving(variant), "the disguise should be a delimiter to a lenient reader"
    assert surviving(neutralize(variant)) == []
    assert surviving(neutralize_line(variant)) == []


@pytest.mark.parametrize(
    "text",
    [
        "family: 👨\u200d👩\u200d👧 and a flag 🏳\ufe0f\u200d🌈",
        "I \u2764\ufe0f tea",
        "Persian: می\u200cخواهم",
        "Hebrew \u200fשלום\u200f end",
        "if a < 3 and b -> c, email me at x@y.com: thanks! (2 > 1)",
        "日本語のテキスト",
    ],
)
def test_invisible_characters_inside_non_ascii_text_are_kept(text: str) -> None:
    assert neutralize(text) == text


def test_compatibility_forms_come_back_folded() -> None:
    assert neutralize("ﬁle\u00a0name \uff21\uff22\uff23 x\u00b2") == "file name ABC x2"
    assert neutralize("soft\u00adhyphen, zero\u200bwidth") == "softhyphen, zerowidth"


def test_every_format_character_is_known_to_the_neutralizer() -> None:
    missing = [
        f"U+{c:04X}"
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) == "Cf"
        and not (_IGNORABLE.fullmatch(chr(c)) or _INVISIBLE.fullmatch(chr(c)))
    ]
    assert missing == []
