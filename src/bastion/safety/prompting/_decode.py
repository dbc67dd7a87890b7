"""Finding and decoding smuggled text: invisible characters, homoglyphs and encoded payloads.

One regex pass finds every invisible or confusable character; only what it finds is
classified, stripped or decoded. Encoded payloads are decoded only where a candidate
is (a long base64/hex run, a window around a rot13 or reversed hint word, a run of
percent- or entity-escapes), and the decoded text goes back to the scanner. Decoders
accept only output that reads as text (valid UTF-8, printable, mostly letters, with
spaces), so hashes, ids, JWTs and binary blobs decode to nothing.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
import urllib.parse

Hit = tuple[str, float]

# the cheap gate: one bitmap-charset pass for the BMP, a UTF-8 byte probe for astral planes
_GATE_BMP = re.compile(
    "[\u00ad\u180e\u200b-\u200d\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufe00-\ufe0f"
    "\uff01-\uff5e\u2460-\u24ff\u0370-\u03ff\u0400-\u04ff]"
)
_SUSPECT = re.compile(
    "[\u00ad\u180e\u200b-\u200d\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufe00-\ufe0f"
    "\uff01-\uff5e\u2460-\u24ff\U000e0000-\U000e01ef\U0001d400-\U0001d7ff]+"
)
_STRIP = re.compile(
    "[\u00ad\u180e\u200b-\u200d\u2060-\u2064\ufeff\U000e0000-\U000e007f]+|[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}"
)
_FLAG_TAGS = re.compile("[\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,8}\U000e007f")
_TAG_RUN = re.compile("[\U000e0000-\U000e007f]+")
_VS_RUN = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")
_ZW = frozenset("\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff")
_RLO_SPAN = re.compile("\u202e([^\u202a-\u202e\u2066-\u2069]*)")
_MIXED_SCRIPT = re.compile("[\u0370-\u03ff\u0400-\u04ff](?:(?<=[A-Za-z].)|(?=[A-Za-z]))")
_HOMOGLYPHS = str.maketrans(
    "аеорсхуіјѕԁԛԝһкмтвнАЕОРСХУІЈЅКМТВНαεινκορτυχΑΕΙΚΜΝΟΡΤΥΧ",
    "aeopcxyijsdqwhkmtbhAEOPCXYIJSKMTBHaeivkoptuxAEIKMNOPTYX",
)

# a run of 20+ base64/hex characters starting after a separator (the text gets a leading space)
_RUN = re.compile(r"[^A-Za-z0-9+/=_-]([A-Za-z0-9+/_-]{20,}={0,2})")
_HEXCHARS = frozenset("0123456789abcdefABCDEF")
_HEX_SEP = re.compile(r"(?:\\x|0x)?[0-9a-fA-F]{2}(?:(?:[ :,-]|\\x)(?:0x)?[0-9a-fA-F]{2}){7,}")
_PCT_RUN = re.compile(r"(?:%[0-9a-fA-F]{2}|[\w.~+-])*(?:%[0-9a-fA-F]{2}(?:[\w.~+-])*){3,}")
_ENTITY_RUN = re.compile(r"(?:&#(?:x[0-9a-fA-F]+|[0-9]+);[^\S\n]?){6,}")
HINT_WINDOW = 300


def hidden(text: str) -> tuple[str, list[Hit], list[str]]:
    """Text cleaned of invisible carriers, what was found, and any payloads they carried."""
    hits: list[Hit] = []
    payloads: list[str] = []
    if not _GATE_BMP.search(text):
        utf8 = text.encode("utf-8", "surrogatepass")
        if b"\xf3\xa0" not in utf8 and b"\xf0\x9d" not in utf8:
            return text, hits, payloads
    kinds: set[str] = set()
    for m in _SUSPECT.finditer(text):
        run = m.group()
        for c in run:
            cp = ord(c)
            if 0xE0000 <= cp <= 0xE007F:
                kinds.add("tags")
            elif 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF:
                kinds.add("vs")
            elif c in _ZW:
                a, b = m.start(), m.end()
                if (
                    a > 0
                    and b < len(text)
                    and _ascii_letter(text[a - 1])
                    and _ascii_letter(text[b])
                ):
                    kinds.add("zw_word")
                kinds.add("zw")
            elif 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069:
                kinds.add("override" if cp in (0x202D, 0x202E) else "bidi")
            else:
                kinds.add("nfkc")
    clean = text
    if "tags" in kinds:
        for m in _TAG_RUN.finditer(text):
            run = m.group()
            if m.start() and text[m.start() - 1] == "\U0001f3f4" and _FLAG_TAGS.fullmatch(run):
                continue  # a subdivision flag (England, Scotland, Wales), not a message
            hits.append(("hidden:tag_chars", 0.55))
            payloads.append(
                "".join(chr(ord(c) - 0xE0000) for c in run if 0xE0020 <= ord(c) <= 0xE007E)
            )
    if "vs" in kinds:
        for m in _VS_RUN.finditer(text):
            hits.append(("hidden:variation_selectors", 0.55))
            payloads.append(bytes(_vs_byte(c) for c in m.group()).decode("utf-8", "ignore"))
    if "zw_word" in kinds:
        hits.append(("hidden:zero_width", 0.3))
    if "override" in kinds:
        hits.append(("hidden:bidi", 0.4))
        payloads.extend(seg[::-1] for seg in _RLO_SPAN.findall(text) if seg.strip())
    elif "bidi" in kinds:
        hits.append(("hidden:bidi", 0.2))
    if kinds & {"tags", "vs", "zw"}:
        clean = _STRIP.sub("", clean)
    if "nfkc" in kinds:
        hits.append(("hidden:confusables", 0.2))
        clean = unicodedata.normalize("NFKC", clean)
    if _MIXED_SCRIPT.search(clean):
        folded = clean.translate(_HOMOGLYPHS)
        if folded != clean:
            hits.append(("hidden:homoglyphs", 0.3))
            payloads.append(folded)
    return clean, hits, [p for p in payloads if p.strip()]


def _ascii_letter(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _vs_byte(c: str) -> int:
    cp = ord(c)
    return cp - 0xFE00 if cp <= 0xFE0F else cp - 0xE0100 + 16


def _texty(data: bytes) -> str | None:
    """Decoded bytes as text, or None if they are not readable UTF-8 prose."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 8 or " " not in s:
        return None
    printable = sum(1 for c in s if c.isprintable() or c in "\n\t\r")
    letters = sum(1 for c in s if c.isalpha())
    if printable < 0.95 * len(s) or letters < 0.5 * (len(s) - s.count(" ")):
        return None
    return s


