"""A key's limits and metadata are stored with it (migration 5) on SQLite and PostgreSQL alike,
change in place, and one validator refuses bad values for the CLI, admin API and page."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.store.conftest import pg_schema

from bastion.auth import KEY_FIELDS, new_key, parse_expiry, with_fields
from bastion.errors import InvalidRequest
from bastion.store import MIGRATIONS, KeyLimits, RecordStore, open_store

LIMITS = st.builds(
    KeyLimits,
    daily_usd=st.none() | st.floats(0, 1e6, allow_nan=False),
    monthly_usd=st.none() | st.floats(0, 1e6, allow_nan=False),
    rpm=st.none() | st.floats(0.001, 1e6, allow_nan=False),
    tpm=st.none() | st.integers(1, 10**12),
    models=st.lists(st.text(min_size=1, max_size=30), max_size=4, unique=True).map(tuple),
    expires_at=st.none() | st.floats(0, 4e9, allow_nan=False),
)
META = st.none() | st.text(max_size=40)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'keys.db'}")
        await s.migrate()
        yield s
        await s.close()
        return
    async with pg_schema() as url:
        s = open_store(url)
        await s.migrate()
        yield s
        await s.close()


async def test_limits_team_and_owner_round_trip_and_change_in_place(store: RecordStore) -> None:
    lim = KeyLimits(
        daily_usd=1.5, monthly_usd=20.0, rpm=60, tpm=5000, models=("a", "b"), expires_at=2e9
    )
    _, rec = new_key("svc", roles=("end_users",), limits=lim, team="search", owner="ana")
    await store.create_key(rec)
    got = await store.get_key_by_hash(rec.key_hash)
    assert got == rec
    assert [k.id for k in await store.list_keys()] == [rec.id]
    changed = replace(rec, limits=replace(lim, daily_usd=None, models=()), team=None, owner="bo")
    assert await store.update_key(changed)
    assert await store.get_key(rec.id) == changed
    # identity is not an update's to change: name, hash and roles stay as created
    assert await store.update_key(replace(changed, name="other", roles=()))
    again = await store.get_key(rec.id)
    assert again is not None and again.name == "svc" and again.roles == ("end_users",)
    assert await store.revoke_key(rec.id)
    assert not await store.update_key(changed)  # a revoked key cannot be given new limits
    assert not await store.update_key(replace(changed, id="key_missing"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits=LIMITS, team=META, owner=META)
def test_any_limits_read_back_exactly_from_sqlite(
    limits: KeyLimits, team: str | None, owner: str | None
) -> None:
    async def go(path: str) -> None:
        s = open_store(f"sqlite:///{path}")
        await s.migrate()
        _, rec = new_key("k", limits=limits, team=team, owner=owner)
        await s.create_key(rec)
        assert await s.get_key(rec.id) == rec
        await s.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(go(f"{tmp}/k.db"))


async def test_keys_made_before_migration_5_read_back_with_no_limits(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL)"
    )
    for m in MIGRATIONS[:4]:
        for sql in m.sqlite:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
    conn.execute(
        "INSERT INTO keys (id, name, key_hash, prefix, roles, created_at)"
        " VALUES ('key_old', 'old', 'h', 'bst-', '[\"admin\"]', 1.0)"
    )
    conn.commit()
    conn.close()
    s = open_store(f"sqlite:///{path}")
    await s.migrate()
    old = await s.get_key("key_old")
    await s.close()
    assert old is not None and old.roles == ("admin",)
    assert old.limits == KeyLimits() and old.team is None and old.owner is None


def test_dates_expire_at_midnight_of_the_cost_timezone() -> None:
    assert parse_expiry("2027-01-01") == 1798761600.0
    assert parse_expiry("2027-01-01", "Europe/Paris") == 1798761600.0 - 3600
    assert parse_expiry("2027-01-01T12:00:00Z") == 1798761600.0 + 12 * 3600
    assert parse_expiry("none") is None
    with pytest.raises(InvalidRequest, match="expires_at: '2027-13-01' is not an ISO 8601"):
        parse_expiry("2027-13-01")


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.sampled_from((*KEY_FIELDS, "colour")), VALUES, max_size=4))
def test_a_refused_field_is_named_and_an_accepted_one_is_a_sane_limit(
    fields: dict[str, object],
) -> None:
    _, rec = new_key("k")
    try:
        out = with_fields(rec, fields)
    except InvalidRequest as exc:
        assert exc.param in fields  # the message names the field that was refused
        assert exc.message.startswith(f"{exc.param}") or "unknown key field" in exc.message
        return
    lim = out.limits
    for v in (lim.daily_usd, lim.monthly_usd):
        assert v is None or (math.isfinite(v) and v >= 0)
    assert lim.rpm is None or (math.isfinite(lim.rpm) and lim.rpm > 0)
    assert lim.tpm is None or (isinstance(lim.tpm, int) and lim.tpm > 0)
    assert all(isinstance(m, str) and m.strip() == m and m for m in lim.models)
    assert out.key_hash == rec.key_hash and out.id == rec.id  # never the identity
