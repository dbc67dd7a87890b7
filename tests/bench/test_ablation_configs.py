"""``bench/ablation.py`` measures what it says: each side differs from full defaults in its one switch.

The ablation table attributes a CPU delta to a switch ("injection off: -0.1 ms"), so each
variant's config file, as the script writes it and as ``bastion serve`` loads it (bastion's
own loader), must differ from the full-defaults config in exactly the switch it names and in
nothing else (its own store, state and spill files aside); a side whose switch did not take
(a misspelt key dropped by a merge, a shared dict mutated by an earlier variant) would report
noise as a feature's cost. The records sides run the same config through ``recording.py``'s
launchers, and "everything off" is every switch at once. The py-spy attribution is checked on
stacks shaped like py-spy's: a worker thread blocked on its queue is idle, the loop's own C
code is the event loop, and a task's work belongs to its innermost Bastion/aiohttp/uvicorn frame.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import each other by bare name

import ablation  # noqa: E402
import recording  # noqa: E402

SIM_PORT = 18_123
OWN_FILES = {("store", "url"), ("state", "url"), ("observability", "spill_path")}


def flat(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(node, dict) and node:
        out: dict[tuple[str, ...], Any] = {}
        for k, v in node.items():
            out |= flat(v, (*path, str(k)))
        return out
    return {path: node}


def loaded(v: ablation.Variant, tmp: Path) -> Config:
    return load_config(ablation.write_config(v, tmp, SIM_PORT), env={})


def changed(cfg: Config, full: Config) -> set[tuple[str, ...]]:
    a, b = flat(cfg.model_dump()), flat(full.model_dump())
    return {p for p in a.keys() | b.keys() if a.get(p) != b.get(p) and p not in OWN_FILES}


def assert_exactly(diff: set[tuple[str, ...]], switches: Any) -> None:
    prefixes = [tuple(p.split(".")) for p in switches]
    for p in prefixes:  # the switch took: something under it changed
        assert any(d[: len(p)] == p for d in diff), f"{'.'.join(p)} did not change"
    for d in diff:  # and nothing else did
        assert any(d[: len(p)] == p for p in prefixes), f"{'.'.join(d)} changed too"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return loaded(ablation.VARIANTS[0], tmp_path_factory.mktemp("full"))


def test_the_sides_are_full_each_single_switch_two_record_builds_and_all_off() -> None:
    names = [v.name for v in ablation.VARIANTS]
    assert names[0] == ablation.FULL and names[-1] == ablation.ALL_OFF
    assert len(set(names)) == len(names)
    assert len({ablation.slug(n) for n in names}) == len(names)  # one directory each
    assert all(len(v.switches) == 1 and v.record_flag is None for v in ablation.SWITCHES)
    flags = {v.record_flag for v in ablation.VARIANTS if not v.switches and v.record_flag}
    assert flags == {recording.SERVE_FLAG, recording.NOWRITE_FLAG}


@pytest.mark.parametrize("v", ablation.VARIANTS[1:], ids=lambda v: ablation.slug(v.name))
def test_each_variant_differs_from_full_in_exactly_its_switch(
    v: ablation.Variant, full: Config, tmp_path: Path
) -> None:
    cfg = loaded(v, tmp_path)
    diff = changed(cfg, full)
    if not v.switches:  # a records build: the same config, another launcher
        assert diff == set()
        assert v.record_flag in ablation.launcher(v, None)
    else:
        assert_exactly(diff, v.switches)
    assert cfg.store.url.startswith(f"sqlite:///{tmp_path / ablation.slug(v.name)}/")
    assert Path(cfg.observability.spill_path).parent == tmp_path / ablation.slug(v.name)


def test_full_is_the_sidebyside_bastion(full: Config) -> None:
    assert full.cost.caps.per_user_daily_usd == 1_000_000.0
    assert full.cost.rate_limits.per_user.requests_per_minute == 10_000_000.0
    assert (
        full.server.max_concurrent_streams_per_key
        == ablation.bastion_config(Path("/x"), SIM_PORT)["server"]["max_concurrent_streams_per_key"]
    )
    assert full.features["default"].pii_output == "sensitive"
    assert full.features["default"].safety.injection_action == "flag"


def test_everything_off_is_every_switch_and_no_record_guard(full: Config, tmp_path: Path) -> None:
    off = ablation.VARIANTS[-1]
    assert off.record_flag == recording.SERVE_FLAG
    assert_exactly(changed(loaded(off, tmp_path), full), off.switches)
    assert set(off.switches) == {k for s in ablation.SWITCHES for k in s.switches}


@settings(max_examples=25, deadline=None)
@given(picked=st.lists(st.sampled_from(ablation.SWITCHES), min_size=1, unique_by=lambda v: v.name))
def test_any_set_of_switches_changes_exactly_those(picked: list[ablation.Variant]) -> None:
    import tempfile

    switches = {k: v for s in picked for k, v in s.switches.items()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        full = loaded(ablation.VARIANTS[0], tmp)
        cfg = loaded(ablation.Variant("some off", "", switches), tmp)
    assert_exactly(changed(cfg, full), switches)


# -- py-spy attribution ---------------------------------------------------------------------

MAIN = ["<module> (bastion/cli.py:9)", "serve (bastion/cli_common.py:80)"]
LOOP = [*MAIN, "run (asyncio/runners.py:190)", "Runner.run (asyncio/runners.py:118)"]


def wait_line() -> int:
    src, first = inspect.getsourcelines(aiosqlite.core._connection_worker_thread)
    return first + next(i for i, ln in enumerate(src) if "tx.get()" in ln)


def test_a_worker_blocked_on_its_queue_is_idle_and_its_sqlite_work_is_not() -> None:
    thread = ["Thread.run (threading.py:982)"]
    blocked = f"_connection_worker_thread (aiosqlite/core.py:{wait_line()})"
    working = f"_connection_worker_thread (aiosqlite/core.py:{wait_line() + 4})"
    raw = f"{';'.join([*thread, blocked])} 90\n{';'.join([*thread, working])} 7\n"
    assert ablation.attribute(raw) == {"sqlite work in aiosqlite threads (records, state)": 7}


@pytest.mark.parametrize(
    ("below_loop", "group"),
    [
        ([], "event loop (asyncio/uvloop)"),  # the loop's own C code: no frame below Runner.run
        (
            ["Gateway._run (bastion/gateway.py:437)", "timeout (asyncio/timeouts.py:145)"],
            "pipeline, dialects, providers, engine",
        ),
        (
            [
                "pump (bastion/server/app.py:437)",
                "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:544)",
            ],
            "server/ASGI (uvicorn)",
        ),
        (
            [
                "Engine._unary (bastion/engine.py:469)",
                "ClientResponse.read (aiohttp/client_reqrep.py:1)",
            ],
            "aiohttp (client)",
        ),
        (
            [
                "RecordGuard.after (bastion/observability/recording.py:88)",
                "dumps (json/__init__.py:231)",
            ],
            "records",
        ),
        (["BudgetGuard.before (bastion/cost/guard.py:10)"], "cost & state"),
        (["PiiGuard.after (bastion/safety/pii/guard.py:10)"], "safety: PII"),
        (["AccessGuard.after (bastion/observability/access.py:203)"], "access log"),
    ],
)
def test_a_sample_belongs_to_its_innermost_owner_below_the_loop(
    below_loop: list[str], group: str
) -> None:
    assert ablation.group_of([*LOOP, *below_loop]) == group
    assert ablation.attribute(f"{';'.join([*LOOP, *below_loop])} 3\n") == {group: 3}
