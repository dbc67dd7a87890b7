"""Each detector finds what it should (in the formats people type) and leaves look-alikes alone."""

from __future__ import annotations

import pytest

from bastion.safety.pii import PiiType, Scrubber

SCRUBBER = Scrubber()


def found(text: str) -> list[tuple[PiiType, str]]:
    return [(f.type, text[f.start : f.end]) for f in SCRUBBER.scrub(text).findings]


POSITIVES: list[tuple[PiiType, str, str]] = [
    # (type, text, the exact span expected)
    (PiiType.EMAIL, "write to anna.smith@example.co.uk today", "anna.smith@example.co.uk"),
    (PiiType.EMAIL, "mailto:kim_olsen42@proton.me", "kim_olsen42@proton.me"),
    (PiiType.EMAIL, "From: <BEN+SHOP@ACME-CORP.IO>", "BEN+SHOP@ACME-CORP.IO"),
    (PiiType.EMAIL, "it was 4155552671@txt.att.net.", "4155552671@txt.att.net"),
    (PiiType.PHONE, "call me at (415) 555-2671 please", "(415) 555-2671"),
    (PiiType.PHONE, "cell 415-555-2671.", "415-555-2671"),
    (PiiType.PHONE, "fax 415.555.2671", "415.555.2671"),
    (PiiType.PHONE, "US: +1 415-555-2671", "+1 415-555-2671"),
    (PiiType.PHONE, "dial 1-800-555-0199 now", "1-800-555-0199"),
    (PiiType.PHONE, "London +44 20 7946 0958", "+44 20 7946 0958"),
    (PiiType.PHONE, "London +44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
    (PiiType.PHONE, "ring 020 7946 0958", "020 7946 0958"),
    (PiiType.PHONE, "mobile 07700 900123", "07700 900123"),
    (PiiType.PHONE, "Berlin 030 1234567", "030 1234567"),
    (PiiType.PHONE, "Handy 01512 3456789", "01512 3456789"),
    (PiiType.PHONE, "Paris 01 23 45 67 89", "01 23 45 67 89"),
    (PiiType.PHONE, "or 0033 1 23 45 67 89", "0033 1 23 45 67 89"),
    (PiiType.PHONE, "India 98765 43210", "98765 43210"),
    (PiiType.PHONE, "India +91 98765 43210", "+91 98765 43210"),
    (PiiType.PHONE, "São Paulo (11) 96123-4567", "(11) 96123-4567"),
    (PiiType.PHONE, "e164 +14155552671", "+14155552671"),
    (PiiType.PHONE, "call me on 4155552671", "4155552671"),
    (PiiType.PHONE, "call 867-5309 tonight", "867-5309"),
    (PiiType.PHONE, "Order 12345 415-555-2671", "415-555-2671"),
    (PiiType.PHONE, "TICKET-12345 415-555-2671", "415-555-2671"),
    (PiiType.CARD, "card 4111 1111 1111 1111 exp 12/26", "4111 1111 1111 1111"),
    (PiiType.CARD, "cc=5555555555554444;", "5555555555554444"),
    (PiiType.CARD, "amex 3782-822463-10005", "3782-822463-10005"),
    (PiiType.CARD, "diners 3056 930902 5904", "3056 930902 5904"),
    (PiiType.CARD, "mc 2221-0000-0000-0009", "2221-0000-0000-0009"),
    (PiiType.IBAN, "IBAN DE89 3704 0044 0532 0130 00.", "DE89 3704 0044 0532 0130 00"),
    (PiiType.IBAN, "to GB82WEST12345698765432 please", "GB82WEST12345698765432"),
    (PiiType.IBAN, "GB82 WEST 1234 5698 7654 32 (415) 555-2671", "GB82 WEST 1234 5698 7654 32"),
    (PiiType.IBAN, "FR14 2004 1010 0505 0001 3M02 606", "FR14 2004 1010 0505 0001 3M02 606"),
    (PiiType.IBAN, "NO9386011117947", "NO9386011117947"),
    (PiiType.SSN, "SSN 123-45-6789", "123-45-6789"),
    (PiiType.SSN, "social security number 123 45 6789", "123 45 6789"),
    (PiiType.SSN, "my ssn is 123456789", "123456789"),
    (PiiType.IP, "from 203.0.113.7 at noon", "203.0.113.7"),
    (PiiType.IP, "http://192.168.1.20:8080/health", "192.168.1.20"),
    (PiiType.IP, "ssh deploy@10.0.0.5", "10.0.0.5"),
    (PiiType.IP, "net 10.1.2.0/24", "10.1.2.0"),
    (PiiType.IP, "v6 2001:db8:85a3::8a2e:370:7334.", "2001:db8:85a3::8a2e:370:7334"),
    (PiiType.IP, "[2001:db8::1]:443", "2001:db8::1"),
    (PiiType.IP, "link fe80::1ff:fe23:4567:890a%eth0 up", "fe80::1ff:fe23:4567:890a%eth0"),
    (PiiType.IP, "mapped ::ffff:192.0.2.128", "::ffff:192.0.2.128"),
]

SECRETS: list[tuple[str, str]] = [
    ("openai", "key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAbCdEfGh"),
    ("openai legacy", "OPENAI_API_KEY sk-T3BlbkFJa8b7c6d5e4f3g2h1i0jKLMNOPQRSTuvwxyz012"),
    ("anthropic", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpQr-AA"),
    ("bastion", "bst-Zq3x_Rk9-wP2mVn8LcT4yHs6JdF1gB5aE7uQoW0iYtM"),
    ("aws id", "aws id AKIAIOSFODNN7EXAMPLE here"),
    ("aws sts id", "ASIAY34FZKBOKMUTVV7A"),
    ("aws secret", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("aws secret json", '"SecretAccessKey": "ljxauHjeWdICkxZipjd+FgRWAIveWMmiGXwkvPvd"'),
    ("github", "token ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("github pat", "github_pat_11ABCDEFG0123456789abc_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghijklmnopqrstu"),
    ("slack", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("slack webhook", "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("bearer", "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddcc"),
    ("stripe", "STRIPE_KEY sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("google", "key=AIzaSyD-abcdefghijklmnopqrstuvwxyz01234"),
    ("password", "password: Hunter2!x"),
    ("api key assignment", 'api_key="Xk29dLq0Pz81mWv7Rt6s"'),
]  # fmt: skip

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)

NEGATIVES: list[str] = [
    "see TICKET-12345 and PROJ-981",
    "re #12345 and #4821337",
    "incident INC0012345 and RITM0001234",
    "order ORD-2024-000123, invoice INV-2023-0042",
    "request 550e8400-e29b-41d4-a716-446655440000",
    "at 2024-06-01 12:30:45 and 2024-06-01T12:30:45.123Z",
    "on 2024-06-01, 06/01/2024 and 01.06.2024",
    "upgrade to v1.2.3 or v1.2.3.4-rc1",
    "running version 1.2.3.4 (build 10.0.19045.3803)",
    "firmware 2.1.0.3, semver 1.20.3",
    "total $1,299.99 or €49,90 or USD 12,500.00",
    "UPS 1Z999AA10123456784, USPS 9400 1000 0000 0000 0000 00, FedEx 748923456789",
    "declined 4111 1111 1111 1112 (bad check digit)",
    "my order number is 2125551234",
    "account 4829301755",
    "ISBN 978-3-16-148410-0",
    "OID 1.3.6.1.4.1.311",
    "epoch 1717245045 and 1,234,567 users",
    "MAC 00:1A:2B:3C:4D:5E, time 12:30:45, std::vector",
    "commit 8807646 and 3f2a9c1e5b7d",
    "task-force-of-many-volunteers-working and sk-learn-compatible-estimator",
    "risk_test_results_for_every_single_release_candidate and ask-the-team-about-it-tomorrow",
    "localhost 127.0.0.1 and ::1 and 0.0.0.0",
    "SSN 000-12-3456 and 666-12-3456 and 900-12-3456 are invalid",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
    "password: ******** and password: changeme",
    "the secret: everything matters",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----",
    "eyJub3QiOiJhIGp3dCJ9.eyJzdWIiOiIxIn0.c2ln (no alg)",
]


@pytest.mark.parametrize(("kind", "text", "span"), POSITIVES, ids=[p[2] for p in POSITIVES])
def test_detector_finds_the_exact_span(kind: PiiType, text: str, span: str) -> None:
    assert (kind, span) in found(text), found(text)


@pytest.mark.parametrize(("name", "text"), SECRETS, ids=[s[0] for s in SECRETS])
def test_secret_detectors_find_keys(name: str, text: str) -> None:
    hits = found(text)
    assert hits and all(t is PiiType.SECRET for t, _ in hits), hits
    assert "[SECRET_1]" in SCRUBBER.scrub(text).text


def test_pem_private_key_block_is_one_secret() -> None:
    text = f"my key:\n{PEM}\nthanks"
    r = SCRUBBER.scrub(text)
    assert r.text == "my key:\n[SECRET_1]\nthanks"


def test_pem_key_inside_json_with_escaped_newlines_is_one_secret() -> None:
    body = PEM.replace("\n", "\\n")
    text = '{"private_key": "' + body + '\\n", "client_email": "svc@proj.iam.gserviceaccount.com"}'
    r = SCRUBBER.scrub(text)
    assert r.text == '{"private_key": "[SECRET_1]\\n", "client_email": "[EMAIL_1]"}'


def test_truncated_pem_block_is_redacted_to_where_the_body_stops() -> None:
    text = PEM.rsplit("\n", 1)[0] + "\n... (truncated). Thanks!"
    assert SCRUBBER.scrub(text).text == "[SECRET_1]... (truncated). Thanks!"


@pytest.mark.parametrize("text", NEGATIVES)
def test_hard_negatives_are_left_alone(text: str) -> None:
    assert found(text) == []


def test_phone_keyword_in_an_earlier_sentence_does_not_make_a_commit_id_a_phone() -> None:
    assert found("Call me at +1 415-555-2671. Deployed 8807646 today.") == [
        (PiiType.PHONE, "+1 415-555-2671")
    ]


def test_a_flood_of_digit_runs_stays_bounded_and_errs_on_redacting() -> None:
    text = " ".join(f"tel {200 + i % 700}-555-{i % 10000:04d}," for i in range(600))
    r = SCRUBBER.scrub(text)
    assert r.counts["PHONE"] >= 590


def test_disabled_types_are_not_detected() -> None:
    from bastion.safety.pii import ScrubberConfig

    only_email = Scrubber(ScrubberConfig(entities=frozenset({PiiType.EMAIL})))
    r = only_email.scrub("a@b.io 415-555-2671 4111 1111 1111 1111 sk-" + "Ab1" * 10)
    assert [f.type for f in r.findings] == [PiiType.EMAIL]
