"""A gateway on Redis Cluster state fails closed while the calls' master is dead, then recovers.

One `bastion serve` (``fail_open: false``, the default) keeps its counters on a private 3-master
cluster. The master holding the calls' slot is killed with SIGKILL. Until its replica is
promoted, every capped call is refused with a 503 in the caller's own format (Anthropic
``api_error``, OpenAI ``state_unavailable``) and never reaches the provider; once the replica
serves the slot, calls are served again by the same process, without a restart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from _redis_cluster_harness import RedisClusterProcs, running_cluster, running_sim
from tests.conftest import start_gateway, stop, write_config

from bastion.state.redis import redis_key

MSG: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterProcs]:
    with running_cluster(tmp_path / "cluster") as c:
        yield c


async def _upstream_calls(sim_url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(sim_url + "/_sim/requests") as r:
        recs = await r.json()
    return sum(1 for rec in recs if rec["path"] == "/v1/messages")


async def test_dead_master_means_503_in_each_format_then_service_resumes_without_restart(
    tmp_path: Path, cluster: RedisClusterProcs
) -> None:
    prefix = "outage-" + uuid.uuid4().hex[:8]
    with running_sim() as sim_url:
        cfg = write_config(
            tmp_path,
            providers={"up": {"kind": "anthropic", "base_url": sim_url}},
            models={"capped": {"deployments": [{"provider": "up", "model": "claude-sonnet-5"}]}},
            cost={"caps": {"global_daily_usd": 100.0}},
            state={"url": cluster.url, "prefix": prefix},
        )
        gw = start_gateway(cfg)
        try:
            ac = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=30)
            oc = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0, timeout=30)
            assert ac.messages.create(model="capped", max_tokens=20, messages=MSG).content
            master = cluster.master_of(redis_key(prefix, "cap", "x"))
            replica = cluster.replica_of(master)

            cluster.kill(master)
            killed_at = time.monotonic()
            served = await _upstream_calls(sim_url)
            with pytest.raises(anthropic.APIStatusError) as a_err:
                ac.messages.create(model="capped", max_tokens=20, messages=MSG)
            assert a_err.value.status_code == 503
            a_body: Any = a_err.value.body
            assert a_body["error"]["type"] == "api_error"
            assert "unreachable" in a_body["error"]["message"]
            with pytest.raises(openai.APIStatusError) as o_err:
                oc.chat.completions.create(model="capped", max_tokens=20, messages=MSG)
            assert o_err.value.status_code == 503
            o_body: Any = o_err.value.body
            assert o_body["code"] == "state_unavailable"
            assert await _upstream_calls(sim_url) == served, "a refused call reached the provider"

            refused = 2
            while True:  # until the replica is promoted and the same process serves again
                assert time.monotonic() - killed_at < 30, "not served within 30 s of the kill"
                try:
                    ac.messages.create(model="capped", max_tokens=20, messages=MSG)
                    break
                except anthropic.APIStatusError as exc:
                    assert exc.status_code == 503
                    refused += 1
                    time.sleep(0.2)
            outage = time.monotonic() - killed_at
            assert gw.proc.poll() is None  # the same process
            assert cluster.master_of(redis_key(prefix, "cap", "x")) == replica
            assert await _upstream_calls(sim_url) == served + 1
            reply = oc.chat.completions.create(model="capped", max_tokens=20, messages=MSG)
            assert reply.choices[0].message.content
        finally:
            stop(gw.proc)
    print(f"\nkill -9 of the calls' master: {refused} calls refused (503) for {outage:.1f} s")
