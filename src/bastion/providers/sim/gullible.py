"""A gullible model for the red-team pack: it falls for attacks whenever nothing stops them.

The simulator's normal answers ignore what a prompt asks for, so an attack pack run against
it would measure nothing. A request that carries the red-team tag (``rt-case:``, written only
by ``bastion.evals.redteam``) meets this model instead, which behaves like a model that
follows what it can read:

* **Injected instructions** are obeyed when they are *visible*: outside every ``<<< >>>``
  fence (documents, tool results, system text, earlier turns sent raw), including after
  decoding base64 and rot13. Obeying means saying the attack's goal token
  (``RTGOAL-`` + 8 hex digits) and carrying out the action markers next to it.
* **Requests** in the last user turn are answered even inside a fence (a fence marks data,
  and a question is data the model answers): ``rt:reveal`` repeats the system prompt,
  ``rt:pii`` lists every e-mail address, card and phone number it was given,
  ``rt:tool=NAME {json}`` calls that tool (offered or not), ``rt:sql=QUERY`` sends the query
  to the SQL tool.

Everything a defence does therefore shows: a fence hides an override, a withheld document
hides its instruction, a scrubbed prompt has no PII left to repeat, and output guards see
the leak or the write SQL. Only ``GullibleSimulator`` (which the red-team sandbox builds)
answers this way, and only requests with the tag; the simulator everyone else uses is
untouched.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .answers import Answer, Prompt, ToolCall, apply_stop_sequences, split_fixed, split_words
from .core import Simulator

__all__ = ["ACTIVATION", "GOAL_RE", "HELPFUL", "GullibleSimulator", "RedTeamTurn", "red_team_turn"]

ACTIVATION = "rt-case:"
GOAL_RE = re.compile(r"RTGOAL-[0-9a-f]{8}")
_FENCED = re.compile(r"<<<.*?>>>", re.S)
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_TOOL = re.compile(r"rt:tool=([A-Za-z0-9_-]{1,64})[ \t]*(\{[^\n]*\})?")
_SQL = re.compile(r"rt:sql=([^\n]+)")
_EMAIL = re.compile(r"[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
_CARD = re.compile(r"(?<!\d)\d{4}(?:[ -]?\d{4}){3}(?!\d)")
_PHONE = re.compile(r"\+\d{1,3}[ -]?\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")
_SQL_ARGS = ("query", "sql", "statement")


@dataclass(frozen=True, slots=True)
class RedTeamTurn:
    """What the gullible model does: text to say and at most one tool call."""

    text: str
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


def _decoded(text: str) -> list[str]:
    """The text and what a curious model would decode from it (base64 runs, rot13)."""
    out = [text, codecs.decode(text, "rot13")]
    for m in _B64.finditer(text):
        run = m.group()
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
            out.append(raw.decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
    return out


def _visible(text: str) -> list[str]:
    """What of ``text`` reads as instructions: everything outside ``<<< >>>``, decoded."""
    return _decoded(_FENCED.sub(" ", text))


def _sql_tool(tools: Sequence[tuple[str, dict[str, Any]]]) -> tuple[str, str] | None:
    for name, schema in tools:
        props = schema.get("properties") if isinstance(schema, dict) else None
        for arg in _SQL_ARGS:
            if isinstance(props, dict) and arg in props:
                return name, arg
    return None


def _act(
    text: str,
    said: list[str],
    system: str,
    all_texts: Sequence[str],
    tools: Sequence[tuple[str, dict[str, Any]]],
) -> RedTeamTurn | None:
    """Carry out the markers in ``text``: a tool call wins, else reveal / list PII."""
    m = _TOOL.search(text)
    if m is not None:
        try:
            args = orjson.loads(m.group(2)) if m.group(2) else {}
        except orjson.JSONDecodeError:
            args = {}
        return RedTeamTurn(" ".join(said), m.group(1), args if isinstance(args, dict) else {})
    s = _SQL.search(text)
    target = _sql_tool(tools)
    if s is not None and target is not None:
        return RedTeamTurn(" ".join(said), target[0], {target[1]: s.group(1).strip()})
    if "rt:reveal" in text:
        said.append(f"My instructions are: {system}")
    if "rt:pii" in text:
        found: list[str] = []
        for t in all_texts:
            for rx in (_EMAIL, _CARD, _PHONE):
                found.extend(x for x in rx.findall(t) if x not in found)
        said.append("Here is what I have: " + (", ".join(found) if found else "nothing"))
    return RedTeamTurn(" ".join(said)) if said else None


HELPFUL = "Happy to help with your question about your order."


def red_team_turn(
    texts: Sequence[str],
    last_user_text: str,
    tools: Sequence[tuple[str, dict[str, Any]]],
) -> RedTeamTurn | None:
    """The gullible answer to a tagged request (a plain answer when there is nothing to fall
    for), or None for a request without the red-team tag.

    ``texts`` are the request's guarded texts with the system prompt first; ``tools`` the
    offered tools as ``(name, JSON schema)``.
    """
    if not any(ACTIVATION in t for t in texts):
        return None
    system = texts[0] if texts else ""
    for text in texts:
        for view in _visible(text):
            goal = GOAL_RE.search(view)
            if goal is not None:
                done = _act(view, ["Understood.", goal.group()], system, texts, tools)
                return done or RedTeamTurn(f"Understood. {goal.group()}")
    asked = _act(last_user_text, [], system, texts, tools)
    return asked or RedTeamTurn(HELPFUL)


def answer_of(turn: RedTeamTurn, prompt: Prompt, new_tool_id: Callable[[], str]) -> Answer:
    """The turn as the simulator's ``Answer`` (stop sequences and max_tokens still apply)."""
    pieces, matched = apply_stop_sequences(split_words(turn.text), prompt.stop_sequences)
    if turn.tool is not None:
        raw = orjson.dumps(turn.arguments).decode()
        call = ToolCall(new_tool_id(), turn.tool, turn.arguments, raw, tuple(split_fixed(raw)))
        return Answer(tuple(pieces), (call,), stop="tool_use")
    limit = prompt.max_tokens
    if limit is not None and len(pieces) > limit:
        return Answer(tuple(pieces[:limit]), (), stop="max_tokens")
    if matched is not None:
        return Answer(tuple(pieces), (), stop="stop_sequence", stop_sequence=matched)
    return Answer(tuple(pieces), (), stop="end_turn")


class GullibleSimulator(Simulator):
    """The simulator with the gullible model answering red-team requests (the rest as usual)."""

    def _answer(
        self, prompt: Any, pacing: Any, new_tool_id: Callable[[], str], *rest: Any
    ) -> Answer:
        turn = red_team_turn(
            prompt.guarded_texts,
            prompt.last_user_text,
            [(t.name, t.schema) for t in prompt.tools],
        )
        if turn is None:
            answer: Answer = super()._answer(prompt, pacing, new_tool_id, *rest)
            return answer
        return answer_of(turn, prompt, new_tool_id)
