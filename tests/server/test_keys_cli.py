"""`bastion keys create/update/list` with budgets and limits, and `bastion spend`, as a user runs
them (subprocesses against the store a real `bastion serve` uses), the keys enforced by it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config

PRICE = {"input": 100.0, "output": 1000.0, "cache_write": 100.0, "cache_read": 100.0}
ASK: list[Any] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("keyscli")
    g = start_gateway(
        write_config(tmp, cost={"prices": {"claude-sonnet-5": PRICE, "gpt-4.1-mini": PRICE}})
    )
    try:
        yield g
    finally:
        stop(g.proc)


def field(out: str, name: str) -> str:
    return next(ln.split(None, 1)[1] for ln in out.splitlines() if ln.startswith(name + ":"))


def create(gw: RunningGateway, *args: str) -> tuple[str, str]:
    out = gw.cli("keys", "create", *args)
    assert out.returncode == 0, out.stderr
    return field(out.stdout, "id"), field(out.stdout, "secret")


def test_create_with_every_limit_then_list_and_update(gw: RunningGateway) -> None:
    kid, secret = create(
        gw,
        "--name", "reports",
        "--daily-usd", "2.5",
        "--monthly-usd", "40",
        "--rpm", "30",
        "--tpm", "9000",
        "--models", "gpt-4.1-mini, claude-sonnet-5",
        "--expires", "2027-01-01",
        "--team", "analytics",
        "--owner", "Jo Smith",
    )  # fmt: skip
    listed = gw.cli("keys", "list")
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(kid))
    for shown in (
        "daily=$2.5",
        "monthly=$40",
        "rpm=30",
        "tpm=9000",
        "models=gpt-4.1-mini,claude-sonnet-5",
        "expires=2027-01-01T00:00:00Z",
        "team=analytics",
        "owner='Jo Smith'",
        "active",
    ):
        assert shown in line, line
    assert secret not in listed.stdout
    out = gw.cli("keys", "update", kid, "--daily-usd", "none", "--models", "none", "--rpm", "5")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in gw.cli("keys", "list").stdout.splitlines() if ln.startswith(kid))
    assert "daily=" not in line and "models=" not in line and "rpm=5" in line
    assert "monthly=$40" in line and "team=analytics" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--daily-usd", "cheap"), "daily_usd: 'cheap' is not a number"),
        (("--rpm", "-1"), "rpm: must be more than zero"),
        (("--tpm", "2.5"), "tpm: must be a whole number"),
        (("--expires", "soon"), "expires_at: 'soon' is not an ISO 8601 date"),
    ],
)
def test_bad_values_exit_2_with_the_field_named_and_create_nothing(
    gw: RunningGateway, args: tuple[str, ...], message: str
) -> None:
    before = gw.cli("keys", "list", "--all").stdout
    out = gw.cli("keys", "create", "--name", "bad-" + args[0][2:], *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert gw.cli("keys", "list", "--all").stdout == before


def test_update_of_an_unknown_or_revoked_key_exits_1(gw: RunningGateway) -> None:
    out = gw.cli("keys", "update", "key_nope", "--rpm", "3")
    assert out.returncode == 1 and "no active key" in out.stderr
    kid, _ = create(gw, "--name", "to-revoke")
    assert gw.cli("keys", "revoke", kid).returncode == 0
    out = gw.cli("keys", "update", kid, "--rpm", "3")
    assert out.returncode == 1
    out = gw.cli("keys", "update", kid)
    assert out.returncode == 2 and "nothing to change" in out.stderr


def test_a_cli_budget_is_enforced_and_spend_reports_it_by_key_team_and_model(
    gw: RunningGateway,
) -> None:
    kid, secret = create(gw, "--name", "budgeted", "--daily-usd", "0.05", "--team", "ops")
    client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
    served = 0
    with pytest.raises(anthropic.RateLimitError, match=f"daily spend cap reached for key:{kid}"):
        for _ in range(10):
            client.messages.create(model="claude-sonnet-5", max_tokens=20, messages=ASK)
            served += 1
    assert served >= 1
    deadline = time.monotonic() + 10
    while True:  # the ledger is written off the request path
        out = gw.cli("spend", "--by", "key", "--json")
        report = json.loads(out.stdout)
        rows = {r["group"]: r for r in report["rows"]}
        if kid in rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert 0 < rows[kid]["spend_usd"] <= 0.05
    assert rows[kid]["label"] == f"{kid} (budgeted)"
    team = json.loads(gw.cli("spend", "--by", "team", "--days", "3", "--json").stdout)
    assert {r["group"]: r["spend_usd"] for r in team["rows"]}["ops"] == pytest.approx(
        rows[kid]["spend_usd"]
    )
    by_model = json.loads(gw.cli("spend", "--by", "model", "--json").stdout)
    assert "claude-sonnet-5" in {r["group"] for r in by_model["rows"]}
    text = gw.cli("spend", "--by", "key").stdout
    assert f"{kid} (budgeted)" in text and text.splitlines()[-1].startswith("total")
    out = gw.cli("spend", "--by", "galaxy")
    assert out.returncode == 2 and "--by must be one of" in out.stderr
    out = gw.cli("spend", "--days", "0")
    assert out.returncode == 2
