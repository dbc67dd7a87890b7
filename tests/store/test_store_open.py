"""Choosing a backend by URL, and outages surfacing as StateUnavailable, not driver errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ConfigError, StateUnavailable
from bastion.store import CallRecord, PostgresStore, RecordStore, SQLiteStore, open_store


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/bastion.db", "data/bastion.db"),
        ("sqlite:////var/lib/bastion.db", "/var/lib/bastion.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls_map_to_relative_absolute_and_memory_paths(url: str, path: str) -> None:
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == path


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h:5432/db", "POSTGRES://h/d"])
def test_postgres_urls_open_a_postgres_store_without_connecting(url: str) -> None:
    assert isinstance(open_store(url), PostgresStore)


@pytest.mark.parametrize(
    ("url", "named"),
    [("mysql://u@h/db", "'mysql'"), ("redis://h:6379", "'redis'"), ("records.db", "(none)")],
)
def test_unknown_scheme_is_a_config_error_naming_it(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert named in str(info.value)


def test_sqlite_url_without_a_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no file path"):
        open_store("sqlite://")


async def test_in_memory_store_works_end_to_end_and_closes_on_exit() -> None:
    async with open_store("sqlite://:memory:") as store:
        await store.migrate()
        await store.ping()
        record = CallRecord(
            request_id="m1", trace_id="t", ts=1.0, api_format="openai", requested_model="x"
        )
        assert await store.insert_calls([record]) == 1
        assert await store.get_calls_by_trace("t") == [record]
    with pytest.raises(StateUnavailable, match="closed"):
        await store.ping()


async def test_relative_sqlite_path_is_created_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///nested/dir/records.db")
    try:
        await store.migrate()
    finally:
        await store.close()
    assert (tmp_path / "nested" / "dir" / "records.db").is_file()


async def test_ping_succeeds_on_a_healthy_store(store: RecordStore) -> None:
    await store.ping()


async def test_unreachable_postgres_raises_state_unavailable_without_leaking_password() -> None:
    store = open_store("postgresql://postgres:hunter2@127.0.0.1:1/test")
    try:
        with pytest.raises(StateUnavailable) as info:
            await store.ping()
        assert "hunter2" not in str(info.value)
        assert "127.0.0.1" not in str(info.value)  # a client may see it: the cause has the address
        assert info.value.__cause__ is not None
        assert info.value.http_status() == 503
        with pytest.raises(StateUnavailable):
            await store.migrate()
    finally:
        await store.close()


async def test_unopenable_sqlite_path_raises_state_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    store = open_store(f"sqlite:///{blocker / 'records.db'}")
    try:
        with pytest.raises(StateUnavailable):
            await store.ping()
    finally:
        await store.close()
