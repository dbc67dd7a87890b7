"""Issue #18: no string a client controls lets one key's calls touch another key's state.

For random values in every client-controlled field -- end-user ids (``X-Bastion-User``, the
OpenAI ``user`` field, Anthropic ``metadata.user_id``), conversation ids
(``X-Bastion-Conversation``), idempotency keys (``Idempotency-Key``), prompt versions
(``X-Bastion-Prompt-Version``), request ids (``X-Request-Id``) and feature names
(``X-Bastion-Feature``) -- the calls of the attacking keys never change a counter, a record or
an idempotent replay of the victim keys. The victims use fixed, guessable ids ("bob", "c",
"k") and the attackers often send exactly those, plus NUL, CR/LF, format characters, other
spellings of the same id, strings naming the victim's key id, and very long strings.

The gateway is driven through its real ASGI app, on the embedded counter store (memory and a
SQLite state file) and on the shared Redis under a private prefix (removed key by key after
each example, never FLUSHDB). Each example gets a fresh gateway, so a failure replays and
shrinks deterministically.

Keys: A (``end_users`` role: its claimed user ids are honoured) and P (no role) attack; B
(``end_users``, calls as user "bob") and C (bound to user "alice") are the victims.

Each example: the victims call (so they have live counters, records and a stored idempotent
answer), everything is snapshotted, the attackers make one to five calls with generated
fields (any status but a 5xx is fine), and then:

1. no state key the victims' calls ever changed (caps, conversation counters, rate-limit
   buckets, day counters, idempotency entries; discovered by diffing the whole store, so
   the check does not depend on how keys are named) changed during the attackers' calls;
2. every state key the attackers' calls did change is, by its layout, the attacker's own
   (names its key id) or a deliberately shared one (global / feature caps and buckets);
3. the victims' cap usages, conversation counters and day counters read through the
   public ``CounterStore`` API are unchanged (``test_the_checks_look_at_the_victims_real_
   counters`` shows these reads, and the diff of 1., see the victims' state: not vacuous);
4. the victims' call records and ledger totals are unchanged, every new record belongs to an
   attacker key, and no attacker's response carries a victim's request id;
5. an idempotent replay seen by an attacker is always of that attacker's own earlier call,
   and each victim's idempotent call still replays its own original body and x-request-id.

How this fails when scoping is broken (``test_the_check_catches_unscoped_ids`` runs these
mutants of the gateway and expects the check to fire):

* user ids not scoped to the key (the old ``spend:<day>:user:bob`` shared by every key):
  B's calls and A's calls naming "bob" both change ``spend:<day>:user:bob`` (and
  ``rpm/tpm/calls:...:user:bob``) -> assertion 1 ("changed state the victims' calls use");
  A naming any other user changes ``spend:<day>:user:<it>``, which names no key ->
  assertion 2 ("changed state that is not theirs");
* conversation ids not scoped (``conv:<hash of "c">``): same, assertions 1 and 2;
* idempotency keys not scoped: A's call with B's body and "k" is served B's stored answer ->
  assertion 5 ("replayed a response that is not its own").
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from _cost_support import SHARED_REDIS, delete_prefix, inproc_config, unique_prefix
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bastion.auth import new_key
from bastion.cost.token_caps import conversation_key
from bastion.gateway import Gateway
from bastion.identity import END_USERS_ROLE
from bastion.reliability.idempotency import REPLAY_HEADER
from bastion.server.app import create_app
from bastion.state.base import Usage
from bastion.state.memory import MemoryCounterStore
from bastion.state.redis import RedisCounterStore
from bastion.store.models import CallRecord, PromptVersion

AV = (b"anthropic-version", b"2023-06-01")
MODEL = "claude-sonnet-5"
HIGH = 1_000_000.0

# the victims' fixed ids, the ones an attacker would guess
B_USER = "bob"
B_CONV = "c"  # C (bound to "alice") uses the same conversation id
B_IDEM = "k"
C_IDEM = "k-alice"
B_REQ = "b-req-1"
B_FEATURE = "search"
B_PROMPT = "greeting@1"
VICTIM_BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello from bob"}],
    "metadata": {"user_id": B_USER},
}
SHARED = "<shared>"
_KID = r"(key_[0-9a-f]+)"

# Who a state key belongs to, from the layouts in cost/budget.py, cost/ratelimit.py,
# cost/token_caps.py, reliability/idempotency.py and cost/alerts.py. A key matching none of
# them belongs to nobody we know, so an attacker's call changing it fails assertion 2.
_OWNERS = [
    re.compile(p, re.S)
    for p in (
        rf"cap:spend:[^:]+:key:{_KID}",
        rf"cap:spend:[^:]+:user:key:{_KID}/.+",
        r"cap:spend:[^:]+:user:(user:.+)",
        rf"ctr:conv:{_KID}:[0-9a-f]{{32}}",
        rf"idem:idem:{_KID}:(?:anthropic|openai):[0-9a-f]{{32}}",
        rf"(?:tb:rpm|tb:tpm|ctr:calls:[^:]+):user:key:{_KID}/.+",
        r"(?:tb:rpm|tb:tpm|ctr:calls:[^:]+):user:(user:.+)",
        rf"(?:tb:rpm|tb:tpm|ctr:calls:[^:]+):key:{_KID}",
    )
]
_SHARED = re.compile(
    r"cap:spend:[^:]+:(?:global|feature:.+)|(?:tb:rpm|tb:tpm|ctr:calls:[^:]+):global:all"
    r"|ctr:alert:.+",
    re.S,
)


def owner(key: str) -> str | None:
    """The key id (or bound ``user:<id>``) a state key belongs to, SHARED, or None if unknown."""
    if _SHARED.fullmatch(key):
        return SHARED
    for pat in _OWNERS:
        m = pat.fullmatch(key)
        if m:
            return m.group(1)
    return None


# -- the state, dumped as {logical key: value} ---------------------------------------------


def _dump_memory(state: MemoryCounterStore) -> dict[str, Any]:
    # private fields, read-only: the embedded store has no listing API
    out: dict[str, Any] = {}
    for k, cap in state._caps.items():
        out["cap:" + k] = (cap.settled, cap.reserved, tuple(sorted(cap.leases)))
    for k, ctr in state._counters.items():
        out["ctr:" + k] = ctr.value
    for k, b in state._buckets.items():
        out["tb:" + k] = (b.tokens, b.ts)
    for k, idem in state._idem.items():
        out["idem:" + k] = (idem.fingerprint, idem.done, idem.lock_until, idem.response)
    out["flags"] = (dict(state._flags), repr(state._flag_meta))
    return out


def _dump_redis(url: str, prefix: str) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    try:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        with r.pipeline(transaction=False) as p:
            for k in keys:
                p.type(k)
            types = p.execute()
        with r.pipeline(transaction=False) as p:
            for k, t in zip(keys, types, strict=True):
                {
                    b"hash": p.hgetall,
                    b"string": p.get,
                    b"zset": lambda k: p.zrange(k, 0, -1, withscores=True),
                    b"list": lambda k: p.lrange(k, 0, -1),
                }.get(t, p.type)(k)
            values = p.execute()
    finally:
        r.close()
    out: dict[str, Any] = {}
    for raw, value in zip(keys, values, strict=True):
        name = raw.decode("utf-8", "surrogateescape")[len(prefix) + 1 :]
        if isinstance(value, dict):
            value = tuple(sorted(value.items()))
        elif isinstance(value, list):
            value = tuple(value)
        tag = "{" + prefix + "}:"  # the call keys' shared hash tag (state/redis.py redis_key)
        kind, _, rest = name.removeprefix(tag).partition(":")
        if name.startswith(tag + "cap:"):
            out["cap:" + rest] = value
        elif name.startswith(tag + "lease:"):
            out["cap:" + rest + "#lease"] = value
        elif name.startswith((tag + "res:", tag + "br:")):
            continue  # a reservation's cap list (the caps show its holds) / provider breakers
        elif name.startswith((tag + "tb:", tag + "ctr:")):
            out[f"{kind}:{rest}"] = value
        elif name.startswith("idem:{"):
            out["idem:" + name.removeprefix("idem:{")[:-1]] = value
        else:
            out[name] = value  # flags and anything new: owner None, never to change
    return out


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """Keys whose value differs; a token bucket dropping out (full again, expired) is no change."""
    return {
        k
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k) and not (k.startswith("tb:") and k not in after)
    }


def _owner_of(key: str) -> str | None:
    return owner(key.removesuffix("#lease"))


# -- driving the real ASGI app ------------------------------------------------------------


async def send(
    app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI app with header values as raw bytes (no re-encoding)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), AV, *headers],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # a client that stays connected
        return {"type": "http.disconnect"}

    status = 0
    out: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send_(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]
            out.update({k.decode("latin-1"): v.decode("latin-1") for k, v in msg["headers"]})
        elif msg["type"] == "http.response.body":
            chunks.append(msg.get("body", b""))

    await app(scope, receive, send_)
    return status, out, b"".join(chunks)


def _hs(secret: str, **fields: str | bytes | None) -> list[tuple[bytes, bytes]]:
    out = [(b"x-api-key", secret.encode())]
    for name, v in fields.items():
        if v is not None:
            out.append((name.replace("_", "-").encode(), v if isinstance(v, bytes) else v.encode()))
    return out


# -- one gateway per backend, with its keys and the victims' stored answers -------------------


@dataclass
class Original:
    status: int
    request_id: str
    body: bytes


@dataclass
class World:
    gw: Gateway
    app: Any
    dump: Callable[[], dict[str, Any]]
    secrets: dict[str, str]  # "A", "P", "B", "C" -> secret
    ids: dict[str, str]  # "A", "P", "B", "C" -> key id
    originals: dict[str, Original] = field(default_factory=dict)
    victim_request_ids: set[str] = field(default_factory=set)
    attacker_request_ids: dict[str, set[str]] = field(default_factory=dict)
    victim_keys: set[str] = field(default_factory=set)

    def __repr__(self) -> str:  # hypothesis prints the fixture with a failing example
        return f"World({self.gw.config.state.url!r}, keys={self.ids})"

    @property
    def attackers(self) -> set[str]:
        return {self.ids["A"], self.ids["P"]}

    @property
    def victims(self) -> set[str]:
        return {self.ids["B"], self.ids["C"]}


def _config(tmp: Path, backend: str, prefix: str) -> Any:
    state = {
        "memory": {"url": "memory://"},
        "sqlite": {"url": f"sqlite:///{tmp / 'state.db'}"},
        "redis": {"url": SHARED_REDIS, "prefix": prefix},
    }[backend]
    # a slow refill with a huge burst never refuses, yet a bucket stays in the store (it is
    # dropped once full again) long enough for the state diff to see it
    bucket = {
        "requests_per_minute": 1.0,
        "burst": HIGH,
        "calls_per_day": 10**9,
        "tokens_per_minute": 10**9,
    }
    return inproc_config(
        tmp,
        state=state,
        cost={
            "caps": {
                "global_daily_usd": HIGH,
                "per_user_daily_usd": HIGH,
                "per_key_daily_usd": HIGH,
                "end_user_caps": True,
            },
            "rate_limits": {"per_user": bucket, "per_key": bucket, "global": bucket},
        },
        features={
            "default": {"conversation_max_tokens": 10**9, "daily_budget_usd": HIGH},
            B_FEATURE: {"conversation_max_tokens": 10**9, "daily_budget_usd": HIGH},
        },
    )


def _idem_call(w: World, who: str) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    idem = B_IDEM if who == "B" else C_IDEM
    hs = _hs(w.secrets[who], idempotency_key=idem, x_bastion_conversation=B_CONV)
    return "/v1/messages", json.dumps(VICTIM_BODY).encode(), hs


async def _settle_records(gw: Gateway) -> None:
    """Every queued record is in the store (the background writer may hold a batch)."""
    rec = gw.recorder
    end = time.monotonic() + 5
    while True:
        await rec.flush()
        s = rec.stats
        if s.queued <= s.written + s.spilled + s.dropped + s.quarantined:
            return
        if time.monotonic() > end:
            raise AssertionError(f"records never landed: {s}")
        await asyncio.sleep(0.005)


async def _build(
    tmp: Path, backend: str, prefix: str
) -> tuple[Gateway, Any, dict[str, str], dict[str, str]]:
    gw = Gateway(_config(tmp, backend, prefix))
    await gw.start()
    secrets: dict[str, str] = {}
    ids: dict[str, str] = {}
    for who, roles, user in (
        ("A", (END_USERS_ROLE,), None),
        ("P", (), None),
        ("B", (END_USERS_ROLE,), None),
        ("C", (), "alice"),
    ):
        secret, record = new_key(f"xkey-{who}", roles=roles, user=user)
        await gw.store.create_key(record)
        secrets[who], ids[who] = secret, record.id
    await gw.store.create_prompt_version(
        PromptVersion(name="greeting", version=1, instructions="Be brief.", created_at=time.time())
    )
    return gw, create_app(gw), secrets, ids


# -- the victims' part of an example -----------------------------------------------------


async def _victims_call(w: World) -> None:
    """B and C call with their fixed ids; these calls give them live counters and records."""
    openai_body = {
        "model": MODEL,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello from bob"}],
        "user": B_USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    calls = [
        (
            "/v1/messages",
            VICTIM_BODY,
            _hs(
                w.secrets["B"],
                x_bastion_user=B_USER,
                x_bastion_conversation=B_CONV,
                x_request_id=B_REQ,
                x_bastion_feature=B_FEATURE,
                x_bastion_prompt_version=B_PROMPT,
            ),
        ),
        (
            "/v1/chat/completions",
            openai_body,
            _hs(w.secrets["B"], x_bastion_conversation=B_CONV, x_request_id="b-req-2"),
        ),
        (
            "/v1/messages",
            VICTIM_BODY,
            _hs(
                w.secrets["C"],
                x_bastion_user="mallory",  # a bound key's user cannot be overridden
                x_bastion_conversation=B_CONV,
                x_request_id="c-req-1",
            ),
        ),
    ]
    for path, body, hs in calls:
        status, out, raw = await send(w.app, path, json.dumps(body).encode(), hs)
        assert status == 200, (path, status, raw[:300])
        w.victim_request_ids.add(out["x-request-id"])


async def _victims_replay(w: World, *, first: bool = False) -> None:
    """Each victim's idempotent call: stored the first time, its own original ever after."""
    for who in ("B", "C"):
        path, body, hs = _idem_call(w, who)
        status, out, raw = await send(w.app, path, body, hs)
        if first:
            assert status == 200 and out.get(REPLAY_HEADER) is None, (who, status, out, raw)
            w.originals[who] = Original(status, out["x-request-id"], raw)
            w.victim_request_ids.add(out["x-request-id"])
            continue
        orig = w.originals[who]
        assert status == 200, (who, status, raw[:300])
        assert out.get(REPLAY_HEADER) == "true", f"{who}'s idempotent call was not replayed"
        assert out.get("x-request-id") == orig.request_id, f"{who}'s replay names another call"
        assert raw == orig.body, f"{who}'s replay is not its original answer"


