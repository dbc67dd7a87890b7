"""The deployment files (issue #15 item 7), tested as far as this machine allows.

No container is built here. What is tested: the wheel builds from exactly what the
Dockerfile's build stage copies, its console script is the entrypoint's command with the
entrypoint's options, the compose file runs two gateway replicas behind nginx on Redis and
PostgreSQL with environment names the config really reads, and deploy/nginx.conf points at
those replicas and keeps streams unbuffered (its behaviour in front of two real gateways is
tested in tests/check/test_live_nginx.py).
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.cli import app
from bastion.config import load_config
from bastion.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
_SUBST = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _environment(service: dict[str, Any], given_env: dict[str, str]) -> dict[str, str]:
    """The service's environment as compose would pass it (``${VAR:-default}``, ``${VAR:?}``)."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in given_env:
            return given_env[name]
        if "?" in m.group(0):
            raise AssertionError(f"compose requires ${name}: {default}")
        return default or ""

    return {k: _SUBST.sub(sub, str(v)) for k, v in service["environment"].items()}


def test_the_wheel_builds_from_the_dockerfile_build_context_and_ships_the_entrypoint(
    tmp_path: Path,
) -> None:
    steps = _dockerfile()
    build_stage = steps[: next(i for i, s in enumerate(steps[1:], 1) if s[0] == "FROM")]
    copied = [a.split()[:-1] for op, a in build_stage if op == "COPY" and "--from" not in a]
    context = tmp_path / "context"
    context.mkdir()
    for sources in copied:  # exactly what the Dockerfile copies into its build stage
        for src in sources:
            s = REPO / src
            assert s.exists(), f"the Dockerfile copies {src}, which is not in the repository"
            if s.is_dir():
                shutil.copytree(s, context / src, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(s, context / src)
    run = " ".join(a for op, a in build_stage if op == "RUN")
    assert "pip wheel" in run and "--no-deps --no-build-isolation ." in run
    out = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", ".", "-w", str(out)],
        cwd=context, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("bastion-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {"bastion/cli.py", "bastion/check/live.py", "bastion/server/serve.py"} <= names
        # the detectors' C loops, built by hatch_build.py (copied with the context)
        for package in ("bastion/safety/prompting", "bastion/safety/pii"):
            native = [n for n in names if n.startswith(f"{package}/_native")]
            assert len(native) == 1 and native[0].endswith(".so"), native
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry = configparser.ConfigParser()
        entry.read_string(z.read(info).decode())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    scripts = dict(entry["console_scripts"])
    (entrypoint,) = [a for op, a in steps if op == "ENTRYPOINT"]
    command = json.loads(entrypoint)  # exec form: signals reach bastion, not a shell
    assert command[:2] == ["bastion", "serve"] and scripts[command[0]] == "bastion.cli:main"
    assert "--host" in command and command[command.index("--host") + 1] == "0.0.0.0"
    serve = typer.main.get_command(app).commands[command[1]]  # type: ignore[attr-defined]
    options = {o for p in serve.params for o in p.opts}
    assert {c for c in command[2:] if c.startswith("--")} <= options
    # the runtime stage installs the wheel by its project name, with its declared dependencies
    assert any(op == "RUN" and "--no-index" in a and " bastion" in a for op, a in steps)
    assert "Requires-Dist: uvicorn[standard]" in meta and "Requires-Dist: aiohttp" in meta


def test_compose_runs_two_gateway_replicas_behind_nginx_with_redis_and_postgres() -> None:
    services = _compose()["services"]
    assert set(services) == {"gateway-1", "gateway-2", "nginx", "redis", "postgres"}
    g1, g2 = services["gateway-1"], services["gateway-2"]
    assert g1 == g2  # the same image and settings: replicas
    assert g1["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert set(g1["depends_on"]) == {"redis", "postgres"}
    (mount,) = services["nginx"]["volumes"]
    source, target, _ = mount.split(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "nginx.conf"
    assert target == "/etc/nginx/conf.d/default.conf"
    # nginx's upstream is exactly the two replicas, at the port they listen on
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream bastion \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = re.findall(r"server\s+([\w.-]+):(\d+)", upstream.group(1))
    port = _environment(g1, {"BASTION_ADMIN_KEY": "x"})["BASTION__SERVER__PORT"]
    assert sorted(servers) == [("gateway-1", port), ("gateway-2", port)]
    assert re.search(r"proxy_pass\s+http://bastion;", conf)


def test_compose_environment_is_a_valid_config_on_redis_and_postgres() -> None:
    env = _environment(_compose()["services"]["gateway-1"], {"BASTION_ADMIN_KEY": "s3cret"})
    cfg = load_config(None, env=env)
    assert cfg.state.url == "redis://redis:6379/0"
    assert cfg.store.url == "postgresql://bastion:bastion@postgres:5432/bastion"
    assert cfg.server.port == 8080 and cfg.server.drill_headers is False
    assert env[cfg.server.admin_key_env] == "s3cret"  # the name the admin API reads
    assert {p.kind for p in cfg.providers.values()} == {"sim"}  # no provider key: simulator
    postgres = _compose()["services"]["postgres"]["environment"]
    user, password, db = (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert cfg.store.url == f"postgresql://{user}:{password}@postgres:5432/{db}"
    with pytest.raises(AssertionError, match="BASTION_ADMIN_KEY"):
        _environment(_compose()["services"]["gateway-1"], {})  # compose refuses to start without it


def test_a_misspelt_setting_in_the_compose_environment_would_be_refused() -> None:
    """The check above has teeth: an override naming no config key fails start-up."""
    env = _environment(_compose()["services"]["gateway-1"], {"BASTION_ADMIN_KEY": "x"})
    env["BASTION__STATE__URI"] = env.pop("BASTION__STATE__URL")
    with pytest.raises(ConfigError, match=r"state\.uri"):
        load_config(None, env=env)


def test_deploy_nginx_conf_keeps_streams_unbuffered_and_waits_for_long_answers() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    directives = dict(
        re.findall(
            r"^\s*(proxy_buffering|gzip|proxy_http_version|proxy_cache)\s+(\S+);", conf, re.M
        )
    )
    assert directives == {
        "proxy_buffering": "off",
        "gzip": "off",
        "proxy_http_version": "1.1",
        "proxy_cache": "off",
    }
    assert "proxy_ignore_headers" not in conf  # Bastion's X-Accel-Buffering: no is honoured
    read = re.search(r"proxy_read_timeout\s+(\d+)s;", conf)
    assert read is not None
    # a stream may wait for a slow first token up to the default feature deadline
    assert int(read.group(1)) >= load_config(None, env={}).feature(None).deadline


@settings(max_examples=25, deadline=None)
@given(
    anthropic=st.sampled_from(["", "sk-ant-test"]),
    openai=st.sampled_from(["", "sk-test"]),
)
def test_compose_provider_keys_choose_the_providers_and_nothing_else(
    anthropic: str, openai: str
) -> None:
    given_env = {"BASTION_ADMIN_KEY": "x", "ANTHROPIC_API_KEY": anthropic, "OPENAI_API_KEY": openai}
    env = _environment(_compose()["services"]["gateway-1"], given_env)
    cfg = load_config(None, env=env)
    kinds = {p.kind for p in cfg.providers.values()}
    want = {k for k, v in (("anthropic", anthropic), ("openai", openai)) if v} or {"sim"}
    assert kinds == want
    assert cfg.state.url.startswith("redis://") and cfg.store.url.startswith("postgresql://")
