"""The simulator's Responses API shares no code with the gateway's Responses translation.

If ``providers/sim/responses_wire.py`` built its answers with the gateway's own builders, a bug
in them would be mirrored by the fake and no test could see it. Its source, and the source of
every ``bastion`` module its imports reach (``TYPE_CHECKING`` ones too), is parsed: an import
from ``bastion.responses``, ``bastion.dialects`` or ``bastion.providers.translate`` (absolute or
relative), or a string naming one of them (``importlib.import_module``), fails with the module
and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
FORBIDDEN = ("bastion.responses", "bastion.dialects", "bastion.providers.translate")
ROOT = "bastion.providers.sim.responses_wire"


def _file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _bad(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Each ``bastion`` module ``source`` (of ``module``) imports or names, with its line."""
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("bastion.")
        ):
            out.append((node.lineno, node.value))
    return [(line, name) for line, name in out if name.startswith("bastion")]


def walk(root: str = ROOT) -> tuple[set[str], list[str]]:
    """The modules reached from ``root``, and every forbidden import among them."""
    seen: set[str] = set()
    todo = [root]
    bad: list[str] = []
    while todo:
        module = todo.pop()
        path = _file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        for line, name in imports(path.read_text(), module, path.name == "__init__.py"):
            if _bad(name):
                bad.append(f"{module}:{line}: {name}")
            elif _file(name) is not None and name not in seen:
                todo.append(name)
    return seen, bad


def test_the_sim_responses_wire_reaches_no_gateway_responses_code() -> None:
    reached, bad = walk()
    assert bad == []
    # not vacuous: the modules the wire really uses are walked
    assert {"bastion.providers.sim.responses_answer", "bastion.providers.sse"} <= reached


def test_each_kind_of_forbidden_import_is_caught() -> None:
    module = "bastion.providers.sim.responses_wire"
    for source in (
        "from ...responses.stream import ResponsesEmitter",
        "from ..translate._common import as_dict",
        "from bastion.dialects import dialect_for",
        "import bastion.responses.response",
        "if TYPE_CHECKING:\n    from ... import responses",
        "importlib.import_module('bastion.responses.request')",
    ):
        names = [n for _, n in imports(source, module)]
        assert any(_bad(n) for n in names), source
    assert not any(_bad(n) for _, n in imports("from ..sse import SSEDecoder", module))