@dataclass
class Observed:
    counters: dict[str, Any]
    records: dict[str, CallRecord]
    ledger: dict[str | None, float]


async def _observe(w: World) -> Observed:
    """The victims' counters through the public API, every record, the ledger per key."""
    st_, day = w.gw.state, w.gw.clock.day()
    b, c = w.ids["B"], w.ids["C"]
    counters: dict[str, Any] = {}
    for name, cap in (
        ("B's user cap", f"spend:{day}:user:key:{b}/{B_USER}"),
        ("B's anonymous cap", f"spend:{day}:user:key:{b}/anonymous"),
        ("B's key cap", f"spend:{day}:key:{b}"),
        ("C's user cap", f"spend:{day}:user:user:alice"),
        ("C's key cap", f"spend:{day}:key:{c}"),
    ):
        counters[name] = await st_.usage(cap)
    for name, key in (
        ("B's conversation", conversation_key(b, B_CONV)),
        ("C's conversation", conversation_key(c, B_CONV)),
        ("B's user calls today", f"calls:{day}:user:key:{b}/{B_USER}"),
        ("B's key calls today", f"calls:{day}:key:{b}"),
        ("C's user calls today", f"calls:{day}:user:user:alice"),
        ("C's key calls today", f"calls:{day}:key:{c}"),
    ):
        counters[name] = await st_.get(key)
    records = {r.request_id: r for r in await w.gw.store.recent_calls(10**6)}
    ledger = await w.gw.store.spend_by_day(day, "key_id")
    return Observed(counters, records, ledger)


