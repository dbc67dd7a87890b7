"""When the counter store is down, capped calls are refused (503) without reaching the provider,
unless config says fail open; when it comes back, calls are served again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from _cost_support import (
    PRINCIPAL,
    inproc_config,
    post,
    private_redis,
    sim_process,
    unique_prefix,
    upstream_calls,
)
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.errors import StateUnavailable
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.state import MemoryCounterStore

MSG = [{"role": "user", "content": "hello"}]
BODY = {"model": "capped", "max_tokens": 50, "messages": MSG}


def _config(tmp: Path, sim_url: str, redis_url: str, prefix: str, fail_open: bool) -> Path:
    tmp.mkdir()
    return write_config(
        tmp,
        providers={"up": {"kind": "anthropic", "base_url": sim_url}},
        models={"capped": {"deployments": [{"provider": "up", "model": "claude-sonnet-5"}]}},
        cost={"caps": {"global_daily_usd": 100.0}},
        state={"url": redis_url, "prefix": prefix, "fail_open": fail_open},
    )


async def test_store_outage_refuses_capped_calls_unless_fail_open(tmp_path: Path) -> None:
    gws: list[RunningGateway] = []
    with sim_process() as sim_url, private_redis() as rds:
        try:
            closed = start_gateway(
                _config(tmp_path / "closed", sim_url, rds.url, unique_prefix(), fail_open=False)
            )
            gws.append(closed)
            opened = start_gateway(
                _config(tmp_path / "open", sim_url, rds.url, unique_prefix(), fail_open=True)
            )
            gws.append(opened)

            # store up: both serve
            for gw in (closed, opened):
                status, _, out = await post(gw.url, "/v1/messages", gw.key, BODY)
                assert status == 200, out
            assert await upstream_calls(sim_url) == 2

            rds.kill()  # SIGKILL our private redis by its PID

            served = await upstream_calls(sim_url)
            status, _, out = await post(closed.url, "/v1/messages", closed.key, BODY)
            assert status == 503, out
            assert out["type"] == "error" and out["error"]["type"] == "api_error"
            assert "unreachable" in out["error"]["message"]  # names the component, not its URL
            oc = openai.OpenAI(base_url=closed.url + "/v1", api_key=closed.key, max_retries=0)
            try:
                oc.chat.completions.create(model="capped", max_tokens=50, messages=MSG)  # type: ignore[arg-type]
                raise AssertionError("served while the counter store was down")
            except openai.APIStatusError as exc:
                assert exc.status_code == 503
                body: Any = exc.body
                assert body["code"] == "state_unavailable"
            assert await upstream_calls(sim_url) == served, "a refused call reached the provider"

            # fail_open: the same outage lets the call through (and it really goes upstream)
            status, _, out = await post(opened.url, "/v1/messages", opened.key, BODY)
            assert status == 200, out
            assert await upstream_calls(sim_url) == served + 1

            rds.start()  # same port, empty data

            served = await upstream_calls(sim_url)
            status, _, out = await post(closed.url, "/v1/messages", closed.key, BODY)
            assert status == 200, f"not served after the store came back: {out}"
            assert await upstream_calls(sim_url) == served + 1
        finally:
            for gw in gws:
                stop(gw.proc)


# -- the budget guard alone (in-process) -----------------------------------------------------
# On a real outage the kill switch, which also reads the counter store, may refuse first; this
# isolates the budget's own fail-closed decision with a store that fails only budget operations.


class BudgetOutage:
    """A memory store whose budget operations fail while ``down`` (flags keep working)."""

    def __init__(self) -> None:
        self.inner = MemoryCounterStore()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StateUnavailable("counter store test://down unavailable")

    async def reserve(self, *a: Any) -> Any:
        self._check()
        return await self.inner.reserve(*a)

    async def settle(self, *a: Any) -> Any:
        self._check()
        return await self.inner.settle(*a)

    async def release(self, *a: Any) -> Any:
        self._check()
        return await self.inner.release(*a)

    async def admit(self, *a: Any) -> Any:  # a call's reservation batch (state_batch.py)
        self._check()
        return await self.inner.admit(*a)

    async def finish(self, *a: Any) -> Any:  # a call's settle batch
        self._check()
        return await self.inner.finish(*a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("fail_open", [False, True])
async def test_budget_guard_fails_closed_unless_configured_open(
    tmp_path: Path, fail_open: bool
) -> None:
    cfg = inproc_config(
        tmp_path,
        cost={"caps": {"global_daily_usd": 100.0}},
        state={"fail_open": fail_open},
    )
    state = BudgetOutage()
    raw = json.dumps({"model": "claude-sonnet-5", "max_tokens": 50, "messages": MSG}).encode()
    async with Gateway(cfg, state=state) as gw:  # type: ignore[arg-type]
        reply = await gw.handle(Format.ANTHROPIC, raw, {}, principal=PRINCIPAL)
        assert reply.status == 200
        state.down = True
        if fail_open:
            reply = await gw.handle(Format.ANTHROPIC, raw, {}, principal=PRINCIPAL)
            assert reply.status == 200
            assert reply.call is not None and reply.call.flags.get("budget_unchecked") is True
            assert gw.simulator.request_count() == 2
        else:
            with pytest.raises(StateUnavailable) as ei:
                await gw.handle(Format.ANTHROPIC, raw, {}, principal=PRINCIPAL)
            assert ei.value.http_status() == 503
            assert gw.simulator.request_count() == 1, "a refused call reached the provider"
        state.down = False
        reply = await gw.handle(Format.ANTHROPIC, raw, {}, principal=PRINCIPAL)
        assert reply.status == 200
