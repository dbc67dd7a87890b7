"""The candidate regexes, each led by a literal so the regex engine can skip ahead fast.

Measured on 5 KB of chat text (CPython 3.11): one alternation of every detector costs
~430 µs, because ``re`` only jumps ahead quickly to a *literal* prefix; at every other
position it tries each branch in turn. So each family gets one scan led by its rarest
character: a digit run (the only character-class scan, ~50 µs: numbers, IPv4, IBAN
check digits), "@" (emails, local part read backwards), ":" and "=" (IPv6, ``key=value``
credentials), "-" and "_" (provider key prefixes, PEM), "eyJ" (JWT), "IA" (AWS key ids).
Regexes only propose; the validators decide.
"""

from __future__ import annotations

import re

_A = re.ASCII

# Digit runs of 7+ characters: digits joined by single separators, optionally opened by
# "+" or "(". Possessive, and refused when glued to a word ("5309abc"). The second branch
# stops at IBAN check digits ("GB82" before " WEST..."), whose run is too short otherwise.
# One branch led by one character class: ``re`` then skips non-digits fast. A run may
# end at a phone extension ("345-899-3560x4587"); ``PHONE_EXT`` then extends the finding.
NUM = re.compile(
    r"[0-9+(](?:(?:[0-9]|[ .-](?=\(?[0-9])|\)[ .-]?(?=[0-9])|\((?=[0-9])){6,}+(?:(?=x[0-9])|(?![\w@]))"
    r"|(?<=[A-Za-z][A-Za-z][0-9])[0-9](?=[ ]?[A-Za-z0-9]{4}))",
    _A,
)
NUM_START = re.compile(r"(?:\+|\(\+?)?[0-9]", _A)
IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", _A)
IBAN = re.compile(
    r"[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?(?![\w-])", _A | re.IGNORECASE
)
PHONE_EXT = re.compile(r"[ ]?(?:x|ext\.?|extension)[ ]?[0-9]{1,6}(?![\w@])", _A | re.IGNORECASE)

EMAIL_DOMAIN = re.compile(
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])",
    _A,
)
ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
EMAIL_LOCAL = ALNUM | frozenset("._%+-_")

IPV6 = re.compile(
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[0-9A-Za-z]{1,16})?(?![\w:])",
    _A,
)
HEX = frozenset("0123456789abcdefABCDEF")

# "-" and "_" lead to the prefixed keys; the full token regex then runs from the prefix.
DASH = re.compile(r"-(?:(?<=sk-)|(?<=bst-)|(?<=xox[abposr]-)|(?<=xapp-)|----BEGIN)", _A)
UNDERSCORE = re.compile(
    r"_(?:(?<=gh[pousr]_)|(?<=github_pat_)|(?<=[sr]k_live_)|(?<=[sr]k_test_))", _A
)
# PEM body characters: base64, whitespace, "Proc-Type: 4,ENCRYPTED" headers, and the
# backslash of "\n" escapes when a key sits inside JSON (cloud service-account files).
PEM_BODY = r"A-Za-z0-9+/=\s:,\\-"
PEM_END = r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    rf"[{PEM_BODY}]*?(?:{PEM_END}|(?=[^{PEM_BODY}])|\Z)",
    _A,
)
PEM_STOP = re.compile(rf"{PEM_END}|[^{PEM_BODY}]", _A)
PEM_BEGIN = "-----BEGIN"
OPENAI_KEY = re.compile(r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}+(?![\w-])", _A)
BASTION_KEY = re.compile(r"bst-[A-Za-z0-9_-]{32,}+(?![\w-])", _A)
SLACK_TOKEN = re.compile(r"(?:xox[abposr]|xapp)-[A-Za-z0-9-]{10,250}+(?![\w-])", _A)
GITHUB_PAT = re.compile(r"github_pat_[A-Za-z0-9_]{22,255}+(?![\w-])", _A)
GITHUB_TOKEN = re.compile(r"gh[pousr]_[A-Za-z0-9]{36,251}+(?![\w-])", _A)
STRIPE_KEY = re.compile(r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,247}+(?![\w-])", _A)
GOOGLE_API_KEY = re.compile(r"AIza[0-9A-Za-z_-]{35}(?![\w-])", _A)
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*+(?![\w-])", _A)
AWS_SECRET = re.compile(r"[A-Za-z0-9/+]{40}", _A)
AWS_KEY_ID = re.compile(r"IA(?<=A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])", _A)
BEARER = re.compile(r"earer(?<=[Bb]earer)[ \t]+([A-Za-z0-9._~+/-]{20,}=*)(?![\w.~+/-])", _A)
SLACK_HOOK = re.compile(
    r"hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+", _A
)