# -- the attackers' calls -------------------------------------------------------------------

ODD = [
    "",
    " ",
    "\x00",
    "bob\x00",
    "\x00bob",
    "bob\r\n",
    "bob\r\nx-bastion-user: bob",
    "b\u200bob",
    "bob\u200b",
    " bob ",
    "BOB",
    "\uff42\uff4f\uff42",  # fullwidth "bob"
    "bo\u0301b",
    "\udcff",
    "alice",
    "user:alice",
    "@B@",
    "key:@B@/bob",
    "@B@/bob",
    "@C@",
    "conv:@B@:c",
    "idem:@B@:anthropic:k",
    "../@B@/bob",
    "bob" * 20_000,
    "\u00e9" * 300,
]


def _field(*victim: str) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.sampled_from(victim),
        st.sampled_from(ODD),
        st.text(max_size=24),
        st.text(min_size=100, max_size=1500),
    )


@dataclass(frozen=True)
class Attack:
    attacker: str
    openai: bool
    stream: bool
    mimic: bool  # B's idempotent body, byte for byte, with B's "k"
    header_user: str | None
    body_user: object
    conversation: str | None
    idem: str | None
    prompt_version: str | None
    request_id: str | None
    feature: str | None


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()  # no user field in the body at all
attacks = st.builds(
    Attack,
    attacker=st.sampled_from(["A", "A", "P"]),
    openai=st.booleans(),
    stream=st.booleans(),
    mimic=st.sampled_from([True, False, False]),
    header_user=_field(B_USER, "alice"),
    body_user=st.one_of(
        st.just(ABSENT), _field(B_USER, "alice"), st.integers(), st.just({"id": B_USER})
    ),
    conversation=_field(B_CONV),
    # mostly none, so most calls run rather than replay or clash with the attacker's own keys
    idem=st.booleans().flatmap(lambda run: st.none() if run else _field(B_IDEM, C_IDEM)),
    prompt_version=_field(B_PROMPT, "greeting@latest", "greeting@production"),
    request_id=_field(B_REQ, "b-req-2", "c-req-1"),
    feature=_field(B_FEATURE, "default"),
)


