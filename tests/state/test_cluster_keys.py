"""Redis Cluster placement and the redis+cluster:// URL, checked against a real cluster.

Every key one call's admission or settle script touches must be in one slot (a script is atomic
only within a slot, and the server refuses it with CROSSSLOT otherwise); idempotency keys, which
scripts touch one at a time, must spread over the masters. The slots are asked of the cluster
itself (``CLUSTER KEYSLOT``), for any prefix and any key names, braces included.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from _redis_cluster_harness import RedisClusterProcs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ConfigError, StateUnavailable
from bastion.state import Cap, RedisCounterStore, open_state
from bastion.state._redis_cluster import ClusterUrl, parse_cluster_url
from bastion.state.redis import redis_key

CALL_KINDS = ("cap", "lease", "res", "tb", "ctr", "flags", "br")
prefixes = st.text(
    st.characters(exclude_characters="{}", exclude_categories=["Cs"]), min_size=1, max_size=12
)
names = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)


def _slot(r: redis.Redis, key: str) -> int:
    return int(r.cluster("KEYSLOT", key))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=prefixes, keys=st.lists(st.tuples(st.sampled_from(CALL_KINDS), names), min_size=2))
def test_every_key_of_a_call_is_in_one_slot_whatever_the_names(
    redis_cluster: RedisClusterProcs, prefix: str, keys: list[tuple[str, str]]
) -> None:
    with redis_cluster.node(redis_cluster.ports[0]) as r:
        slots = {_slot(r, redis_key(prefix, kind, name)) for kind, name in keys}
        assert slots == {_slot(r, "{" + prefix + "}")}


def test_idempotency_keys_spread_over_every_master(redis_cluster: RedisClusterProcs) -> None:
    keys = [redis_key("bastion", "idem", f"req-{i}") for i in range(60)]
    masters = {redis_cluster.master_of(k) for k in keys}
    assert len(masters) == 3


def test_unknown_key_kind_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown redis key kind"):
        redis_key("bastion", "budget", "x")


async def test_one_script_over_caps_buckets_counters_flags_and_breakers_runs_on_the_cluster(
    redis_cluster: RedisClusterProcs,
) -> None:
    """What a call's single admission script needs: all its KEYS in one slot (no CROSSSLOT)."""
    prefix = f"one-{uuid.uuid4().hex[:8]}"
    keys = [redis_key(prefix, kind, f"k-{kind}") for kind in CALL_KINDS]
    from redis.asyncio.cluster import RedisCluster

    rc = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    try:
        touched = await rc.eval(
            "for i, k in ipairs(KEYS) do redis.call('SET', k, i) end return #KEYS",
            len(keys),
            *keys,
        )
        assert touched == len(CALL_KINDS)
    finally:
        await rc.aclose()


hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z0-9]{1,5}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
ports = st.integers(1, 65535)


@given(
    nodes=st.lists(st.tuples(hosts, ports), min_size=1, max_size=4),
    user=st.none() | st.text(min_size=1, max_size=8),
    password=st.none() | st.text(min_size=1, max_size=12),
    tls=st.booleans(),
)
def test_cluster_url_reads_back_every_node_and_the_login(
    nodes: list[tuple[str, int]], user: str | None, password: str | None, tls: bool
) -> None:
    login = ""
    if user is not None or password is not None:
        login = quote(user or "", safe="")
        login += f":{quote(password, safe='')}" if password is not None else ""
        login += "@"
    scheme = "rediss+cluster" if tls else "redis+cluster"
    url = f"{scheme}://{login}" + ",".join(f"{h}:{p}" for h, p in nodes)
    expected_nodes = tuple((h.strip("[]"), p) for h, p in nodes)
    assert parse_cluster_url(url) == ClusterUrl(expected_nodes, user or None, password, tls)


def test_cluster_url_defaults_the_port_and_accepts_database_0() -> None:
    assert parse_cluster_url("redis+cluster://a,b:7001/0").nodes == (("a", 6379), ("b", 7001))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "names no node"),
        ("redis+cluster://a:0", "bad node"),
        ("redis+cluster://a:70000", "bad node"),
        ("redis+cluster://a:x", "bad node"),
        ("redis+cluster://a:7000/1", "only database 0"),
        ("redis+cluster://a:7000?ssl=true", r"takes no \?options"),
        ("redis+cluster://[::1]x", "bad node"),
    ],
)
def test_bad_cluster_urls_are_refused_when_the_state_is_opened(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        open_state(url)


def test_cluster_url_opens_the_redis_store() -> None:
    assert isinstance(open_state("redis+cluster://127.0.0.1:7000"), RedisCounterStore)


async def test_unreachable_cluster_fails_closed() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = open_state(f"redis+cluster://127.0.0.1:{port}")
    try:
        with pytest.raises(StateUnavailable):
            await store.reserve("r", [Cap("c", 10, 60)], 1, 60)
        with pytest.raises(StateUnavailable):
            await store.ping()
    finally:
        await store.close()


async def test_a_plain_redis_named_as_a_cluster_fails_closed() -> None:
    store = open_state("redis+cluster://127.0.0.1:6379")
    try:
        with pytest.raises(StateUnavailable):
            await store.ping()
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["redis+cluster://h1:7000,h2:7000", "rediss+cluster://h:7000"])
def test_workers_run_on_cluster_state_as_on_redis(url: str, tmp_path: Path) -> None:
    from tests.conftest import write_config

    from bastion.config import load_config
    from bastion.server.serve import workers_refusal

    cfg = load_config(write_config(tmp_path, state={"url": url}))
    assert workers_refusal(cfg, 4) is None
