"""Named, versioned prompt templates: the only way instructions are written, so apps never splice user text in.

A template version is immutable once registered (re-registering the same text is a
no-op, different text under the same version is an error), each version carries a
stable canary derived from the registry's secret, and labels (``prod``, ``canary``)
point at versions so an app can roll forward or back without a deploy. Variables are
for app-controlled values (a product name, a tone); they are still neutralized, kept
to one line and bounded, and anything a user typed belongs in ``user_content``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._escape import neutralize_line
from .builder import DocLike, Prompt, PromptBuilder
from .canary import canary_token
from .spotlight import Spotlight

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
LATEST = "latest"


@dataclass(frozen=True, slots=True)
class Template:
    """One immutable template version and the canary planted in its system prompt."""

    name: str
    version: int
    instructions: str
    variables: tuple[str, ...]
    canary: str
    spotlight: Spotlight | None = None

    @property
    def ref(self) -> str:
        """``name@version``: what a call records as its prompt version."""
        return f"{self.name}@{self.version}"

    def fill(self, variables: Mapping[str, object]) -> str:
        """The instructions with each ``{var}`` replaced by its neutralized one-line value."""
        given = set(variables)
        missing = set(self.variables) - given
        extra = given - set(self.variables)
        if missing or extra:
            raise ValueError(
                f"template {self.ref}: missing variables {sorted(missing)}, unknown {sorted(extra)}"
            )
        values = {k: neutralize_line(str(v)) for k, v in variables.items()}

        def sub(m: re.Match[str]) -> str:
            tok = m.group()
            if tok == "{{":
                return "{"
            if tok == "}}":
                return "}"
            return values[m.group(1)]

        return _PLACEHOLDER.sub(sub, self.instructions)


def is_template_name(name: str) -> bool:
    """Whether ``name`` could name a template (what a header claim must look like to be looked up)."""
    return _NAME.match(name) is not None


def is_label(ref: str) -> bool:
    """Whether a version reference names a label (a released version) rather than a number or
    ``latest`` (which may be an unreleased draft)."""
    return bool(ref) and ref != LATEST and not ref.isdigit()


def placeholders(instructions: str) -> tuple[str, ...]:
    """The ``{var}`` names in a template, in order of first use; stray braces are an error."""
    names: list[str] = []
    for m in _PLACEHOLDER.finditer(instructions):
        tok = m.group()
        if tok in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise ValueError(
                f"stray {tok!r} in template at {m.start()}; write {tok * 2} for a brace"
            )
        if m.group(1) not in names:
            names.append(m.group(1))
    return tuple(names)


class TemplateRegistry:
    """Templates by name and version, with labels; renders prompts through one ``PromptBuilder``."""

    __slots__ = ("_builder", "_labels", "_secret", "_versions")

    def __init__(self, secret: bytes | str, *, builder: PromptBuilder | None = None) -> None:
        if not secret:
            raise ValueError("a template registry needs a secret for its canaries")
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._builder = builder or PromptBuilder()
        self._versions: dict[str, dict[int, Template]] = {}
        self._labels: dict[str, dict[str, int]] = {}

    def register(
        self,
        name: str,
        instructions: str,
        *,
        version: int | None = None,
        variables: Iterable[str] | None = None,
        labels: Iterable[str] = (),
        spotlight: Spotlight | None = None,
    ) -> Template:
        """Add a version (next number if ``version`` is None); declared variables must match the text."""
        if not _NAME.match(name):
            raise ValueError(f"bad template name {name!r}")
        found = placeholders(instructions)
        if variables is not None and set(variables) != set(found):
            raise ValueError(
                f"template {name}: declared variables {sorted(variables)} "
                f"but the text uses {sorted(found)}"
            )
        versions = self._versions.setdefault(name, {})
        if version is None:
            last = versions.get(max(versions, default=0))
            if last is not None and (last.instructions, last.spotlight) == (
                instructions,
                spotlight,
            ):
                version = last.version  # registering the same text at every start-up is a no-op
            else:
                version = max(versions, default=0) + 1
        if version < 1:
            raise ValueError("template versions start at 1")
        t = Template(
            name, version, instructions, found, canary_token(self._secret, name, version), spotlight
        )
        old = versions.get(version)
        if old is not None and old != t:
            raise ValueError(f"template {t.ref} already exists with different content")
        versions[version] = t
        for label in labels:
            self.set_label(name, label, version)
        return t

    def set_label(self, name: str, label: str, version: int) -> None:
        """Point ``label`` at a version (roll forward or back without touching the app)."""
        if label == LATEST or label.isdigit():
            raise ValueError(f"{label!r} is reserved")
        if version not in self._versions.get(name, {}):
            raise KeyError(f"no template {name}@{version}")
        self._labels.setdefault(name, {})[label] = version

    def get(self, name: str, version_or_label: int | str = LATEST) -> Template:
        """A version by number, label, digits, or ``latest``."""
        versions = self._versions.get(name)
        if not versions:
            raise KeyError(f"no template named {name!r}")
        ref = version_or_label
        if isinstance(ref, str):
            if ref == LATEST:
                ref = max(versions)
            elif ref.isdigit():
                ref = int(ref)
            else:
                label = self._labels.get(name, {}).get(ref)
                if label is None:
                    raise KeyError(f"template {name!r} has no label {ref!r}")
                ref = label
        t = versions.get(ref)
        if t is None:
            raise KeyError(f"no template {name}@{ref}")
        return t

    def versions(self, name: str) -> list[int]:
        return sorted(self._versions.get(name, {}))

    def canaries(self) -> dict[str, str]:
        """Every version's canary by ``name@version``: what an output watcher looks for."""
        return {t.ref: t.canary for vs in self._versions.values() for t in vs.values()}

    def render(
        self,
        name: str,
        version_or_label: int | str,
        variables: Mapping[str, object],
        docs: Iterable[DocLike],
        user_content: str,
        *,
        spotlight: Spotlight | None = None,
    ) -> Prompt:
        """The one call an app makes: instructions from the template, data fenced as data."""
        t = self.get(name, version_or_label)
        mode = spotlight if spotlight is not None else t.spotlight
        return self._builder.build(
            t.fill(variables),
            user_content=user_content,
            docs=docs,
            spotlight=mode,
            canary=t.canary,
            version=t.ref,
        )
