"""The scale-out counter store: Redis shared by every replica, one Lua script per operation.

Key layout, all named by ``redis_key`` (``P`` is the prefix, ``bastion`` by default; ``{...}``
is the Redis Cluster hash tag: only what is between the braces picks the slot):

    P:{P}:cap:<cap key>     hash   settled, reserved, r:<reservation id> -> amount
    P:{P}:lease:<cap key>   zset   reservation id -> lease end (server ms)
    P:{P}:res:<id>          list   cap hash, lease zset, ttl ms per cap (for settle)
    P:{P}:tb:<key>          hash   tokens, ts (server ms)
    P:{P}:ctr:<key>         string the counter value
    P:{P}:flags:v / :m      hash   flag -> value / flag -> JSON meta
    P:{P}:br:<key>          hash   st, fl, ou, pu, ring e0..9 n0..9 f0..9
    P:idem:{<key>}          hash   fp, done, lu (lock until, server ms), body

Every key a call's admission or settle touches (caps, reservations, rate-limit buckets, token
counters, flags, breakers) shares the one tag ``{P}`` on purpose: a Lua script is atomic only
over keys of one slot, and a call must be checked and recorded against every cap (global,
feature, user), limit and switch in one step. Per-entity tags would not spread the load
anyway: the global cap is in every reservation, so every call touches its slot. Splitting
would need a two-phase reserve with rollback (several round trips, and a crash between the
phases leaks a hold until its lease ends). The price is a hot slot: on Redis Cluster one
master serves all of a deployment's admission traffic (two scripts per call, far below what
one node serves) and the cluster adds failover, not write throughput, for it. Idempotency
keys are touched only by their own one-key scripts, so each has its own tag and they spread
over the masters. Deployments with different prefixes land on different slots.

redis-py's retries are off: a script that ran but whose reply was lost would run twice
(``take``, ``incr`` and ``idem_begin`` are not idempotent), and the guarantees prefer a failed
call (``StateUnavailable``, fail closed) to a double count.
Every command goes through one outage mapping (``_outage``): an
unreachable, read-only or overloaded Redis, and a connection redis-py closed under the command
(its own ``AttributeError`` on the closed stream), fail the call closed the same way on one
Redis and on a Cluster.

On a plain ``redis://`` URL (host, port, db, credentials; no TLS, socket path or option) the
scripts, i.e. every call's admit and finish, go through the store's own RESP client
(``_resp``: one pipelined connection; 82-170 us of client CPU per script against
redis-py's 337-482 us in ``bench/guards_roundtrips.py --clients``);
it raises redis-py's exception classes, so ``_outage`` maps its failures the same way and it
never retries either (``NOSCRIPT`` aside: that script did not run). Plain commands and
pipelines stay on redis-py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    TimeoutError,
    TryAgainError,
)
from redis.maint_notifications import MaintNotificationsConfig

from bastion.errors import ConfigError, StateUnavailable
from bastion.state import _lua, _lua_batch, _redis_batch
from bastion.state._breaker import BUCKETS, retention
from bastion.state._resp import RespClient, resp_params
from bastion.state.base import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    Cap,
    IdemBegin,
    IdemOutcome,
    IncrResult,
    ReserveResult,
    TakeResult,
    Usage,
    check_reserve,
)
from bastion.state.plan import (
    AdmitOp,
    AdmitResult,
    FinishAnswer,
    FinishOp,
    check_admit,
    check_finish,
)

if TYPE_CHECKING:  # the cluster client is imported only for a redis+cluster:// URL
    from redis.asyncio.cluster import RedisCluster

__all__ = ["RedisCounterStore", "redis_key"]

# Errors meaning "Redis cannot serve us right now"; anything else is a bug and propagates.
_UNAVAILABLE: Final = (
    ConnectionError,  # includes refused, reset, auth, loading, pool exhausted
    TimeoutError,
    OutOfMemoryError,
    ReadOnlyError,  # a replica after failover
    TryAgainError,
    OSError,
)


def _torn_down(exc: AttributeError) -> bool:
    """Whether ``exc`` is redis-py's connection code touching a stream it has already closed
    (``None.writelines`` on ``_writer``, a parser's ``None`` stream), not a bug elsewhere.

    redis-py closes a connection under a command in flight: every connection to a failed
    Cluster node at once, and on one Redis a disconnect (an error, a pool reset, ``close``)
    racing a command on that connection. Only an ``AttributeError`` on ``None`` raised in
    redis-py's own asyncio connection or parser code counts; any other is a bug and
    propagates.
    """
    if exc.obj is not None:
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename.replace("\\", "/") if tb is not None else ""
    return "/redis/asyncio/" in where or "/redis/_parsers/" in where


@contextmanager
def _outage() -> Iterator[None]:
    """The store's one outage mapping, for one Redis and a Cluster alike: Redis cannot
    serve (``_UNAVAILABLE``), or redis-py closed the connection under the command (it may
    have run, so it is never retried), is ``StateUnavailable`` and the call fails closed."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StateUnavailable("the counter store is unreachable") from exc
    except AttributeError as exc:
        if not _torn_down(exc):
            raise
        raise StateUnavailable("the counter store connection was closed under a command") from exc


# Kinds of key a call's admission and settle scripts touch together: one tag, one slot.
_CALL_KINDS: Final = frozenset({"cap", "lease", "res", "tb", "ctr", "flags", "br"})


def redis_key(prefix: str, kind: str, name: str) -> str:
    """The one place the store names a Redis key (see the module docstring for the layout)."""
    if kind in _CALL_KINDS:
        return f"{prefix}:{{{prefix}}}:{kind}:{name}"
    if kind == "idem":
        return f"{prefix}:idem:{{{name}}}"
    raise ValueError(f"unknown redis key kind {kind!r}")


def _ms(seconds: float) -> int:
    """Redis expiries are whole milliseconds; never round a positive duration down to 0."""
    return max(1, math.ceil(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCounterStore:
    """Counters shared by replicas; connections are opened lazily and pooled."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bastion",
        max_connections: int = 64,
        timeout_seconds: float = 2.0,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigError(f"redis key prefix {prefix!r} must be non-empty, without braces")
        self._redis: Redis | RedisCluster
        self._resp: RespClient | None = None  # the scripts' client on a plain redis:// URL
        self._cluster = url.partition("://")[0].lower().endswith("+cluster")
        if self._cluster:  # redis+cluster://host:port,host:port (see _redis_cluster)
            from bastion.state._redis_cluster import open_cluster

            self._redis = open_cluster(
                url, max_connections=max_connections, timeout_seconds=timeout_seconds
            )
        else:
            try:
                pool = BlockingConnectionPool.from_url(
                    url,
                    max_connections=max_connections,
                    timeout=timeout_seconds,
                    socket_timeout=timeout_seconds,
                    socket_connect_timeout=timeout_seconds,
                    retry=Retry(NoBackoff(), 0),
                    # with maintenance notifications on (redis-py's default on RESP3) the pool
                    # skips its check that an idle connection is still open: after a Redis
                    # restart each dead pooled connection failed one call with a 503
                    maint_notifications_config=MaintNotificationsConfig(enabled=False),
                )
                params = resp_params(url)
            except ValueError as exc:
                raise ConfigError(f"bad redis URL {url!r}: {exc}") from exc
            self._redis = Redis.from_pool(pool)
            if params is not None:
                self._resp = RespClient.from_params(params, timeout_seconds)
        self._p = prefix
        self._url = url
        script = self._redis.register_script
        self._reserve_s = script(_lua.RESERVE)
        self._settle_s = script(_lua.SETTLE)
        self._usage_s = script(_lua.USAGE)
        self._bucket_s = script(_lua.BUCKET)
        self._incr_s = script(_lua.INCR)
        self._breaker_s = script(_lua.BREAKER)
        self._idem_begin_s = script(_lua.IDEM_BEGIN)
        self._idem_complete_s = script(_lua.IDEM_COMPLETE)
        self._idem_abandon_s = script(_lua.IDEM_ABANDON)
        self._admit_s = script(_lua_batch.ADMIT)
        self._finish_s = script(_lua_batch.FINISH)

    def _key(self, kind: str, name: str) -> str:
        return redis_key(self._p, kind, name)

    async def _run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script (EVALSHA; loads it once per server), mapping outages. On a plain
        ``redis://`` URL through the store's own RESP client (``_resp``: a fifth of
        redis-py's client CPU per command), else through redis-py."""
        with _outage():
            if self._resp is not None:
                return await self._resp.evalsha(script.sha, script.script, keys, args)
            return await script(keys=keys, args=args)

    def _where(self) -> str:
        """The URL without credentials, for error messages."""
        scheme, _, rest = self._url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    # -- budgets -------------------------------------------------------------------------------

    def _cap_keys(self, cap_key: str) -> tuple[str, str]:
        return self._key("cap", cap_key), self._key("lease", cap_key)

    def _res_key(self, reservation_id: str) -> str:
        return self._key("res", reservation_id)

    async def reserve(
        self, reservation_id: str, caps: Sequence[Cap], amount: float, lease_seconds: float
    ) -> ReserveResult:
        check_reserve(caps, amount, lease_seconds)
        keys: list[str] = []
        args: list[Any] = [reservation_id, repr(float(amount)), _ms(lease_seconds)]
        for cap in caps:
            keys.extend(self._cap_keys(cap.key))
            args.extend((repr(float(cap.limit)), _ms(cap.ttl_seconds)))
        keys.append(self._res_key(reservation_id))
        reply = await self._run(self._reserve_s, keys, args)
        if int(reply[0]) == 1:
            return ReserveResult(True)
        cap = caps[int(reply[1]) - 1]
        return ReserveResult(False, cap.key, cap.limit, float(reply[2]), float(reply[3]))

    async def settle(self, reservation_id: str, actual: float) -> bool:
        if not (actual >= 0 and math.isfinite(actual)):
            raise ValueError(f"actual must be a non-negative finite number, got {actual!r}")
        args = [reservation_id, repr(float(actual))]
        return bool(await self._run(self._settle_s, [self._res_key(reservation_id)], args))

    async def release(self, reservation_id: str) -> bool:
        args = [reservation_id, ""]
        return bool(await self._run(self._settle_s, [self._res_key(reservation_id)], args))

    async def usage(self, cap_key: str) -> Usage:
        settled, reserved = await self._run(self._usage_s, self._cap_keys(cap_key), [])
        return Usage(float(settled), float(reserved))

    # -- token buckets -------------------------------------------------------------------------

    async def take(
        self, key: str, rate_per_second: float, burst: float, cost: float = 1.0
    ) -> TakeResult:
        allowed, tokens = await self._bucket(key, rate_per_second, burst, cost, "take")
        if allowed:
            return TakeResult(True, 0.0, tokens)
        wait = math.inf if cost > burst else (cost - tokens) / rate_per_second
        return TakeResult(False, wait, tokens)

    async def charge(self, key: str, rate_per_second: float, burst: float, amount: float) -> float:
        return (await self._bucket(key, rate_per_second, burst, amount, "charge"))[1]

    async def _bucket(
        self, key: str, rate: float, burst: float, amount: float, mode: str
    ) -> tuple[bool, float]:
        args = [repr(rate / 1000.0), repr(float(burst)), repr(float(amount)), mode]
        allowed, tokens = await self._run(self._bucket_s, [self._key("tb", key)], args)
        return bool(int(allowed)), float(tokens)

    # -- windowed counters ---------------------------------------------------------------------

    async def incr(self, key: str, amount: float, ttl_seconds: float) -> float:
        return (await self._incr(key, amount, "", ttl_seconds)).value

    async def incr_if_below(
        self, key: str, amount: float, limit: float, ttl_seconds: float
    ) -> IncrResult:
        return await self._incr(key, amount, repr(float(limit)), ttl_seconds)

    async def _incr(self, key: str, amount: float, limit: str, ttl: float) -> IncrResult:
        args = [repr(float(amount)), limit, _ms(ttl)]
        ok, value = await self._run(self._incr_s, [self._key("ctr", key)], args)
        return IncrResult(bool(int(ok)), float(value))

    async def get(self, key: str) -> float:
        with _outage():
            value = await self._redis.get(self._key("ctr", key))
        return 0.0 if value is None else float(value)

    # -- flags ---------------------------------------------------------------------------------

    async def set_flag(
        self, key: str, value: str | None, meta: Mapping[str, Any] | None = None
    ) -> None:
        values, metas = self._key("flags", "v"), self._key("flags", "m")
        with _outage():
            async with self._redis.pipeline(transaction=True) as pipe:
                if value is None:
                    pipe.hdel(values, key)
                else:
                    pipe.hset(values, key, value)
                pipe.hset(metas, key, orjson.dumps(dict(meta or {})))
                await pipe.execute()

    async def get_flags(self, prefix: str = "") -> dict[str, str]:
        with _outage():
            raw = await self._redis.hgetall(self._key("flags", "v"))
        flags = {_text(k): _text(v) for k, v in raw.items()}
        return {k: v for k, v in flags.items() if k.startswith(prefix)}

    async def flag_meta(self, key: str) -> dict[str, Any] | None:
        with _outage():
            raw = await self._redis.hget(self._key("flags", "m"), key)
        if raw is None:
            return None
        meta: dict[str, Any] = orjson.loads(raw)
        return meta

    # -- circuit breakers ----------------------------------------------------------------------

    def _breaker_args(self, op: str, policy: BreakerPolicy) -> list[Any]:
        return [
            op,
            policy.failure_threshold,
            repr(float(policy.error_rate)),
            repr(policy.window_seconds * 1000.0),
            policy.min_calls,
            repr(policy.cooldown_seconds * 1000.0),
            _ms(retention(policy)),
            BUCKETS,
        ]

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        args = self._breaker_args("allow", policy)
        allowed, state, probe, wait = await self._run(self._breaker_s, [self._key("br", key)], args)
        return BreakerDecision(
            bool(int(allowed)), BreakerState(state.decode()), bool(int(probe)), float(wait) / 1000
        )

    async def breaker_peek(self, key: str) -> BreakerDecision:
        k = self._key("br", key)
        with _outage():
            if self._cluster:  # TIME has no key, so no pipeline: ask the breaker's own node
                assert not isinstance(self._redis, Redis)
                st, ou, pu = await self._redis.hmget(k, "st", "ou", "pu")
                node = self._redis.get_node_from_key(k)
                secs, micros = await self._redis.time(target_nodes=node)
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.time()
                    pipe.hmget(k, "st", "ou", "pu")
                    (secs, micros), (st, ou, pu) = await pipe.execute()
        state = BreakerState(_text(st)) if st is not None else BreakerState.CLOSED
        if state is BreakerState.CLOSED:
            return BreakerDecision(True, state)
        now_ms = int(secs) * 1000 + int(micros) / 1000
        raw = ou if state is BreakerState.OPEN else pu
        until_ms = float(_text(raw)) if raw is not None else now_ms
        wait = max(0.0, until_ms - now_ms) / 1000
        return BreakerDecision(wait == 0.0, state, retry_after_seconds=wait)

    async def breaker_record(self, key: str, ok: bool, policy: BreakerPolicy) -> BreakerState:
        args = self._breaker_args("ok" if ok else "fail", policy)
        state = await self._run(self._breaker_s, [self._key("br", key)], args)
        return BreakerState(state.decode())

    # -- idempotency ---------------------------------------------------------------------------

    async def idem_begin(
        self, key: str, fingerprint: str, ttl_seconds: float, lock_seconds: float, owner: str = ""
    ) -> IdemBegin:
        args = [fingerprint, _ms(ttl_seconds), _ms(lock_seconds), owner]
        reply = await self._run(self._idem_begin_s, [self._key("idem", key)], args)
        outcome = IdemOutcome(reply[0].decode())
        if outcome is IdemOutcome.DONE:
            return IdemBegin(outcome, bytes(reply[1]))
        if outcome is IdemOutcome.IN_PROGRESS:
            return IdemBegin(outcome, retry_after_seconds=float(reply[1]) / 1000)
        return IdemBegin(outcome)

    async def idem_complete(
        self, key: str, fingerprint: str, response: bytes, ttl_seconds: float
    ) -> bool:
        args = [fingerprint, bytes(response), _ms(ttl_seconds)]
        return bool(await self._run(self._idem_complete_s, [self._key("idem", key)], args))

    async def idem_abandon(self, key: str, owner: str | None = None) -> bool:
        args = [] if owner is None else [owner]
        return bool(await self._run(self._idem_abandon_s, [self._key("idem", key)], args))

    # -- batches: one script, so one round trip, per phase of a call --------------------------

    async def admit(self, ops: Sequence[AdmitOp]) -> AdmitResult:
        check_admit(ops)
        if not ops:
            return AdmitResult(None, ())
        keys, args = _redis_batch.admit_call(ops, self._key)
        return _redis_batch.admit_result(ops, await self._run(self._admit_s, keys, args))

    async def finish(self, ops: Sequence[FinishOp]) -> tuple[FinishAnswer, ...]:
        check_finish(ops)
        if not ops:
            return ()
        keys, args = _redis_batch.finish_call(ops, self._key)
        return _redis_batch.finish_result(ops, await self._run(self._finish_s, keys, args))

    # -- lifecycle -----------------------------------------------------------------------------

    async def ping(self) -> None:
        with _outage():
            if self._cluster:  # the master of the calls' slot must answer, not just any node
                await self._redis.exists(self._key("flags", "v"))
            else:
                await self._redis.ping()
                if self._resp is not None:  # the scripts' connection too
                    await self._resp.execute("PING")

    async def close(self) -> None:
        try:
            if self._resp is not None:
                await self._resp.close()
        finally:
            await self._redis.aclose()
