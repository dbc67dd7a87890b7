"""``bastion check --url``: live drills against a running gateway, through every proxy in front of it.

The config audit judges a simulated copy of the app; these drills judge what a client at the
public URL actually gets. A CDN, load balancer or ingress that buffers or compresses a stream
turns Bastion's token-by-token answer into one late lump while Bastion itself records a fast
first token, so the stream is judged here by when its deltas *arrive at the client*.

The gateway can pace a stream and fail a deployment on request only where its operator turned
on ``server.drill_headers`` (off by default), and only on simulated deployments; it says so with
an ``x-bastion-drill`` response header naming the kind of provider that answered. Elsewhere the
stream drill asks a real provider for a long answer and judges its natural pacing, and the fault
drills are skipped with the reason. The kill switch drill needs a key with the admin role.
Each drill is PASS, FAIL or SKIP; a SKIP names the precondition that is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
import typer

__all__ = [
    "DRILL_FEATURE",
    "LiveResult",
    "LiveStatus",
    "StreamTiming",
    "judge_stream",
    "live_command",
    "run_live",
]

LiveStatus = Literal["PASS", "FAIL", "SKIP"]
DRILL_FEATURE = "bastion-check-drill"  # unconfigured: its switch stops only the drill's calls
PACE_MS = 100.0  # the gap asked of a simulated stream between deltas
PACE_TOKENS = 12
CLUSTER_S = 0.010  # deltas arriving this close together came in one read
MIN_JUDGE_S = 0.3  # an unpaced answer quicker than this cannot tell buffering from speed
SWITCH_WAIT_S = 5.0  # the kill switch must take (and leave) effect on every replica by then
CONSECUTIVE = 4  # answers in a row that must agree (covers each replica behind round robin)
_LONG_PROMPT = (
    "Count from 1 to 150, one number per line, with no other text. "
    "This is a streaming drill from `bastion check --url`."
)


@dataclass(slots=True)
class LiveResult:
    """One drill's verdict and the facts behind it."""

    drill: str
    status: LiveStatus = "PASS"
    evidence: list[str] = field(default_factory=list)

    def set(self, status: LiveStatus, line: str) -> None:
        self.status = status
        self.evidence.append(line)

    def to_dict(self) -> dict[str, Any]:
        return {"drill": self.drill, "status": self.status, "evidence": self.evidence}


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """When each content delta of one stream reached the client (seconds after the request)."""

    arrivals: tuple[float, ...]
    paced_ms: float | None = None  # the gap the gateway kept between deltas; None: not known
    content_encoding: str | None = None


def _largest_batch(arrivals: tuple[float, ...]) -> int:
    """The most deltas that arrived together (each within ``CLUSTER_S`` of the one before)."""
    best = run = 1
    for prev, cur in itertools.pairwise(arrivals):
        run = run + 1 if cur - prev <= CLUSTER_S else 1
        best = max(best, run)
    return best


def judge_stream(t: StreamTiming) -> tuple[LiveStatus, str]:
    """Whether the stream reached the client as it was sent: its timing, then its encoding.

    A compressed event stream fails even when it arrived in time: compression holds deltas
    until its buffer fills as soon as any hop buffers, so it works only by luck.
    """
    status, line = _judge_timing(t)
    enc = (t.content_encoding or "").strip().lower()
    if enc in ("", "identity"):
        return status, line
    if status == "FAIL":
        return "FAIL", (
            f"{line}; and it came compressed (Content-Encoding: {enc}): turn compression off "
            "for text/event-stream"
        )
    return "FAIL", (
        f"the event stream came compressed (Content-Encoding: {enc}), which holds deltas "
        f"until the compressor's buffer fills; turn compression off for text/event-stream "
        f"({status.lower()} on timing: {line})"
    )


