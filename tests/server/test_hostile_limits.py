"""The in-process stream limits: never over a limit, never leaking a slot, whatever the order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import load_config
from bastion.errors import TooManyStreams
from bastion.reliability.concurrency import StreamLease, StreamLimits
from bastion.server.serve import pool_warnings

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("open"), st.sampled_from(["k1", "k2"]), st.sampled_from([None, "u1", "u2"])
        ),
        st.tuples(st.just("close"), st.integers(0, 50), st.just(None)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, per_key=st.integers(1, 5) | st.none(), per_user=st.integers(1, 3) | st.none())
def test_open_streams_never_exceed_a_limit_and_every_slot_comes_back(
    ops: list[tuple[str, object, str | None]], per_key: int | None, per_user: int | None
) -> None:
    limits = StreamLimits(per_key=per_key, per_user=per_user)
    open_: list[tuple[StreamLease, str, str | None]] = []
    for op, a, user in ops:
        if op == "open":
            key = str(a)
            by_key = sum(1 for _, k, _u in open_ if k == key)
            by_user = sum(1 for _, _k, u in open_ if u is not None and u == user)
            try:
                lease = limits.acquire(key, user)
            except TooManyStreams as exc:
                assert exc.http_status() == 429
                assert (per_key is not None and by_key >= per_key) or (
                    per_user is not None and user is not None and by_user >= per_user
                )
                continue
            assert per_key is None or by_key < per_key
            assert per_user is None or user is None or by_user < per_user
            open_.append((lease, key, user))
        elif open_:
            lease, _, _ = open_.pop(int(str(a)) % len(open_))
            lease.release()
            lease.release()  # releasing twice gives back one slot, not two
            assert not lease.held
        for key in ("k1", "k2"):
            assert limits.open_streams(key) == sum(1 for _, k, _u in open_ if k == key)
    for lease, _, _ in open_:
        lease.release()
    assert limits.open_streams("k1") == limits.open_streams("k2") == 0
    assert not limits._keys and not limits._users  # nothing kept for idle keys


def test_a_refusal_names_its_limit_and_asks_to_retry() -> None:
    limits = StreamLimits(per_key=1, per_user=None)
    limits.acquire("k", None)
    with pytest.raises(TooManyStreams) as info:
        limits.acquire("k", None)
    assert "limit 1" in info.value.message
    assert info.value.headers() == {"retry-after": "1"}
    assert info.value.extra() == {"scope": "streams_per_key"}


def test_start_up_warns_when_one_key_could_hold_a_whole_provider_pool() -> None:
    def cfg(per_key: int | None, pool: int) -> list[str]:
        return pool_warnings(
            load_config(
                None,
                overrides={
                    "server": {"max_concurrent_streams_per_key": per_key},
                    "providers": {
                        "up": {"kind": "anthropic", "max_connections": pool},
                        "sim": {"kind": "sim"},
                    },
                    "models": {"m": {"deployments": [{"provider": "up", "model": "m"}]}},
                },
            )
        )

    assert cfg(64, 256) == []
    assert len(cfg(64, 64)) == 1 and "'up'" in cfg(64, 64)[0]
    assert len(cfg(None, 256)) == 1
