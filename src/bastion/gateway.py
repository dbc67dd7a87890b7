"""The one gateway object: everything is built here at start-up and hangs off it.

Both the HTTP server and library users go through ``Gateway.handle``, so the
pipeline is the same whichever way a call arrives.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .after_send import AfterSend
from .auth import KeyResolver, key_from_headers
from .call import Call, Principal
from .clock import DayClock
from .config import Config, load_config
from .cost.alerts import SpendAlerts, provider_cap_warnings
from .cost.budget import BudgetGuard
from .cost.journal import SettleJournal
from .cost.key_caps import KeyModelGuard
from .cost.max_tokens import MaxTokensGuard
from .cost.meter import CostMeter
from .cost.pricing import Price, PriceTable
from .cost.ratelimit import RateLimitGuard
from .cost.token_caps import TokenCapGuard
from .dialects import dialect_for
from .engine import Engine, Reply
from .errors import (
    AIUnavailable,
    BastionError,
    BudgetExceeded,
)
from .feature_routing import admit_route
from .idempotent import IdempotentCalls, client_request_id
from .identity import resolve_user
from .library import LIBRARY_PRINCIPAL, LibraryCalls
from .observability.access import AccessGuard, AccessLog
from .observability.metrics import (
    Metrics,
    MetricsGuard,
    breaker_refresher,
    budget_refresher,
    kill_switch_refresher,
)
from .observability.quality import OnlineQuality
from .observability.recorder import Recorder
from .observability.recording import RecordGuard
from .observability.refused import RefusalObservers
from .observability.retention import RetentionTask
from .observability.review import InMemoryReviewQueue, ReviewGuard, ReviewSampler
from .observability.tracecontext import format_traceparent, new_id, parse_traceparent
from .observability.tracing import Tracing, TracingGuard
from .pipeline import Pipeline
from .providers import bedrock, gemini
from .providers.adapters import Endpoint, drill_passthrough, endpoint_formats
from .providers.base import Format, Transport
from .providers.http import HttpTransport
from .providers.sim import SimTransport, Simulator
from .reliability.degraded import canned_body, canned_stream
from .reliability.idempotency import Idempotency
from .reliability.killswitch import KillSwitchGuard
from .reliability.router import Router
from .responses.native import native_transport
from .safety.pii import Scrubber, ScrubberConfig
from .safety.pii.guard import PiiGuard, PiiPolicy
from .safety.prompting.guards import record_prompt_version
from .safety.setup import safety_guards
from .safety.structured import check_structured_output
from .schema import parse_body
from .state import CounterStore, open_state
from .store import RecordStore, open_store

log = logging.getLogger("bastion.gateway")


class Gateway(LibraryCalls):
    """Config, store, providers, router, guards: built once, shared by every call."""

    def __init__(
        self,
        config: Config,
        *,
        store: RecordStore | None = None,
        state: CounterStore | None = None,
        simulator: Simulator | None = None,
    ) -> None:
        self.config = config
        self.store = store if store is not None else open_store(config.store.url)
        self.state = (
            state if state is not None else open_state(config.state.url, prefix=config.state.prefix)
        )
        self.clock = DayClock(config.cost.timezone)
        self.prices = PriceTable(
            {
                name: Price(
                    p.input,
                    p.output,
                    p.input if p.cache_write is None else p.cache_write,
                    p.input * 0.1 if p.cache_read is None else p.cache_read,
                )
                for name, p in config.cost.prices.items()
            }
        )
        # access lines scrub their values themselves, each once (built with the guards, below)
        self.access = AccessLog(
            config.server.log_format, scrub=lambda text: self.scrubber.redact(text)
        )
        self.recorder = Recorder(
            self.store,
            config.observability.spill_path,
            max_queue=config.observability.queue_max,
        )
        sim_cfg = config.simulator
        self.simulator = (
            simulator
            if simulator is not None
            else Simulator(
                ttft_ms=sim_cfg.ttft_ms,
                chunk_ms=sim_cfg.chunk_ms,
                obey_injections=sim_cfg.obey_injections,
            )
        )
        self.transports: dict[str, Transport] = {}
        self.endpoints: dict[str, Endpoint] = {}
        for name, p in config.providers.items():
            if p.kind == "sim" or p.resolved_base_url().startswith("sim://"):
                self.transports[name] = SimTransport(self.simulator)
            else:
                self.transports[name] = HttpTransport(max_connections=p.max_connections)
            # a Responses call's attempts go to /responses where the provider speaks it
            self.transports[name] = native_transport(p.kind, self.transports[name])
            if p.kind == "bedrock" and p.region:  # SigV4-signed Converse (providers/bedrock.py)
                self.transports[name] = bedrock.transport(
                    self.transports[name], region=p.region, base_url=p.resolved_base_url()
                )
            if p.kind == "gemini":  # a failed finishReason is an error answer (providers/gemini.py)
                self.transports[name] = gemini.transport(self.transports[name])
            self.endpoints[name] = Endpoint(
                name=name,
                kind=p.kind,
                formats=endpoint_formats(p.kind),
                base_url=p.resolved_base_url(),
                api_key=p.api_key(),
                headers=dict(p.headers),
            )
        self.router = Router(config, self.endpoints, self.transports)
        self.keys = KeyResolver(self.store, ttl=config.server.key_cache_seconds)
        obs = config.observability
        self.metrics = Metrics(max_label_values=obs.metrics_max_label_values)
        self.metrics.watch_recorder(self.recorder)
        self.tracing = Tracing(
            endpoint=obs.otlp_endpoint,
            headers=obs.otlp_headers,
            service_name=obs.service_name,
            sample_ratio=obs.trace_sample_ratio,
            include_user_id=obs.trace_user_id,
            provider_kinds={n: p.kind for n, p in config.providers.items()},
            capture_content=obs.otel_capture_content,
            content_max_chars=obs.otel_content_max_chars,
            scrub=lambda text: self.scrubber.redact(text),  # built with the guards, below
        )
        self.retention = RetentionTask(
            self.store,
            bodies_days=obs.bodies_retention_days,
            metadata_days=obs.metadata_retention_days,
            interval_seconds=obs.retention_interval_seconds,
        )
        self.pipeline = Pipeline(self._guards())
        caps = {"global": c} if (c := config.cost.caps.global_daily_usd) is not None else {}
        caps |= {
            f"feature:{n}": f.daily_budget_usd
            for n, f in config.features.items()
            if f.daily_budget_usd is not None
        }
        self.metrics.add_refresher(budget_refresher(self.state, self.clock.day, caps))
        self.metrics.add_refresher(kill_switch_refresher(self.kill_switch.flags))
        if config.reliability.breaker.enabled:
            names = self.router.deployment_names()
            self.metrics.add_refresher(breaker_refresher(self.state, names))
        self.idempotency = Idempotency(
            self.state,
            ttl=config.reliability.idempotency_ttl_seconds,
            wait=config.reliability.idempotency_wait_seconds,
        )
        self.idempotent = IdempotentCalls(
            config,
            self.idempotency,
            self.kill_switch,
            finish=self._finish,
            canned=self._canned,
        )
        self.engine = Engine(
            self.router,
            config.reliability.retry,
            self.state,
            config.reliability.breaker,
            reserve=self.pipeline.reserve_attempt,
            release=self.pipeline.release_attempt,
        )
        self.alerts = SpendAlerts(config, self.store, self.state, self.clock)
        self.warnings = provider_cap_warnings(config, list(config.providers))
        for w in self.warnings:
            log.warning(w)
        self._started = False

    def _guards(self) -> list[object]:
        """Before-hooks run in this order, after-hooks in reverse (cost is priced first, recorded last)."""
        cfg = self.config
        self.settle_journal = SettleJournal(cfg.state.settle_journal)
        self.budget = BudgetGuard(cfg, self.state, self.prices, self.clock, self.settle_journal)
        self.kill_switch = KillSwitchGuard(
            self.state,
            cfg.reliability.kill_switch_poll_seconds,
            fail_open=cfg.state.fail_open,
            features=cfg.features,
        )
        pii_cfg = cfg.safety.pii
        self.scrubber = Scrubber(
            ScrubberConfig(
                extra_allow_patterns=tuple(pii_cfg.extra_allow_patterns),
                phone_regions=tuple(pii_cfg.phone_regions),
                ner=pii_cfg.ner,
            )
        )
        self.pii = PiiGuard(
            self.scrubber,
            {
                n: PiiPolicy(provider=f.pii_provider, output=f.pii_output)
                for n, f in cfg.features.items()
            },
            default=PiiPolicy(
                provider=cfg.features["default"].pii_provider,
                output=cfg.features["default"].pii_output,
            ),
        )
        obs = cfg.observability
        self.review_queue = InMemoryReviewQueue(
            self.scrubber.redact, max_items=obs.review_max_items
        )
        review = ReviewGuard(
            ReviewSampler(
                default_rate=obs.review_rate,
                rates=obs.review_rates,
                score_thresholds={"injection_score": obs.review_injection_threshold},
            ),
            self.review_queue,
            self.scrubber.redact,
            body_max_chars=obs.body_max_chars,
        )
        self.prompts, (template, scope, injection, leak), self.sql_tools = safety_guards(
            cfg, self.store
        )
        # nothing raw is written: records, the review queue and logs all see scrubbed text
        self.quality = OnlineQuality(
            lambda text: len(self.scrubber.scrub(text).findings),
            rate=obs.quality_rate,
            rates=obs.quality_rates,
            on_result=self.metrics.observe_quality,
        )
        record = RecordGuard(
            self.recorder,
            self.clock,
            body_max_chars=obs.body_max_chars,
            scrub=self.scrubber.redact,
        )
        access = AccessGuard(self.access)
        metrics = MetricsGuard(self.metrics)
        # a request refused before it became a call is still counted, logged and recorded
        self.refusals = RefusalObservers(self.access, self.metrics, record)
        candidates: list[object] = [
            access,
            self.quality,
            metrics,
            TracingGuard(self.tracing),
            review,
            record,
            self.kill_switch,
            template,
            scope,
            injection,
            self.pii,
            leak,
            self.sql_tools,  # streams: holds a SQL tool call until it can be checked
            KeyModelGuard(),
            MaxTokensGuard(cfg.features),
            TokenCapGuard(cfg.features, self.state),
            RateLimitGuard(cfg, self.state, self.clock),
            self.budget,
            CostMeter(self.prices),
        ]
        return [g for g in candidates if getattr(g, "active", True)]

    @classmethod
    def from_config(
        cls,
        config: Config | str | Path | None = None,
        *,
        simulator: Simulator | None = None,
        **overrides: Any,
    ) -> Gateway:
        """Build from a file (or the embedded defaults) with keyword overrides of config sections."""
        if not isinstance(config, Config):
            config = load_config(config, overrides=overrides or None)
        return cls(config, simulator=simulator)

    async def start(self) -> None:
        if not self._started:
            await self.store.migrate()
            self.settle_journal.open()
            self.recorder.start()
            self.alerts.start()
            self.quality.start()
            obs = self.config.observability
            if obs.bodies_retention_days is not None or obs.metadata_retention_days is not None:
                self.retention.start()
            self._started = True

    async def aclose(self) -> None:
        for t in self.transports.values():
            await t.aclose()
        await self.alerts.aclose()
        await self.quality.aclose()
        await self.retention.stop()
        await self.tracing.aclose()
        await self.recorder.aclose()
        await self.settle_journal.aclose(self.state)
        await self.idempotency.aclose()
        await self.state.close()
        await self.store.close()
        self._started = False

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the one path every call takes ------------------------------------------------------

    async def handle(
        self,
        fmt: Format,
        raw: bytes,
        headers: Mapping[str, str],
        *,
        principal: Principal | None = None,
        admit: Callable[[dict[str, Any], Principal], None] | None = None,
        after: AfterSend | None = None,
    ) -> Reply:
        """Authenticate, parse, guard, route and run one call; raise ``BastionError`` to refuse.

        ``admit`` sees the valid body before anything else runs and may refuse the call (the
        server's in-process limits on open streams hook in here, before any upstream request).
        With ``after`` the observers of the call's after-phase (metrics, traces, the access log,
        review and quality sampling) are deferred into it, for the server to run once the
        response is out (``after_send``); settling and the record still come first.
        """
        received = time.monotonic()
        if principal is None:
            principal = await self.keys.resolve(key_from_headers(headers))
        body: dict[str, Any] | None = None
        try:
            body = parse_body(raw)
            dialect_for(fmt).validate(body)
            if admit is not None:
                admit(body, principal)
            client_model = self._admit_route(fmt, body, principal, headers)
        except BastionError as exc:
            # refused before it became a call: still counted, logged and recorded
            feature = principal.feature or headers.get("x-bastion-feature")
            exc.request_id = await self.refusals.refused(
                fmt,
                exc,
                principal,
                body,
                headers,
                received,
                feature if feature in self.config.features else None,
            )
            raise
        idem = headers.get("idempotency-key")
        if not idem:
            return await self._run(
                fmt, raw, body, headers, principal, client_model, received, after
            )
        return await self.idempotent.run(
            fmt,
            body,
            headers,
            principal,
            idem,
            lambda: self._run(fmt, raw, body, headers, principal, client_model, received),
        )

    async def _run(
        self,
        fmt: Format,
        raw: bytes,
        body: dict[str, Any],
        headers: Mapping[str, str],
        principal: Principal,
        client_model: str | None = None,
        received: float | None = None,
        after: AfterSend | None = None,
    ) -> Reply:
        trace_id, parent, flags = parse_traceparent(headers.get("traceparent"))
        span_id = new_id(8)
        stream = body.get("stream") is True
        call = Call(
            request_id="req_" + uuid.uuid4().hex,
            client_request_id=client_request_id(headers.get("x-request-id")),
            trace_id=trace_id,
            span_id=span_id,
            client_format=fmt,
            parent_span_id=parent,
            trace_flags=flags,
            principal=principal,
            body=body,
            requested_model=body["model"],
            stream=stream,
            feature=principal.feature or headers.get("x-bastion-feature"),
            conversation_id=headers.get("x-bastion-conversation"),
            include_usage=dialect_for(fmt).wants_usage(body),
        )
        call.body_bytes = len(raw)
        call.after_send = after
        call.user_id, call.cap_subject = resolve_user(
            principal,
            fmt,
            body,
            headers,
            end_user_caps=self.config.cost.caps.end_user_caps or principal is LIBRARY_PRINCIPAL,
        )
        if client_model is not None:
            call.flags["client_model"] = client_model
        if "bastion" not in body:  # a server-side template records the version it rendered
            await record_prompt_version(self.prompts, call, headers.get("x-bastion-prompt-version"))
        feature_cfg = self.config.feature(call.feature)
        call.prompt_caching = feature_cfg.prompt_caching
        call.hedge_delay = feature_cfg.hedge_delay
        stable = headers.get("x-bastion-stable-messages", "")
        call.stable_messages = int(stable) if stable.isdigit() else 0
        call.deadline = call.started + self.config.feature(call.feature).deadline
        traceparent = format_traceparent(trace_id, span_id, flags)
        passthrough = {"traceparent": traceparent}
        for h in ("anthropic-version", "anthropic-beta"):
            v = headers.get(h)
            if v:
                passthrough[h] = v
        if self.config.server.drill_headers:  # the operator's opt-in (config.ServerConfig)
            passthrough.update(drill_passthrough(headers))

        async def on_end(error: BaseException | None) -> None:
            await self._finish(call, error, after)

        if received is None:
            received = call.started
        retrieval = headers.get("x-bastion-retrieval-ms", "")
        if retrieval.replace(".", "", 1).isdigit():
            call.stages["retrieval"] = float(
                retrieval
            )  # the app's own stage, reported with the call
        call.stages["auth_routing"] = (time.monotonic() - received) * 1000.0
        try:
            t_guards = time.monotonic()
            await self.pipeline.before(call)
            call.stages["guards"] = (time.monotonic() - t_guards) * 1000.0
            reply = await self.engine.run(call, passthrough, on_end)
            if reply.stream is None and reply.status == 200:
                repair = self.config.feature(call.feature).safety.json_repair
                reply = await check_structured_output(
                    self.engine, call, reply, passthrough, on_end, repair=repair
                )
                if self.sql_tools.active and reply.body is not None:
                    reply.body = self.sql_tools.check_body(call, call.dialect, reply.body)
        except (AIUnavailable, BudgetExceeded) as exc:
            # no answer to be had: the feature's degraded answer, if it asks for one
            degraded = self.config.feature(call.feature).degraded
            if degraded.mode != "message":
                if isinstance(exc, AIUnavailable):
                    call.flags["degraded"] = exc.reason
                await self._finish(call, exc)
                raise
            call.flags["degraded"] = exc.reason if isinstance(exc, AIUnavailable) else "budget"
            reply = self._canned(call, degraded.message)
        except BaseException as exc:
            await self._finish(call, exc)
            raise
        reply.call = call
        reply.headers["x-request-id"] = call.request_id
        if call.client_request_id is not None:
            reply.headers["x-client-request-id"] = call.client_request_id
        reply.headers["traceparent"] = traceparent
        if call.deployment:
            reply.headers["x-bastion-deployment"] = call.deployment
        reply.headers["x-bastion-attempts"] = str(len(call.attempts))
        if self.config.server.drill_headers:  # tells a live drill what answered its call
            reply.headers["x-bastion-drill"] = call.provider_kind or "none"
        if reply.stream is None:
            await self._finish(call, None, after)
        return reply

    def _admit_route(
        self, fmt: Format, body: dict[str, Any], principal: Principal, headers: Mapping[str, str]
    ) -> str | None:
        feature = principal.feature or headers.get("x-bastion-feature")
        return admit_route(self.config, self.router, fmt, body, feature)

    def _canned(self, call: Call, text: str) -> Reply:
        """The configured degraded message, in the caller's format, marked by a header."""
        call.status = 200
        call.output_text.append(text)
        headers = {"x-bastion-degraded": str(call.flags.get("degraded", "1"))}
        if not call.stream:
            return Reply(200, headers, body=canned_body(call.dialect, call.requested_model, text))
        chunks = canned_stream(call.dialect, call.requested_model, text, call.include_usage)

        async def gen() -> AsyncIterator[bytes]:
            try:
                for c in chunks:
                    yield c
            finally:
                await self._finish(call, None)

        return Reply(200, headers, stream=gen())

    async def _finish(
        self, call: Call, error: BaseException | None, after: AfterSend | None = None
    ) -> None:
        """Close the call's books: settled and journaled now; its observers too, or (``after``)
        once the response is out."""
        if call.ended is None:
            call.ended = time.monotonic()
        if call.ttft_ms is not None:
            call.stages["first_token"] = call.ttft_ms
        call.stages["total"] = (call.ended - call.started) * 1000.0
        budget = self.config.feature(call.feature).latency_budget
        over = [
            stage
            for stage, limit in (
                ("auth_routing", budget.auth_routing_ms),
                ("guards", budget.guards_ms),
                ("retrieval", budget.retrieval_ms),
                ("first_token", budget.first_token_ms),
                ("total", budget.total_ms),
            )
            if limit is not None and call.stages.get(stage, 0.0) > limit
        ]
        if over:
            call.flags["over_budget"] = over
        ids = [a.provider_request_id for a in call.attempts if a.provider_request_id]
        if ids:  # what the provider's support needs, on the record
            call.flags["provider_request_ids"] = ids
        if error is not None:
            call.error_type = type(error).__name__
            if isinstance(error, BastionError):
                error.request_id = call.request_id  # the error answer names its record
                call.status = error.http_status()
            elif call.status == 0:
                call.status = 499 if isinstance(error, GeneratorExit) else 500
        if after is None:
            await self.pipeline.after(call, error)
            return
        await self.pipeline.settle(call, error)
        after.defer(lambda: self.pipeline.observe(call, error))
