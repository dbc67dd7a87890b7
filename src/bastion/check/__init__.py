"""``bastion check``: the seed's whole readiness checklist, with evidence that each item works.

Every item judges the app, feature by feature (does the config use X? PASS / WARN / FAIL),
and, where it can, runs a drill against a sandbox built from that config with simulated
providers (does it actually hold?). What Bastion offers but the app is not seen to use is
INFO, never PASS.
"""

from __future__ import annotations

from ._base import CheckContext, Item, ItemResult, Status
from .audit import ITEMS, run_check

__all__ = ["ITEMS", "CheckContext", "Item", "ItemResult", "Status", "run_check"]
