"""Eval suites as data (YAML or JSONL), validated up front so a typo fails before any call is paid for.

A suite is a name, defaults, optional prompt templates, and cases; each case is a
request (raw ``messages``, or a template plus ``user_content``/``docs``) and the
assertions that decide whether the answer passes. Case fields left unset take the
suite's ``defaults``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ..dialects import NoDialect, dialect_for
from ..errors import ConfigError
from ..providers.base import Format

__all__ = [
    "Assertion",
    "Case",
    "DocSpec",
    "GateSpec",
    "ProfileSpec",
    "RubricSpec",
    "SimSpec",
    "Suite",
    "TemplateSpec",
    "ToolDecl",
    "load_suite",
    "parse_suite",
]

SpotlightMode = Literal["none", "datamark", "base64"]

ASSERTION_KINDS: tuple[str, ...] = (
    "contains",
    "not_contains",
    "regex",
    "not_regex",
    "json_schema",
    "refusal",
    "no_pii",
    "no_canary",
    "tool_called",
    "tool_not_called",
    "tools_permitted",
    "max_latency_ms",
    "max_cost_usd",
    "sql_safe",
    "max_length",
    "max_words",
    "citations",
    "python",
    "rubric",
)
_ENTRY_POINT = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"


def _client_format(v: Any) -> Any:
    """A case is sent as an app sends it: in a format a client speaks (one with a dialect)."""
    try:
        return dialect_for(v).format if isinstance(v, str) else v
    except NoDialect:
        raise ValueError(
            f"api is a format an app speaks (anthropic or openai), not {v!r}"
        ) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RubricSpec(_Strict):
    """A model-graded criterion: the judge's 0..1 score must reach ``threshold`` (mean over epochs)."""

    rubric: str
    judge: str | None = None
    threshold: float = Field(0.7, ge=0.0, le=1.0)
    keywords: list[str] = Field(default_factory=list)
    citations: bool = False
    max_words: int | None = Field(None, gt=0)
    min_words: int | None = Field(None, ge=0)
    sim_reply: str | None = None