def _judge_timing(t: StreamTiming) -> tuple[LiveStatus, str]:
    n = len(t.arrivals)
    if n < 3:
        if t.paced_ms is not None:
            return "FAIL", f"only {n} deltas arrived where {PACE_TOKENS} were sent"
        return "SKIP", f"only {n} deltas in the answer: too few to judge its pacing"
    spread = t.arrivals[-1] - t.arrivals[0]
    batch = _largest_batch(t.arrivals)
    shape = f"{n} deltas arrived over {spread * 1000:.0f} ms, at most {batch} in one read"
    if t.paced_ms is not None:
        expected = (n - 1) * t.paced_ms / 1000.0
        if spread < 0.5 * expected or batch * 2 > n:
            return "FAIL", (
                f"buffered by something between you and Bastion: {shape}, where Bastion sent "
                f"them {t.paced_ms:.0f} ms apart (over {expected * 1000:.0f} ms)"
            )
        return "PASS", f"{shape}; Bastion sent them {t.paced_ms:.0f} ms apart"
    if t.arrivals[-1] < MIN_JUDGE_S:
        return "SKIP", (
            f"the whole answer took {t.arrivals[-1] * 1000:.0f} ms: too quick to tell a buffered "
            "stream from a fast one (turn on server.drill_headers for a paced simulated stream)"
        )
    if batch * 2 > n:
        return "FAIL", f"buffered by something between you and Bastion: {shape}"
    return "PASS", shape


class _Client:
    """The drills' HTTP calls: OpenAI format, the caller's key, every call bounded in time."""

    def __init__(self, session: aiohttp.ClientSession, url: str, key: str | None) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.key = key

    def headers(
        self, extra: Mapping[str, str] | None = None, key: str | None = None
    ) -> dict[str, str]:
        hs = {"content-type": "application/json"}
        secret = key or self.key
        if secret:
            hs["authorization"] = f"Bearer {secret}"
        return {**hs, **(extra or {})}

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(
            method, self.url + path, data=data, headers=self.headers(headers, key)
        ) as r:
            return r.status, r.headers, await r.read()

    async def chat(
        self, model: str, *, headers: Mapping[str, str] | None = None, max_tokens: int = 16
    ) -> tuple[int, Mapping[str, str], bytes]:
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "ping from bastion check --url"}],
        }
        return await self.request("POST", "/v1/chat/completions", body, headers=headers)


def _error_text(status: int, raw: bytes) -> str:
    """What an error answer says, or that it is not the gateway's JSON (a proxy's page)."""
    err = _gateway_error(raw)
    if err is not None:
        return f"{status} {err.get('type')}: {str(err.get('message'))[:160]}"
    return f"{status} with a body that is not Bastion's JSON error: {raw[:80]!r}"


def _gateway_error(raw: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) and "type" in err else None


async def _read_stream(resp: aiohttp.ClientResponse, t0: float) -> tuple[list[float], bool]:
    """Arrival time of each content delta, and whether the final ``[DONE]`` came."""
    arrivals: list[float] = []
    done = False
    buf = b""
    async for chunk in resp.content.iter_any():
        now = time.monotonic() - t0
        buf += chunk.replace(b"\r\n", b"\n")
        *events, buf = buf.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                    choices = orjson.loads(data).get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        arrivals.append(now)
    return arrivals, done


async def _stream_drill(c: _Client, model: str, res: LiveResult) -> None:
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 600,
        "messages": [{"role": "user", "content": _LONG_PROMPT}],
    }
    pacing = {"x-sim-chunk-ms": f"{PACE_MS:g}", "x-sim-reply-tokens": str(PACE_TOKENS)}
    t0 = time.monotonic()
    async with c.session.post(
        c.url + "/v1/chat/completions", data=orjson.dumps(body), headers=c.headers(pacing)
    ) as r:
        if r.status != 200:
            res.set("FAIL", f"the stream was refused: {_error_text(r.status, await r.read())}")
            return
        ctype = r.headers.get("content-type", "")
        arrivals, done = await _read_stream(r, t0)
        drill = r.headers.get("x-bastion-drill")
        encoding = r.headers.get("content-encoding")
    if not ctype.startswith("text/event-stream"):
        res.set(
            "FAIL", f"the stream arrived as {ctype or 'no content type'}, not text/event-stream"
        )
        return
    paced = PACE_MS if drill == "sim" else None
    status, line = judge_stream(StreamTiming(tuple(arrivals), paced, encoding))
    res.set(status, line)
    if not done and status != "FAIL":
        res.set("FAIL", "the stream ended without its final [DONE] event (cut on the way?)")
    if paced is None:
        res.evidence.append(
            "judged on the natural pacing of a long answer"
            + (" (the gateway ignores drill headers)" if drill is None else f" ({drill})")
        )


