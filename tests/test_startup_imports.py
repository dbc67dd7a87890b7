"""Start-up loads no optional backend it is not configured for (each costs import time and RSS).

redis-py (~0.1 s and ~10 MB with the OpenTelemetry metrics SDK it pulls in), asyncpg, sqlglot
(~0.05 s, ~8 MB) and the OTLP exporters are loaded only when the config asks for Redis state,
a PostgreSQL store, a feature with SQL tools or an OTLP endpoint. Each check runs in a fresh interpreter, since this test process has them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import write_config
from typer.testing import CliRunner

from bastion.cli import app

OPTIONAL = ("redis", "asyncpg", "opentelemetry.exporter", "sqlglot", "botocore")


def _loaded_after(code: str) -> set[str]:
    """The top-level names of every module loaded after running ``code`` in a new interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _optional(mods: set[str]) -> set[str]:
    return {m for m in mods for o in OPTIONAL if m == o or m.startswith(o + ".")}


def test_importing_the_cli_loads_no_optional_backend() -> None:
    assert _optional(_loaded_after("import bastion.cli")) == set()


def test_serving_loads_none_of_the_other_commands_modules() -> None:
    loaded = _loaded_after("import bastion.cli")
    assert "bastion.cli" in loaded
    for module in (
        "rich",
        "bastion.demo",
        "bastion.check.cli",
        "bastion.evals.cli",
        "bastion.spend",
    ):
        assert module not in loaded, module


@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(["check", "spend", "demo", "eval"]))
def test_each_lazily_loaded_command_is_listed_and_runs_its_own_help(name: str) -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["--help"])
    assert listing.exit_code == 0 and f" {name} " in listing.output
    own = runner.invoke(app, [name, "--help"])
    assert own.exit_code == 0, own.output
    assert f"{name} [OPTIONS]" in own.output


def test_building_and_starting_an_embedded_gateway_loads_no_optional_backend(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    code = f"""
import asyncio
from bastion import Gateway, load_config
async def main():
    gw = Gateway(load_config({str(config)!r}))
    await gw.start()
    await gw.aclose()
asyncio.run(main())
"""
    loaded = _loaded_after(code)
    assert "bastion.gateway" in loaded
    assert _optional(loaded) == set()


def test_redis_state_postgres_store_and_sql_tools_load_their_libraries_when_configured(
    tmp_path: Path,
) -> None:
    safety = {"sql_tools": {"run_sql": "query"}, "sql_grants": {"support": {"orders": ["id"]}}}
    config = write_config(
        tmp_path,
        state={"url": "redis://127.0.0.1:6379/0", "prefix": "test_startup_imports"},
        store={"url": "postgresql://postgres@127.0.0.1:5432/test"},
        features={"default": {"safety": safety}},
    )
    code = f"""
from bastion import Gateway, load_config
Gateway(load_config({str(config)!r}))
"""
    loaded = _loaded_after(code)
    assert {"redis", "asyncpg", "sqlglot"} <= loaded


@settings(max_examples=4, deadline=None)
@given(
    lazy=st.sampled_from(
        [
            ("bastion.state", "RedisCounterStore", "redis"),
            ("bastion.store", "PostgresStore", "asyncpg"),
            ("bastion.safety.validation", "SqlPolicy", "sqlglot"),
            ("bastion.safety.validation", "validate_sql", "sqlglot"),
            ("bastion.safety.validation", "execute_validated", "sqlglot"),
        ]
    )
)
def test_the_lazy_names_are_still_importable_from_their_package(
    lazy: tuple[str, str, str],
) -> None:
    package, name, library = lazy
    loaded = _loaded_after(f"from {package} import {name}\nassert {name}.__name__ == {name!r}")
    assert library in loaded
