"""Validators that turn regex candidates into findings: checksums, ranges and parsers.

Each returns a normalised key (so "+1 415-555-2671" and "(415) 555 2671" get the same
placeholder) or None. Keys stay in memory for one call only and are never logged.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from types import MappingProxyType

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

# IBAN length per country (ISO 13616 registry).
IBAN_LENGTHS = MappingProxyType({
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
})  # fmt: skip

_SEPARATORS = re.compile(r"[ .()-]")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")
_DIGIT = re.compile(r"[0-9]")
_DROP_DIGITS = str.maketrans("", "", "0123456789")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += _DOUBLED[d] if i % 2 else d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    """Issuer ranges in use (Visa, Mastercard, Amex, Discover, JCB incl. the old 15-digit
    1800/2131 ranges, Diners, UnionPay, Maestro, Mir)."""
    first = digits[0]
    if first in "3456":
        return True
    if len(digits) == 15 and digits.startswith(("1800", "2131")):
        return True
    return first == "2" and 2200 <= int(digits[:4]) <= 2720


def card_key(raw: str, context: Callable[[], bool] = lambda: False) -> str | None:
    """One kind of separator (space or dash), Luhn, and either 13-19 digits with a known
    issuer prefix, or 12-19 digits of any prefix after a card word ("Maestro", "card no")."""
    if "(" in raw or "+" in raw or "." in raw:
        return None
    if " " in raw and "-" in raw:
        return None
    digits = raw.replace(" ", "").replace("-", "")
    if not 12 <= len(digits) <= 19:
        return None
    groups = re.split(r"[ -]", raw)
    if len(groups) > 1 and min(len(g) for g in groups[:-1]) < 4:
        return None
    if not luhn_ok(digits):
        return None
    if len(digits) >= 13 and _card_prefix_ok(digits):
        return digits
    return digits if context() else None


def ssn_key(raw: str, context: bool) -> str | None:
    """AAA-GG-SSSS (dashes or spaces; bare nine digits only next to an SSN keyword)."""
    if len(raw) == 11 and raw[3] == raw[6] and raw[3] in " -":
        digits = raw[:3] + raw[4:6] + raw[7:]
    elif len(raw) == 9 and context:
        digits = raw
    else:
        return None
    if not digits.isdigit():
        return None
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    if area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0:
        return None
    return digits


def iban_match(raw: str) -> tuple[int, str] | None:
    """(length of the raw span that is the IBAN, compact IBAN) if the mod-97 check passes."""
    compact = raw.replace(" ", "")
    want = IBAN_LENGTHS.get(compact[:2])
    if want is None or len(compact) < want:
        return None
    if len(compact) > want:  # trailing group(s) glued on: cut at a group boundary only
        seen = 0
        for i, ch in enumerate(raw):
            if ch != " ":
                seen += 1
            if seen == want:
                if i + 1 < len(raw) and raw[i + 1] != " ":
                    return None
                raw = raw[: i + 1]
                break
        compact = compact[:want]
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return None
    return (len(raw), compact) if number % 97 == 1 else None


def ip_key(raw: str, *, ignore_local: bool) -> str | None:
    """A real IPv4/IPv6 address (``ipaddress`` decides); loopback/unspecified optionally ignored."""
    host = raw.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ignore_local and (ip.is_loopback or ip.is_unspecified):
        return None
    return ip.compressed


def jwt_ok(raw: str) -> bool:
    """Three base64url parts whose header decodes to a JSON object naming its ``alg``."""
    head = raw.split(".", 1)[0]
    try:
        obj = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("alg"), str)


def random_enough(value: str) -> bool:
    """Looks machine-generated: long, and mixes character classes like a key (not like prose)."""
    body = value.replace("-", "").replace("_", "")
    if len(body) < 16:
        return False
    upper = _UPPER.search(body) is not None
    lower = _LOWER.search(body) is not None
    if upper and lower and _DIGIT.search(body) is not None:
        return True
    # hex-style keys (lowercase + digits) carry many digits; words with a "2" do not
    return (upper or lower) and len(body) - len(body.translate(_DROP_DIGITS)) >= len(body) / 8


def mixed(value: str) -> bool:
    """At least two of upper, lower, digit: tells a key from a hyphenated word after a prefix."""
    return (
        any(c.isupper() for c in value)
        + any(c.islower() for c in value)
        + any(c.isdigit() for c in value)
    ) >= 2


def password_ok(value: str) -> bool:
    """A password after "password:" is anything but a placeholder or a plain lowercase word."""
    if len(set(value)) <= 2:  # "********", "xxxxxxxx"
        return False
    return not value.isalpha() or not value.islower()


def _group_lengths(raw: str) -> tuple[int, ...]:
    return tuple(len(g) for g in _SEPARATORS.split(raw) if g)


_NANP_SHAPES = frozenset({(3, 3, 4), (1, 3, 3, 4), (3, 7), (10,), (11,)})
_IN_SHAPES = frozenset({(5, 5), (10,)})  # "98765 43210"
_LOCAL_SHAPES = frozenset({(3, 4), (7,), (6, 4)})  # "867-5309", only after "call" & co.


def _pairs(shape: tuple[int, ...]) -> bool:
    """Digit pairs, the French-style grouping: "60-56-85-91"."""
    return len(shape) >= 4 and all(g == 2 for g in shape)


class Budget:
    """How many ``phonenumbers`` validations one text may still spend (~30 µs each)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class PhoneValidator:
    """Phone numbers by ``phonenumbers``, with the conventions that keep order ids out.

    Written around the library rather than using its ``PhoneNumberMatcher`` because the
    matcher scans whole texts per region (too slow per call) and accepts any digit run
    that happens to be valid somewhere (Germany accepts almost any). Here: "+"/"00" forms
    are parsed internationally; a leading trunk "0" is tried in the non-NANP regions; no
    prefix means NANP in its usual 3-3-4 shape, an Indian mobile, or a Brazilian "(11)"
    form. Unformatted digit runs, and numbers that are only *possible*, need a phone
    keyword before them ("call", "mobile", "tel"...). Once a text has spent its
    validation ``Budget`` (a flood of digit runs), phone-shaped runs are taken as phones
    unvalidated: CPU stays bounded and the scrubber errs on the side of redacting.
    """

    __slots__ = ("_nanp", "_trunk")

    def __init__(self, regions: tuple[str, ...]) -> None:
        cc = phonenumbers.country_code_for_region
        self._nanp = tuple(r for r in regions if cc(r) == 1)
        self._trunk = tuple(r for r in regions if cc(r) not in (0, 1))

    def key(self, raw: str, digits: str, context: Callable[[], bool], budget: Budget) -> str | None:
        """E.164 of the number, or None; ``context`` (asked only when it matters) is a phone keyword."""
        n = len(digits)
        if not 7 <= n <= 17:
            return None
        formatted = len(raw) != n
        if budget.left <= 0:
            return "+" + digits if formatted or context() else None
        if raw[0] == "+" or raw.startswith("(+"):
            return self._parse(budget, raw, None, formatted or context(), lenient_min=8)
        if digits.startswith("00") and n >= 10:
            return self._parse(
                budget, "+" + digits[2:], None, formatted or context(), lenient_min=8
            )
        if not formatted and not context():
            return None
        if digits[0] == "0":
            for region in self._trunk:
                key = self._parse(budget, raw, region, False, lenient_min=9)
                if key is not None:
                    return key
            if self._trunk and context():  # only possible, but right after "call me on"
                return self._parse(budget, raw, self._trunk[0], True, lenient_min=9)
            return None
        shape = _group_lengths(raw)
        nanp_shape = shape in _NANP_SHAPES and (shape != (11,) or digits[0] == "1")
        if self._nanp and (nanp_shape or (shape in _LOCAL_SHAPES and context())):
            key = self._parse(budget, raw, self._nanp[0], False, lenient_min=7)
            if key is None and context():
                key = self._parse(budget, raw, self._nanp[0], True, lenient_min=7)
            if key is not None:
                return key
        if "IN" in self._trunk and n == 10 and digits[0] in "6789" and shape in _IN_SHAPES:
            key = self._parse(budget, raw, "IN", False, lenient_min=10)
            if key is not None:
                return key
        if "BR" in self._trunk and (
            (raw.startswith("(") and raw[3:4] == ")")
            or (n in (10, 11) and not formatted and context())
        ):
            key = self._parse(budget, raw, "BR", False, lenient_min=10)
            if key is not None:
                return key
        if self._trunk and 8 <= n <= 12 and (raw[0] == "(" or _pairs(shape)):
            # short national forms without the trunk "0": "(99) 645-791", "60-56-85-91";
            # the shape itself is the cue, so a number possible in a region is enough
            for lenient in (False, True):
                for region in self._trunk:
                    key = self._parse(budget, raw, region, lenient, lenient_min=8)
                    if key is not None:
                        return key
        return None

    @staticmethod
    def _parse(
        budget: Budget, raw: str, region: str | None, lenient: bool, *, lenient_min: int
    ) -> str | None:
        budget.left -= 1
        try:
            num = phonenumbers.parse(raw, region)
        except NumberParseException:
            return None
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, PhoneNumberFormat.E164)
        digits = sum(c.isdigit() for c in raw)
        if lenient and digits >= lenient_min and phonenumbers.is_possible_number(num):
            return phonenumbers.format_number(num, PhoneNumberFormat.E164)
        return None