async def _attack(w: World, a: Attack) -> None:
    def v(x: str | None) -> bytes | None:
        if x is None:
            return None
        x = x.replace("@B@", w.ids["B"]).replace("@C@", w.ids["C"])
        return x.encode("utf-8", "surrogatepass")  # raw bytes, as a hostile client sends them

    body: dict[str, Any]
    if a.mimic:
        path, body, idem = "/v1/messages", VICTIM_BODY, B_IDEM.encode()
    else:
        path = "/v1/chat/completions" if a.openai else "/v1/messages"
        body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        if a.stream:
            body["stream"] = True
        user = a.body_user
        if isinstance(user, str):
            user = user.replace("@B@", w.ids["B"])
        if user is not ABSENT:
            if a.openai:
                body["user"] = user
            else:
                body["metadata"] = {"user_id": user}
        idem = v(a.idem)
    hs = _hs(
        w.secrets[a.attacker],
        x_bastion_user=v(a.header_user),
        x_bastion_conversation=v(a.conversation),
        idempotency_key=idem,
        x_bastion_prompt_version=v(a.prompt_version),
        x_request_id=v(a.request_id),
        x_bastion_feature=v(a.feature),
    )
    status, out, raw = await send(w.app, path, json.dumps(body).encode(), hs)
    assert status < 500, f"{status} for {a}: {raw[:300]!r}"
    own = w.attacker_request_ids.setdefault(a.attacker, set())
    rid = out.get("x-request-id")
    if out.get(REPLAY_HEADER) == "true":
        assert rid in own, f"an attacker was replayed a response that is not its own ({rid}): {a}"
    elif rid is not None:
        own.add(rid)
    assert rid not in w.victim_request_ids, f"an attacker got a victim's request id: {a}"