def _b64(token: str) -> str | None:
    core = token.rstrip("=")
    if len(core) % 4 == 1:
        return None
    padded = core + "=" * (-len(core) % 4)
    try:
        if "-" in core or "_" in core:
            raw = base64.urlsafe_b64decode(padded)
        else:
            raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _texty(raw)


def _hex(token: str) -> str | None:
    digits = re.sub(r"\\x|0x|[ :,-]", "", token)
    try:
        return _texty(bytes.fromhex(digits))
    except ValueError:
        return None


def runs(text: str) -> list[str]:
    """Base64/hex run candidates, for when the anchor pass could not collect them."""
    return [m.group(1) for m in _RUN.finditer(" " + text)]


def encoded(
    text: str, low: str, tokens: list[str], hints: dict[str, list[int]]
) -> list[tuple[str, float, str]]:
    """Encoded payload candidates, decoded: (reason, weight, decoded text) for the scanner to rescan."""
    out: list[tuple[str, float, str]] = []
    for token in tokens:
        if len(token) % 2 == 0 and _HEXCHARS.issuperset(token):
            s = _hex(token)
            if s is not None:
                out.append(("encoded:hex", 0.45, s))
                continue
        s = _b64(token)
        if s is not None:
            out.append(("encoded:base64", 0.45, s))
    if ("\\" in text and "\\x" in text) or "0x" in low:  # a rare "\\" probed alone first
        for m in _HEX_SEP.finditer(text):
            s = _hex(m.group())
            if s is not None:
                out.append(("encoded:hex", 0.45, s))
    if text.count("%") >= 6:
        runs = [m.group() for m in _PCT_RUN.finditer(text)]
        if runs:
            out.append(("encoded:url", 0.45, urllib.parse.unquote(" ".join(runs))))
    if "&" in text and text.count("&#") >= 6:
        runs = [m.group() for m in _ENTITY_RUN.finditer(text)]
        if runs:
            out.append(("encoded:entities", 0.45, html.unescape(" ".join(runs))))
    for kind, positions in hints.items():
        for w in _windows(positions, len(text)):
            part = text[w[0] : w[1]]
            if kind == "rot13":
                out.append(("encoded:rot13", 0.45, codecs.encode(part, "rot13")))
            else:
                out.append(("encoded:reversed", 0.45, part[::-1]))
    return out


def _windows(positions: list[int], n: int) -> list[tuple[int, int]]:
    """Merged windows of HINT_WINDOW chars either side of each hint: decode near the hint only."""
    spans: list[tuple[int, int]] = []
    for p in sorted(positions):
        a, b = max(0, p - HINT_WINDOW), min(n, p + HINT_WINDOW)
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans
