"""Deterministic answers: what the simulated model says is a pure function of the request.

Both wire modules reduce a request to a ``Prompt`` and render the ``Answer`` built
here, so the two formats can never disagree about content, stop reasons or token
counts. One emitted piece (a word, or four characters of JSON) is one output token
and one stream chunk.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from .quality import (
    QualityProfile,
    compose_quality_answer,
    profile_for,
    read_directive,
    read_instructions,
)
from .schema_example import example_for

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
ToolMode = Literal["auto", "any", "none", "tool"]

INJECTION_PHRASE = "ignore previous instructions"
INJECTION_REPLY = "INJECTION FOLLOWED"
JSON_PIECE_CHARS = 4

_REPLY_RE = re.compile(r"\[\[sim:reply=(.*?)\]\]", re.DOTALL)
_DIRECTIVE_RE = re.compile(r"\[\[sim:[^\]]*\]\]")
_FENCED_RE = re.compile(r"<<<.*?>>>", re.DOTALL)
_SPACES_RE = re.compile(r"\s+")
_PIECE_RE = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A callable tool, whichever format declared it."""

    name: str
    schema: dict[str, Any]


@dataclass(slots=True)
class Prompt:
    """Everything an answer depends on, extracted from either wire format."""

    seed: bytes
    last_user_text: str = ""
    guarded_texts: list[str] = field(default_factory=list)
    last_is_user: bool = True
    tool_result: str | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    tool_mode: ToolMode = "auto"
    forced_tool: str | None = None
    parallel_tools: bool = True
    stop_sequences: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    system_text: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool invocation: arguments as an object and as the JSON streamed in pieces."""

    id: str
    name: str
    arguments: Any
    arguments_json: str
    pieces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """The model's whole turn, before any wire format."""

    text_pieces: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    stop: StopReason
    stop_sequence: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def output_tokens(self) -> int:
        return len(self.text_pieces) + sum(len(c.pieces) for c in self.tool_calls)


def compose_answer(
    prompt: Prompt,
    *,
    reply_tokens: int,
    obey_injections: bool,
    new_tool_id: Callable[[], str],
    model: str = "",
    profiles: Mapping[str, QualityProfile] | None = None,
) -> Answer:
    """Pick what to say: followed injection, tool call, scripted reply, eval answer, tool echo, JSON, prose."""
    if obey_injections and any(has_unfenced_injection(t) for t in prompt.guarded_texts):
        return _finish(split_words(INJECTION_REPLY), prompt)
    scripted = _REPLY_RE.search(prompt.last_user_text)
    forced = prompt.tool_mode in ("any", "tool")
    wants_tools = (
        bool(prompt.tools)
        and prompt.last_is_user
        and prompt.tool_result is None
        and prompt.tool_mode != "none"
        and (forced or scripted is None)
    )
    if wants_tools:
        calls = _tool_calls(prompt, new_tool_id)
        if calls and (
            prompt.max_tokens is None or sum(len(c.pieces) for c in calls) <= prompt.max_tokens
        ):
            return Answer(text_pieces=(), tool_calls=tuple(calls), stop="tool_use")
    if scripted is not None:
        return _finish(split_words(scripted.group(1)), prompt)
    directive = read_directive(prompt.last_user_text)
    if directive is not None:  # an eval case: the answer depends on the model and the prompt
        text = compose_quality_answer(
            directive,
            read_instructions(prompt.system_text),
            profile_for(model, profiles),
            model=model,
            request_key=prompt.last_user_text,
        )
        return _finish(split_words(text), prompt)
    if prompt.tool_result is not None:
        snippet = prompt.tool_result[:80]
        return _finish(split_words(f"The tool returned: {snippet}"), prompt)
    if prompt.json_schema is not None or prompt.json_mode:
        return _finish(_json_pieces(prompt), prompt)
    return _finish(generate_words(prompt.seed, reply_tokens), prompt)


def has_unfenced_injection(text: str) -> bool:
    """True when the injection phrase appears outside every ``<<<`` ... ``>>>`` fence."""
    outside = _FENCED_RE.sub(" ", text)
    return INJECTION_PHRASE in _SPACES_RE.sub(" ", outside).lower()


def split_words(text: str) -> list[str]:
    """Split into word pieces that join back to exactly ``text`` (spaces lead each word)."""
    pieces = _PIECE_RE.findall(text)
    if not pieces:
        return [text] if text else []
    tail = len(text) - sum(len(p) for p in pieces)
    if tail:
        pieces[-1] += text[-tail:]
    return pieces


