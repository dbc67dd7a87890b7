"""`bastion check --url` through a real nginx in front of two real `bastion serve` replicas.

Issue #17: nginx with buffering on, Bastion's `X-Accel-Buffering: no` ignored and gzip on for
event streams delivered all 12 deltas in one read, while Bastion recorded a fast first token.
The live drills must catch that proxy, and pass the one deploy/nginx.conf describes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import OpenAI
from tests.check._nginx import BUFFERING, GZIP, Nginx
from tests.conftest import (
    BIN,
    RunningGateway,
    free_port,
    sim_models,
    start_gateway,
    stop,
    write_config,
)

STREAM = "streaming reaches the client as sent"
OTHERS = (
    "gateway reachable",
    "kill switch round trip",
    "failover when the first deployment fails",
    "degraded answer when nothing can answer",
)
# the first model GET /v1/models lists is the one drilled: a failover pair
PAIR = {
    "chat": {
        "deployments": [
            {"provider": "sim", "model": "sim-primary"},
            {"provider": "sim", "model": "sim-backup"},
        ]
    }
}


@dataclass
class Replicas:
    gateways: list[RunningGateway]
    tmp: Path

    @property
    def ports(self) -> list[int]:
        return [int(g.url.rsplit(":", 1)[1]) for g in self.gateways]

    @property
    def key(self) -> str:
        return self.gateways[0].key


def _env(**extra: str) -> dict[str, str]:
    drop = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "BASTION_CONFIG", "BASTION_ADMIN_KEY")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("BASTION__")}
    return {**env, **extra}


def check_url(url: str, key: str, *args: str, **env: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """`bastion check --url URL --json` with the key from $BASTION_API_KEY; drills by name."""
    out = subprocess.run(
        [str(BIN / "bastion"), "check", "--url", url, "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(BASTION_API_KEY=key, **env),
    )
    assert out.stdout, out.stderr
    report = orjson.loads(out.stdout)
    assert report["ok"] is (out.returncode == 0)
    return out.returncode, {d["drill"]: d for d in report["drills"]}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two gateways on one store and one state file, drills allowed, a failover pair listed first."""
    tmp = tmp_path_factory.mktemp("live")
    cfg = write_config(tmp, server={"drill_headers": True}, models={**PAIR, **sim_models()})
    gateways: list[RunningGateway] = []
    try:
        for _ in range(2):
            gateways.append(start_gateway(cfg))
        yield Replicas(gateways, tmp)
    finally:
        for g in gateways:
            stop(g.proc)


@pytest.fixture
def proxy(replicas: Replicas, request: pytest.FixtureRequest) -> Iterator[Nginx]:
    """An nginx in front of both replicas: ``request.param`` a template, None for deploy's."""
    folder = replicas.tmp / f"nginx-{request.node.originalname}"
    shutil.rmtree(folder, ignore_errors=True)
    ng = Nginx.start(folder, request.param, replicas.ports)
    try:
        yield ng
    finally:
        ng.stop()


@pytest.mark.parametrize("proxy", [BUFFERING], indirect=True, ids=["buffering-gzip"])
def test_check_url_fails_the_stream_through_an_nginx_that_holds_it(
    proxy: Nginx, replicas: Replicas
) -> None:
    code, drills = check_url(proxy.url, replicas.key)
    assert code == 1
    stream = drills[STREAM]
    assert stream["status"] == "FAIL", stream
    why = " ".join(stream["evidence"])
    # judged on arrival times: all deltas in one read, though Bastion paced them 100 ms apart
    assert "buffered by something between you and Bastion" in why
    assert "at most 12 in one read" in why and "100 ms apart" in why
    assert "Content-Encoding: gzip" in why
    for name in OTHERS:  # the proxy breaks streaming only: the other drills still pass
        assert drills[name]["status"] == "PASS", drills[name]


@pytest.mark.parametrize("proxy", [GZIP], indirect=True, ids=["gzip"])
def test_check_url_fails_a_compressed_event_stream_even_when_it_arrived_in_time(
    proxy: Nginx, replicas: Replicas
) -> None:
    code, drills = check_url(proxy.url, replicas.key)
    assert code == 1
    why = " ".join(drills[STREAM]["evidence"])
    assert drills[STREAM]["status"] == "FAIL"
    assert "Content-Encoding: gzip" in why and "pass on timing: 12 deltas arrived over" in why


