"""The app's settings: one frozen object, from the command line with defaults that run anywhere."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FEATURE = "support-drafter"
TEMPLATE = "support-drafter"
COMPANY = "Acme"


@dataclass(frozen=True, slots=True)
class Settings:
    """How this process runs; ``gateway_url`` set means the SDK mode."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".support_drafter")
    gateway_url: str | None = None
    gateway_key: str | None = None
    gateway_admin_key: str | None = None
    model: str = "drafter"
    sim_chunk_ms: float = 40.0
    sim_script: bool | None = None  # None: on exactly when the built-in simulator answers
    debug: bool = False
    secret: str | None = None

    @property
    def via_gateway(self) -> bool:
        return self.gateway_url is not None

    @property
    def real_provider(self) -> bool:
        """Library mode answers from Anthropic when a key is set, else from the simulator."""
        return not self.via_gateway and bool(os.environ.get("ANTHROPIC_API_KEY"))

    @property
    def scripted(self) -> bool:
        """Whether requests carry the simulator's drafter script (never for a real model)."""
        if self.sim_script is not None:
            return self.sim_script
        return not self.via_gateway and not self.real_provider


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m examples.support_drafter",
        description="The support drafter: a ticket desk drafting replies through Bastion.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".support_drafter"),
        help="where the ticket desk, help-center index and Bastion's stores live",
    )
    p.add_argument(
        "--via-gateway",
        metavar="URL",
        help="call a running `bastion serve` with the anthropic SDK instead of in-process",
    )
    p.add_argument("--key", help="the Bastion virtual key for --via-gateway")
    p.add_argument(
        "--admin-key",
        help="a key with the admin role, so the app's kill-switch button works via the gateway",
    )
    p.add_argument(
        "--model",
        help="model alias (default: 'drafter' in-process, 'claude-sonnet-5' via a gateway)",
    )
    p.add_argument(
        "--sim-chunk-ms",
        type=float,
        default=40.0,
        help="the built-in simulator's gap between tokens, so streaming is visible",
    )
    script = p.add_mutually_exclusive_group()
    script.add_argument(
        "--sim-script",
        dest="sim_script",
        action="store_true",
        default=None,
        help="have a simulator behind --via-gateway play the drafter (never with a real model)",
    )
    script.add_argument("--no-sim-script", dest="sim_script", action="store_false")
    p.add_argument("--debug", action="store_true", help="serve /debug/* JSON (tests use it)")
    a = p.parse_args(argv)
    if a.via_gateway and not a.key:
        p.error("--via-gateway needs --key (a Bastion virtual key)")
    model = a.model or ("claude-sonnet-5" if a.via_gateway else "drafter")
    return Settings(
        host=a.host,
        port=a.port,
        data_dir=a.data_dir,
        gateway_url=a.via_gateway.rstrip("/") if a.via_gateway else None,
        gateway_key=a.key,
        gateway_admin_key=a.admin_key,
        model=model,
        sim_chunk_ms=a.sim_chunk_ms,
        sim_script=a.sim_script,
        debug=a.debug,
        secret=os.environ.get("SUPPORT_DRAFTER_SECRET"),
    )
