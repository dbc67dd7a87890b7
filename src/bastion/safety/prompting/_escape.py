"""Neutralizing untrusted text so it can never close its fence, forge a tag, or pose as a section.

The rule set, applied by ``neutralize`` (idempotent, deliberately not reversible —
nothing downstream decodes it, so there is no unescaping path to get wrong):

1. Look-alikes are folded first, so they meet the rules below like the real characters:
   compatibility forms by NFKC (fullwidth ``＜＞：［］``, small ``﹤﹥﹕``, NBSP and the other
   spaces), and invisible characters (format controls such as U+200B–U+200D, U+2060, U+FEFF,
   the soft hyphen, and the other default-ignorables such as variation selectors) are
   dropped, so ``<\u200b<<`` or ``SYS\u00adTEM:`` is a fence or a role marker again. The text
   comes back NFKC-normalized (``ﬁ`` reads ``fi``). An invisible run is kept only beside
   a character that is neither ASCII nor a space (emoji ZWJ sequences and variation
   selectors, a Persian ZWNJ, an RLM in Hebrew): every delimiter is ASCII and spaces, so a
   run with such a neighbour is not inside one, and dropping it would only damage the text.
2. A ``<`` that opens something tag-like — followed (after optional spaces) by
   ``/ ! ? | <`` or a letter, even across a line break — becomes ``‹`` (U+2039). This breaks ``<<<``, ``<doc``,
   ``</doc``, ``<system>``, ``<|im_start|>``, ``<<SYS>>`` and every other tag, while
   ``a < 3`` and ``->`` stay as written.
3. Any run of three or more ``>`` (spaces between them allowed) becomes as many ``›``
   (U+203A): no ``>>>`` survives, nor ``> > >``.
4. Line breaks are normalized to ``\n`` (a lone CR or U+2028 is a line break to a model
   too), then role and section markers — ``SYSTEM:``, ``ASSISTANT:``, ``USER:``, ``HUMAN:``,
   ``DEVELOPER:``, ``TOOL:`` at the start of a line (after markdown decoration), and
   ``USER_CONTENT:`` / ``RETRIEVED_DOCS:`` anywhere — get ``꞉`` (U+A789) for their
   colon; ``[INST]``-style tags get ``⟦ ⟧`` for their brackets.
5. Invisible carriers with no business in data are removed wherever they are: Unicode tag
   characters (U+E0000–E007F), bidi embedding/override/isolate controls, and the variation
   selectors supplement (U+E0100–E01EF), all used to smuggle text past a reader.

The builder's own fences and tags are ASCII and sit on their own lines, so after
this pass the data can contain no sequence a parser (or a model) would take for one.
Attribute values (document ids) are escaped separately, XML style, by ``escape_attr``.
"""

from __future__ import annotations

import re
import unicodedata

_FOLD = str.maketrans({"\u2028": "\n", "\u2029": "\n", "\x85": "\n"})
_BREAKS = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n"})
_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f\U000e0100-\U000e01ef]+")
# Every format control (category Cf) and every other default-ignorable code point; a test
# checks this against the running Python's Unicode database, so a new Cf is not missed.
_IGNORABLE = re.compile(
    "["
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u115f-\u1160"
    "\u17b4-\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164"
    "\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
    "]+"
)
_TAG_OPEN = re.compile(r"<(?=\s*[/!?|<A-Za-z])")
_GT_RUN = re.compile(r">(?:[^\S\n]*>){2,}")
_ROLE_LINE = re.compile(
    r"(?im)^([ \t>#*_\-=~`|\[(]*"
    r"(?:system|assistant|user|human|developer|tool|user[ _-]?content|retrieved[ _-]?docs)"
    r"[ \t*_]*[\])]?[ \t*_]*)[:：]"
)
_SECTION = re.compile(r"(?i)\b(user[ _-]?content|retrieved[ _-]?docs)([ \t]*)[:：]")
_BRACKET_ROLE = re.compile(r"(?i)\[(/?(?:inst|sys|system|assistant|user|human)[ \t]*)\]")

LOOKALIKE_LT = "\u2039"
LOOKALIKE_GT = "\u203a"
LOOKALIKE_COLON = "\ua789"


def _beyond_delimiters(c: str) -> bool:
    return not c.isascii() and not c.isspace()


def _drop_near_delimiters(m: re.Match[str]) -> str:
    text, start, end = m.string, m.start(), m.end()
    keep = (start > 0 and _beyond_delimiters(text[start - 1])) or (
        end < len(text) and _beyond_delimiters(text[end])
    )
    return m.group() if keep else ""


def _fold(text: str) -> str:
    """Look-alikes as the characters they imitate, so the rules below see through them."""
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text.translate(_FOLD)))
    # after NFKC, so a neighbour is judged as what it reads as (a fullwidth < is a <)
    dropped = _IGNORABLE.sub(_drop_near_delimiters, text)
    # dropping can bring a letter and its combining mark together; compose them like NFKC does
    return text if dropped == text else unicodedata.normalize("NFKC", dropped)


def neutralize(text: str) -> str:
    """Make untrusted text inert inside a fence: no fence, tag or role marker survives it."""
    if not text.isascii():
        text = _fold(text)
    if "\r" in text or "\x0b" in text or "\x0c" in text:
        text = text.replace("\r\n", "\n").translate(_BREAKS)
    if "<" in text:
        text = _TAG_OPEN.sub(LOOKALIKE_LT, text)
    if text.count(">") >= 3:
        text = _GT_RUN.sub(lambda m: m.group().replace(">", LOOKALIKE_GT), text)
    if ":" in text or "：" in text:
        text = _ROLE_LINE.sub(r"\1" + LOOKALIKE_COLON, text)
        text = _SECTION.sub(r"\1\2" + LOOKALIKE_COLON, text)
    if "[" in text:
        text = _BRACKET_ROLE.sub("\u27e6\\1\u27e7", text)
    return text


def neutralize_line(text: str, *, limit: int = 500) -> str:
    """A template variable: neutralized, on one line and bounded, so it cannot open a section."""
    flat = " ".join(neutralize(text).split())
    if len(flat) > limit:
        raise ValueError(f"template variable value is {len(flat)} chars, over the {limit} limit")
    return flat


_ATTR = str.maketrans(
    {
        "&": "&amp;",
        '"': "&quot;",
        "'": "&#39;",
        "<": "&lt;",
        ">": "&gt;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_ATTR_DROP = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def escape_attr(value: str, *, limit: int = 200) -> str:
    """An attribute value that cannot end its quotes or its tag, whatever the caller passed."""
    value = _ATTR_DROP.sub("", value)
    if len(value) > limit:
        value = value[:limit]
    return value.translate(_ATTR)
