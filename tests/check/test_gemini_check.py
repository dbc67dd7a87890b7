"""`bastion check` judges a gemini provider's key like the other keyed kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.check._base import CheckContext, ItemResult
from bastion.check.reliability import provider_readiness
from bastion.config import Config


def _ctx(tmp_path: Path, provider: dict[str, str]) -> CheckContext:
    cfg = Config.model_validate(
        {
            "providers": {"g": provider},
            "models": {"m": {"deployments": [{"provider": "g", "model": "gemini-2.5-flash"}]}},
        }
    )
    return CheckContext(config=cfg, config_path=None, project_dir=tmp_path, drills=False)


@pytest.mark.parametrize(
    ("provider", "env", "status", "says"),
    [
        ({"kind": "gemini"}, None, "FAIL", "no api_key_env names its key"),
        ({"kind": "gemini", "api_key_env": "GEM_CHECK_KEY"}, None, "FAIL", "is unset"),
        ({"kind": "gemini", "api_key_env": "GEM_CHECK_KEY"}, "k", "PASS", ""),
    ],
)
async def test_a_gemini_key_is_required_and_must_be_set(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    provider: dict[str, str],
    env: str | None,
    status: str,
    says: str,
) -> None:
    if env is None:
        monkeypatch.delenv("GEM_CHECK_KEY", raising=False)
    else:
        monkeypatch.setenv("GEM_CHECK_KEY", env)
    r = ItemResult("id", "track", "item")
    await provider_readiness(_ctx(tmp_path, provider), r)
    assert r.status == status
    assert says in " ".join(r.evidence)
