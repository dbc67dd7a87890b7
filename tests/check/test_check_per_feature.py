"""Items are judged per feature on the aliases each can reach, and console caps per stated period."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.check import run_check
from bastion.check.cost import DAYS_PER_MONTH
from bastion.config import Config

ALIASES = ["a0", "a1", "a2", "a3"]
PROVIDERS = {"anthropic": {"kind": "anthropic"}, "openai": {"kind": "openai"}}


def _models(fallback: list[bool]) -> dict[str, Any]:
    models = {}
    for name, two in zip(ALIASES, fallback, strict=True):
        deps = [{"provider": "anthropic", "model": name}]
        if two:
            deps.append({"provider": "openai", "model": name + "-b"})
        models[name] = {"deployments": deps}
    return models


def _run(cfg: dict[str, Any], item: str) -> Any:
    (res,) = asyncio.run(
        run_check(
            Config.model_validate(cfg), project_dir=Path("/nonexistent"), drills=False, only=item
        )
    )
    return res


routes = st.one_of(
    st.none(),
    st.sampled_from(ALIASES).map(lambda a: {"model": a}),
    st.lists(st.sampled_from(ALIASES), min_size=1, max_size=3, unique=True).map(
        lambda xs: {"allowed_models": xs}
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    fallback=st.lists(st.booleans(), min_size=4, max_size=4),
    features=st.dictionaries(st.sampled_from(["drafts", "search", "chat"]), routes, max_size=3),
    default_route=routes,
)
def test_failover_fails_exactly_the_features_that_can_reach_a_single_deployment(
    fallback: list[bool], features: dict[str, Any], default_route: dict[str, Any] | None
) -> None:
    feats = {"default": default_route or {}, **{n: r or {} for n, r in features.items()}}
    res = _run(
        {"providers": PROVIDERS, "models": _models(fallback), "features": feats},
        "reliability.failover",
    )
    single = {a for a, two in zip(ALIASES, fallback, strict=True) if not two}
    expected = []
    for name, route in feats.items():
        reach = [route["model"]] if "model" in route else route.get("allowed_models", ALIASES)
        if single.intersection(reach):
            expected.append(name)
    assert sorted(res.failing_features) == sorted(expected), res.evidence
    assert (res.status == "FAIL") == bool(expected)
    assert (res.status == "PASS") == (not expected)


@settings(max_examples=80, deadline=None)
@given(
    app_daily=st.floats(min_value=0.5, max_value=500, allow_nan=False),
    console=st.floats(min_value=0.5, max_value=20_000, allow_nan=False),
    period=st.sampled_from(["day", "month", None]),
)
def test_console_caps_are_compared_like_with_like(
    app_daily: float, console: float, period: str | None
) -> None:
    cost: dict[str, Any] = {
        "caps": {"global_daily_usd": app_daily},
        "provider_caps_usd": {"anthropic": console, "openai": console},
    }
    if period is not None:
        cost["provider_caps_period"] = {"anthropic": period, "openai": period}
    cfg = {"providers": PROVIDERS, "models": _models([True] * 4), "cost": cost}
    res = _run(cfg, "cost.daily_cap")
    lines = [e for e in res.evidence if "provider anthropic" in e]
    assert len(lines) == 1
    if period is None:
        assert lines[0].startswith("warn:") and "no period" in lines[0]
        assert res.status != "PASS"
        return
    same_period = app_daily * (DAYS_PER_MONTH if period == "month" else 1)
    assert lines[0].startswith("warn:") == (same_period > console), lines[0]
    assert (res.status == "PASS") == (same_period <= console)


async def test_a_webhook_that_does_not_answer_in_time_is_unverified(
    tmp_path: Path, hooks: str
) -> None:
    cfg = Config.model_validate(
        {"cost": {"alerts": {"webhooks": [hooks + "/slow", hooks + "/ok"]}}}
    )
    (res,) = await run_check(cfg, project_dir=tmp_path, only="cost.spend_alerts")
    assert res.status == "WARN"
    slow, ok = [e for e in res.evidence if "webhook http" in e]
    assert slow.startswith("warn:") and "/slow unverified" in slow and "Timeout" in slow
    assert "/ok took a test alert" in ok


async def test_only_the_apps_own_code_counts_as_using_a_helper(tmp_path: Path) -> None:
    use = "from bastion.safety.tools import ToolExecutor\nex = ToolExecutor(registry, state)\n"
    for where in (
        ".venv/lib/site.py",
        "node_modules/x/a.py",
        "tests/test_tools.py",
        "app/test_x.py",
    ):
        (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / where).write_text(use)
    cfg = Config.model_validate({})
    (res,) = await run_check(cfg, project_dir=tmp_path, drills=False, only="safety.tool_sandbox")
    assert res.status == "WARN", res.evidence
    (tmp_path / "app" / "agent.py").write_text(use)
    (res,) = await run_check(cfg, project_dir=tmp_path, drills=False, only="safety.tool_sandbox")
    assert res.status == "PASS" and "app/agent.py" in res.evidence[0], res.evidence


async def test_the_per_user_drill_is_not_refused_by_the_apps_other_limits(tmp_path: Path) -> None:
    cfg = Config.model_validate(
        {
            "providers": {"sim": {"kind": "sim"}},
            "models": {"m": {"deployments": [{"provider": "sim", "model": "m"}]}},
            "cost": {
                "caps": {"end_user_caps": True},
                "rate_limits": {
                    "per_user": {"tokens_per_minute": 50_000},
                    "global": {"requests_per_minute": 1, "burst": 1},
                    "per_key": {"calls_per_day": 1},
                },
            },
        }
    )
    (res,) = await run_check(cfg, project_dir=tmp_path, only="cost.per_user_limit")
    assert res.status == "PASS", res.evidence
    assert any("3rd call was refused" in e for e in res.evidence)