async def _first_deployment(c: _Client, model: str, res: LiveResult) -> str | None:
    """The deployment that answers ``model`` first, when drill faults can reach it."""
    status, hs, raw = await c.chat(model)
    if status != 200:
        res.set("FAIL", f"a plain call failed: {_error_text(status, raw)}")
        return None
    kind = hs.get("x-bastion-drill")
    if kind is None:
        res.set(
            "SKIP",
            "the gateway ignores drill headers: its operator has not turned on "
            "server.drill_headers, so no fault can be injected from outside",
        )
        return None
    dep = hs.get("x-bastion-deployment", "")
    if kind != "sim":
        res.set(
            "SKIP",
            f"{model} is served first by {dep} ({kind}): drill faults reach "
            "simulated deployments only",
        )
        return None
    return dep


async def _failover_drill(c: _Client, model: str, res: LiveResult) -> None:
    first = await _first_deployment(c, model, res)
    if first is None:
        return
    status, hs, raw = await c.chat(model, headers={"x-bastion-drill-fail": first})
    served = hs.get("x-bastion-deployment", "")
    if status != 200:
        res.set(
            "FAIL",
            f"with {first} failing, {model} got {_error_text(status, raw)}: no fallback answered",
        )
    elif "x-bastion-degraded" in hs:
        res.set("FAIL", f"with {first} failing, {model} got the degraded answer, not a fallback")
    elif served.split("#", 1)[0] == first.split("#", 1)[0]:
        res.set("FAIL", f"{first} answered although the drill failed it")
    else:
        res.set(
            "PASS",
            f"{first} failed (injected 500); {served} answered after "
            f"{hs.get('x-bastion-attempts', '?')} attempts",
        )


async def _degraded_drill(c: _Client, model: str, res: LiveResult) -> None:
    if await _first_deployment(c, model, res) is None:
        return
    t0 = time.monotonic()
    status, hs, raw = await c.chat(model, headers={"x-bastion-drill-fail": "*"})
    took = f"{(time.monotonic() - t0) * 1000:.0f} ms"
    if status == 200 and "x-bastion-degraded" in hs:
        res.set("PASS", f"every deployment failing: the configured degraded message in {took}")
    elif status == 200:
        res.set("FAIL", "every deployment was failed, yet the call was answered as normal")
    elif _gateway_error(raw) is not None:
        res.set(
            "PASS",
            f"every deployment failing: Bastion's typed error in {took} "
            f"({_error_text(status, raw)})",
        )
    else:
        res.set(
            "FAIL",
            f"every deployment failing: the client got {_error_text(status, raw)}; "
            "a proxy replaced Bastion's answer",
        )


async def _until(probe: Callable[[], Awaitable[bool]], limit: float) -> float | None:
    """Seconds until ``probe`` holds for ``CONSECUTIVE`` calls in a row, or None past ``limit``."""
    t0 = time.monotonic()
    streak = 0
    while time.monotonic() - t0 < limit:
        streak = streak + 1 if await probe() else 0
        if streak >= CONSECUTIVE:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None


async def _kill_drill(c: _Client, model: str, admin_key: str | None, res: LiveResult) -> None:
    status, _, raw = await c.request("GET", "/admin/kill", key=admin_key)
    if status in (401, 403):
        res.set(
            "SKIP",
            "the key lacks the admin role: the kill switch needs an admin key "
            "(--key or $BASTION_ADMIN_KEY)",
        )
        return
    if status != 200:
        res.set("FAIL", f"the admin API answered {_error_text(status, raw)}")
        return
    feature = {"x-bastion-feature": DRILL_FEATURE}
    refusals: list[str] = []

    async def refused() -> bool:
        s, hs, body = await c.chat(model, headers=feature)
        if s == 200 and "x-bastion-degraded" in hs:
            refusals.append("the configured degraded message")
            return True
        if s == 503 and _gateway_error(body) is not None:
            refusals.append(_error_text(s, body))
            return True
        if s != 200:
            refusals.append(f"not a refusal of Bastion's: {_error_text(s, body)}")
        return False

    async def served() -> bool:
        s, hs, _ = await c.chat(model, headers=feature)
        return s == 200 and "x-bastion-degraded" not in hs

    switch = {"feature": DRILL_FEATURE, "who": "bastion check --url"}
    try:
        s, _, raw = await c.request("POST", "/admin/kill", {**switch, "on": True}, key=admin_key)
        if s != 200:
            res.set("FAIL", f"turning the switch on failed: {_error_text(s, raw)}")
            return
        on = await _until(refused, SWITCH_WAIT_S)
    finally:
        s, _, raw = await c.request("POST", "/admin/kill", {**switch, "on": False}, key=admin_key)
    if on is None:
        bad = next((r for r in refusals if r.startswith("not a refusal")), None)
        res.set(
            "FAIL",
            bad
            or f"feature {DRILL_FEATURE!r} was still served {SWITCH_WAIT_S:g} s "
            "after its switch went on (is this key bound to another feature?)",
        )
        return
    if s != 200:
        res.set("FAIL", f"turning the switch off failed: {_error_text(s, raw)}")
        return
    off = await _until(served, SWITCH_WAIT_S)
    if off is None:
        res.set("FAIL", f"still refused {SWITCH_WAIT_S:g} s after the switch went off")
        return
    res.set(
        "PASS",
        f"on: refused within {on:.2f} s ({refusals[-1]}), {CONSECUTIVE} calls in "
        f"a row; off: served again within {off:.2f} s",
    )