# -- one example, and the checks -----------------------------------------------------------


def _theirs(w: World, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """Remember what a victims' phase changed (shared caps aside): no attacker may touch it."""
    w.victim_keys |= {k for k in changed(before, after) if _owner_of(k) != SHARED}


async def _example(w: World, batch: list[Attack]) -> None:
    pre = w.dump()
    await _victims_call(w)
    await _settle_records(w.gw)
    mid = w.dump()
    _theirs(w, pre, mid)
    before = await _observe(w)
    missing = w.victim_request_ids - before.records.keys()
    assert not missing, f"victim records never landed: {missing}"

    for a in batch:
        await _attack(w, a)
    await _settle_records(w.gw)
    post = w.dump()
    after = await _observe(w)

    diff = changed(mid, post)
    # 1. nothing the victims' calls ever changed moved
    hit = sorted(k for k in diff if k in w.victim_keys)
    assert not hit, f"the attackers' calls changed state the victims' calls use: {hit[:5]}"
    # 2. what did move is an attacker's own or deliberately shared
    foreign = sorted(
        f"{k!r} (owner {o})" for k in diff if (o := _owner_of(k)) != SHARED and o not in w.attackers
    )
    assert not foreign, f"the attackers' calls changed state that is not theirs: {foreign[:5]}"
    # 3. the victims' counters, read as the gateway reads them
    assert after.counters == before.counters
    # 4. the victims' records and spend; every new record is an attacker's
    victims = w.victims
    mine = {i: r for i, r in before.records.items() if r.key_id in victims}
    assert {i: r for i, r in after.records.items() if r.key_id in victims} == mine
    new = [after.records[i] for i in after.records.keys() - before.records.keys()]
    assert all(r.key_id in w.attackers for r in new), [(r.key_id, r.user_id) for r in new]
    for kid in victims:
        assert after.ledger.get(kid) == before.ledger.get(kid), kid

    # 5. each victim still gets its own stored answer
    await _victims_replay(w)
    await _settle_records(w.gw)
    _theirs(w, post, w.dump())


def _value(counter: Usage | float) -> float:
    return counter.settled + counter.reserved if isinstance(counter, Usage) else counter


@asynccontextmanager
async def open_world(tmp: Path, backend: str) -> AsyncIterator[World]:
    """A fresh gateway on one backend, its four keys, and the victims' stored answers."""
    prefix = unique_prefix()
    gw = None
    try:
        gw, app, secrets, ids = await _build(tmp, backend, prefix)
        state = gw.state
        if backend == "redis":
            assert isinstance(state, RedisCounterStore)
            dump: Callable[[], dict[str, Any]] = lambda: _dump_redis(SHARED_REDIS, prefix)  # noqa: E731
        else:
            assert isinstance(state, MemoryCounterStore)
            dump = lambda: _dump_memory(state)  # noqa: E731
        w = World(gw, app, dump, secrets, ids)
        start = dump()
        await _victims_replay(w, first=True)
        await _settle_records(gw)
        _theirs(w, start, dump())
        yield w
    finally:
        if gw is not None:
            await gw.aclose()
        if backend == "redis":
            delete_prefix(prefix)


def run_example(backend: str, batch: list[Attack]) -> None:
    """One example on a fresh world, so a failing example replays (and shrinks) the same."""

    async def go(tmp: Path) -> None:
        async with open_world(tmp, backend) as w:
            await _example(w, batch)

    with tempfile.TemporaryDirectory(prefix="xkey-") as tmp:
        asyncio.run(go(Path(tmp)))


BACKENDS = ["memory", "sqlite", "redis"]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=40,
    deadline=None,
    # explain re-runs hundreds of variations of a failure: slow here, and shrinking suffices
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(attacks, min_size=1, max_size=5))
def test_no_call_of_one_key_touches_another_keys_counters_records_or_replays(
    backend: str, batch: list[Attack]
) -> None:
    run_example(backend, batch)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_checks_look_at_the_victims_real_counters(backend: str) -> None:
    """Not vacuous: the public reads of check 3 see the victims' spend, and the state diff of
    check 1 finds every kind of state the victims' calls leave."""

    async def go(tmp: Path) -> None:
        async with open_world(tmp, backend) as w:
            pre = w.dump()
            await _victims_call(w)
            await _settle_records(w.gw)
            _theirs(w, pre, w.dump())
            seen = await _observe(w)
            zero = [n for n, c in seen.counters.items() if not _value(c) and "anonymous" not in n]
            assert not zero, f"victim counters read as zero: {zero}"
            kinds = {k.partition(":")[0] for k in w.victim_keys}
            assert kinds >= {"cap", "ctr", "tb", "idem"}, sorted(w.victim_keys)
            assert {r.key_id for r in seen.records.values()} == w.victims

    with tempfile.TemporaryDirectory(prefix="xkey-") as tmp:
        asyncio.run(go(Path(tmp)))


