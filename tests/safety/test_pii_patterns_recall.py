"""The number formats people actually type are found, and the look-alikes are still left alone."""

from __future__ import annotations

import pytest

from bastion.safety.pii import Scrubber
from bastion.safety.pii._validators import luhn_ok

SCRUBBER = Scrubber()


def luhn(prefix: str, length: int) -> str:
    """The smallest Luhn-valid number of ``length`` digits starting with ``prefix``."""
    body = prefix.ljust(length - 1, "0")
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


MAESTRO_12 = luhn("675964", 12)
JCB_1800 = luhn("180001", 15)
JCB_2131 = luhn("213100", 15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # phones: extensions are part of the number
        ("call 345-899-3560x4587 now", "call [PHONE_1] now"),
        ("345-899-3560 ext. 12, ask for billing", "[PHONE_1], ask for billing"),
        # no "call"/"phone" cue before the number: a label, or a phone word after it
        ("Desk: 5403926876", "Desk: [PHONE_1]"),
        ("930.167.3943 fax", "[PHONE_1] fax"),
        # short national forms of the configured regions
        ("(99) 645-791", "[PHONE_1]"),
        ("60-56-85-91", "[PHONE_1]"),
        # cards: Luhn-valid 12-19 digits after a card word, and the old JCB ranges
        (f"Maestro {MAESTRO_12}", "Maestro [CARD_1]"),
        (f"card no. {MAESTRO_12[:4]} {MAESTRO_12[4:8]} {MAESTRO_12[8:]}", "card no. [CARD_1]"),
        (f"JCB {JCB_1800}", "JCB [CARD_1]"),
        (f"paid with {JCB_2131}", "paid with [CARD_1]"),
        # IBANs in lower case, grouped or not
        ("iban gb82 west 1234 5698 7654 32 ok", "iban [IBAN_1] ok"),
        ("send to de89370400440532013000 today", "send to [IBAN_1] today"),
    ],
)
def test_each_format_is_found(text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "See TICKET-12345 and JIRA-4521 for details",
        "Order ORD-2024-000123, invoice INV-2023-0042, case #4410021",
        "order 5403926876 shipped",
        f"order id {MAESTRO_12} shipped",  # Luhn-valid by chance, but no card word
        "tracking 1Z999AA10123456784",
        "released 2024-06-01 12:30:45, dated 01.06.2024",
        "upgrade to v1.2.3.4 or version 10.0.19045.3803",
        "iban gb82 west 1234 5698 7654 33 is a typo",  # bad checksum
        "the build took 1234567 ms",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert SCRUBBER.scrub(text).text == text
