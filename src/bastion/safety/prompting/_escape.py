"""Neutralizing untrusted text so it can never close its fence, forge a tag, or pose as a section.

The rule set, applied by ``neutralize`` (idempotent, deliberately not reversible —
nothing downstream decodes it, so there is no unescaping path to get wrong):

1. Confusable angle brackets (fullwidth ``＜＞``, small ``﹤﹥``) are folded to ASCII first,
   so they meet rule 2 and 3 like the real ones.
2. A ``<`` that opens something tag-like — followed (after optional spaces) by
   ``/ ! ? | <`` or a letter, even across a line break — becomes ``‹`` (U+2039). This breaks ``<<<``, ``<doc``,
   ``</doc``, ``<system>``, ``<|im_start|>``, ``<<SYS>>`` and every other tag, while
   ``a < 3`` and ``->`` stay as written.
3. Any run of three or more ``>`` becomes as many ``›`` (U+203A): no ``>>>`` survives.
4. Line breaks are normalized to ``\n`` (a lone CR or U+2028 is a line break to a model
   too), then role and section markers — ``SYSTEM:``, ``ASSISTANT:``, ``USER:``, ``HUMAN:``,
   ``DEVELOPER:``, ``TOOL:`` at the start of a line (after markdown decoration), and
   ``USER_CONTENT:`` / ``RETRIEVED_DOCS:`` anywhere — get ``꞉`` (U+A789) for their
   colon; ``[INST]``-style tags get ``⟦ ⟧`` for their brackets.
5. Invisible carriers with no business in data are removed: Unicode tag characters
   (U+E0000–E007F), bidi embedding/override/isolate controls, and the variation
   selectors supplement (U+E0100–E01EF), all used to smuggle text past a reader.

The builder's own fences and tags are ASCII and sit on their own lines, so after
this pass the data can contain no sequence a parser (or a model) would take for one.
Attribute values (document ids) are escaped separately, XML style, by ``escape_attr``.
"""

from __future__ import annotations

import re

_FOLD = str.maketrans(
    {
        "\uff1c": "<",
        "\ufe64": "<",
        "\uff1e": ">",
        "\ufe65": ">",
        "\u2028": "\n",
        "\u2029": "\n",
        "\x85": "\n",
    }
)
_BREAKS = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n"})
_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f\U000e0100-\U000e01ef]+")
_TAG_OPEN = re.compile(r"<(?=\s*[/!?|<A-Za-z])")
_GT_RUN = re.compile(r">{3,}")
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


def neutralize(text: str) -> str:
    """Make untrusted text inert inside a fence: no fence, tag or role marker survives it."""
    if not text.isascii():
        text = _INVISIBLE.sub("", text.translate(_FOLD))
    if "\r" in text or "\x0b" in text or "\x0c" in text:
        text = text.replace("\r\n", "\n").translate(_BREAKS)
    if "<" in text:
        text = _TAG_OPEN.sub(LOOKALIKE_LT, text)
    if ">>>" in text:
        text = _GT_RUN.sub(lambda m: LOOKALIKE_GT * len(m.group()), text)
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
