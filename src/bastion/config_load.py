"""Where a configuration comes from: the embedded defaults, the YAML file, the environment.

``load_config`` merges defaults ← file ← ``BASTION__SECTION__KEY`` environment overrides ←
keyword overrides and validates the result against the schema in ``config.py``; errors name the
bad key and, for a file, its line. ``find_config`` decides which file: ``--config`` /
``$BASTION_CONFIG``, else ``./bastion.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config


_SIM_MODELS = (
    "claude-sonnet-5",
    "claude-haiku-5-5",
    "claude-opus-5",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o-mini",
)

# embedding aliases of the simulated defaults, at their OpenAI namesakes' native dimensions
_SIM_EMBEDDING_MODELS = (("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072))


def default_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The embedded defaults: real providers for whichever keys are set, else the simulator."""
    env = os.environ if env is None else env
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    if env.get("ANTHROPIC_API_KEY"):
        providers["anthropic"] = {"kind": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"}
        models["claude-*"] = {"deployments": [{"provider": "anthropic", "model": "{model}"}]}
    if env.get("OPENAI_API_KEY"):
        providers["openai"] = {"kind": "openai", "api_key_env": "OPENAI_API_KEY"}
        for pat in ("gpt-*", "o1*", "o3*", "o4*"):
            models[pat] = {"deployments": [{"provider": "openai", "model": "{model}"}]}
    if not providers:
        providers["sim"] = {"kind": "sim"}
        for name in _SIM_MODELS:
            models[name] = {"deployments": [{"provider": "sim", "model": name}]}
        for name, dims in _SIM_EMBEDDING_MODELS:
            models[name] = {"deployments": [{"provider": "sim", "model": name, "dimensions": dims}]}
        models["sim-*"] = {"deployments": [{"provider": "sim", "model": "{model}"}]}
    return {"providers": providers, "models": models}


def _env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith("BASTION__"):
            continue
        path = [p.lower() for p in name[len("BASTION__") :].split("__") if p]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in the YAML text to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = (*path, str(k.value))
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = (*path, str(i))
                lines[p] = v.start_mark.line + 1
                walk(v, p)

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _raise_validation(err: ValidationError, lines: dict[tuple[str, ...], int], source: str) -> None:
    msgs = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc) or "(top level)"
        line = None
        for n in range(len(loc), 0, -1):
            line = lines.get(loc[:n])
            if line is not None:
                break
        where = f"{source}:{line}: " if line is not None else f"{source}: "
        msg = str(e["msg"]).removeprefix("Value error, ")
        msgs.append(f"{where}{key}: {msg}")
    raise ConfigError("invalid configuration:\n  " + "\n  ".join(msgs))


DEFAULT_CONFIG_FILE = "bastion.yaml"


def find_config(path: str | Path | None, cwd: Path | None = None) -> Path | None:
    """The config file to use: the one given (``--config`` / ``$BASTION_CONFIG``), else
    ``./bastion.yaml`` when it exists, else None (the embedded defaults)."""
    if path is not None:
        return Path(path)
    here = (cwd or Path.cwd()) / DEFAULT_CONFIG_FILE
    return here if here.is_file() else None


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load, merge (defaults ← file ← env ← overrides) and validate; raise ``ConfigError`` naming the key."""
    env = os.environ if env is None else env
    text = ""
    source = "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping")
        data = loaded
    if not data.get("providers") and not data.get("models"):
        data = {**default_config(env), **data}
    _env_overrides(data, env)
    if overrides:
        data = _deep_merge(data, dict(overrides))
    from .config import Config  # the schema imports this module for its re-exports

    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, _line_index(text) if text else {}, source)
        raise  # unreachable


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
