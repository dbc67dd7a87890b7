"""The key decides who a call is counted as: client-stated user ids never move a cap's subject
across keys, a bound key's user cannot be overridden, and no user id never skips the per-user cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _cost_support import inproc_config
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.call import Principal
from bastion.errors import BudgetExceeded
from bastion.gateway import Gateway
from bastion.identity import END_USERS_ROLE, normalize_user_id, resolve_user
from bastion.providers.base import Format

MSG = [{"role": "user", "content": "hello"}]
BOUND = Principal(key_id="k-bound", name="bound", user="alice")
PLAIN = Principal(key_id="k-plain", name="plain")
ACTS_A = Principal(key_id="k-a", name="a", roles=(END_USERS_ROLE,))
ACTS_B = Principal(key_id="k-b", name="b", roles=(END_USERS_ROLE,))


def _raw(fmt: Format, user: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"model": "claude-sonnet-5", "max_tokens": 50, "messages": MSG, **extra}
    if user is not None:
        if fmt is Format.ANTHROPIC:
            body["metadata"] = {"user_id": user}
        else:
            body["user"] = user
    return json.dumps(body).encode()


def _cfg(tmp: Path, **caps: Any) -> Any:
    # one short call's worst case (max_tokens=50) is ~$0.0006; $0.001 fits one call, not two
    return inproc_config(tmp, cost={"caps": {"per_user_daily_usd": 0.001, **caps}})


async def _spend(gw: Gateway, principal: Principal, headers: dict[str, str], raw: bytes) -> None:
    await gw.handle(Format.ANTHROPIC, raw, headers, principal=principal)


async def test_a_bound_key_cannot_name_another_user_to_escape_or_drain_caps(
    tmp_path: Path,
) -> None:
    async with Gateway(_cfg(tmp_path)) as gw:
        await _spend(gw, BOUND, {}, _raw(Format.ANTHROPIC))
        # rotating the header, the metadata field or both does not reach a fresh cap
        for headers, user in (({"x-bastion-user": "mallory-1"}, None), ({}, "mallory-2")):
            with pytest.raises(BudgetExceeded) as err:
                await _spend(gw, BOUND, headers, _raw(Format.ANTHROPIC, user))
            assert err.value.scope == "user:user:alice"
        # and the victim named in those calls was never charged
        day = gw.clock.day()
        for victim in ("mallory-1", "mallory-2"):
            u = await gw.state.usage(f"spend:{day}:user:{victim}")
            assert u.settled == 0 and u.reserved == 0


async def test_no_user_id_falls_under_the_keys_anonymous_cap(tmp_path: Path) -> None:
    async with Gateway(_cfg(tmp_path)) as gw:
        await _spend(gw, PLAIN, {}, _raw(Format.ANTHROPIC))
        with pytest.raises(BudgetExceeded) as err:
            await _spend(gw, PLAIN, {}, _raw(Format.ANTHROPIC))
        assert err.value.scope == "user:key:k-plain/anonymous"
        # a key not allowed to act for end users cannot escape by naming one
        with pytest.raises(BudgetExceeded):
            await _spend(gw, PLAIN, {"x-bastion-user": "fresh"}, _raw(Format.ANTHROPIC))


async def test_end_user_caps_are_scoped_to_the_key_that_named_the_user(tmp_path: Path) -> None:
    async with Gateway(_cfg(tmp_path, end_user_caps=True)) as gw:
        await _spend(gw, ACTS_A, {"x-bastion-user": "bob"}, _raw(Format.ANTHROPIC))
        with pytest.raises(BudgetExceeded) as err:
            await _spend(gw, ACTS_A, {"x-bastion-user": "bob"}, _raw(Format.ANTHROPIC))
        assert err.value.scope == "user:key:k-a/bob"
        # key B's "bob" is another subject: A's spending neither blocks nor shows through
        await _spend(gw, ACTS_B, {"x-bastion-user": "bob"}, _raw(Format.ANTHROPIC))


async def test_end_user_ids_are_recorded_but_not_the_caps_subject_by_default(
    tmp_path: Path,
) -> None:
    async with Gateway(_cfg(tmp_path)) as gw:
        reply = await gw.handle(Format.OPENAI, _raw(Format.OPENAI, "carol"), {}, principal=ACTS_A)
        assert reply.call is not None
        assert reply.call.user_id == "carol"
        assert reply.call.cap_subject == "key:k-a/anonymous"


@settings(max_examples=200, deadline=None)
@given(
    claimed=st.one_of(st.none(), st.text(max_size=300)),
    header=st.one_of(st.none(), st.text(max_size=300)),
    fmt=st.sampled_from([Format.ANTHROPIC, Format.OPENAI]),
    principal=st.sampled_from([BOUND, PLAIN, ACTS_A, ACTS_B]),
    end_user_caps=st.booleans(),
)
def test_no_client_string_moves_a_subject_outside_its_key(
    claimed: str | None,
    header: str | None,
    fmt: Format,
    principal: Principal,
    end_user_caps: bool,
) -> None:
    body: dict[str, Any] = {"model": "m", "messages": MSG}
    if claimed is not None:
        body["metadata" if fmt is Format.ANTHROPIC else "user"] = (
            {"user_id": claimed} if fmt is Format.ANTHROPIC else claimed
        )
    headers = {} if header is None else {"x-bastion-user": header}
    user, subject = resolve_user(principal, fmt, body, headers, end_user_caps=end_user_caps)
    if principal.user is not None:
        assert (user, subject) == ("alice", "user:alice")
    else:
        assert subject.startswith(f"key:{principal.key_id}/")
    if user is not None:
        assert user == normalize_user_id(user)  # one spelling on every path


@settings(max_examples=300, deadline=None)
@given(a=st.text(max_size=400), b=st.text(max_size=400))
def test_normalized_user_ids_are_bounded_clean_and_keep_distinct_ids_distinct(
    a: str, b: str
) -> None:
    na, nb = normalize_user_id(a), normalize_user_id(b)
    for n in (na, nb):
        if n is not None:
            assert 0 < len(n) <= 128
            assert n.encode("utf-8")  # never a lone surrogate
            assert all(ord(ch) >= 0x20 and ch != "\x7f" for ch in n)
            assert normalize_user_id(n) == n
    # two ids that differ only past the kept prefix stay distinct
    long_a, long_b = "u" * 200 + a + "1", "u" * 200 + a + "2"
    assert normalize_user_id(long_a) != normalize_user_id(long_b)
