"""Reading a builder-shaped user turn back: its documents and its user content, each by its true fence.

Because ``neutralize`` leaves no fence, tag or section marker inside data, the first
``</doc>`` after a ``<doc ...>`` line and the ``>>>`` line after ``<<<`` are the real ones;
a plain regex is exact here. The gateway uses this to scan each document on its own,
to drop one that looks like an injection, and to undo spotlighting before a scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .spotlight import Spotlight, b64, unspotlight

_DOC = re.compile(r'<doc id="([^"\n]*)"( encoding="base64")?>\n(.*?)\n</doc>', re.S)
_USER = re.compile(r"(?:^|\n)USER_CONTENT:\n<<<\n(.*?)\n>>>(?=\n|$)", re.S)
_DATAMARK = re.compile(r'the character "(.)" is interleaved between words')
_BASE64 = "are base64-encoded UTF-8 text"

WITHHELD = "[document withheld: it looked like a prompt-injection attempt]"


@dataclass(frozen=True, slots=True)
class ParsedDoc:
    """One document block: its (escaped) id, its data as written, and where the block sits."""

    id: str
    body: str
    span: tuple[int, int]
    body_span: tuple[int, int]
    base64: bool = False


@dataclass(frozen=True, slots=True)
class ParsedTurn:
    docs: list[ParsedDoc]
    user: str | None
    user_span: tuple[int, int] | None


def parse_user_turn(text: str) -> ParsedTurn | None:
    """The documents and user content of a builder-shaped turn, or None if it is not one."""
    if "USER_CONTENT:\n<<<\n" not in text and '<doc id="' not in text:
        return None
    docs = [
        ParsedDoc(m.group(1), m.group(3), m.span(), m.span(3), bool(m.group(2)))
        for m in _DOC.finditer(text)
    ]
    um = _USER.search(text)
    if um is None and not docs:
        return None
    return ParsedTurn(docs, um.group(1) if um else None, um.span(1) if um else None)


def spotlight_of(system_text: str) -> tuple[Spotlight, str | None]:
    """Which spotlighting a builder-made system prompt declared (so data can be read back)."""
    m = _DATAMARK.search(system_text)
    if m:
        return "datamark", m.group(1)
    if _BASE64 in system_text:
        return "base64", None
    return "none", None


def readable(data: str, mode: Spotlight, marker: str | None) -> str:
    """Data with spotlighting undone, for scanning; falls back to the data as written."""
    try:
        return unspotlight(data, mode, marker)
    except ValueError:
        return data


def withhold_docs(text: str, turn: ParsedTurn, ids: set[int], note: str = WITHHELD) -> str:
    """The turn with the bodies of the documents at positions ``ids`` replaced by a note."""
    out: list[str] = []
    pos = 0
    for i, d in enumerate(turn.docs):
        if i in ids:
            a, b = d.body_span
            out.append(text[pos:a])
            out.append(b64(note) if d.base64 else note)
            pos = b
    out.append(text[pos:])
    return "".join(out)