@pytest.mark.parametrize("proxy", [None], indirect=True, ids=["deploy-conf"])
def test_check_url_passes_every_drill_through_the_deploy_nginx_conf(
    proxy: Nginx, replicas: Replicas
) -> None:
    code, drills = check_url(proxy.url, replicas.key)
    assert code == 0, drills
    assert {d["status"] for d in drills.values()} == {"PASS"}, drills
    assert set(drills) == {STREAM, *OTHERS}
    # one delta per read, but for the last word, which the PII filter (on by default) holds
    # until the answer ends and so arrives with the final event
    assert re.search(r"at most [12] in one read", drills[STREAM]["evidence"][0])
    assert (
        "sim/sim-backup#1 answered"
        in drills["failover when the first deployment fails"]["evidence"][0]
    )
    assert "4 calls in a row" in drills["kill switch round trip"]["evidence"][0]


@pytest.mark.parametrize("proxy", [None], indirect=True, ids=["deploy-conf"])
def test_the_openai_sdk_streams_through_the_deploy_nginx_from_both_replicas(
    proxy: Nginx, replicas: Replicas
) -> None:
    client = OpenAI(base_url=proxy.url + "/v1", api_key=replicas.key, max_retries=0, timeout=30)
    upstreams: set[str] = set()
    for i in range(6):
        raw = client.chat.completions.with_raw_response.create(
            model="slow-stream",  # a deployment pacing its 8 deltas 150 ms apart
            messages=[{"role": "user", "content": f"stream number {i}"}],
            stream=True,
        )
        upstreams.add(raw.headers["x-test-upstream"])
        assert "content-encoding" not in raw.headers
        arrivals: list[float] = []
        text = ""
        finish = None
        t0 = time.monotonic()
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - t0)
                text += chunk.choices[0].delta.content
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        assert text and finish == "stop"
        assert len(arrivals) == 8
        # the SDK saw the deltas one by one, not in one lump at the end
        assert arrivals[-1] - arrivals[0] > 0.5
    assert upstreams == {f"127.0.0.1:{p}" for p in replicas.ports}


def test_check_url_says_why_it_skips_on_a_gateway_without_drills_or_an_admin_key(
    tmp_path: Path,
) -> None:
    admin = "adm-" + os.urandom(12).hex()
    gw = start_gateway(write_config(tmp_path), env={"BASTION_ADMIN_KEY": admin}, roles="end_users")
    try:
        code, drills = check_url(gw.url, gw.key)
        # the operator's admin key from the environment drives the kill switch for an app key
        code_admin, with_admin = check_url(
            gw.url, gw.key, "--model", "gpt-4.1", BASTION_ADMIN_KEY=admin
        )
    finally:
        stop(gw.proc)
    assert code == 0  # nothing failed; nothing could be proved either, and each SKIP says why
    assert drills["gateway reachable"]["status"] == "PASS"
    skipped = {name: " ".join(d["evidence"]) for name, d in drills.items() if d["status"] == "SKIP"}
    assert set(skipped) == {STREAM, *OTHERS} - {"gateway reachable"}
    assert "too quick" in skipped[STREAM]
    assert "lacks the admin role" in skipped["kill switch round trip"]
    assert "server.drill_headers" in skipped["failover when the first deployment fails"]
    assert "server.drill_headers" in skipped["degraded answer when nothing can answer"]
    assert code_admin == 0
    assert with_admin["kill switch round trip"]["status"] == "PASS", with_admin
    default = drills["gateway reachable"]["evidence"][0].rsplit("drilling with ", 1)[1]
    assert default in sim_models() and default != "gpt-4.1"  # the first listed, unless named
    assert with_admin["gateway reachable"]["evidence"][0].endswith("drilling with gpt-4.1")


def test_check_url_fails_when_nothing_answers_at_the_url() -> None:
    code, drills = check_url(f"http://127.0.0.1:{free_port()}", "no-key")
    assert code == 1
    assert list(drills) == ["gateway reachable"]
    assert drills["gateway reachable"]["status"] == "FAIL"
    assert "cannot reach" in drills["gateway reachable"]["evidence"][0]
