"""Recording: what one call record costs a call, and whether the recorder holds 2,000 records/s.

(a) On the request path. The config cannot turn recording off, so this script also acts as a
    launcher for two other builds of the gateway: started as ``recording.py
    _serve_without_record_guard serve ...`` it sets ``RecordGuard.active = False`` (the
    gateway drops inactive guards when it builds its pipeline), and as ``recording.py
    _serve_without_record_writes serve ...`` it keeps the guard and the recorder but makes
    the record store's ``insert_calls``/``insert_ledger`` no-ops; either then runs the
    ordinary ``bastion`` command, and nothing in ``src/`` changes. One simulator and three
    gateways (``record``: stock; ``nowrite``: records built and queued, never written;
    ``norecord``: no record guard) are measured in alternating rounds at concurrency 1,
    0 ms upstream. The added p50 is record - norecord (target <= 0.3 ms); nowrite -
    norecord is the request path's part (guard + queue), record - nowrite the background
    writer's (which shares the gateway's process and event loop). The rows each gateway
    wrote are counted afterwards, to prove which one recorded.
    In process, the same costs one at a time: ``RecordGuard.after`` (building the record and
    the ledger entry, scrubbing and truncating the prompt and answer, submitting), the same
    without the PII scrub, ``Recorder.submit`` alone, and ``submit`` when the queue is full
    (the record goes to the spill file).

(b) Throughput. The ``Recorder`` driven directly from this process, open loop, at 2,000 records
    (each a call record plus a ledger entry) per second for 10 s into SQLite and into
    PostgreSQL (a fresh schema, dropped afterwards), default queue (20,000) and batches (500).
    Reported: records written per second during the run, the deepest the queue got, event-loop
    lag (how late a 10 ms timer fired: what a request on the same loop would wait), RSS
    growth, spills, drain time at the end, and rows counted in the database.

(b') Scale (issue 16). 5,000 records/s for 30 s (at most 60 s) into PostgreSQL, whose call
    table is partitioned by day (migration 6) and written by COPY: the same figures, plus RSS
    at the half-way point against the end (memory must stay flat once the queue is in steady
    state) and the rows counted in the database.

(c) Overload. 20,000 records/s offered for 3 s with ``max_queue`` 2,000: the queue must stay
    bounded and the overflow go to the spill file; after a replay, every record must be in
    the database (rows counted) and none dropped.

    .venv/bin/python bench/recording.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from harness import (
    fmt_ms,
    interleaved,
    log,
    meta,
    meta_line,
    pg_schema,
    render,
    run_async,
    start_gateway,
    start_sim,
    stopping,
)
from overhead import APIS, MODES, gateway_config, target

SERVE_FLAG = "_serve_without_record_guard"
NOWRITE_FLAG = "_serve_without_record_writes"

PROMPT = (
    "You are a support assistant for a small online shop. Answer in two short sentences. "
    "Question: my parcel says delivered but I cannot find it; what should I do next?"
)
ANSWER = (
    "Check with your neighbours and around the delivery address first, then contact the "
    "carrier with your tracking number. If it still cannot be found within 48 hours, reply "
    "here and we will open a claim."
)


def self_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


# -- records ---------------------------------------------------------------------------------


def make_record(i: int, run: str) -> tuple[Any, Any]:
    """A call record and ledger entry shaped like the gateway's (same fields, similar sizes)."""
    from bastion.store import CallRecord, LedgerEntry

    rid = f"req_{run}_{i:08d}"
    ts = time.time()
    rec = CallRecord(
        request_id=rid,
        trace_id=uuid.uuid4().hex,
        ts=ts,
        api_format="anthropic",
        requested_model="claude-sonnet-5",
        key_id="key_0123456789ab",
        user_id=f"user-{i % 100}",
        feature="support",
        served_model="claude-sonnet-5",
        deployment="sim-anthropic/claude-sonnet-5#0",
        provider="sim-anthropic",
        stream=bool(i % 2),
        status=200,
        input_text=PROMPT,
        output_text=ANSWER,
        input_tokens=52,
        output_tokens=32,
        cost_usd=0.000424,
        latency_ms=41.7,
        ttft_ms=3.2,
        attempts=1,
        flags={"reserved_usd": 0.002664, "pii_output": "flag"},
        stages={"auth": 0.02, "guards": 0.11, "upstream": 40.9},
    )
    led = LedgerEntry(
        request_id=rid,
        ts=ts,
        day=time.strftime("%Y-%m-%d", time.gmtime(ts)),
        model="claude-sonnet-5",
        key_id="key_0123456789ab",
        user_id=f"user-{i % 100}",
        feature="support",
        input_tokens=52,
        output_tokens=32,
        cost_usd=0.000424,
    )
    return rec, led