class Assertion(_Strict):
    """Exactly one check; ``name`` labels it in reports."""

    name: str | None = None
    contains: str | list[str] | None = None
    not_contains: str | list[str] | None = None
    regex: str | None = None
    not_regex: str | None = None
    json_schema: dict[str, Any] | None = None
    refusal: bool | None = None
    no_pii: bool | None = None
    no_canary: bool | None = None
    tool_called: str | None = None
    tool_not_called: str | None = None
    tools_permitted: bool | None = None
    max_latency_ms: float | None = Field(None, gt=0)
    max_cost_usd: float | None = Field(None, ge=0)
    sql_safe: bool | Literal["strict"] | None = None
    max_length: int | None = Field(None, gt=0)
    max_words: int | None = Field(None, gt=0)
    citations: bool | None = None
    python: str | None = Field(None, pattern=_ENTRY_POINT)
    rubric: RubricSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Assertion:
        set_ = [k for k in ASSERTION_KINDS if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(
                f"an assertion needs exactly one of {', '.join(ASSERTION_KINDS)}; got {set_ or 'none'}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ASSERTION_KINDS if getattr(self, k) is not None)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        value = getattr(self, self.kind)
        if isinstance(value, RubricSpec):
            return f"rubric:{value.rubric[:40]}"
        if isinstance(value, dict):
            return f"{self.kind}"
        return f"{self.kind}:{value}"[:80]


class ToolDecl(_Strict):
    """A tool the app would offer, with the permission its executor enforces (None: anyone)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    permission: str | None = None


class DocSpec(_Strict):
    id: str
    text: str


class Case(_Strict):
    """One request and what its answer must satisfy."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:\-]{1,120}$")
    description: str = ""
    api: Annotated[Format, BeforeValidator(_client_format)] = Format.ANTHROPIC
    model: str | None = None
    feature: str | None = None
    user: str | None = None
    roles: list[str] = Field(default_factory=list)
    system: str | None = None
    messages: list[dict[str, Any]] | None = None
    template: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    user_content: str | None = None
    docs: list[DocSpec] = Field(default_factory=list)
    spotlight: SpotlightMode | None = None
    canary: str | None = None
    tools: list[ToolDecl] = Field(default_factory=list)
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    sim_reply: str | None = None
    facts: list[str] = Field(default_factory=list)
    turns: list[str] = Field(default_factory=list)
    must_pass: bool = True
    min_pass_rate: float | None = Field(None, ge=0.0, le=1.0)
    tags: list[str] = Field(default_factory=list)
    assertions: list[Assertion] = Field(alias="assert", min_length=1)

    @model_validator(mode="after")
    def _has_input(self) -> Case:
        if self.messages is None and self.user_content is None:
            raise ValueError("a case needs `messages` or `user_content`")
        if self.messages is not None and (self.template or self.user_content or self.docs):
            raise ValueError("give either `messages` or template/user_content/docs, not both")
        if self.sim_reply is not None and "]]" in self.sim_reply:
            raise ValueError("sim_reply cannot contain ']]'")
        bad = [f for f in self.facts if "]]" in f or "|" in f or not f.strip()]
        if bad:
            raise ValueError(f"facts must be non-empty and contain no ']]' or '|': {bad}")
        if any(not t.strip() for t in self.turns):
            raise ValueError("a turn must be a non-empty user message")
        return self


class TemplateSpec(_Strict):
    """App-written instructions; variables fill ``{name}`` placeholders."""

    instructions: str
    version: int = Field(1, ge=1)
    spotlight: SpotlightMode | None = None


class GateSpec(_Strict):
    """How the CI gate judges a score drop: larger than ``margin`` and significant at ``alpha``."""

    margin: float = Field(0.05, ge=0.0, le=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    test: Literal["wilcoxon", "sign"] = "wilcoxon"
    min_pass_rate: float = Field(1.0, ge=0.0, le=1.0)
    # below 5 epochs a one-sided paired test cannot reach p < 0.05 on one case (1/2**4 > 0.05)
    min_epochs: int = Field(5, ge=1, le=100)


class ProfileSpec(_Strict):
    """How reliably a simulated model states a fact and follows an instruction."""

    fact_recall: float = Field(ge=0.0, le=1.0)
    instruction_follow: float = Field(ge=0.0, le=1.0)


class SimSpec(_Strict):
    """Simulator behaviour for this suite when its models are served by the ``sim`` provider."""

    obey_injections: bool = False
    judge_noise: float = Field(0.0, ge=0.0, le=1.0)
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,80}$")
    description: str = ""
    prompt_version: str | None = None
    model: str | None = None  # the suite's primary model (``defaults.model``): names baselines
    judge: str | None = None
    templates: dict[str, TemplateSpec] = Field(default_factory=dict)
    gate: GateSpec = Field(default_factory=GateSpec)
    sim: SimSpec = Field(default_factory=SimSpec)
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Suite:
        seen: set[str] = set()
        for c in self.cases:
            if c.id in seen:
                raise ValueError(f"duplicate case id {c.id!r}")
            seen.add(c.id)
            if c.template is not None and c.template not in self.templates:
                raise ValueError(f"case {c.id!r}: unknown template {c.template!r}")
        return self

    def version(self) -> str:
        """The prompt version baselines are keyed by: declared, else a hash of the instructions."""
        if self.prompt_version:
            return self.prompt_version
        h = hashlib.sha256()
        for name in sorted(self.templates):
            t = self.templates[name]
            h.update(f"{name}@{t.version}\0{t.instructions}\0{t.spotlight}\0".encode())
        for c in self.cases:
            if c.system:
                h.update(c.system.encode() + b"\0")
        return "p" + h.hexdigest()[:10]

    def default_model(self) -> str | None:
        if self.model:
            return self.model
        models = {c.model for c in self.cases if c.model}
        return models.pop() if len(models) == 1 else None


def parse_suite(data: Any, *, source: str = "<suite>", default_name: str = "suite") -> Suite:
    """Merge ``defaults`` into each case and validate; errors name the case and the key."""
    if isinstance(data, list):
        data = {"cases": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite must be a mapping with `cases`, or a list of cases")
    data = dict(data)
    defaults = data.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: `defaults` must be a mapping")
    cases = data.get("cases")
    if isinstance(cases, list):
        data["cases"] = [{**defaults, **c} if isinstance(c, dict) else c for c in cases]
    data.setdefault("name", default_name)
    if isinstance(defaults.get("model"), str):
        data.setdefault("model", defaults["model"])
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = list(e["loc"])
            if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
                cs = data["cases"][loc[1]]
                cid = cs.get("id") if isinstance(cs, dict) else None
                loc[1] = f"{loc[1]}({cid})" if cid else loc[1]
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"{'.'.join(str(p) for p in loc) or '(top level)'}: {msg}")
        raise ConfigError(f"{source}: invalid eval suite:\n  " + "\n  ".join(lines)) from None


def load_suite(path: str | Path) -> Suite:
    """Read a ``.yaml``/``.yml`` suite, or ``.jsonl`` (one case per line; a ``{"suite": {...}}`` line sets the rest)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read eval suite {p}: {exc.strerror}") from exc
    stem = p.name.split(".")[0]
    if p.suffix == ".jsonl":
        meta: dict[str, Any] = {}
        cases: list[Any] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{n}: not valid JSON: {exc}") from None
            if isinstance(obj, dict) and set(obj) == {"suite"} and isinstance(obj["suite"], dict):
                meta.update(obj["suite"])
            else:
                cases.append(obj)
        return parse_suite({**meta, "cases": cases}, source=str(p), default_name=stem)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_suite(data, source=str(p), default_name=stem)
