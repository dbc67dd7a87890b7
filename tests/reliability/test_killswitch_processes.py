"""`bastion kill` from another process reaches running gateways within a second, on every state.

Real processes, as the bug was seen: a `bastion serve` on the default embedded state (a SQLite
file in its folder) kept serving after `bastion kill on` printed "on".
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
import yaml
from tests.conftest import BIN, free_port, sim_models, stop, wait_port

MSG = [{"role": "user", "content": "hello"}]
ISO_AGO = r"at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, \d+ s ago\)"


def _env() -> dict[str, str]:
    """No provider keys, no config from the developer's shell: only what the test passes."""
    drop = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "BASTION_CONFIG")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("BASTION__")}


def _config(tmp: Path, **sections: Any) -> Path:
    """No ``state`` section unless given: the embedded default, ./bastion-state.db."""
    cfg: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp / 'records.db'}"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {"drafts": {}},
        **sections,
    }
    path = tmp / "bastion.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(cwd: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--config", str(config)] if config is not None else []
    return subprocess.run(
        [str(BIN / "bastion"), *args, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=_env(),
    )


class Served:
    """One `bastion serve` process started in ``cwd``, with an admin key of its own."""

    def __init__(self, config: Path, cwd: Path) -> None:
        created = _cli(cwd, "keys", "create", "--name", uuid.uuid4().hex[:8], "--roles", "admin",
                       config=config)  # fmt: skip
        assert created.returncode == 0, created.stderr
        self.key = next(
            ln.split()[-1] for ln in created.stdout.splitlines() if ln.startswith("secret:")
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log_path = cwd / f"serve-{port}.log"  # a file: a pipe nobody reads would fill
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "bastion"), "serve", "--config", str(config), "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=_env(),
            )
        try:
            wait_port(port, self.proc)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=5)
            out = log_path.read_text(errors="replace")
            raise RuntimeError(f"bastion serve failed to start:\n{out}") from None
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def call(self, feature: str | None = None) -> tuple[int, dict[str, Any]]:
        hs = {"x-api-key": self.key, "anthropic-version": "2023-06-01"}
        if feature is not None:
            hs["x-bastion-feature"] = feature
        r = self.client.post(
            "/v1/messages", json={"model": "sim-x", "max_tokens": 20, "messages": MSG}, headers=hs
        )
        return r.status_code, r.json()

    def close(self) -> None:
        self.client.close()
        stop(self.proc)


def _until(gw: Served, want: int, feature: str | None = None, limit: float = 3.0) -> float:
    """Seconds until the gateway answers ``want`` (503: the degraded error; 200: served)."""
    t0 = time.monotonic()
    while True:
        status, body = gw.call(feature)
        if status == want:
            if want == 503:
                assert body["error"]["type"] == "ai_unavailable", body
            return time.monotonic() - t0
        assert status in (200, 503), (status, body)
        if time.monotonic() - t0 > limit:
            pytest.fail(f"still {status} after {limit} s, wanted {want}")
        time.sleep(0.02)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Served, Path, Path]]:
    cfg = _config(tmp_path)
    gw = Served(cfg, tmp_path)
    try:
        yield gw, cfg, tmp_path
    finally:
        gw.close()


def test_cli_kill_on_the_embedded_state_reaches_the_running_gateway_within_a_second(
    embedded: tuple[Served, Path, Path],
) -> None:
    gw, cfg, folder = embedded
    assert gw.call()[0] == 200
    on = _cli(folder, "kill", "on", "--who", "oncall", config=cfg)
    assert on.returncode == 0, on.stderr
    assert f"state: sqlite file {(folder / 'bastion-state.db').resolve()}" in on.stdout
    assert _until(gw, 503) < 1.0

    status = _cli(folder, "kill", "status", config=cfg)
    assert re.search(r"^global: on \(by oncall " + ISO_AGO + " via CLI on ", status.stdout, re.M), (
        status.stdout
    )

    off = _cli(folder, "kill", "off", config=cfg)
    assert off.returncode == 0, off.stderr
    assert _until(gw, 200) < 1.0
    assert "all switches off" in _cli(folder, "kill", "status", config=cfg).stdout


