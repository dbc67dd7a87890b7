"""`bastion check --url` in front of a provider it cannot pace: the stream's natural pacing is judged.

The gateway's deployment is an OpenAI-compatible server over HTTP (the simulator run as its own
process, pacing its deltas 40 ms apart): to the gateway a real provider, so drill headers never
reach it. The streaming drill then asks for a long answer and judges how it arrives; the fault
drills say they cannot inject a fault there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.check._nginx import BUFFERING, Nginx
from tests.check.test_live_nginx import STREAM, check_url
from tests.conftest import (
    BIN,
    RunningGateway,
    free_port,
    start_gateway,
    stop,
    wait_port,
    write_config,
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("live-upstream")
    port = free_port()
    sim = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port), "--chunk-ms", "40"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gw = None
    try:
        wait_port(port, sim)
        provider = {"kind": "openai-compatible", "base_url": f"http://127.0.0.1:{port}/v1"}
        cfg = write_config(
            tmp,
            server={"drill_headers": True},
            providers={"upstream": provider},
            models={"chat": {"deployments": [{"provider": "upstream", "model": "gpt-4.1"}]}},
        )
        gw = start_gateway(cfg)
        yield gw
    finally:
        if gw is not None:
            stop(gw.proc)
        stop(sim)


@pytest.mark.parametrize("template", [None, BUFFERING], ids=["deploy-conf", "buffering-gzip"])
def test_a_providers_own_pacing_is_judged_through_nginx(
    gateway: RunningGateway, template: str | None, tmp_path: Path
) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    folder = tmp_path / "nginx"
    shutil.rmtree(folder, ignore_errors=True)
    ng = Nginx.start(folder, template, [port])
    try:
        code, drills = check_url(ng.url, gateway.key)
    finally:
        ng.stop()
    stream = " ".join(drills[STREAM]["evidence"])
    assert "judged on the natural pacing of a long answer (openai-compatible)" in stream
    for name in (
        "failover when the first deployment fails",
        "degraded answer when nothing can answer",
    ):
        assert drills[name]["status"] == "SKIP"
        assert "drill faults reach simulated deployments only" in drills[name]["evidence"][0]
    assert drills["kill switch round trip"]["status"] == "PASS"
    if template is None:
        assert code == 0 and drills[STREAM]["status"] == "PASS", stream
        # the last word arrives with the end: the PII filter holds the word being written
        assert re.search(r"at most [12] in one read", stream)
    else:
        assert code == 1 and drills[STREAM]["status"] == "FAIL"
        assert stream.startswith("buffered by something between you and Bastion")
        assert "came compressed (Content-Encoding: gzip)" in stream