async def _pick_model(c: _Client, res: LiveResult, given: str | None) -> str | None:
    """The model to drill: ``given``, else the first the gateway lists (the key is checked)."""
    status, _, raw = await c.request("GET", "/v1/models")
    if status != 200:
        res.set("FAIL", f"GET /v1/models with this key: {_error_text(status, raw)}")
        return None
    try:
        ids = [m["id"] for m in orjson.loads(raw)["data"] if isinstance(m.get("id"), str)]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        res.set("FAIL", f"GET /v1/models did not answer in the OpenAI format: {raw[:80]!r}")
        return None
    if given is None and not ids:
        res.set(
            "FAIL", "GET /v1/models lists no model (wildcard aliases only?): name one with --model"
        )
        return None
    use: str = given or ids[0]
    res.set("PASS", f"reached with this key; {len(ids)} models listed, drilling with {use}")
    return use


async def run_live(
    url: str,
    key: str | None,
    *,
    admin_key: str | None = None,
    model: str | None = None,
    timeout: float = 60.0,
) -> list[LiveResult]:
    """Every live drill against ``url``; a drill whose call fails to connect is a FAIL naming why."""
    reach = LiveResult("gateway reachable")
    results = [reach]
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        c = _Client(session, url, key)
        try:
            picked = await _pick_model(c, reach, model)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reach.set("FAIL", f"cannot reach {url}: {type(exc).__name__}: {exc}")
            picked = None
        if picked is None:
            return results
        use = picked
        drills: list[tuple[str, Callable[[LiveResult], Awaitable[None]]]] = [
            ("streaming reaches the client as sent", lambda r: _stream_drill(c, use, r)),
            ("kill switch round trip", lambda r: _kill_drill(c, use, admin_key or key, r)),
            ("failover when the first deployment fails", lambda r: _failover_drill(c, use, r)),
            ("degraded answer when nothing can answer", lambda r: _degraded_drill(c, use, r)),
        ]
        for name, drill in drills:
            res = LiveResult(name)
            try:
                await drill(res)
            except (aiohttp.ClientError, TimeoutError) as exc:
                res.set("FAIL", f"the drill's call failed: {type(exc).__name__}: {exc}")
            results.append(res)
    return results


def live_command(
    url: str, key: str | None, *, model: str | None = None, json_: bool = False
) -> int:
    """Print the live drills' table (or JSON); the exit code is 1 when any drill FAILs."""
    from rich.console import Console
    from rich.table import Table

    admin = os.environ.get("BASTION_ADMIN_KEY")
    results = asyncio.run(run_live(url, key, admin_key=admin, model=model))
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    if json_:
        out = {
            "ok": counts["FAIL"] == 0,
            "url": url,
            "counts": counts,
            "drills": [r.to_dict() for r in results],
        }
        typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        style = {"PASS": "green", "SKIP": "yellow", "FAIL": "bold red"}
        table = Table(title=f"Bastion live drills: {url}", show_lines=True)
        table.add_column("drill")
        table.add_column("status", no_wrap=True)
        table.add_column("evidence", overflow="fold")
        for r in results:
            table.add_row(r.drill, f"[{style[r.status]}]{r.status}[/]", "\n".join(r.evidence))
        console = Console()
        console.print(table)
        console.print(" · ".join(f"[{style[s]}]{n} {s}[/]" for s, n in counts.items()))
    return 1 if counts["FAIL"] else 0
