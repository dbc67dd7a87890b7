"""Virtual keys: stored by hash, found while active, invisible to auth once revoked."""

from __future__ import annotations

import pytest

from bastion.errors import Conflict
from bastion.store import KeyRecord, RecordStore, hash_secret


def _key(
    secret: str,
    name: str,
    created_at: float = 1000.0,
    *,
    id: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    roles: tuple[str, ...] = (),
) -> KeyRecord:
    return KeyRecord.from_secret(
        secret, name=name, created_at=created_at, id=id, feature=feature, user=user, roles=roles
    )


async def test_store_satisfies_the_protocol(store: RecordStore) -> None:
    assert isinstance(store, RecordStore)


def test_key_record_keeps_only_hash_and_display_prefix() -> None:
    key = KeyRecord.from_secret("bk-live-abcdefghijklmnop", name="svc", roles=("admin",))
    assert key.key_hash == hash_secret("bk-live-abcdefghijklmnop")
    assert len(key.key_hash) == 64
    assert key.prefix == "bk-live-abcd"
    assert key.id.startswith("key_") and len(key.id) == 16
    assert "bk-live-abcdefghijklmnop" not in repr(key)
    assert not key.revoked


async def test_created_key_is_found_by_id_hash_and_listing(store: RecordStore) -> None:
    key = _key("secret-one-xxxxxxxx", "one", feature="chat", user="u1", roles=("admin", "read"))
    await store.create_key(key)

    assert await store.get_key(key.id) == key
    assert await store.get_key_by_hash(hash_secret("secret-one-xxxxxxxx")) == key
    assert await store.get_key_by_hash(hash_secret("wrong")) is None
    assert await store.get_key("key_missing") is None
    assert await store.list_keys() == [key]


async def test_list_keys_is_oldest_first(store: RecordStore) -> None:
    newer = _key("s-newer-xxxxxxxxxx", "newer", created_at=2000.0)
    older = _key("s-older-xxxxxxxxxx", "older", created_at=1000.0)
    await store.create_key(newer)
    await store.create_key(older)
    assert [k.name for k in await store.list_keys()] == ["older", "newer"]


async def test_revoked_key_no_longer_authenticates_but_stays_listed(store: RecordStore) -> None:
    key = _key("secret-two-xxxxxxxx", "two")
    keep = _key("secret-three-xxxxxx", "three")
    await store.create_key(key)
    await store.create_key(keep)

    assert await store.revoke_key(key.id) is True

    assert await store.get_key_by_hash(key.key_hash) is None
    revoked = await store.get_key(key.id)
    assert revoked is not None and revoked.revoked and revoked.revoked_at is not None
    assert [k.id for k in await store.list_keys()] == [keep.id]
    assert {k.id for k in await store.list_keys(include_revoked=True)} == {key.id, keep.id}
    assert await store.get_key_by_hash(keep.key_hash) == keep


async def test_revoke_by_name_and_revoking_twice_or_unknown_is_false(store: RecordStore) -> None:
    key = _key("secret-four-xxxxxxx", "four")
    await store.create_key(key)

    assert await store.revoke_key("four") is True
    assert await store.revoke_key("four") is False
    assert await store.revoke_key(key.id) is False
    assert await store.revoke_key("nobody") is False
    assert await store.get_key_by_hash(key.key_hash) is None


async def test_revoke_by_id_wins_over_a_key_named_like_that_id(store: RecordStore) -> None:
    target = _key("secret-target-xxxxx", "target", id="key_aaaaaaaaaaaa")
    decoy = _key("secret-decoy-xxxxxx", "key_aaaaaaaaaaaa", id="key_bbbbbbbbbbbb")
    await store.create_key(target)
    await store.create_key(decoy)

    assert await store.revoke_key("key_aaaaaaaaaaaa") is True
    assert await store.get_key_by_hash(target.key_hash) is None
    assert await store.get_key_by_hash(decoy.key_hash) == decoy


async def test_duplicate_secret_id_or_active_name_is_a_conflict(store: RecordStore) -> None:
    key = _key("secret-five-xxxxxxx", "five")
    await store.create_key(key)

    with pytest.raises(Conflict):
        await store.create_key(_key("secret-five-xxxxxxx", "other"))
    with pytest.raises(Conflict):
        await store.create_key(_key("secret-six-xxxxxxxx", "six", id=key.id))
    with pytest.raises(Conflict):
        await store.create_key(_key("secret-seven-xxxxxx", "five"))

    # Once the old key is revoked its name is free again.
    await store.revoke_key("five")
    replacement = _key("secret-eight-xxxxxx", "five")
    await store.create_key(replacement)
    assert await store.get_key_by_hash(replacement.key_hash) == replacement
