"""Faults injected by the simulator, seen through both official SDKs against a real gateway process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config


def dep(provider: str, model: str, fault: str | None = None, **timeouts: float) -> dict[str, Any]:
    d: dict[str, Any] = {"provider": provider, "model": model}
    if fault:
        d["headers"] = {"x-sim-fault": fault, "x-sim-scenario": f"{model}:{fault}"}
    if timeouts:
        d["timeouts"] = timeouts
    return d


MODELS: dict[str, Any] = {
    "fo-503": {"deployments": [dep("sim", "p503", "status:503"), dep("sim", "backup")]},
    "fo-cross-a": {"deployments": [dep("asim", "pa", "status:500"), dep("osim", "gpt-fallback")]},
    "fo-cross-o": {
        "deployments": [dep("osim", "po", "status:500"), dep("asim", "claude-fallback")]
    },
    "fo-silence": {
        "deployments": [
            dep("sim", "silent", "silence", first_token=0.5, total=0.5),
            dep("sim", "backup2"),
        ]
    },
    "fo-reset": {"deployments": [dep("sim", "resets", "reset"), dep("sim", "backup3")]},
    "cut": {"deployments": [dep("sim", "cutter", "cut_after:4")]},
    "stall": {"deployments": [dep("sim", "staller", "stall_after:4", idle=0.5)]},
    "malformed": {"deployments": [dep("sim", "bad", "malformed_after:4")]},
    "nofinal": {"deployments": [dep("sim", "nofinal", "no_final")]},
    "ctx": {"deployments": [dep("sim", "small", "context_length"), dep("sim", "big")]},
    "policy": {"deployments": [dep("sim", "strict", "content_policy"), dep("sim", "lenient")]},
    "down": {"deployments": [dep("sim", "d1", "status:503"), dep("sim", "d2", "status:502")]},
    "ra-long": {
        "deployments": [dep("sim", "ra", "status:429;retry_after:60"), dep("sim", "backup4")]
    },
    "fo-429": {"deployments": [dep("sim", "limited", "status:429"), dep("sim", "backup5")]},
    "ra-short": {
        "deployments": [
            dep("sim", "ra1", "status:429;retry_after:1;fail_first:1"),
            dep("sim", "backup6"),
        ]
    },
    "once": {"deployments": [dep("sim", "flaky", "fail_first:1"), dep("sim", "backup7")]},
    "slow-first": {
        "deployments": [
            dep("sim", "slowpoke", "slow_first:3000", first_token=0.5),
            dep("sim", "backup8"),
        ]
    },
    "sim-*": {"deployments": [{"provider": "sim", "model": "{model}"}]},
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("rel")
    cfg = write_config(
        tmp,
        providers={
            "sim": {"kind": "sim"},
            "asim": {"kind": "anthropic", "base_url": "sim://local"},
            "osim": {"kind": "openai", "base_url": "sim://local/v1"},
        },
        models=MODELS,
        reliability={
            "retry": {"backoff_base": 0.01, "backoff_max": 0.05},
            "breaker": {"enabled": False},
        },
        features={
            "default": {"deadline": 20},
            "drafts": {
                "degraded": {
                    "mode": "message",
                    "message": "Drafting is unavailable, please reply manually",
                }
            },
        },
    )
    g = start_gateway(cfg)
    yield g
    stop(g.proc)


@pytest.fixture
def ac(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=30)


@pytest.fixture
def oc(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0, timeout=30)


MSG = [{"role": "user", "content": "hello"}]


def test_503_primary_retries_then_fails_over(ac: anthropic.Anthropic) -> None:
    raw = ac.messages.with_raw_response.create(model="fo-503", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-bastion-deployment"].startswith("sim/backup")
    assert raw.parse().content[0].text


def test_stream_fails_over_before_first_byte(oc: openai.OpenAI) -> None:
    chunks = list(oc.chat.completions.create(model="fo-503", messages=MSG, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("alias", ["fo-cross-a"])
def test_anthropic_client_served_by_openai_deployment(ac: anthropic.Anthropic, alias: str) -> None:
    msg = ac.messages.create(model=alias, max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert msg.type == "message" and msg.content[0].type == "text" and msg.content[0].text
    assert msg.model == "gpt-fallback"  # the model that actually answered
    assert msg.usage.output_tokens > 0
    with ac.messages.stream(model=alias, max_tokens=50, messages=MSG) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_openai_client_served_by_anthropic_deployment(oc: openai.OpenAI) -> None:
    r = oc.chat.completions.create(model="fo-cross-o", messages=MSG)  # type: ignore[arg-type]
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    assert r.model == "claude-fallback" and r.usage and r.usage.completion_tokens > 0
    chunks = list(
        oc.chat.completions.create(
            model="fo-cross-o", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )  # type: ignore[arg-type]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_silence_before_headers_fails_over_in_bounded_time(ac: anthropic.Anthropic) -> None:
    t0 = time.monotonic()
    raw = ac.messages.with_raw_response.create(model="fo-silence", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-bastion-deployment"].startswith("sim/backup2")
    assert time.monotonic() - t0 < 5


def test_reset_fails_over(oc: openai.OpenAI) -> None:
    r = oc.chat.completions.with_raw_response.create(model="fo-reset", messages=MSG)  # type: ignore[arg-type]
    assert r.headers["x-bastion-deployment"].startswith("sim/backup3")


def _anthropic_stream_fails(ac: anthropic.Anthropic, alias: str) -> bool:
    try:
        with ac.messages.stream(model=alias, max_tokens=100, messages=MSG) as s:  # type: ignore[arg-type]
            for _ in s.text_stream:
                pass
            s.get_final_message()
    except anthropic.APIError:
        return True
    return False


def _openai_stream_fails(oc: openai.OpenAI, alias: str) -> bool:
    try:
        for _ in oc.chat.completions.create(model=alias, messages=MSG, stream=True):  # type: ignore[arg-type]
            pass
    except openai.APIError:
        return True
    return False


# (alias, anthropic client errors, openai client errors), with no fallback configured:
# - a cut is an error for both, never a clean end;
# - a missing final marker: Anthropic's message_stop carries the end, so without it the answer
#   is cut; an OpenAI stream that sent its finish_reason and usage is whole without [DONE]
#   (what every other client of the benchmark accepts);
# - one malformed event is skipped and counted, and the rest of the same stream is relayed.
@pytest.mark.parametrize(
    ("alias", "anthropic_fails", "openai_fails"),
    [("cut", True, True), ("nofinal", True, False), ("malformed", False, False)],
)
def test_broken_stream_after_first_byte_ends_honestly(
    ac: anthropic.Anthropic,
    oc: openai.OpenAI,
    alias: str,
    anthropic_fails: bool,
    openai_fails: bool,
) -> None:
    assert _anthropic_stream_fails(ac, alias) is anthropic_fails
    assert _openai_stream_fails(oc, alias) is openai_fails


def test_stall_mid_stream_ends_in_bounded_time_with_error(ac: anthropic.Anthropic) -> None:
    t0 = time.monotonic()
    with (
        pytest.raises(anthropic.APIError),
        ac.messages.stream(model="stall", max_tokens=100, messages=MSG) as s,
    ):  # type: ignore[arg-type]
        for _ in s.text_stream:
            pass
    assert time.monotonic() - t0 < 5


def test_context_length_is_not_resent_to_the_same_deployment(ac: anthropic.Anthropic) -> None:
    raw = ac.messages.with_raw_response.create(model="ctx", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-bastion-deployment"].startswith("sim/big")


def test_content_policy_refusal_is_returned_as_is(
    ac: anthropic.Anthropic, oc: openai.OpenAI
) -> None:
    with pytest.raises(anthropic.BadRequestError):
        ac.messages.create(model="policy", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as ei:
        oc.chat.completions.create(model="policy", messages=MSG)  # type: ignore[arg-type]
    assert ei.value.code == "content_policy_violation"


def test_all_down_answers_the_last_failure_class_fast_and_tells_sdks_not_to_retry(
    gw: RunningGateway, ac: anthropic.Anthropic, oc: openai.OpenAI
) -> None:
    t0 = time.monotonic()
    with pytest.raises(anthropic.APIStatusError) as ei:
        ac.messages.create(model="down", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    # the last deployment answered 502: the caller gets that class, in an Anthropic error type
    assert ei.value.status_code == 502
    assert ei.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert ei.value.body["error"]["reason"] == "all_failed"  # type: ignore[index]
    assert ei.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.APIStatusError) as oi:
        oc.chat.completions.create(model="down", messages=MSG)  # type: ignore[arg-type]
    assert oi.value.status_code == 502 and oi.value.code == "upstream_unavailable"
    assert time.monotonic() - t0 < 5

    # an SDK left at its default retries does not multiply what Bastion already tried
    sent: list[str] = []
    hooks = {"request": [lambda request: sent.append(str(request.url))]}
    with httpx.Client(event_hooks=hooks) as http:  # type: ignore[arg-type]
        eager = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, http_client=http)
        with pytest.raises(anthropic.APIStatusError):
            eager.messages.create(model="down", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert len(sent) == 1, sent


def test_degraded_message_mode_answers_with_canned_text(
    gw: RunningGateway, oc: openai.OpenAI
) -> None:
    r = oc.chat.completions.with_raw_response.create(
        model="down", messages=MSG, extra_headers={"x-bastion-feature": "drafts"}
    )  # type: ignore[arg-type]
    assert r.headers["x-bastion-degraded"]
    assert r.parse().choices[0].message.content == "Drafting is unavailable, please reply manually"


def test_long_retry_after_moves_to_next_deployment_instead_of_waiting(
    ac: anthropic.Anthropic,
) -> None:
    t0 = time.monotonic()
    raw = ac.messages.with_raw_response.create(model="ra-long", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-bastion-deployment"].startswith("sim/backup4")
    assert time.monotonic() - t0 < 5


def test_kill_switch_serves_degraded_and_recovers(
    gw: RunningGateway, ac: anthropic.Anthropic
) -> None:
    hs = {"x-api-key": gw.key}
    try:
        r = httpx.post(gw.url + "/admin/kill", json={"on": True, "who": "test"}, headers=hs)
        assert r.status_code == 200, r.text
        t0 = time.monotonic()
        with pytest.raises(anthropic.APIStatusError) as ei:
            ac.messages.create(model="sim-a", max_tokens=20, messages=MSG)  # type: ignore[arg-type]
        assert ei.value.status_code == 503 and time.monotonic() - t0 < 1
        status = httpx.get(gw.url + "/admin/kill", headers=hs).json()
        assert status["switches"]["global"]["meta"]["who"] == "test"
    finally:
        httpx.post(gw.url + "/admin/kill", json={"on": False}, headers=hs)
    assert ac.messages.create(model="sim-a", max_tokens=20, messages=MSG).content  # type: ignore[arg-type]


def test_kill_switch_refuses_non_admin(gw: RunningGateway) -> None:
    created = gw.cli("keys", "create", "--name", "plain-user")
    secret = next(ln.split()[-1] for ln in created.stdout.splitlines() if ln.startswith("secret:"))
    r = httpx.post(gw.url + "/admin/kill", json={"on": True}, headers={"x-api-key": secret})
    assert r.status_code == 403


def test_idempotency_key_runs_once_and_replays(gw: RunningGateway) -> None:
    key = f"idem-{time.monotonic_ns()}"
    body = {
        "model": "sim-idem",
        "max_tokens": 30,
        "messages": [{"role": "user", "content": "charge"}],
    }
    hs = {"x-api-key": gw.key, "idempotency-key": key}
    results: list[httpx.Response] = []

    def send() -> None:
        results.append(httpx.post(gw.url + "/v1/messages", json=body, headers=hs, timeout=30))

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {r.json()["id"] for r in results}
    assert all(r.status_code == 200 for r in results) and len(ids) == 1
    assert sum(1 for r in results if r.headers.get("x-bastion-idempotent-replay")) == 4
    other = httpx.post(gw.url + "/v1/messages", json={**body, "max_tokens": 31}, headers=hs)
    assert other.status_code == 422


def test_429_without_retry_after_backs_off_then_fails_over(ac: anthropic.Anthropic) -> None:
    t0 = time.monotonic()
    raw = ac.messages.with_raw_response.create(model="fo-429", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-bastion-deployment"].startswith("sim/backup5")
    assert (
        raw.headers["x-bastion-attempts"] == "3"
    )  # two tries at the limited primary, then the backup
    assert time.monotonic() - t0 < 5


def test_short_retry_after_is_honoured_on_the_same_deployment(ac: anthropic.Anthropic) -> None:
    t0 = time.monotonic()
    raw = ac.messages.with_raw_response.create(model="ra-short", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    assert raw.headers["x-bastion-deployment"].startswith(
        "sim/ra1"
    )  # waited, then the primary answered
    assert raw.headers["x-bastion-attempts"] == "2"
    assert 0.9 <= elapsed < 5, elapsed


def test_500_once_is_retried_on_the_same_deployment(oc: openai.OpenAI) -> None:
    r = oc.chat.completions.with_raw_response.create(model="once", messages=MSG)  # type: ignore[arg-type]
    assert r.headers["x-bastion-deployment"].startswith("sim/flaky")
    assert r.headers["x-bastion-attempts"] == "2"


def test_slow_first_token_fails_over_within_the_first_token_timeout(
    ac: anthropic.Anthropic,
) -> None:
    t0 = time.monotonic()
    with ac.messages.stream(model="slow-first", max_tokens=50, messages=MSG) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    assert final.model == "backup8" and final.stop_reason == "end_turn"
    assert time.monotonic() - t0 < 2.5  # two 0.5 s first-token timeouts, not the 3 s upstream delay


def test_the_process_is_still_healthy_after_every_fault(gw: RunningGateway) -> None:
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    assert gw.proc.poll() is None