# -- the check can fail: the same example against gateways whose ids are not scoped to the key


def _unscoped_users(orig: Any) -> Any:
    def resolve(*args: Any, **kw: Any) -> tuple[str | None, str]:
        user, subject = orig(*args, **kw)
        return user, (user if user is not None and subject.startswith("key:") else subject)

    return resolve


MUTANTS = {
    # the old behaviour: spend:<day>:user:bob, shared by every key naming "bob"
    "user": ("bastion.gateway.resolve_user", _unscoped_users, "changed state the victims"),
    "conversation": (
        "bastion.cost.token_caps.conversation_key",
        lambda orig: lambda key_id, conv: orig("shared", conv),
        "changed state the victims",
    ),
    "idempotency": (
        "bastion.idempotent.idem_state_key",
        lambda orig: lambda key_id, fmt, k: orig("shared", fmt, k),
        "replayed a response that is not its own",
    ),
}
GUESS = Attack(
    attacker="A",
    openai=False,
    stream=False,
    mimic=True,
    header_user=B_USER,
    body_user=ABSENT,
    conversation=B_CONV,
    idem=B_IDEM,
    prompt_version=None,
    request_id=None,
    feature=None,
)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_the_check_catches_unscoped_ids(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target, make, expected = MUTANTS[mutant]
    module, _, name = target.rpartition(".")
    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, name, make(getattr(mod, name)))
    with pytest.raises(AssertionError, match=expected):
        run_example("memory", [GUESS])
