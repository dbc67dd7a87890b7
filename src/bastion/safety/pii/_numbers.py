"""Digit runs: SSNs, payment cards, phone numbers, IPv4 addresses and IBANs (by their check digits).

One scan finds runs of digits joined by single separators; each run is then read as a
whole, and if it is nothing as a whole, window by window over its space-separated
groups ("Order 12345 415-555-2671" still yields the phone number).
"""

from __future__ import annotations

from ._hit import Hit, word_char
from ._patterns import (
    CARD_WORDS,
    CONTEXT_WINDOW,
    EMAIL_DOMAIN,
    IBAN,
    IPV4,
    NOT_PHONE_WORDS,
    NUM,
    NUM_START,
    OWNER_WORDS,
    PHONE_EXT,
    PHONE_WORDS,
    SSN_CONTEXT,
    WORDS,
)
from ._types import PiiType
from ._validators import (
    IBAN_LENGTHS,
    Budget,
    PhoneValidator,
    card_key,
    iban_match,
    ip_key,
    ssn_key,
)

_BAD_BEFORE = frozenset("+@./")
PHONE_BUDGET = 256  # digit runs per text that get a full phonenumbers validation
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NOT_DIGITS = str.maketrans("", "", " .()+-")  # a run holds only digits and these


class NumberScanner:
    """Finds the digit-run families in one text; holds only start-up configuration."""

    __slots__ = ("_card", "_iban", "_ignore_local", "_ip", "_phone", "_phone_on", "_ssn")

    def __init__(
        self, types: frozenset[PiiType], regions: tuple[str, ...], ignore_local: bool
    ) -> None:
        self._phone = PhoneValidator(regions)
        self._ssn = PiiType.SSN in types
        self._card = PiiType.CARD in types
        self._phone_on = PiiType.PHONE in types
        self._ip = PiiType.IP in types
        self._iban = PiiType.IBAN in types
        self._ignore_local = ignore_local

    @property
    def active(self) -> bool:
        return self._ssn or self._card or self._phone_on or self._ip or self._iban

    def scan(self, text: str, out: list[Hit]) -> None:
        budget = Budget(PHONE_BUDGET)
        search = NUM.search
        m = search(text)
        while m is not None:
            s = m.start()
            if self._iban and s >= 2 and text[s - 2] in _LETTERS and text[s - 1] in _LETTERS:
                hit = self._iban_at(text, s - 2)
                if hit is not None:
                    out.append(hit)
                    m = search(text, hit.end)  # the run may go on past the IBAN
                    continue
                end = _bad_iban_end(text, s - 2)
                if end:  # "nl38 djtu 0314 4726 67": a mistyped IBAN, not a phone number after it
                    m = search(text, end)
                    continue
            self._run(m.group(), s, text, out, budget)
            m = search(text, m.end())

    def _run(self, raw: str, s: int, text: str, out: list[Hit], budget: Budget) -> None:
        before = text[s - 1] if s else " "
        tainted = word_char(before) or before in _BAD_BEFORE
        if tainted and raw[0] in "+(" and _ends_email(text, s):
            tainted = False  # "a@b.co+44 20 7946 0958": the run starts where the address ends
        glued = word_char(before) or before == "."  # "http://10.0.0.1", "deploy@10.0.0.1": fine
        if "." in raw and self._ip and self._ipv4(raw, s, glued, out):
            return
        digits = raw.translate(_NOT_DIGITS)
        if len(digits) < 7:
            return
        if not tainted and NUM_START.match(raw):
            hit = self._classify(raw, digits, s, text, budget)
            if hit is not None:
                out.append(hit)
                return
        if " " in raw and len(digits) <= 64:
            self._windows(raw, s, text, tainted, out, budget)

    def _iban_at(self, text: str, start: int) -> Hit | None:
        if start and (word_char(text[start - 1]) or text[start - 1] == "-"):
            return None
        m = IBAN.match(text, start)
        if m is None:
            return None
        r = iban_match(m.group().upper())  # "gb82 west ...": lower-case IBANs validate too
        return None if r is None else Hit(PiiType.IBAN, start, start + r[0], r[1], "iban")

    def _ipv4(self, raw: str, start: int, tainted: bool, out: list[Hit]) -> bool:
        """Dotted quads in the run; True when the whole run was one (nothing else to read)."""
        pos = 0
        whole = False
        for i, piece in enumerate(raw.split(" ")):
            if IPV4.fullmatch(piece):
                whole = len(piece) == len(raw)
                key = None if i == 0 and tainted else ip_key(piece, ignore_local=self._ignore_local)
                if key is not None:
                    out.append(Hit(PiiType.IP, start + pos, start + pos + len(piece), key, "ipv4"))
            pos += len(piece) + 1
        return whole

    def _classify(self, raw: str, digits: str, start: int, text: str, budget: Budget) -> Hit | None:
        end = start + len(raw)
        n = len(digits)
        if self._ssn and n == 9:
            key = ssn_key(raw, len(raw) == 9 and _ssn_context(text, start))
            if key is not None:
                return Hit(PiiType.SSN, start, end, key, "ssn")
        if self._card and n >= 12:
            key = card_key(raw, lambda: _card_context(text, start))
            if key is not None:
                return Hit(PiiType.CARD, start, end, key, "card")
        if self._phone_on and (len(raw) != n or n <= 15):
            key = self._phone.key(raw, digits, lambda: _phone_context(text, start, end), budget)
            if key is not None:
                ext = PHONE_EXT.match(text, end)
                if ext is not None:
                    end = ext.end()
                return Hit(PiiType.PHONE, start, end, key, "phone")
        return None

    def _windows(
        self, raw: str, start: int, text: str, tainted: bool, out: list[Hit], budget: Budget
    ) -> None:
        """A run that is nothing as a whole may hold a number: "Order 12345 415-555-2671".

        Only structured pieces are tried, a single group with its own separators
        ("415-555-2671") or groups opened by "+" or "(": sliding windows over plain
        digit groups would find phone numbers inside every tracking number.
        """
        groups: list[tuple[int, int]] = []
        pos = 0
        for piece in raw.split(" "):
            groups.append((pos, pos + len(piece)))
            pos += len(piece) + 1
        g = len(groups)
        if not 2 <= g <= 6:
            return
        taken = [False] * g
        taken[0] = tainted
        found: list[Hit] = []
        for size in range(g - 1, 0, -1):
            for i in range(g - size + 1):
                if any(taken[i : i + size]):
                    continue
                a, b = groups[i][0], groups[i + size - 1][1]
                sub = raw[a:b]
                if (size == 1 and sub.isdigit()) or (size > 1 and sub[0] not in "+("):
                    continue
                digits = sub.translate(_NOT_DIGITS)
                if len(digits) < 7 or not sub[-1].isdigit() or not NUM_START.match(sub):
                    continue
                hit = self._classify(sub, digits, start + a, text, budget)
                if hit is not None:
                    found.append(hit)
                    for j in range(i, i + size):
                        taken[j] = True
        out.extend(sorted(found, key=lambda h: h.start))


