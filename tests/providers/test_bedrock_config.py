"""A bedrock provider as configured: region rules, its endpoint, readiness and `bastion check`,
the in-process ``sim://`` Bedrock (no key needed), and botocore loaded only when configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.conftest import BIN, sim_models, write_config

import bastion
from bastion.config import ProviderConfig
from bastion.cost.pricing import PriceTable
from bastion.providers import bedrock
from bastion.providers.sim.bedrock_wire import REGION_HEADER
from bastion.readiness import provider_ready

MODEL = "amazon.nova-pro-v1:0"


def test_a_bedrock_provider_needs_a_region_and_only_it_takes_one() -> None:
    with pytest.raises(ValidationError, match="region"):
        ProviderConfig(kind="bedrock")
    with pytest.raises(ValidationError, match="region"):
        ProviderConfig(kind="openai", region="us-east-1")
    with pytest.raises(ValidationError):
        ProviderConfig(kind="bedrock", region="US East")
    p = ProviderConfig(kind="bedrock", region="eu-central-1")
    assert p.resolved_base_url() == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert provider_ready("bedrock", None)


def test_converse_urls_keep_the_model_id_one_segment() -> None:
    base = "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert (
        bedrock.model_url(base, MODEL, stream=False)
        == base + "/model/amazon.nova-pro-v1%3A0/converse"
    )
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude"
    url = bedrock.model_url(base, arn, stream=True)
    assert url.endswith("/converse-stream") and "%2F" in url
    assert bedrock.model_of(url) == arn
    with pytest.raises(bastion.errors.InvalidRequest):
        bedrock.model_url(base, "..", stream=False)


def test_credential_source_names_botocores_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert bedrock.credential_source("https://bedrock-runtime.us-east-1.amazonaws.com") is None
    assert bedrock.credential_source("sim://bedrock") == "the simulator's test key"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert bedrock.credential_source("https://x") == "env"


def _cfg(tmp: Path) -> dict[str, Any]:
    models = sim_models()
    models["nova"] = {"deployments": [{"provider": "br", "model": MODEL}]}
    return {
        "store": {"url": f"sqlite:///{tmp / 'lib.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {
            "sim": {"kind": "sim"},
            "br": {"kind": "bedrock", "region": "us-west-2", "base_url": "sim://bedrock"},
        },
        "models": models,
    }


async def test_in_process_sim_bedrock_answers_both_shapes_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        ask = [{"role": "user", "content": "[[sim:reply=hello from nova]]"}]
        msg = await gw.messages({"model": "nova", "max_tokens": 50, "messages": ask})
        assert msg["content"][0]["text"] == "hello from nova" and msg["model"] == MODEL
        chat = await gw.chat_completions({"model": "nova", "messages": ask})
        assert chat["choices"][0]["message"]["content"] == "hello from nova"
        chunks = [c async for c in gw.stream_chat_completions({"model": "nova", "messages": ask})]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == "hello from nova"
        seen = [r for r in gw.simulator.requests if r.path.startswith("/model/")]
        assert len(seen) == 3 and all(r.headers[REGION_HEADER] == "us-west-2" for r in seen)
        assert [r.path.rsplit("/", 1)[-1] for r in seen] == [
            "converse",
            "converse",
            "converse-stream",
        ]


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}


def test_botocore_loads_only_for_a_configured_bedrock_provider(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    without = {**cfg, "providers": {"sim": cfg["providers"]["sim"]}, "models": sim_models()}
    code = """
import asyncio, bastion
async def main():
    async with bastion.Gateway.from_config(None, **{cfg!r}) as gw:
        await gw.messages({{"model": {model!r}, "max_tokens": 20,
                           "messages": [{{"role": "user", "content": "hi"}}]}})
asyncio.run(main())
"""
    plain = _loaded_after(code.format(cfg=without, model="claude-sonnet-5"))
    assert "bastion" in plain and "botocore" not in plain
    assert "botocore" in _loaded_after(code.format(cfg=cfg, model="nova"))


@pytest.mark.parametrize(
    ("key", "says"), [(None, "no AWS credentials found"), ("AKIA1", "from env")]
)
def test_check_judges_aws_credentials(tmp_path: Path, key: str | None, says: str) -> None:
    cfg = write_config(
        tmp_path,
        providers={"br": {"kind": "bedrock", "region": "us-east-1"}},
        models={"m": {"deployments": [{"provider": "br", "model": MODEL}]}},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    if key is not None:
        env |= {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "s"}
    out = subprocess.run(
        [str(BIN / "bastion"), "check", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    ).stdout
    assert f"provider br: {'AWS credentials ' if key else ''}{says}" in out


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("global.anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5"),
    ],
)
def test_bedrock_model_ids_price_as_the_vendors_model(model: str, family: str) -> None:
    table = PriceTable()
    assert table.for_deployment(model, "bedrock") == table.get(family) is not None
    assert table.for_deployment(model, "anthropic") is None  # only a bedrock id is read so
    assert table.for_deployment("amazon.nova-pro-v1:0", "bedrock") is None  # not in the table
