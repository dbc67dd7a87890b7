"""Wiring: build Bastion (in-process or as an SDK client), the desk, the drafter; serve them.

Library mode builds ``Gateway(config, simulator=Simulator(obey_injections=True))``: the
simulator follows any "ignore previous instructions" that reaches it outside a
``<<< >>>`` fence, so a prompt that failed to fence the ticket would show on the page.
With ``ANTHROPIC_API_KEY`` set, the same alias routes to Anthropic instead.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import uvicorn

from bastion import Gateway, load_config
from bastion.providers.sim import Simulator
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.safety.pii.guard import PiiLogFilter
from bastion.server.serve import DrainingServer
from bastion.state import CounterStore, open_state

from . import prompts, seed
from .backends import Backend, LibraryBackend
from .billing import Billing
from .drafter import Drafter
from .knowledge import HelpCenter
from .settings import FEATURE, Settings
from .tickets import TicketStore
from .web import DeskApp

log = logging.getLogger("support_drafter")

DASHBOARD_KEY_ENV = "SUPPORT_DRAFTER_DASHBOARD_KEY"
# ticket, customer and invoice numbers are not PII: keep them readable in records
ALLOW = [r"\bT-\d{4}\b", r"\bcus_\d+\b", r"\bINV-\d{4}-\d{4}\b"]


def gateway_config(settings: Settings, data_dir: Path) -> dict[str, Any]:
    """The in-process gateway: stores in the data dir, one alias, the drafter's feature caps."""
    if settings.real_provider:
        providers = {"anthropic": {"kind": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"}}
        deployment: dict[str, Any] = {
            "provider": "anthropic",
            "model": os.environ.get("SUPPORT_DRAFTER_MODEL", "claude-sonnet-4-5"),
        }
    else:
        providers = {"sim": {"kind": "sim"}}
        deployment = {
            "provider": "sim",
            "model": "claude-sonnet-5",
            "headers": {"x-sim-chunk-ms": f"{settings.sim_chunk_ms:g}", "x-sim-ttft-ms": "150"},
        }
    return {
        "store": {"url": f"sqlite:///{data_dir / 'bastion.db'}"},
        "state": {"url": f"sqlite:///{data_dir / 'bastion-state.db'}"},
        "observability": {"spill_path": str(data_dir / "bastion-spill.jsonl")},
        "server": {"admin_key_env": DASHBOARD_KEY_ENV},
        "providers": providers,
        "models": {settings.model: {"deployments": [deployment]}},
        "safety": {"pii": {"extra_allow_patterns": ALLOW}},
        "features": {
            "default": {},
            FEATURE: {
                "max_tokens_default": 600,
                "max_tokens_limit": 1000,
                "deadline": 30.0,
                "daily_budget_usd": 5.0,
                "pii_provider": True,  # the model never sees a card number or an email
                "pii_output": "redact",
                "degraded": {"mode": "error"},  # AIUnavailable, so the page can say so
            },
        },
    }


def _secret(settings: Settings, data_dir: Path) -> str:
    """Signs sessions and derives the prompt canaries; stable across restarts."""
    if settings.secret:
        return settings.secret
    path = data_dir / "secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _scrub_logs(scrubber: Scrubber) -> None:
    """The app's own log lines go through the same PII scrubber as Bastion's records."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    f = PiiLogFilter(scrubber)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(f)


SHUTDOWN_GRACE_S = 2  # seconds the drafts in flight get after Ctrl-C before they are cut


async def serve(settings: Settings) -> None:
    data_dir = settings.data_dir.resolve()
    if not data_dir.exists():
        data_dir.mkdir(parents=True)
        (data_dir / ".gitignore").write_text("*\n")  # runtime state, never committed
    scrubber = Scrubber(ScrubberConfig(extra_allow_patterns=tuple(ALLOW)))
    _scrub_logs(scrubber)
    secret = _secret(settings, data_dir)
    gateway: Gateway | None = None
    backend: Backend
    state: CounterStore
    dashboard_key = None
    if settings.via_gateway:
        from .sdk_backend import GatewayBackend  # the anthropic SDK is only needed here

        assert settings.gateway_url is not None and settings.gateway_key is not None
        backend = GatewayBackend(
            settings.gateway_url, settings.gateway_key, settings.gateway_admin_key
        )
        state = open_state("memory://")
        mode = "via gateway · anthropic SDK"
    else:
        dashboard_key = os.environ.get(DASHBOARD_KEY_ENV)
        if not dashboard_key:
            dashboard_key = "bst-desk-" + secrets.token_urlsafe(24)
            os.environ[DASHBOARD_KEY_ENV] = dashboard_key
        config = load_config(None, overrides=gateway_config(settings, data_dir))
        gateway = Gateway(config, simulator=Simulator(obey_injections=True))
        await gateway.start()
        await prompts.publish(gateway.store)
        backend = LibraryBackend(gateway, dashboard_url="/dashboard")
        state = gateway.state
        mode = "library · " + ("Anthropic" if settings.real_provider else "simulator")
    tickets = seed.load_tickets()
    store = TicketStore(data_dir / "desk.db")
    help_center = HelpCenter(seed.load_docs(), data_dir / "helpcenter.db", state, scrubber)
    billing = Billing(seed.load_invoices(), {t.id: t for t in tickets})
    try:
        await store.open(tickets)
        await help_center.open()
        templates = prompts.registry(secret)
        drafter = Drafter(
            backend=backend,
            help_center=help_center,
            billing=billing,
            executor=billing.executor(state),
            templates=templates,
            store=store,
            model=settings.model,
            scripted=settings.scripted,
        )
        app = DeskApp(
            agents=seed.load_agents(),
            store=store,
            help_center=help_center,
            drafter=drafter,
            backend=backend,
            secret=secret.encode(),
            mode_label=mode,
            gateway=gateway,
            debug=settings.debug,
        )
        # Bastion's own server: Ctrl-C drains for a bound, then returns (uvicorn's re-raised
        # KeyboardInterrupt cut the cleanup below short, and open database threads held the exit)
        server = DrainingServer(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                lifespan="off",
                access_log=False,
                log_level="warning",
            ),
            drain_s=SHUTDOWN_GRACE_S,
        )
        url = f"http://{settings.host}:{settings.port}"
        print(f"Support drafter on {url}  ({backend.describe()})", flush=True)
        if dashboard_key is not None:
            print(f"  Bastion dashboard: {url}/dashboard  (admin key: {dashboard_key})", flush=True)
        elif backend.dashboard_url:
            print(f"  Bastion dashboard: {backend.dashboard_url}", flush=True)
        await server.serve()
    finally:
        await help_center.close()
        await store.close()
        await backend.aclose()
        if settings.via_gateway:
            await state.close()  # in library mode the gateway closed its own
