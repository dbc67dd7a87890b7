"""How many Redis round trips one call makes with the cost guards on, and which ones.

Runs the ``on+redis`` configuration of ``guards.py`` as a library (``Gateway.messages``, the
built-in simulator, no HTTP) and counts what reaches Redis two ways: every counter-store
method call (by name), and every request written to a Redis connection (a pipeline or a
single command is one round trip), seen by wrapping ``redis.asyncio.Connection``'s
``send_packed_command`` and, where the source has it, the store's own RESP client's
``_Conn.request`` (scripts on a plain ``redis://`` URL, ``state/_resp.py``) for the run. A cross-check from the server: the ``INFO commandstats``
delta of the commands the store sends (other clients of the same Redis can add to it).

With ``--latency``, it also times calls through the library in interleaved rounds: the
guards on embedded state (SQLite file) and on Redis, in this one process, so the figure is
what Redis adds to a call over the embedded state without HTTP and process noise. Run it
against an older source with ``PYTHONPATH=/path/to/old/src`` for a before/after.

With ``--clients``, it times one small script round trip (EVALSHA) through redis-py's asyncio
client and through the store's own RESP client (``state/_resp.py``), on uvloop where
installed, in interleaved rounds: p50 wall and process CPU per call, one caller at a time and
50 at once. Needs a source with ``_resp``.

    .venv/bin/python bench/guards_roundtrips.py [--calls 200] [--latency --rounds 5] [--clients]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guards import GUARDS
from harness import REDIS_URL, redis_cleanup, unique

_STATS = ("evalsha", "eval", "hgetall", "hget", "get", "time", "hmget", "script|load")


def _commandstats() -> dict[str, int]:
    import redis

    with redis.Redis.from_url(REDIS_URL) as r:
        stats = r.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}


async def count(tmp: Path, calls: int, prefix: str) -> dict[str, Any]:
    import redis.asyncio.connection as rconn

    import bastion
    from bastion.config import load_config
    from bastion.state.redis import RedisCounterStore

    ops: Counter[str] = Counter()
    sends = [0]
    wrapped: dict[str, Any] = {}
    for name in dir(RedisCounterStore):
        fn = getattr(RedisCounterStore, name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(fn) or name == "close":
            continue

        def make(name: str, fn: Any) -> Any:
            async def counted(self: Any, *a: Any, **kw: Any) -> Any:
                ops[name] += 1
                return await fn(self, *a, **kw)

            return counted

        wrapped[name] = fn
        setattr(RedisCounterStore, name, make(name, fn))
    send = rconn.AbstractConnection.send_packed_command

    async def counted_send(self: Any, command: Any, check_health: bool = True) -> None:
        sends[0] += 1
        await send(self, command, check_health)

    rconn.AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]
    resp: Any
    try:  # the store's own RESP client (absent from sources before it)
        resp = importlib.import_module("bastion.state._resp")
    except ImportError:
        resp = None
    if resp is not None:
        request = resp._Conn.request

        def counted_request(self: Any, payload: bytes) -> Any:
            sends[0] += 1
            return request(self, payload)

        resp._Conn.request = counted_request
    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Where is my parcel?"}],
    }
    cfg = load_config(
        None,
        env={},
        overrides={
            "store": {"url": f"sqlite:///{tmp / 'b.db'}"},
            "observability": {"spill_path": str(tmp / "spill.jsonl")},
            "cost": GUARDS,
            "state": {"url": REDIS_URL, "prefix": prefix},
        },
    )
    try:
        async with bastion.Gateway(cfg) as gw:
            for _ in range(20):  # warm: connections, scripts, the kill-switch poll
                await gw.messages(body, user="bench-user-1")
            ops.clear()
            sends[0] = 0
            before = _commandstats()
            for _ in range(calls):
                await gw.messages(body, user="bench-user-1")
            after = _commandstats()
    finally:
        rconn.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
        if resp is not None:
            resp._Conn.request = request
        for name, fn in wrapped.items():
            setattr(RedisCounterStore, name, fn)
    server = {
        k.removeprefix("cmdstat_"): after.get(k, 0) - before.get(k, 0)
        for k in after
        if k.removeprefix("cmdstat_") in _STATS and after.get(k, 0) != before.get(k, 0)
    }
    return {"calls": calls, "store_ops": dict(ops), "sends": sends[0], "server": server}


async def latency(tmp: Path, calls: int, rounds: int, prefix: str) -> dict[str, list[float]]:
    """Per-call latency (us) of the guards on embedded and on Redis state, interleaved."""
    import time

    import bastion
    from bastion.config import load_config

    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Where is my parcel?"}],
    }
    states = {
        "embedded": {"url": f"sqlite:///{tmp / 'lat-state.db'}"},
        "redis": {"url": REDIS_URL, "prefix": prefix},
    }
    gws = {}
    for name, state in states.items():
        cfg = load_config(
            None,
            env={},
            overrides={
                "store": {"url": f"sqlite:///{tmp / f'lat-{name}.db'}"},
                "observability": {"spill_path": str(tmp / f"lat-{name}.jsonl")},
                "cost": GUARDS,
                "state": state,
            },
        )
        gws[name] = await bastion.Gateway(cfg).__aenter__()
    lat: dict[str, list[float]] = {name: [] for name in gws}
    try:
        for gw in gws.values():
            for _ in range(50):
                await gw.messages(body, user="bench-user-1")
        for _ in range(rounds):
            for name, gw in gws.items():
                for _ in range(calls):
                    t0 = time.perf_counter()
                    await gw.messages(body, user="bench-user-1")
                    lat[name].append((time.perf_counter() - t0) * 1e6)
    finally:
        for gw in gws.values():
            await gw.__aexit__(None, None, None)
    return lat


async def clients(calls: int, rounds: int, key: str) -> dict[str, dict[str, list[float]]]:
    """Per-call wall (us, p50 over calls) and CPU (us per call) of one EVALSHA through each
    client, sequential and 50 concurrent, interleaved rounds."""
    import time

    from redis.asyncio import Redis

    from bastion.state._resp import RespClient, resp_params

    text = "return ARGV[1]"
    rpy = Redis.from_url(REDIS_URL)
    script = rpy.register_script(text)
    params = resp_params(REDIS_URL)
    assert params is not None, "a plain redis:// URL is needed for the RESP client"
    resp = RespClient.from_params(params, 2.0)

    async def via_redis_py(i: int) -> Any:
        return await script(keys=[key], args=[i])

    async def via_resp(i: int) -> Any:
        return await resp.evalsha(script.sha, text, [key], [i])

    ways = {"redis-py": via_redis_py, "resp": via_resp}
    out: dict[str, dict[str, list[float]]] = {
        w: {"wall1": [], "cpu1": [], "cpu50": [], "rate50": []} for w in ways
    }
    try:
        for fn in ways.values():
            for i in range(100):
                assert int(await fn(i)) == i
        for _ in range(rounds):
            for name, fn in ways.items():
                c0 = time.process_time()
                for i in range(calls):
                    t0 = time.perf_counter()
                    await fn(i)
                    out[name]["wall1"].append((time.perf_counter() - t0) * 1e6)
                out[name]["cpu1"].append((time.process_time() - c0) / calls * 1e6)
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(max(1, calls // 50)):
                    await asyncio.gather(*(fn(i) for i in range(50)))
                n = max(1, calls // 50) * 50
                out[name]["cpu50"].append((time.process_time() - c0) / n * 1e6)
                out[name]["rate50"].append(n / (time.perf_counter() - t0))
    finally:
        await resp.close()
        await rpy.aclose()
    return out


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--latency", action="store_true", help="time embedded vs Redis too")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds for --latency")
    p.add_argument("--clients", action="store_true", help="only: redis-py vs the RESP client")
    args = p.parse_args(argv)
    if args.clients:
        key = unique("clients")
        res = _run_loop(clients(args.calls, args.rounds, key))
        print(f"one EVALSHA round trip, {args.rounds} interleaved rounds x {args.calls} calls:")
        for name, m in res.items():
            print(
                f"  {name:<9} 1 caller: p50 {statistics.median(m['wall1']):.0f} us, "
                f"cpu {min(m['cpu1']):.0f}-{max(m['cpu1']):.0f} us/call | 50 callers: "
                f"cpu {min(m['cpu50']):.0f}-{max(m['cpu50']):.0f} us/call, "
                f"{min(m['rate50']):.0f}-{max(m['rate50']):.0f} calls/s"
            )
        return 0
    prefix = unique("roundtrips")
    with tempfile.TemporaryDirectory(prefix="bastion-bench-rt-") as d:
        try:
            res = asyncio.run(count(Path(d), args.calls, prefix))
        finally:
            redis_cleanup(prefix)
    n = res["calls"]
    print(f"{n} unary calls, cost guards on, Redis state (library, built-in simulator)")
    print(f"round trips per call (requests written to Redis): {res['sends'] / n:.2f}")
    for name, c in sorted(res["store_ops"].items()):
        print(f"  store.{name:<16} {c / n:.2f} per call")
    cmds = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(res["server"].items()))
    print(f"server commandstats per call (shared server): {cmds}")
    if args.latency:
        prefix = unique("latency")
        with tempfile.TemporaryDirectory(prefix="bastion-bench-lat-") as d:
            try:
                lat = asyncio.run(latency(Path(d), args.calls, args.rounds, prefix))
            finally:
                redis_cleanup(prefix)
        p50 = {k: statistics.median(v) for k, v in lat.items()}
        print(f"library calls, {args.rounds} interleaved rounds x {args.calls}: p50 us", end="")
        print("".join(f"  {k} {v:.0f}" for k, v in p50.items()), end="")
        print(f"  redis - embedded {p50['redis'] - p50['embedded']:+.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
