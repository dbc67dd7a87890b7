"""Guards talk only to a dialect: no guard module names a wire format or its helpers.

Every guard module's source is parsed and walked: importing ``Format``/``ApiFormat``, anything
from ``providers.translate`` but its neutral model, or a name that says which format it is for
(``usage_from_anthropic``, ``validate_openai`` ...), and comparing anything with the string
"anthropic" or "openai", each fails this test with the module and line. A new wire format is
then one new dialect, and no guard changes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bastion"
# observability: traces, records and refusals read a call through its dialect like any guard
GUARD_DIRS = ("safety", "cost", "reliability", "observability")
GUARD_FILES = (
    "output.py",  # output filters over answers and stream events
    "streams.py",  # the stream relay: error events, recovery
    "watch.py",  # what an answer says: text, tools, usage, the end
    "schema.py",  # request validation
    "recovery.py",  # carrying a cut stream on
    "pipeline.py",  # runs the guards
    "spend.py",  # settles what a call cost
    "errors.py",  # the error tree: each dialect renders it in its format
)
FORMAT_NAMES = {"Format", "ApiFormat"}
FORMAT_WORDS = ("anthropic", "openai")
# the provider-neutral model every format translates to and from is not a format's internals
NEUTRAL = "providers.translate.model"
# the tool executor's converters for app code holding either SDK's messages: a library the app
# calls, which no guard uses; the executor itself (safety/tools/*) is walked like any guard
TOOL_CONVERTERS = "safety/tools/wire.py"


def guard_modules() -> list[Path]:
    files = [p for d in GUARD_DIRS for p in sorted((SRC / d).rglob("*.py"))]
    files = [p for p in files if p.relative_to(SRC).as_posix() != TOOL_CONVERTERS]
    return files + [SRC / f for f in GUARD_FILES]


def violations(source: str, name: str) -> list[str]:
    """What in one module's source crosses the boundary, as ``name:line: what``."""
    out: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if ("providers.translate" in mod and not mod.endswith(NEUTRAL)) or mod == "translate":
                out.append(f"{name}:{node.lineno}: imports from {mod}")
            for alias in node.names:
                if alias.name == "translate" and mod.endswith("providers"):
                    out.append(f"{name}:{node.lineno}: imports providers.translate")
                if alias.name in FORMAT_NAMES:
                    out.append(f"{name}:{node.lineno}: imports {alias.name}")
                if _format_specific(alias.name) and not (
                    name == "safety/tools/__init__.py" and mod == "wire"
                ):
                    out.append(f"{name}:{node.lineno}: imports {alias.name} from {mod}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if "providers.translate" in alias.name and not alias.name.endswith(NEUTRAL):
                    out.append(f"{name}:{node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                if _format_literal(operand):
                    out.append(f"{name}:{node.lineno}: compares with a format's name")
        elif isinstance(node, ast.Attribute) and node.attr in ("ANTHROPIC", "OPENAI"):
            out.append(f"{name}:{node.lineno}: names a format ({node.attr})")
    return out


def _format_specific(imported: str) -> bool:
    """A name that says which format it is for (a constant such as a PII pattern's aside)."""
    if imported.isupper() and imported not in ("ANTHROPIC", "OPENAI"):
        return False  # OPENAI_KEY: the shape of a secret, not a format
    return any(re.search(rf"(^|_){w}(_|$)", imported.lower()) for w in FORMAT_WORDS)


def _format_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.lower() in FORMAT_WORDS
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_format_literal(e) for e in node.elts)
    return False


def test_the_guard_module_list_is_real() -> None:
    mods = guard_modules()
    assert all(p.is_file() for p in mods)
    names = {p.relative_to(SRC).as_posix() for p in mods}
    # the guards the gateway runs are all in it
    for expected in (
        "safety/prompting/guards.py",
        "safety/sql_guard.py",
        "safety/sql_stream.py",
        "safety/structured.py",
        "safety/setup.py",
        "cost/caching.py",
        "cost/max_tokens.py",
        "reliability/degraded.py",
        "output.py",
        "streams.py",
        "observability/genai_content.py",
        "observability/refused.py",
        "errors.py",
    ):
        assert expected in names


@pytest.mark.parametrize("path", guard_modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_a_guard_module_names_no_wire_format(path: Path) -> None:
    assert violations(path.read_text(), path.relative_to(SRC).as_posix()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from ..providers.base import Format",
        "from bastion.store.models import ApiFormat",
        "from ..providers.translate._stream_splice import ClientView",
        "from .providers import translate",
        "from ..providers.adapters import usage_from_anthropic",
        "from ..schema import validate_openai",
        "body = exc.anthropic_body() if fmt == 'anthropic' else exc.openai_body()",
        "from ..dialects import ANTHROPIC",
        "if fmt == 'anthropic':\n    pass",
        "x = call.client_format.value != 'openai'",
        "ok = kind in ('openai', 'sim')",
        "y = fmt is Format.ANTHROPIC",
    ],
)
def test_the_walk_catches_each_way_of_naming_a_format(snippet: str) -> None:
    assert violations(snippet, "m.py")


@pytest.mark.parametrize(
    "snippet",
    [
        "from bastion.providers.translate.model import TextPart",
        "from ..dialects import Dialect, dialect_for",
        "w = call.dialect.observe_body(call, obj)",
        "if kind == 'tool_use':\n    pass",
        "from phonenumbers import PhoneNumberFormat",
        "from ._patterns import OPENAI_KEY",
    ],
)
def test_the_walk_lets_dialect_talk_through(snippet: str) -> None:
    assert violations(snippet, "m.py") == []