def test_cli_feature_kill_of_default_stops_calls_naming_an_unconfigured_feature(
    embedded: tuple[Served, Path, Path],
) -> None:
    gw, cfg, folder = embedded
    assert gw.call("anything-else")[0] == 200
    assert _cli(folder, "kill", "on", "--feature", "default", config=cfg).returncode == 0
    assert _until(gw, 503, "anything-else") < 1.0
    assert gw.call("drafts")[0] == 200  # a configured feature has its own switch
    note = _cli(folder, "kill", "on", "--feature", "anything-else", config=cfg)
    assert "counted under 'default'" in note.stderr
    assert _cli(folder, "kill", "off", "--feature", "default", config=cfg).returncode == 0
    assert _cli(folder, "kill", "off", "--feature", "anything-else", config=cfg).returncode == 0
    assert _until(gw, 200, "anything-else") < 1.0


def test_cli_from_another_folder_names_the_state_it_used_and_refuses_a_missing_file(
    embedded: tuple[Served, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw, cfg, _ = embedded
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    # without a config, and with one whose state path is relative: both name this folder's file
    for args, config in ((("kill", "on"), None), (("kill", "status"), None), (("kill", "on"), cfg)):
        out = _cli(elsewhere, *args, config=config)
        assert out.returncode == 1
        assert f"state: sqlite file {(elsewhere / 'bastion-state.db').resolve()}" in out.stdout
        assert "no state file" in out.stderr and "--config" in out.stderr
    assert not (elsewhere / "bastion-state.db").exists()
    assert gw.call()[0] == 200


def test_two_gateways_on_one_state_file_obey_each_others_flips(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    a, b = Served(cfg, tmp_path), Served(cfg, tmp_path)
    try:
        assert a.call()[0] == 200 and b.call()[0] == 200
        r = a.client.post("/admin/kill", json={"on": True, "who": "alice"},
                          headers={"x-api-key": a.key})  # fmt: skip
        assert r.status_code == 200
        assert _until(b, 503) < 1.0
        status = b.client.get("/admin/kill", headers={"x-api-key": b.key}).json()
        assert status["switches"]["global"]["who"] == "alice"
        r = b.client.post("/admin/kill", json={"on": False}, headers={"x-api-key": b.key})
        assert r.status_code == 200
        assert _until(a, 200) < 1.0
    finally:
        a.close()
        b.close()


def test_cli_kill_on_redis_state_reaches_the_running_gateway_within_a_second(
    tmp_path: Path,
) -> None:
    prefix = "bastiontest-" + uuid.uuid4().hex[:10]
    cfg = _config(tmp_path, state={"url": "redis://127.0.0.1:6379/0", "prefix": prefix})
    gw = Served(cfg, tmp_path)
    try:
        assert gw.call()[0] == 200
        on = _cli(tmp_path, "kill", "on", "--who", "oncall", config=cfg)
        assert on.returncode == 0, on.stderr
        assert f"state: redis://127.0.0.1:6379/0 (key prefix '{prefix}')" in on.stdout
        assert _until(gw, 503) < 1.0
        status = _cli(tmp_path, "kill", "status", config=cfg).stdout
        assert re.search(r"^global: on \(by oncall " + ISO_AGO, status, re.M), status
        assert _cli(tmp_path, "kill", "off", config=cfg).returncode == 0
        assert _until(gw, 200) < 1.0
    finally:
        gw.close()
        r = redis.Redis(host="127.0.0.1", port=6379)
        for k in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(k)
        r.close()


def test_the_state_shown_by_the_cli_never_shows_a_password(tmp_path: Path) -> None:
    from bastion.cli import _state_where

    shown, missing = _state_where("redis://ops:s3cret@10.0.0.5:6379/2", "bastion")
    assert shown == "redis://ops:***@10.0.0.5:6379/2 (key prefix 'bastion')" and missing is None
    assert "s3cret" not in _state_where("rediss://:s3cret@host/0", "p")[0]
    shown, missing = _state_where(f"sqlite:///{tmp_path}/nope.db", "bastion")
    assert shown == f"sqlite file {tmp_path.resolve()}/nope.db" and missing is not None
    assert _state_where("memory://", "bastion")[0].startswith("memory")