async def count_rows(url: str) -> tuple[int, int]:
    """(calls, ledger) rows in the store behind ``url``."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :].partition("?")[0]
        with contextlib.closing(sqlite3.connect(path)) as db:
            return (
                db.execute("SELECT count(*) FROM calls").fetchone()[0],
                db.execute("SELECT count(*) FROM ledger").fetchone()[0],
            )
    import asyncpg

    base, _, query = url.partition("?")
    schema = query.partition("search_path=")[2].partition("&")[0]
    conn = await asyncpg.connect(base, timeout=5, server_settings={"search_path": schema})
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM calls"),
            await conn.fetchval("SELECT count(*) FROM ledger"),
        )
    finally:
        await conn.close()


# -- (a) on the request path -----------------------------------------------------------------


async def part_a(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    me = (sys.executable, str(Path(__file__).resolve()))
    cells = []
    with stopping() as started:
        sim = start_sim(tmp, started)
        cfg = gateway_config(tmp, sim.port, [0])
        for m in cfg["models"].values():
            for d in m["deployments"]:
                d["headers"]["x-sim-chunk-ms"] = "0"
        for key in ("store", "state", "observability"):
            cfg.pop(key, None)  # start_gateway gives each process its own files
        gws = {
            "record": start_gateway("record", cfg, tmp, started),
            "nowrite": start_gateway("nowrite", cfg, tmp, started, launcher=(*me, NOWRITE_FLAG)),
            "norecord": start_gateway("norecord", cfg, tmp, started, launcher=(*me, SERVE_FLAG)),
            # a second, identical no-record gateway: norecord' - norecord is the A/A noise floor
            "norecord'": start_gateway("norecord2", cfg, tmp, started, launcher=(*me, SERVE_FLAG)),
        }
        for s in started:
            s.wait_ready()
        log("(a) pids: " + ", ".join(f"{s.name} {s.pid}" for s in started))
        for api in APIS:
            for mode in MODES:
                sides = [
                    (
                        name,
                        target(api, mode, 0, base=f"http://127.0.0.1:{gw.port}", key=key),
                        gw.pid,
                    )
                    for name, (gw, key) in gws.items()
                ]
                res = await interleaved(
                    sides,
                    1,
                    rounds=args.rounds,
                    requests=args.requests,
                    seconds=args.seconds,
                    warmup=50,
                )
                cells.append({"api": api, "mode": mode, "results": res})
                log(
                    f"(a) {api} {mode}: "
                    + ", ".join(f"{n} p50 {fmt_ms(r.p(0.5))}" for n, r in res.items())
                )
    rows = {
        name: await count_rows(f"sqlite:///{tmp / gw.name / 'bastion.db'}")
        for name, (gw, _) in gws.items()
    }
    return {"cells": cells, "rows": rows}


def in_process_costs(tmp: Path, n: int) -> list[list[str]]:
    """RecordGuard.after, with and without the scrub, submit, submit into a full queue, the
    writer's work per record (sanitise + insert into SQLite in batches of 500), and one access
    line as ``serve`` writes it (the PII log filter on its handler)."""
    import logging

    from bastion.call import Call, Principal, Usage
    from bastion.clock import DayClock
    from bastion.observability.access import AccessGuard, AccessLog
    from bastion.observability.recorder import Recorder
    from bastion.observability.recording import RecordGuard
    from bastion.providers.base import Format
    from bastion.safety.pii import Scrubber, ScrubberConfig
    from bastion.safety.pii.guard import PiiLogFilter
    from bastion.store import open_store

    store = open_store(f"sqlite:///{tmp / 'inproc.db'}")  # written only by the writer row
    scrubber = Scrubber(ScrubberConfig())
    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    rows = []

    def call(i: int) -> Call:
        c = Call(
            request_id=f"req_{i}",
            trace_id=uuid.uuid4().hex,
            span_id="00f067aa0ba902b7",
            client_format=Format.ANTHROPIC,
            principal=Principal(key_id="key_0123456789ab", name="bench"),
            body=body,
            requested_model="claude-sonnet-5",
            stream=True,
            user_id="user-1",
            served_model="claude-sonnet-5",
            deployment="sim-anthropic/claude-sonnet-5#0",
            provider="sim-anthropic",
            status=200,
            output_text=[w + " " for w in ANSWER.split()],
            usage=Usage(52, 32),
            cost_usd=0.000424,
            flags={"reserved_usd": 0.002664},
            stages={"auth": 0.02, "guards": 0.11},
        )
        c.ended = c.started + 0.04
        return c

    def row(label: str, lat: list[float], cpu0: float) -> None:
        count = len(lat)
        cpu = (time.process_time() - cpu0) * 1e6 / count
        lat.sort()
        rows.append(
            [
                label,
                str(count),
                f"{lat[count // 2]:.1f}",
                f"{lat[int(count * 0.99)]:.1f}",
                f"{cpu:.1f}",
            ]
        )

    def timed(label: str, fn: Any, count: int) -> None:
        lat = []
        cpu0 = time.process_time()
        for i in range(count):
            t0 = time.perf_counter_ns()
            fn(i)
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
        row(label, lat, cpu0)

    async def atimed(label: str, g: Any, calls: list[Call]) -> None:
        lat = []
        cpu0 = time.process_time()
        for c in calls:
            t0 = time.perf_counter_ns()
            await g.after(c, None)
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
        row(label, lat, cpu0)

    async def go() -> None:
        rec = Recorder(store, tmp / "inproc-spill.jsonl", max_queue=10 * n)
        guard = RecordGuard(rec, DayClock("UTC"), scrub=scrubber.redact)
        plain = RecordGuard(rec, DayClock("UTC"))
        calls = [call(i) for i in range(n)]

        await atimed("RecordGuard.after (with PII scrub, as the gateway runs it)", guard, calls)
        await atimed("RecordGuard.after without the scrub", plain, calls)
        recs = [make_record(i, "inproc") for i in range(n)]
        fresh = Recorder(store, tmp / "inproc-spill.jsonl", max_queue=10 * n)
        timed("Recorder.submit (queue not full)", lambda i: fresh.submit(*recs[i]), n)
        bare = Recorder(store, tmp / "inproc-spill.jsonl", max_queue=10 * n, journal=False)
        timed("Recorder.submit without the crash journal", lambda i: bare.submit(*recs[i]), n)
        full = Recorder(store, tmp / "inproc-spill.jsonl", max_queue=1)
        full.submit(*recs[0])
        k = min(n, 500)
        timed(
            "Recorder.submit, queue full (-> spill file, fsync)", lambda i: full.submit(*recs[i]), k
        )
        (tmp / "inproc-spill.jsonl").unlink(missing_ok=True)

        # the writer: what a record costs once it is queued (same process, aiosqlite thread)
        await store.migrate()
        writer = Recorder(store, tmp / "inproc-spill.jsonl", max_queue=10 * n, journal=False)
        for i in range(n):
            writer.submit(*make_record(i, "writer"))
        cpu0 = time.process_time()
        t0 = time.perf_counter_ns()
        await writer.flush()
        per = (time.perf_counter_ns() - t0) / 1000.0 / n
        row(
            "Recorder writer per record (sanitise + SQLite insert, batches of 500)", [per] * n, cpu0
        )

        # an access line, the serving process's way: PII filter on the access handler
        logger = logging.getLogger("bastion.access.bench")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
        handler.addFilter(PiiLogFilter(scrubber))
        logger.addHandler(handler)
        try:
            access_log = AccessLog("text", logger, scrub=scrubber.redact)
        except TypeError:  # a source tree from before the access log scrubbed values itself
            access_log = AccessLog("text", logger)
        await atimed("AccessGuard.after (text line, PII filter)", AccessGuard(access_log), calls)
        logger.removeHandler(handler)
        handler.close()
        await store.close()

    run_async(go())
    return rows


# -- (b), (c) throughput and overload --------------------------------------------------------


async def drive_recorder(
    url: str,
    spill: Path,
    *,
    rate: float,
    seconds: float,
    max_queue: int,
    run: str,
) -> dict[str, Any]:
    """Offer ``rate`` records/s for ``seconds`` (open loop, 10 ms ticks), then drain and count."""
    from bastion.observability.recorder import Recorder
    from bastion.store import open_store

    store: Any = NullStore() if url == "null://" else open_store(url)
    await store.migrate()
    rec = Recorder(store, spill, max_queue=max_queue)
    rss0 = self_rss_mb()
    cpu0 = time.process_time()
    rec.start()
    submitted = 0
    max_depth = 0
    rss_max = rss0
    rss_mid: float | None = None
    lags: list[float] = []
    target_total = int(rate * seconds)
    per_tick_cap = max(1, int(rate * 0.05))  # never more than 50 ms worth in one tick
    start = time.perf_counter()
    hard_stop = start + seconds + 10.0
    busy_max = 0.0
    next_tick = start
    while submitted < target_total and time.perf_counter() < hard_stop:
        now = time.perf_counter()
        due = min(int((now - start) * rate) - submitted, per_tick_cap, target_total - submitted)
        for _ in range(max(due, 0)):
            rec.submit(*make_record(submitted, run))
            submitted += 1
        busy_max = max(busy_max, time.perf_counter() - now)
        max_depth = max(max_depth, rec.pending)
        if submitted % 1000 < max(due, 1):
            rss_max = max(rss_max, self_rss_mb())
        if rss_mid is None and submitted >= target_total // 2:
            rss_mid = self_rss_mb()
        next_tick += 0.01
        delay = max(0.0, next_tick - time.perf_counter())
        t0 = time.perf_counter()
        await asyncio.sleep(delay)
        lags.append((time.perf_counter() - t0 - delay) * 1000.0)
    offered_s = time.perf_counter() - start
    written_during = rec.stats.written
    rss_end_load = self_rss_mb()
    rss_max = max(rss_max, rss_end_load)
    t_drain = time.perf_counter()
    await rec.aclose()
    replays = 0
    for _ in range(20):  # whatever is still in the spill file goes in now (bounded)
        if not (spill.exists() or spill.with_name(spill.name + ".replay").exists()):
            break
        replays += await rec.replay()
    drain_s = time.perf_counter() - t_drain
    cpu_s = time.process_time() - cpu0
    await store.close()
    calls, ledger = store.rows if isinstance(store, NullStore) else await count_rows(url)
    lags.sort()
    return {
        "submitted": submitted,
        "offered_seconds": offered_s,
        "offered_rate": submitted / offered_s if offered_s else 0.0,
        "written_during": written_during,
        "write_rate_during": written_during / offered_s if offered_s else 0.0,
        "max_queue_depth": max_depth,
        "max_queue": max_queue,
        "loop_lag_p50_ms": lags[len(lags) // 2] if lags else None,
        "loop_lag_p99_ms": lags[int(len(lags) * 0.99)] if lags else None,
        "loop_lag_max_ms": lags[-1] if lags else None,
        "producer_tick_max_ms": busy_max * 1000.0,
        "rss_start_mb": rss0,
        "rss_max_mb": rss_max,
        "rss_end_mb": rss_end_load,
        "rss_mid_mb": rss_end_load if rss_mid is None else rss_mid,
        "spilled": rec.stats.spilled,
        "replayed": rec.stats.replayed,
        "dropped": rec.stats.dropped,
        "store_errors": rec.stats.store_errors,
        "drain_seconds": drain_s,
        "cpu_us_per_record": cpu_s * 1e6 / submitted if submitted else None,
        "rows_calls": calls,
        "rows_ledger": ledger,
    }


class NullStore:
    """A record store that keeps nothing (counts rows): the recorder's own cost, without a database."""

    def __init__(self) -> None:
        self.rows = (0, 0)

    async def migrate(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def insert_calls(self, records: Sequence[Any]) -> int:
        self.rows = (self.rows[0] + len(records), self.rows[1])
        return len(records)

    async def insert_ledger(self, entries: Sequence[Any]) -> int:
        self.rows = (self.rows[0], self.rows[1] + len(entries))
        return len(entries)


async def drop_versus_delete(pg_url: str) -> dict[str, float]:
    """Retention of the run's rows two ways: DELETE from an unpartitioned copy of the table
    (with the same indexes) against the store dropping the day partitions that hold them."""
    import asyncpg

    from bastion.store import open_store

    base, _, query = pg_url.partition("?")
    schema = query.partition("search_path=")[2]
    cutoff = (time.time() // 86400 + 1) * 86400  # next midnight UTC: every row of the run
    conn = await asyncpg.connect(base, server_settings={"search_path": schema})
    try:
        await conn.execute("CREATE TABLE calls_flat (LIKE calls INCLUDING DEFAULTS)")
        await conn.execute("INSERT INTO calls_flat SELECT * FROM calls")
        await conn.execute("ALTER TABLE calls_flat ADD PRIMARY KEY (request_id, ts)")
        await conn.execute("CREATE INDEX ON calls_flat (trace_id)")
        await conn.execute("CREATE INDEX ON calls_flat (ts)")
        await conn.execute("VACUUM ANALYZE calls_flat")
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        t0 = time.perf_counter()
        status = await conn.execute("DELETE FROM calls_flat WHERE ts < $1", cutoff)
        delete_s = time.perf_counter() - t0
        wal = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8"
        delete_wal = await conn.fetchval(wal, lsn)  # other sessions' WAL too: an upper bound
        await conn.execute("DROP TABLE calls_flat")
        store = open_store(pg_url)
        try:
            await store.ping()
            lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            t0 = time.perf_counter()
            dropped = await store.delete_calls_before(cutoff)
            drop_s = time.perf_counter() - t0
            drop_wal = await conn.fetchval(wal, lsn)
        finally:
            await store.close()
    finally:
        await conn.close()
    return {
        "rows_deleted": float(status.rsplit(" ", 1)[-1]),
        "delete_seconds": delete_s,
        "rows_dropped": float(dropped),
        "drop_seconds": drop_s,
        "delete_wal_mb": delete_wal / 1e6,
        "drop_wal_mb": drop_wal / 1e6,
    }


async def part_bc(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    out = []
    async with pg_schema() as pg_url:
        stores = {
            "none (null)": "null://",
            "sqlite": f"sqlite:///{tmp / 'records.db'}",
            "postgresql": pg_url,
        }
        for kind, rate, seconds, max_queue in (
            ("sustained", args.rate, args.seconds_b, 20_000),
            ("scale", args.scale_rate, min(args.seconds_scale, 60.0), 20_000),
            ("overload", args.overload_rate, args.seconds_c, 2_000),
        ):
            if args.only == "scale" and kind != "scale":
                continue
            for backend, url in stores.items():
                if kind == "overload" and url == "null://":
                    continue  # a store that never falls behind cannot be overloaded
                if kind == "scale" and backend != "postgresql":
                    continue  # the partitioned call table is PostgreSQL's
                if backend == "sqlite":
                    url = f"sqlite:///{tmp / f'records-{kind}.db'}"
                part = {"sustained": "b", "scale": "b'"}.get(kind, "c")
                log(f"({part}) {kind} {backend}: {rate:.0f}/s for {seconds:g} s")
                r = await drive_recorder(
                    url,
                    tmp / f"spill-{kind}-{backend}.jsonl",
                    rate=rate,
                    seconds=seconds,
                    max_queue=max_queue,
                    run=f"{kind}{backend}{os.getpid()}",
                )
                if kind == "scale":
                    r["retention"] = await drop_versus_delete(pg_url)
                out.append({"kind": kind, "backend": backend, "rate": rate, **r})
                if backend == "postgresql":
                    # empty the tables between runs so each count is this run's own
                    import asyncpg

                    base, _, query = pg_url.partition("?")
                    schema = query.partition("search_path=")[2]
                    conn = await asyncpg.connect(base, server_settings={"search_path": schema})
                    try:
                        await conn.execute("TRUNCATE calls, ledger")
                    finally:
                        await conn.close()
    return out


# -- report ----------------------------------------------------------------------------------


def report(
    a: dict[str, Any], costs: list[list[str]], bc: list[dict[str, Any]], m: dict[str, Any]
) -> str:
    lines = [meta_line("Bastion recording", m), ""]
    rows = []
    worst: tuple[float, str] | None = None
    for c in a["cells"]:
        r, q, n, n2 = (c["results"][k] for k in ("record", "nowrite", "norecord", "norecord'"))

        def d(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        added = d(r.p(0.5), n.p(0.5))
        where = f"{c['api']} {c['mode']}"
        if added is not None and (worst is None or added > worst[0]):
            worst = (added, where)
        rows.append(
            [
                c["api"],
                c["mode"],
                str(r.samples.done),
                f"{fmt_ms(n.p(0.5))}/{fmt_ms(n.p(0.99))}",
                f"{fmt_ms(q.p(0.5))}/{fmt_ms(q.p(0.99))}",
                f"{fmt_ms(r.p(0.5))}/{fmt_ms(r.p(0.99))}",
                fmt_ms(added),
                fmt_ms(d(r.p(0.99), n.p(0.99))),
                fmt_ms(d(q.p(0.5), n.p(0.5))),
                fmt_ms(d(r.p(0.5), q.p(0.5))),
                fmt_ms(d(n2.p(0.5), n.p(0.5))),
                f"{fmt_ms(n.cpu_ms_per_req)}/{fmt_ms(q.cpu_ms_per_req)}/{fmt_ms(r.cpu_ms_per_req)}",
                f"{n.samples.errors}/{q.samples.errors}/{r.samples.errors}",
                "-" if added is None else ("PASS" if added <= 0.3 else "MISS"),
            ]
        )
    if a["cells"]:
        lines += [
            "(a) recording on the request path: stock gateway (record), the same with the store's inserts",
            "    made no-ops (nowrite: records built and queued, never written) and with the record guard",
            "    removed (norecord); concurrency 1, 0 ms upstream; ms to the last body byte; added =",
            "    record - norecord; guard+queue = nowrite - norecord; writer = record - nowrite; A/A =",
            "    norecord' - norecord, two identical no-record gateways: the noise floor",
            "",
            render(
                [
                    "api",
                    "mode",
                    "requests",
                    "norecord p50/p99",
                    "nowrite p50/p99",
                    "record p50/p99",
                    "added p50",
                    "added p99",
                    "guard+queue p50",
                    "writer p50",
                    "A/A p50",
                    "CPU ms/req n/q/r",
                    "errors n/q/r",
                    "target",
                ],
                rows,
            ),
            "",
            "    rows in each gateway's calls table afterwards: "
            + ", ".join(f"{k} {v[0]}" for k, v in a["rows"].items()),
            "",
        ]
    if costs:
        lines += [
            "    the same costs in process, one call at a time (microseconds):",
            "",
            render(["operation", "calls", "p50 us", "p99 us", "mean CPU us/call"], costs),
            "",
        ]
    rows = []
    for r in bc:
        lost = r["submitted"] - r["rows_calls"]
        rows.append(
            [
                r["kind"],
                r["backend"],
                f"{r['offered_rate']:.0f}",
                str(r["submitted"]),
                f"{r['write_rate_during']:.0f}",
                f"{r['max_queue_depth']}/{r['max_queue']}",
                f"{fmt_ms(r['loop_lag_p50_ms'])}/{fmt_ms(r['loop_lag_p99_ms'])}/{fmt_ms(r['loop_lag_max_ms'])}",
                f"{r['producer_tick_max_ms']:.0f}",
                f"{r['rss_start_mb']:.1f} -> {r['rss_max_mb']:.1f} ({r['rss_max_mb'] - r['rss_start_mb']:+.1f})",
                f"{r['rss_end_mb'] - r['rss_mid_mb']:+.1f}",
                str(r["spilled"]),
                str(r["replayed"]),
                f"{r['drain_seconds']:.2f}",
                f"{r['cpu_us_per_record']:.0f}" if r["cpu_us_per_record"] else "-",
                f"{r['rows_calls']}/{r['rows_ledger']}",
                f"{lost}/{r['dropped']}",
            ]
        )
    if bc:
        lines += [
            "(b) sustained and (c) overload: the Recorder driven directly; a record = call record +",
            "    ledger entry; offered/s = what the producer managed to submit; written/s = records",
            "    in the store per second of the run (before the final drain); loop lag = how late a",
            "    10 ms timer fired, p50/p99/max ms; tick max = the longest the producer's own submits",
            "    held the loop in one 10 ms tick; RSS of this process, start -> max (growth);",
            "    store 'none' = a store that keeps nothing, i.e. the producer and recorder alone;",
            "    RSS 2nd half = RSS at the end of the run - RSS half-way through (flat memory: ~0)",
            "",
            render(
                [
                    "run",
                    "store",
                    "offered/s",
                    "records",
                    "written/s",
                    "max queue/limit",
                    "loop lag ms",
                    "tick max ms",
                    "RSS MB",
                    "RSS 2nd half",
                    "spilled",
                    "replayed",
                    "drain s",
                    "CPU us/rec",
                    "rows calls/ledger",
                    "lost/dropped",
                ],
                rows,
            ),
            "",
        ]
    for r in bc:
        if "retention" in r:
            ret = r["retention"]
            lines += [
                f"    retention of the {r['kind']} run's rows: DELETE from an unpartitioned copy"
                f" {ret['rows_deleted']:.0f} rows in {ret['delete_seconds']:.2f} s,"
                f" {ret['delete_wal_mb']:.1f} MB of WAL, dead rows left to VACUUM; dropping the day"
                f" partitions (delete_calls_before) {ret['rows_dropped']:.0f} rows in"
                f" {ret['drop_seconds']:.2f} s, {ret['drop_wal_mb']:.1f} MB of WAL (the server's"
                " WAL in those seconds, other sessions included)",
                "",
            ]
    lines += ["targets:"]
    if worst is not None:
        lines.append(
            f"  {'PASS' if worst[0] <= 0.3 else 'MISS'}  recording adds <= 0.3 ms p50 to a call:"
            f" worst {worst[0]:.2f} ms ({worst[1]})"
        )
        aa = [
            abs(c["results"]["norecord'"].p(0.5) - c["results"]["norecord"].p(0.5))
            for c in a["cells"]
            if c["results"]["norecord'"].p(0.5) is not None
            and c["results"]["norecord"].p(0.5) is not None
        ]
        if aa:
            lines.append(
                f"  (noise floor: two identical no-record gateways differed by up to"
                f" {max(aa):.2f} ms p50 in the same rounds, A/A column)"
            )
    for r in bc:
        if r["backend"].startswith("none"):
            continue
        if r["kind"] in ("sustained", "scale"):
            # kept up: the queue never held more than 1 s of records (batches go every 0.2 s
            # or 500 records), nothing spilled, every record counted in the database
            flat = r["rss_end_mb"] - r["rss_mid_mb"] <= 5.0
            ok = (
                r["offered_rate"] >= 0.95 * r["rate"]
                and r["max_queue_depth"] <= r["rate"]
                and r["rows_calls"] == r["submitted"]
                and r["spilled"] == 0
                and (flat or r["kind"] != "scale")
            )
            what = "partitioned PostgreSQL" if r["kind"] == "scale" else r["backend"]
            lines.append(
                f"  {'PASS' if ok else 'MISS'}  holds {r['rate']:.0f} records/s into {what}:"
                f" {r['write_rate_during']:.0f}/s written during the run, max queue"
                f" {r['max_queue_depth']} (<= 1 s of records), {r['spilled']} spilled,"
                f" {r['rows_calls']}/{r['submitted']} rows, RSS"
                f" {r['rss_end_mb'] - r['rss_mid_mb']:+.1f} MB over the second half"
            )
        else:
            # pending = the queue (max_queue) + the overflow buffer the writer spills (4 batches)
            limit = r["max_queue"] + 4 * 500
            bounded = r["max_queue_depth"] <= limit
            complete = r["rows_calls"] == r["submitted"] and r["dropped"] == 0
            ok = bounded and complete and r["spilled"] > 0
            lines.append(
                f"  {'PASS' if ok else 'MISS'}  overload into {r['backend']}: queue bounded"
                f" ({r['max_queue_depth']} <= {r['max_queue']} + {limit - r['max_queue']} overflow),"
                f" {r['spilled']} spilled, nothing lost"
                f" after replay ({r['rows_calls']}/{r['submitted']} rows, {r['dropped']} dropped);"
                f" producer reached {r['offered_rate']:.0f}/s of {r['rate']:.0f}/s offered"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a sanity run: shorter everything")
    p.add_argument("--requests", type=int, help="(a) max requests per gateway and cell (1,500)")
    p.add_argument("--seconds", type=float, help="(a) max seconds per gateway and cell (5)")
    p.add_argument("--rounds", type=int, help="(a) alternating rounds (5)")
    p.add_argument("--rate", type=float, default=2_000.0, help="(b) records/s (2,000)")
    p.add_argument("--seconds-b", type=float, help="(b) seconds (10)")
    p.add_argument("--scale-rate", type=float, default=5_000.0, help="(b') records/s (5,000)")
    p.add_argument("--seconds-scale", type=float, help="(b') seconds (30; at most 60)")
    p.add_argument("--overload-rate", type=float, default=20_000.0, help="(c) records/s (20,000)")
    p.add_argument("--seconds-c", type=float, help="(c) seconds (3)")
    p.add_argument(
        "--only",
        choices=("a", "bc", "scale", "costs"),
        help="run only part (a), parts (b) and (c), the 5,000/s PostgreSQL cell (b'), or the "
        "in-process costs (no servers: quick A/B of two source trees via PYTHONPATH)",
    )
    p.add_argument("--json", type=Path, help="write the raw numbers to this file")
    args = p.parse_args(argv)
    q = args.quick
    args.requests = args.requests or (300 if q else 1_500)
    args.seconds = args.seconds or (1.5 if q else 5.0)
    args.rounds = args.rounds or (2 if q else 5)
    args.seconds_b = args.seconds_b or (3.0 if q else 10.0)
    args.seconds_c = args.seconds_c or (1.0 if q else 3.0)
    args.seconds_scale = args.seconds_scale or (5.0 if q else 30.0)
    return args


def serve_variant(flag: str, argv: Sequence[str]) -> int:
    """The 'recording off' (no record guard) or 'records never written' build of part (a)."""
    from bastion.cli import app

    if flag == SERVE_FLAG:
        from bastion.observability import recording

        recording.RecordGuard.active = False  # type: ignore[attr-defined]
    else:
        from bastion.store import PostgresStore, SQLiteStore

        async def nothing(self: Any, items: Sequence[Any]) -> int:
            return len(items)

        for cls in (SQLiteStore, PostgresStore):
            cls.insert_calls = nothing  # type: ignore[method-assign]
            cls.insert_ledger = nothing  # type: ignore[method-assign]
    app(args=list(argv), prog_name="bastion")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in ([SERVE_FLAG], [NOWRITE_FLAG]):
        return serve_variant(argv[0], argv[1:])
    args = parse_args(argv)
    m = meta()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-recording-") as d:
        tmp = Path(d)
        a: dict[str, Any] = {"cells": [], "rows": {}}
        costs: list[list[str]] = []
        bc: list[dict[str, Any]] = []
        if args.only in (None, "a"):
            a = run_async(part_a(args, tmp))
        if args.only in (None, "a", "costs"):
            costs = in_process_costs(tmp, 2_000 if args.quick else 10_000)
        if args.only in (None, "bc", "scale"):
            bc = run_async(part_bc(args, tmp))
    print(report(a, costs, bc, m))
    if args.json:
        data = {
            "meta": m,
            "request_path": [
                {
                    "api": c["api"],
                    "mode": c["mode"],
                    **{
                        n: {
                            "requests": r.samples.done,
                            "p50_ms": r.p(0.5),
                            "p99_ms": r.p(0.99),
                            "cpu_ms_per_req": r.cpu_ms_per_req,
                            "latencies_ms": [round(v, 3) for v in r.samples.latencies_ms],
                        }
                        for n, r in c["results"].items()
                    },
                }
                for c in a["cells"]
            ],
            "rows": a["rows"],
            "in_process": costs,
            "recorder": bc,
        }
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"\nraw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