# Street addresses as whole spans: a house number, one to four capitalised name words (or
# an ordinal, "5th"), a street type, an optional direction and unit: "221B Baker Street",
# "1600 Pennsylvania Ave NW", "350 5th Avenue, Suite 3". Led by a digit class.
STREET_TYPES = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way"
    "|Terrace|Ter|Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Crescent|Close|Row|Trail"
    "|Alley|Plaza|Loop|Walk|Gardens|Grove|Hill|Mews|Strasse|Straße"
)
# The leading class is "[0-9\x00\x02]" re-checked by "(?<=[0-9])": the same matches, but
# ``re`` compiles a class of three ranges to a bitmap and scans a text for it about twice
# as fast as for the single range "[0-9]" (~15 instead of ~28 µs per 5 KB).
# A name word is at most ADDRESS_WORD chars, so an address is at most ADDRESS_MAX chars
# long: the streamed filter can hold back every address until it is whole (_stream.py).
ADDRESS_WORD = 24
ADDRESS = re.compile(
    r"[0-9\x00\x02](?<=[0-9])(?<![\w.,/:#-][0-9])[0-9]{0,5}[A-Za-z]?(?:-[0-9]{1,5})?,?[ ]"
    rf"(?:(?:[0-9]{{1,3}}(?:st|nd|rd|th)|[A-Z][A-Za-z'.-]{{0,{ADDRESS_WORD - 1}}})[ ]){{1,4}}"
    rf"(?:{STREET_TYPES})\b\.?(?:[ ](?:NW|NE|SW|SE|N|S|E|W)\b)?"
    r"(?:,?[ ](?:Apt|Suite|Unit|Ste|Flat|#)\.?[ ]?[0-9][0-9A-Za-z-]{0,5}\b)?"
)
# the number (15 with its letter, range and comma and the space), four words and their
# spaces, "Boulevard.", " NW", ", Suite. 123456" (a test holds this to the regex's own width)
ADDRESS_MAX = 15 + 4 * (ADDRESS_WORD + 1) + 10 + 3 + 15

# "key: value" / "key=value" credentials: the keyword is read backwards from the delimiter.
CRED_VALUE = re.compile(r">?[ \t]*[\"']?([^\s\"',;<>]{8,200})", _A)
CRED_KEYWORDS = tuple(
    sep.join(words)
    for words in (
        ("password",),
        ("passwd",),
        ("pwd",),
        ("passphrase",),
        ("api", "key"),
        ("api", "token"),
        ("access", "token"),
        ("auth", "token"),
        ("refresh", "token"),
        ("client", "secret"),
        ("secret",),
        ("secret", "key"),
        ("secret", "access", "key"),
        ("token",),
    )
    for sep in ("", "_", "-")
)
PASSWORD_WORDS = ("password", "passwd", "pwd", "passphrase")

# Words near a digit run: the closest one decides whether it reads as a phone number.
WORDS = re.compile(r"[a-z]+", _A)
PHONE_WORDS = frozenset(
    [
        "phone",
        "ph",
        "tel",
        "telephone",
        "mobile",
        "mob",
        "cell",
        "cellphone",
        "call",
        "calls",
        "called",
        "calling",
        "text",
        "txt",
        "sms",
        "whatsapp",
        "signal",
        "fax",
        "dial",
        "ring",
        "reach",
        "contact",
        # labels in signatures and contact blocks: "Desk: 5403926876", "Office 212..."
        "desk",
        "office",
        "direct",
        "landline",
        "hotline",
        "helpline",
        "switchboard",
        "reception",
        "ext",
        "extension",
        "telefon",
        "tél",
    ]
)
CARD_WORDS = frozenset(
    [
        "card",
        "cards",
        "visa",
        "mastercard",
        "maestro",
        "amex",
        "jcb",
        "discover",
        "diners",
        "unionpay",
        "cc",
        "ccn",
        "pan",
        "credit",
        "debit",
        "cardholder",
    ]
)
NOT_PHONE_WORDS = frozenset(
    [
        "order",
        "orders",
        "invoice",
        "tracking",
        "ticket",
        "account",
        "acct",
        "ref",
        "reference",
        "confirmation",
        "case",
        "policy",
        "serial",
        "sku",
        "id",
        "po",
        "item",
        "booking",
        "transaction",
        "txn",
        "receipt",
        "customer",
    ]
)
OWNER_WORDS = frozenset(["my", "our", "your", "his", "her", "their"])  # "my number is ..."
SSN_CONTEXT = re.compile(
    r"\b(?:ssn|ss#|ss no|social security|social sec|soc sec|tax id|tin|itin)\b",
    _A | re.IGNORECASE,
)
CONTEXT_WINDOW = 40

# Allowed spans are looked for this far around each finding (allow matches must be shorter).
ALLOW_WINDOW = 64

# Stream hold-back: a chain of number/IBAN-like groups joined by single spaces just
# before the trailing token could still grow into one match ("+44 20 7946 " + "0958").
TAIL_CHAIN = re.compile(r"(?:[0-9A-Z()+.-]{1,24} )+\Z", _A)


def compile_allow(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of every allow pattern; a bad pattern fails start-up by name."""
    if not patterns:
        return None
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"pii.allow_patterns: invalid regex {p!r}: {exc}") from None
    return re.compile("|".join(f"(?:{p})" for p in patterns), _A)
