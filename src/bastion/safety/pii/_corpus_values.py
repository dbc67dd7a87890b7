"""Value generators for the labeled corpus: PII in the formats people type, and hard negatives.

A PII generator returns pieces ``(text, label)``: the label is the PiiType value on the
sensitive part only (context such as "aws_secret_access_key = " gets None). A negative
generator returns the text of something a scrubber must leave alone.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string
import uuid
from collections.abc import Callable
from types import MappingProxyType

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from ._validators import IBAN_LENGTHS, luhn_ok

Piece = tuple[str, str | None]
Gen = Callable[[random.Random], list[Piece]]

FIRST = ("Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas",
         "Kim", "Liam", "Maya", "Noah", "Olga", "Priya", "Ravi", "Sofia", "Tom", "Yuki")  # fmt: skip
LAST = ("Smith", "Müller", "Dubois", "Rossi", "Garcia", "Kowalski", "Nguyen", "Patel", "Silva",
        "Tanaka", "Brown", "Schmidt", "Martin", "Costa", "Olsen")  # fmt: skip
DOMAINS = ("gmail.com", "outlook.com", "yahoo.fr", "posteo.de", "acme-corp.io", "example.org",
           "mail.example.co.uk", "uni-heidelberg.de", "company.com.br", "proton.me")  # fmt: skip
REGIONS = ("US", "US", "US", "GB", "DE", "FR", "IN", "BR")
B64 = string.ascii_letters + string.digits
B64URL = B64 + "-_"
DIGITS = string.digits


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- PII -----------------------------------------------------------------------------------


def email(rng: random.Random) -> list[Piece]:
    f = rng.choice(FIRST).lower()
    last = rng.choice(LAST).replace("ü", "ue").lower()
    local = rng.choice(
        (f"{f}.{last}", f"{f[0]}{last}", f"{f}_{last}{rng.randint(1, 99)}",
         f"{f}+{rng.choice(['shop', 'news'])}", f"{f}{rng.randint(70, 99)}")
    )  # fmt: skip
    value = f"{local}@{rng.choice(DOMAINS)}"
    value = value.upper() if rng.random() < 0.05 else value
    wrap = rng.random()
    if wrap < 0.08:
        return [("<", None), (value, "EMAIL"), (">", None)]
    if wrap < 0.12:
        return [("mailto:", None), (value, "EMAIL")]
    return [(value, "EMAIL")]


def _valid_number(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    kind = rng.choice([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    nsn = phonenumbers.national_significant_number(example)
    for _ in range(200):
        keep = len(nsn) - rng.randint(3, 5)
        num = phonenumbers.parse(
            f"+{example.country_code}{nsn[:keep]}{rand(rng, DIGITS, len(nsn) - keep)}"
        )
        if phonenumbers.is_valid_number(num):
            return num
    return example


def phone(rng: random.Random) -> list[Piece]:
    region = rng.choice(REGIONS)
    num = _valid_number(rng, region)
    nat = phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL)
    intl = phonenumbers.format_number(num, PhoneNumberFormat.INTERNATIONAL)
    forms = [nat, nat, intl, phonenumbers.format_number(num, PhoneNumberFormat.E164)]
    d = phonenumbers.national_significant_number(num)
    if region == "US":
        forms += [f"{d[:3]}-{d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}", f"1-{d[:3]}-{d[3:6]}-{d[6:]}",
                  f"({d[:3]}){d[3:6]}-{d[6:]}", f"{d[:3]} {d[3:6]} {d[6:]}", f"+1 ({d[:3]}) {d[3:6]}-{d[6:]}"]  # fmt: skip
    elif region in ("GB", "DE"):
        cc, rest = intl.split(" ", 1)
        forms += [f"{cc} (0){rest}", "00" + intl[1:]]
    if rng.random() < 0.12:  # unformatted, after a phone word
        bare = d if region in ("US", "BR") else "0" + d
        return [
            (rng.choice(["call me on ", "my mobile is ", "tel ", "WhatsApp: "]), None),
            (bare, "PHONE"),
        ]
    return [(rng.choice(forms), "PHONE")]


def luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + rand(rng, DIGITS, length - len(prefix) - 1)
    return next(body + d for d in DIGITS if luhn_ok(body + d))


_BRANDS = (("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
           ("6011", 16), ("3530", 16), ("36", 14), ("4", 13))  # fmt: skip


def card_format(rng: random.Random, digits: str) -> str:
    sep = rng.choice(["", " ", " ", "-"])
    if not sep:
        return digits
    n = len(digits)
    if n in (14, 15):  # Diners and Amex: 4-6-4 / 4-6-5
        return sep.join((digits[:4], digits[4:10], digits[10:]))
    if n == 13:
        return sep.join((digits[:4], digits[4:8], digits[8:]))
    return sep.join(digits[i : i + 4] for i in range(0, n, 4))


def card(rng: random.Random) -> list[Piece]:
    prefix, length = rng.choice(_BRANDS)
    return [(card_format(rng, luhn_complete(rng, prefix, length)), "CARD")]


def iban(rng: random.Random) -> list[Piece]:
    country = rng.choice(["DE", "GB", "FR", "NL", "ES", "IT", "CH", "BE", "AT", "PL", "SE", "IE"])
    n = IBAN_LENGTHS[country] - 4
    letters = {"GB": 4, "NL": 4, "IE": 4, "IT": 1}.get(country, 0)
    bban = rand(rng, string.ascii_uppercase, letters) + rand(rng, DIGITS, n - letters)
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.6:
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return [(value, "IBAN")]


def ssn(rng: random.Random) -> list[Piece]:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    a, g, s = f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    r = rng.random()
    if r < 0.15:
        return [("SSN ", None), (a + g + s, "SSN")]
    return [(f"{a} {g} {s}" if r < 0.3 else f"{a}-{g}-{s}", "SSN")]


def ip(rng: random.Random) -> list[Piece]:
    r = rng.random()
    if r < 0.3:
        value = str(ipaddress.IPv6Address(rng.getrandbits(112) | (0x2001 << 112)))
    elif r < 0.4:
        value = f"fe80::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}"
    elif r < 0.6:
        value = rng.choice([f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                            f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"])  # fmt: skip
    else:
        first = rng.choice([23, 45, 81, 104, 151, 185, 203, 212])
        value = f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    r = rng.random()
    if r < 0.1 and ":" not in value:
        return [
            ("http://", None),
            (value, "IP"),
            (rng.choice(["/admin", ":8080/health", "/"]), None),
        ]
    if r < 0.15 and ":" in value:
        return [("[", None), (value, "IP"), ("]:443", None)]
    return [(value, "IP")]


def _jwt(rng: random.Random) -> str:
    head = _b64url(json.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
    claims = {"sub": str(rng.randint(1, 10**6)), "exp": rng.randint(1_700_000_000, 1_800_000_000)}
    return f"{head}.{_b64url(json.dumps(claims).encode())}.{_b64url(rng.randbytes(32))}"


def _pem(rng: random.Random) -> str:
    lines = "\n".join(rand(rng, B64 + "+/", 64) for _ in range(rng.randint(3, 8)))
    kind = rng.choice(["RSA ", "EC ", "", "OPENSSH "])
    pem = f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"
    return pem.replace("\n", "\\n") if rng.random() < 0.25 else pem  # inside JSON


_TOKENS: tuple[Callable[[random.Random], str], ...] = (
    lambda r: "sk-proj-" + rand(r, B64URL, 120),
    lambda r: "sk-" + rand(r, B64, 48),
    lambda r: "sk-ant-api03-" + rand(r, B64URL, 93) + "AA",
    lambda r: "bst-" + _b64url(r.randbytes(32)),
    lambda r: r.choice(["AKIA", "ASIA"]) + rand(r, string.ascii_uppercase + "234567", 16),
    lambda r: "ghp_" + rand(r, B64, 36),
    lambda r: "github_pat_" + rand(r, B64, 22) + "_" + rand(r, B64, 59),
    lambda r: (
        f"xoxb-{r.randint(10**11, 10**12 - 1)}-{r.randint(10**12, 10**13 - 1)}-{rand(r, B64, 24)}"
    ),
    _jwt,
    _pem,
    lambda r: r.choice(["sk_live_", "rk_live_", "sk_test_"]) + rand(r, B64, 24),
    lambda r: "AIza" + rand(r, B64URL, 35),
)


def secret(rng: random.Random) -> list[Piece]:
    kind = rng.randrange(len(_TOKENS) + 2)
    if kind < len(_TOKENS):
        return [(_TOKENS[kind](rng), "SECRET")]
    if kind == len(_TOKENS):
        label = rng.choice(
            ["aws_secret_access_key = ", "AWS_SECRET_ACCESS_KEY=", '"SecretAccessKey": "']
        )
        tail = [('"', None)] if label.endswith('"') else []
        return [(label, None), (rand(rng, B64 + "/+", 40), "SECRET"), *tail]
    pw = rand(rng, string.ascii_lowercase, 6) + str(rng.randint(10, 99)) + rng.choice("!?#$")
    return [(rng.choice(["password: ", "Password=", "pwd: "]), None), (pw, "SECRET")]


PII: MappingProxyType[str, Gen] = MappingProxyType(
    {
        "email": email,
        "phone": phone,
        "card": card,
        "iban": iban,
        "ssn": ssn,
        "ip": ip,
        "secret": secret,
    }
)

# -- hard negatives ------------------------------------------------------------------------


def _bad_luhn(rng: random.Random) -> str:
    good = luhn_complete(rng, rng.choice(["4", "5", "37"]), 16)
    return card_format(rng, good[:-1] + str((int(good[-1]) + rng.randint(1, 9)) % 10))


def _r(lo: int, hi: int, width: int = 0) -> Callable[[random.Random], str]:
    return lambda r: f"{r.randint(lo, hi):0{width}d}"


def _pick(*forms: Callable[[random.Random], str]) -> Callable[[random.Random], str]:
    return lambda r: r.choice(forms)(r)


NEGATIVES: MappingProxyType[str, Callable[[random.Random], str]] = MappingProxyType({
    "ticket": _pick(lambda r: f"TICKET-{r.randint(1000, 99999)}", lambda r: f"#{r.randint(100, 9999999)}",
                    lambda r: f"INC{r.randint(0, 9999999):07d}", lambda r: f"SUP-{r.randint(10, 9999)}"),
    "order": _pick(lambda r: f"ORD-{r.randint(2019, 2025)}-{r.randint(0, 999999):06d}",
                   lambda r: f"INV-{r.randint(2019, 2025)}-{r.randint(0, 9999):04d}"),
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
    "timestamp": lambda r: (f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}{r.choice(' T')}"
                            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
                            f"{r.choice(['', 'Z', '.123Z'])}"),
    "date": _pick(lambda r: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                  lambda r: f"{r.randint(1, 28):02d}.{r.randint(1, 12):02d}.2024",
                  lambda r: f"{r.randint(1, 12):02d}/{r.randint(1, 28):02d}/2024"),
    "version": _pick(lambda r: f"v{r.randint(0, 9)}.{r.randint(0, 20)}.{r.randint(0, 99)}",
                     lambda r: f"version {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)}",
                     lambda r: f"build {r.randint(1, 20)}.0.{r.randint(10000, 22000)}.{r.randint(100, 4000)}",
                     lambda r: f"{r.randint(1, 5)}.{r.randint(0, 30)}.{r.randint(0, 9)}"),
    "price": _pick(lambda r: f"${r.randint(1, 9)},{r.randint(100, 999)}.{r.randint(0, 99):02d}",
                   lambda r: f"€{r.randint(5, 999)},{r.randint(0, 99):02d}",
                   lambda r: f"USD {r.randint(10, 99)},{r.randint(100, 999)}.00"),
    "tracking": _pick(lambda r: "1Z" + rand(r, string.ascii_uppercase + DIGITS, 16),
                      lambda r: " ".join(rand(r, DIGITS, 4) for _ in range(5)) + " " + rand(r, DIGITS, 2),
                      lambda r: rand(r, DIGITS, 12)),
    "badcard": _bad_luhn,
    "account": _r(10**9, 10**10 - 1),
    "sha": lambda r: rand(r, "0123456789abcdef", r.choice([7, 40])),
    "isbn": lambda r: f"ISBN 978-{r.randint(0, 9)}-{r.randint(10, 99)}-{r.randint(100000, 999999)}-{r.randint(0, 9)}",
    "oid": lambda r: f"1.3.6.1.4.1.{r.randint(100, 99999)}",
    "epoch": _r(1_600_000_000, 1_800_000_000),
    "count": lambda r: f"{r.randint(1, 999)},{r.randint(100, 999)},{r.randint(100, 999)}",
    "refnum": lambda r: f"{r.randint(2019, 2025)}-{r.randint(0, 999999):06d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}{r.choice(['', ':00'])}",
})  # fmt: skip