def _bad_iban_end(text: str, start: int) -> int:
    """The end of an IBAN look-alike at ``start`` that failed its check digits, else 0.

    A look-alike is a known country code, two check digits and groups of four, at least the
    country's IBAN length in all, with a letter past the check digits ("nl38 djtu 0314 4726
    67"): a mistyped account number. Its trailing digit groups are no phone number.
    """
    if start and (word_char(text[start - 1]) or text[start - 1] == "-"):
        return 0
    m = IBAN.match(text, start)
    if m is None:
        return 0
    compact = m.group().replace(" ", "").upper()
    want = IBAN_LENGTHS.get(compact[:2])
    if want is None or len(compact) < want or compact[4:want].isdigit():
        return 0
    return m.end()


def _ends_email(text: str, end: int) -> bool:
    """An email address's domain ends exactly at ``end`` (the "@" within 255 characters)."""
    at = text.rfind("@", max(0, end - 255), end)
    if at < 1:
        return False
    m = EMAIL_DOMAIN.match(text, at)
    return m is not None and m.end() == end


def _ssn_context(text: str, start: int) -> bool:
    """An SSN keyword before a bare nine-digit run, with no phone word in between."""
    last = None
    for last in SSN_CONTEXT.finditer(text, max(0, start - CONTEXT_WINDOW), start):  # noqa: B007
        pass
    if last is None:
        return False
    return not any(w in PHONE_WORDS for w in WORDS.findall(text[last.end() : start].lower()))


def _card_context(text: str, start: int) -> bool:
    """A card word ("card", "Maestro", "credit") shortly before the run, on the same line
    (no sentence cut: "card no. 6759 ..." keeps its word)."""
    window = text[max(0, start - CONTEXT_WINDOW) : start]
    window = window[window.rfind("\n") + 1 :]
    return any(w in CARD_WORDS for w in WORDS.findall(window.lower()))


def _phone_context(text: str, start: int, end: int = -1) -> bool:
    """The word closest before the run, in the same sentence, decides: "call me at" yes,
    "order number" no; an extension or a phone word right after it ("930.167.3943 fax")
    counts too."""
    if end >= 0:
        if PHONE_EXT.match(text, end) is not None:  # "345-899-3560x4587": the extension says so
            return True
        after = WORDS.match(text[end : end + 16].lstrip(" \t(:-").lower())
        if after is not None and after.group() in PHONE_WORDS:
            return True
    window = text[max(0, start - CONTEXT_WINDOW) : start]
    cut = max(window.rfind(". "), window.rfind("! "), window.rfind("? "), window.rfind("\n"))
    words = WORDS.findall(window[cut + 1 :].lower())
    for i in range(len(words) - 1, -1, -1):
        w = words[i]
        if w in PHONE_WORDS:
            return True
        if w in NOT_PHONE_WORDS:
            return False
        if w == "number" and i and words[i - 1] in OWNER_WORDS:
            return True
    return False