def split_fixed(text: str, width: int = JSON_PIECE_CHARS) -> list[str]:
    """Split JSON text into short pieces, the way models stream tool arguments."""
    return [text[i : i + width] for i in range(0, len(text), width)]


def strip_directives(text: str) -> str:
    """The user's words without ``[[sim:...]]`` directives (for generated arguments)."""
    return _SPACES_RE.sub(" ", _DIRECTIVE_RE.sub(" ", text)).strip()


def _finish(pieces: Sequence[str], prompt: Prompt) -> Answer:
    out, matched = apply_stop_sequences(pieces, prompt.stop_sequences)
    limit = prompt.max_tokens
    if limit is not None and len(out) > limit:
        return Answer(text_pieces=tuple(out[:limit]), tool_calls=(), stop="max_tokens")
    if matched is not None:
        return Answer(tuple(out), (), stop="stop_sequence", stop_sequence=matched)
    return Answer(text_pieces=tuple(out), tool_calls=(), stop="end_turn")


def apply_stop_sequences(
    pieces: Sequence[str], stops: Sequence[str]
) -> tuple[list[str], str | None]:
    """Cut before the earliest stop sequence; the sequence itself is not emitted."""
    text = "".join(pieces)
    best: tuple[int, str] | None = None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is None:
        return list(pieces), None
    cut, out, pos = best[0], [], 0
    for p in pieces:
        if pos + len(p) <= cut:
            out.append(p)
            pos += len(p)
            continue
        if cut > pos:
            out.append(p[: cut - pos])
        break
    return out, best[1]


def _tool_calls(prompt: Prompt, new_tool_id: Callable[[], str]) -> list[ToolCall]:
    if prompt.tool_mode == "tool" and prompt.forced_tool is not None:
        chosen = [t for t in prompt.tools if t.name == prompt.forced_tool][:1]
    elif "[[sim:tools=all]]" in prompt.last_user_text and prompt.parallel_tools:
        chosen = list(prompt.tools)
    else:
        chosen = prompt.tools[:1]
    hint = strip_directives(prompt.last_user_text)
    calls = []
    for tool in chosen:
        args = example_for(tool.schema, hint=hint)
        if not isinstance(args, dict):
            args = {}
        raw = orjson.dumps(args).decode()
        calls.append(ToolCall(new_tool_id(), tool.name, args, raw, tuple(split_fixed(raw))))
    return calls


def _json_pieces(prompt: Prompt) -> list[str]:
    if prompt.json_schema is not None:
        value = example_for(prompt.json_schema, hint=strip_directives(prompt.last_user_text))
    else:
        value = {"answer": "".join(generate_words(prompt.seed, 8))}
    return split_fixed(orjson.dumps(value).decode())


_OPENERS = ("", "", "", "In short, ", "Put simply, ", "Overall, ", "As it happens, ")
_SUBJECTS = (
    "the system",
    "this approach",
    "your request",
    "the service",
    "a careful review",
    "the result",
    "each step",
    "the team",
    "a small change",
    "the main idea",
)
_VERBS = (
    "keeps",
    "improves",
    "explains",
    "reduces",
    "supports",
    "balances",
    "clarifies",
    "protects",
    "simplifies",
    "measures",
)
_OBJECTS = (
    "the overall cost",
    "every edge case",
    "the expected output",
    "latency and quality",
    "the core workflow",
    "most common questions",
    "the important details",
    "a reliable answer",
    "the final response",
    "several known risks",
)
_TAILS = (
    "in practice",
    "without surprises",
    "for most users",
    "as described",
    "over time",
    "with little effort",
    "at every stage",
    "under heavy load",
    "from the start",
    "in a clear way",
)


_SHORT = {
    1: "Indeed.",
    2: "That helps.",
    3: "This works well.",
    4: "The result looks good.",
    5: "The plan works well overall.",
}


def generate_words(seed: bytes, n: int) -> list[str]:
    """Exactly ``n`` word pieces of plain prose in whole sentences, chosen by a hash of the request."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest(), "big"))
    words: list[str] = []
    while len(words) < n:
        words.extend(_sentence(rng, n - len(words)).split(" "))
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _sentence(rng: random.Random, budget: int) -> str:
    opener, subject, verb = rng.choice(_OPENERS), rng.choice(_SUBJECTS), rng.choice(_VERBS)
    obj, tail = rng.choice(_OBJECTS), rng.choice(_TAILS)
    for text in (f"{opener}{subject} {verb} {obj} {tail}.", f"{subject} {verb} {obj}."):
        if text.count(" ") + 1 <= budget:
            return text[0].upper() + text[1:]
    return _SHORT[min(budget, 5)]
