"""Runs a suite through the in-process gateway, so every guard a production call meets applies.

Cases x epochs run concurrently under a semaphore; each call goes through
``Gateway.handle`` with an ``eval`` principal, and its latency and cost come from the
gateway's own ``Call`` (cost = usage x the served model's price). Epochs repeat a
case so the gate can tell a real drop from judge noise. Each epoch has its own seed
(``<run seed>-<epoch>``): a simulated model draws its answer from it (a case's
``facts`` tell the simulator what a good answer states), the response cache keys on
it, and the run records it with the rest of its design.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from ..call import Principal
from ..config import load_config
from ..errors import BastionError
from ..gateway import Gateway
from ..providers.base import Format
from ..providers.sim import Simulator
from ..providers.sim.quality import QualityProfile
from .cache import ResponseCache, cache_key
from .judge import TRUNCATED_CAP, GatewayJudge, Judge, JudgeRequest
from .render import Rendered, render_case
from .results import CaseResult, EpochResult, RunResult, Score
from .scorers import Output, extract_output, score
from .suite import Case, Suite

__all__ = ["EVAL_PRINCIPAL", "Progress", "open_gateway", "run_suite"]

EVAL_PRINCIPAL = Principal(key_id="eval", name="eval")
REFUSAL_STATUSES = frozenset({403, 422})
OUTPUT_KEEP = 2000

Progress = Callable[[str, int, bool], None]


@contextlib.asynccontextmanager
async def open_gateway(
    config: str | Path | None,
    suite: Suite | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    isolated: bool = True,
) -> AsyncIterator[Gateway]:
    """The gateway a run uses; ``isolated`` keeps eval calls out of the configured stores."""
    with tempfile.TemporaryDirectory(prefix="bastion-eval-") as tmp:
        merged: dict[str, Any] = dict(overrides or {})
        if isolated:
            merged.setdefault("store", {"url": f"sqlite:///{Path(tmp) / 'eval.db'}"})
            merged.setdefault("state", {"url": "memory://"})
            merged.setdefault("observability", {"spill_path": str(Path(tmp) / "spill.jsonl")})
        cfg = load_config(config, overrides=merged or None)
        profiles = {
            m: QualityProfile(p.fact_recall, p.instruction_follow)
            for m, p in (suite.sim.profiles.items() if suite else ())
        }
        sim = Simulator(obey_injections=bool(suite and suite.sim.obey_injections), quality=profiles)
        async with Gateway(cfg, simulator=sim) as gw:
            yield gw


def _is_sim(gw: Gateway, model: str) -> bool:
    try:
        return gw.router.resolve(model)[0].endpoint.kind == "sim"
    except BastionError:
        return False


def _input_text(case: Case) -> str:
    if case.user_content is not None:
        return case.user_content
    for m in reversed(case.messages or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return "\n".join(b.get("text", "") for b in c if isinstance(b, dict))
    return ""


def _eval_directive(case: Case, seed: str) -> str:
    """What a simulated model is told about a case: the facts a good answer states, docs, seed."""
    parts = [f"[[sim:facts={'|'.join(case.facts)}]]", f"[[sim:seed={seed}]]"]
    if case.docs:
        parts.append(f"[[sim:docs={','.join(d.id for d in case.docs)}]]")
    return "".join(parts)


def _with_directive(messages: list[dict[str, Any]], directive: str) -> list[dict[str, Any]]:
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            m["content"] = f"{directive}\n{c}"
        elif isinstance(c, list):
            m["content"] = [{"type": "text", "text": directive}, *c]
        break
    return out


async def _call(
    gw: Gateway,
    req: Rendered,
    body: dict[str, Any],
    headers: dict[str, str],
    cache: ResponseCache | None,
    seed: str,
) -> Output:
    key = cache_key(req.api, body, str(body.get("model")), seed, cache.config) if cache else ""
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    out = await _send(gw, req, body, headers)
    if cache is not None:
        cache.put(key, out)
    return out


async def _send(
    gw: Gateway, req: Rendered, body: dict[str, Any], headers: dict[str, str]
) -> Output:
    fmt = Format(req.api)
    started = time.monotonic()
    try:
        reply = await gw.handle(
            fmt, orjson.dumps({**body, "stream": False}), headers, principal=EVAL_PRINCIPAL
        )
    except BastionError as exc:
        out = Output(latency_ms=(time.monotonic() - started) * 1000.0)
        if exc.http_status() in REFUSAL_STATUSES:
            out.refused_by = type(exc).__name__
        else:
            out.error = f"{type(exc).__name__}: {exc.message}"
        return out
    resp = orjson.loads(reply.body or b"{}")
    out = extract_output(req.api, resp if isinstance(resp, dict) else {})
    call = reply.call
    if call is not None:
        out.latency_ms = call.latency_ms
        out.cost_usd = call.cost_usd
        out.served_model = call.served_model or out.served_model
    if out.latency_ms is None:
        out.latency_ms = (time.monotonic() - started) * 1000.0
    if reply.status != 200:
        out.error = f"HTTP {reply.status}"
    elif "x-bastion-degraded" in reply.headers:
        out.error = f"degraded answer ({reply.headers['x-bastion-degraded']})"
    return out


async def _epoch(
    gw: Gateway,
    suite: Suite,
    case: Case,
    epoch: int,
    *,
    model: str | None,
    feature: str | None,
    judge: Judge,
    notes: set[str],
    seed: str,
    cache: ResponseCache | None,
    simulated: set[bool],
) -> EpochResult:
    feat = feature or case.feature
    pinned = gw.config.features[feat].model if feat in gw.config.features else None
    asked = model or case.model or pinned
    if asked is None:
        raise BastionError(f"case {case.id!r}: no model (set `model`, or pin the feature's model)")
    effective = pinned or asked
    sim = _is_sim(gw, effective)
    simulated.add(sim)
    req = render_case(suite, case, model=asked, simulated=sim)
    if req.builder != "none":
        notes.add(f"prompt builder: {req.builder}")
    headers = {"x-bastion-user": case.user or f"eval-{suite.name}"}
    if feat:
        headers["x-bastion-feature"] = feat
    if req.prompt_version:
        headers["x-bastion-prompt-version"] = req.prompt_version
    out = await _conversation(gw, case, req, headers, cache, seed, sim)
    scores: list[Score] = []
    judge_cost = 0.0
    for a in case.assertions:
        if a.rubric is None:
            scores.append(score(a, out, req))
            continue
        if out.error is not None:
            scores.append(Score(a.label, "rubric", False, 0.0, f"call failed: {out.error}"))
            continue
        verdict = await judge.grade(
            JudgeRequest(
                case.id,
                epoch,
                a.rubric,
                a.rubric.judge,
                _input_text(case),
                out.text,
                stop_reason=out.stop_reason,
                facts=tuple(case.facts),
                seed=seed,
            )
        )
        judge_cost += verdict.cost_usd
        value = 0.0 if verdict.score is None else verdict.score
        detail = f"score {value:.3f}"
        if verdict.score is None:
            detail += f" (no score: {verdict.reply or 'the judge gave none'})"
        elif verdict.via == "features" and verdict.reply:
            detail += f" ({verdict.reply})"
        if out.stop_reason in ("max_tokens", "length") and value > TRUNCATED_CAP:
            value = TRUNCATED_CAP
            detail = (
                f"score {value:.3f} (answer truncated at max_tokens; judge said {verdict.score})"
            )
        scores.append(
            Score(a.label, "rubric", value >= a.rubric.threshold, value, detail, verdict.via)
        )
    graded = [s.value for s in scores if s.kind == "rubric"]
    return EpochResult(
        epoch=epoch,
        passed=all(s.passed for s in scores),
        score=statistics.fmean(graded) if graded else statistics.fmean(s.value for s in scores),
        scores=scores,
        output=out.text[:OUTPUT_KEEP],
        tool_calls=out.tool_names,
        latency_ms=out.latency_ms,
        cost_usd=out.cost_usd,
        judge_cost_usd=judge_cost,
        input_tokens=out.input_tokens,
        output_tokens=out.output_tokens,
        served_model=out.served_model,
        error=out.error,
    )


def aggregate(suite: Suite, case: Case, epochs: list[EpochResult]) -> CaseResult:
    """Per assertion: binary checks need the pass rate, rubrics the mean score over epochs."""
    need = case.min_pass_rate if case.min_pass_rate is not None else suite.gate.min_pass_rate
    failed = []
    for i, a in enumerate(case.assertions):
        cells = [e.scores[i] for e in epochs]
        if a.rubric is not None:
            ok = statistics.fmean(s.value for s in cells) >= a.rubric.threshold
        else:
            ok = sum(s.passed for s in cells) / len(cells) >= need - 1e-9
        if not ok:
            failed.append(a.label)
    return CaseResult(
        id=case.id,
        must_pass=case.must_pass,
        passed=not failed,
        epochs=sorted(epochs, key=lambda e: e.epoch),
        failed_assertions=failed,
        tags=list(case.tags),
    )


async def run_suite(
    suite: Suite,
    gw: Gateway,
    *,
    epochs: int = 1,
    concurrency: int = 8,
    model: str | None = None,
    feature: str | None = None,
    judge: Judge | None = None,
    progress: Progress | None = None,
    config_label: str | None = None,
    seed: int = 0,
    cache: ResponseCache | None = None,
) -> RunResult:
    """Every case x epoch, at most ``concurrency`` calls in flight; ``model``/``feature`` override the cases'."""
    if epochs < 1 or concurrency < 1:
        raise ValueError("epochs and concurrency must be at least 1")
    grader = judge or GatewayJudge(gw, suite.judge, noise=suite.sim.judge_noise)
    if cache is not None:
        cache.bind(gw.config)
    sem = asyncio.Semaphore(concurrency)
    notes: set[str] = set()
    simulated: set[bool] = set()
    started_at, t0 = time.time(), time.monotonic()

    async def one(case: Case, n: int) -> EpochResult:
        async with sem:
            try:
                res = await _epoch(
                    gw,
                    suite,
                    case,
                    n,
                    model=model,
                    feature=feature,
                    judge=grader,
                    notes=notes,
                    seed=f"{seed}-{n}",
                    cache=cache,
                    simulated=simulated,
                )
            except Exception as exc:  # a broken case fails itself, not the whole run
                msg = (
                    exc.message if isinstance(exc, BastionError) else f"{type(exc).__name__}: {exc}"
                )
                fail = [
                    Score(a.label, a.kind, False, 0.0, f"error: {msg}") for a in case.assertions
                ]
                res = EpochResult(n, False, 0.0, fail, error=msg)
        if progress is not None:
            progress(case.id, n, res.passed)
        return res

    tasks = {c.id: [asyncio.ensure_future(one(c, n)) for n in range(epochs)] for c in suite.cases}
    try:
        cases = [aggregate(suite, c, list(await asyncio.gather(*tasks[c.id]))) for c in suite.cases]
    finally:
        for ts in tasks.values():
            for t in ts:
                t.cancel()
    pinned = gw.config.features[feature].model if feature in gw.config.features else None
    label = model or pinned or suite.default_model() or "mixed"
    return RunResult(
        suite=suite.name,
        model=label,
        prompt_version=suite.version(),
        epochs=epochs,
        cases=cases,
        started_at=started_at,
        duration_s=time.monotonic() - t0,
        config=config_label,
        feature=feature,
        notes=sorted(notes)
        + ([f"response cache: {cache.hits} hit(s), {cache.misses} miss(es)"] if cache else []),
        seed=seed,
        judge=_judge_label(judge, suite),
        simulated=True in simulated,
    )


def _judge_label(judge: Judge | None, suite: Suite) -> str | None:
    """What graded the rubrics, for the baseline's design: a custom judge by its class."""
    if judge is not None:
        return f"custom:{type(judge).__name__}"
    return suite.judge


async def _conversation(
    gw: Gateway,
    case: Case,
    req: Rendered,
    headers: dict[str, str],
    cache: ResponseCache | None,
    seed: str,
    sim: bool,
) -> Output:
    """One call, or one per turn: each reply is appended before the next user message."""
    messages: list[dict[str, Any]] = list(req.body["messages"])
    directive = _eval_directive(case, seed) if sim and case.facts else None
    turns = list(case.turns)
    while True:
        final = not turns
        sent = _with_directive(messages, directive) if directive and final else messages
        out = await _call(gw, req, {**req.body, "messages": sent}, headers, cache, seed)
        if final or out.error is not None:
            return out
        messages = [
            *messages,
            {"role": "assistant", "content": out.text or "(no answer)"},
            {"role": "user", "content": turns.pop(0)},
        ]
