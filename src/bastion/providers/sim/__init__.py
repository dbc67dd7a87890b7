"""The built-in provider simulator: both wire formats, deterministic answers, scripted faults.

It is the embedded default provider when no real key is set and what tests, demos
and benchmarks talk to, in-process (``SimTransport`` for ``sim://`` URLs) or over
HTTP (``create_app`` / ``serve``). Fault and pacing syntax: see ``scenario``.
"""

from __future__ import annotations

from .app import create_app, serve, server_config
from .core import RecordedRequest, Simulator
from .result import SimCut, SimReset, SimResult
from .scenario import Fault, ScenarioError, parse_fault, split_model
from .transport import SimResponse, SimTransport

__all__ = [
    "Fault",
    "RecordedRequest",
    "ScenarioError",
    "SimCut",
    "SimReset",
    "SimResponse",
    "SimResult",
    "SimTransport",
    "Simulator",
    "create_app",
    "parse_fault",
    "serve",
    "server_config",
    "split_model",
]
