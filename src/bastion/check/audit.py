"""The readiness audit: every item of the seed's checklist, inspected and drilled, in checklist order."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..config import Config, load_config
from ._base import CheckContext, Item, ItemResult
from .cost import COST_ITEMS
from .latency import LATENCY_ITEMS
from .observability import OBSERVABILITY_ITEMS
from .reliability import RELIABILITY_ITEMS
from .safety import SAFETY_ITEMS

__all__ = ["ITEMS", "run_check"]

ITEMS: tuple[Item, ...] = (
    *COST_ITEMS,
    *LATENCY_ITEMS,
    *RELIABILITY_ITEMS,
    *SAFETY_ITEMS,
    *OBSERVABILITY_ITEMS,
)


def _selected(items: Sequence[Item], only: str | None) -> list[Item]:
    if not only:
        return list(items)
    wanted = only.lower()
    exact = [i for i in items if wanted in (i.id, i.track.lower())]
    return exact or [i for i in items if wanted in i.name.lower() or wanted in i.id]


async def run_check(
    config: Config | str | Path | None = None,
    *,
    project_dir: str | Path = ".",
    drills: bool = True,
    only: str | None = None,
    url: str | None = None,
) -> list[ItemResult]:
    """Each item's status and evidence; an item whose check crashes is a FAIL naming the error."""
    path = None if isinstance(config, Config) or config is None else Path(config)
    cfg = config if isinstance(config, Config) else load_config(config)
    ctx = CheckContext(cfg, path, Path(project_dir), drills=drills, url=url)
    results = []
    try:
        for item in _selected(ITEMS, only):
            res = ItemResult(item.id, item.track, item.name)
            t0 = time.monotonic()
            try:
                await item.run(ctx, res)
            except Exception as exc:
                res.add("FAIL", f"check crashed: {type(exc).__name__}: {exc}")
            res.elapsed_ms = (time.monotonic() - t0) * 1000
            results.append(res)
    finally:
        ctx.close()
    return results
