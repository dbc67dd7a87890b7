"""``bastion check``: the seed's whole readiness checklist, with evidence that each item works.

Every item inspects the configuration (is it set up?) and, where it can, runs a drill
against a simulated copy of the configured gateway (does it actually work?).
"""

from __future__ import annotations

from ._base import CheckContext, Item, ItemResult, Status
from .audit import ITEMS, run_check

__all__ = ["ITEMS", "CheckContext", "Item", "ItemResult", "Status", "run_check"]
