"""What the gateway asks of a wire format, as one object: a ``Wire`` and a client ``Dialect``.

A ``Wire`` is what Bastion does with a format it sends requests in and reads answers in:
text, tool calls, usage, finish reasons and errors in whole bodies and in stream events;
rewriting the text an output filter changed; holding a streamed tool call; prompt-caching
hints and whether a trailing assistant turn is a prefill. A ``Dialect`` is a ``Wire`` a
client speaks, and adds what the gateway answers in it: where the untrusted texts and the
system text of a request are, the token-limit fields, error bodies and in-band stream
errors, the canned (degraded) bodies, and carrying a cut stream on as the same message.

Guards take one of these (``call.dialect`` for the client's format, a ``Wire`` for the
provider's answer) and never look at the format themselves, so a new client format is one
new dialect and its translation, with no guard changed. A format only a provider speaks
needs no client dialect: its adapter translates it (``providers/translate``) into a format
that has a wire here before a guard sees it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import orjson

from ..errors import BastionError
from ..providers.base import Format
from ..providers.sse import SSEEvent

if TYPE_CHECKING:
    from ..call import Call, ToolCallOut, Usage

__all__ = [
    "Dialect",
    "EditArgs",
    "HoldJudge",
    "MalformedEvent",
    "NoDialect",
    "Parsed",
    "Scope",
    "Slot",
    "Splicer",
    "StreamView",
    "TextRun",
    "ToolHold",
    "TraceParts",
    "WatchState",
    "Wire",
]

Source = Literal["user", "tool"]
Scope = Literal["last", "all"]
Path = tuple[str | int, ...]
# rewrites one tool call's arguments: given its name and arguments (None when they are not
# JSON), the new arguments, or None to leave the call as it is
EditArgs = Callable[[str, Any], "dict[str, Any] | None"]


class MalformedEvent(ValueError):
    """A provider stream event whose data is not the JSON object its format promises."""


class NoDialect(BastionError):
    """A format with no wire or dialect here (a provider-only format reaching a guard untranslated)."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One untrusted text in a body: who supplied it, where it is, and the text."""

    source: Source
    path: Path
    text: str
    earlier: bool = False  # before the last assistant turn (history the client sent again)

    @property
    def where(self) -> str:
        out = ""
        for p in self.path:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out


class TextRun(Protocol):
    """The output filters of one answer, as a wire applies them to text it finds."""

    def run(self, text: str) -> str: ...

    def flush(self) -> str: ...


class WatchState(Protocol):
    """What a ``StreamWatcher`` keeps of one stream; a wire's ``observe_event`` fills it."""

    call: Call
    text: list[str]
    finished: bool
    errored: bool
    stop_reason: str | None
    text_only: bool
    final: bool
    usage_seen: bool
    tools: dict[int, ToolCallOut]


class HoldJudge(Protocol):
    """What a tool-call hold asks of the guard that holds (the SQL check, say)."""

    def holds(self, name: str) -> bool:
        """Whether a call of this tool is held until its arguments are complete."""
        ...

    def may_hold(self, prefix: str) -> bool:
        """Whether a tool name beginning so could still be one that is held."""
        ...

    def verdict(self, name: str, raw: str | None, given: Any = None) -> str | None:
        """The arguments JSON to release instead, or None to release as received (may raise)."""
        ...

    def too_large(self, name: str | None) -> None:
        """A held call's arguments passed the bound (raises in block mode); None: unnamed."""
        ...

    @property
    def bound(self) -> int:
        """How many argument characters one held call may reach."""
        ...


class StreamView(Protocol):
    """What one client stream has been sent, followed so it can be carried on (``ClientView``)."""

    @property
    def ready(self) -> bool:
        """The client has the message's opening."""
        ...

    def observe(self, event: str | None, data: bytes) -> None: ...

    def observe_raw(self, raw: bytes) -> None: ...


class SplicedUsage(Protocol):
    """The neutral usage a splicer keeps of the cut part."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def cache_read(self) -> int: ...

    @property
    def cache_write(self) -> int: ...


class Splicer(Protocol):
    """Carries a cut client stream on from a fallback's events (``StreamSplicer``)."""

    @property
    def base(self) -> SplicedUsage: ...

    def feed(self, event: SSEEvent) -> list[bytes]: ...


class TraceParts(Protocol):
    """Builds the parts of a request's messages as a trace shows them (the OTel GenAI
    conventions' parts: ``observability.genai_content``, which scrubs and bounds each one).

    A dialect says what each piece of its messages is; the builder returns the part, a dict
    whose ``type`` is the conventions' part type."""

    def text(self, text: str) -> dict[str, Any]: ...

    def reasoning(self, text: str) -> dict[str, Any]: ...

    def tool_call(self, id_: str, name: str, arguments: Any) -> dict[str, Any]:
        """A tool call; ``arguments`` as an object where they were JSON."""
        ...

    def tool_result(self, id_: str, response: Any) -> dict[str, Any]: ...

    def media(self, kind: Any) -> dict[str, Any]:
        """A part not carried inline (image, audio, file, an unknown kind): named by its kind."""
        ...


# a stream event with its data parsed (a JSON object), or None when not known
Parsed = tuple[SSEEvent, dict[str, Any] | None]


class ToolHold(Protocol):
    """One stream's hold of tool calls in one wire format (an event filter's engine)."""

    def event(self, ev: SSEEvent) -> list[SSEEvent]: ...


def loads_object(data: bytes) -> dict[str, Any]:
    """An event's JSON object; ``MalformedEvent`` when it is not one."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedEvent("not JSON") from None
    if not isinstance(obj, dict):
        raise MalformedEvent("not a JSON object")
    return obj


def maybe_object(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def as_text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def joined(content: Any) -> str:
    """The text of a message's content: a string, or its text blocks joined by lines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def content_slots(path: Path, content: Any, source: Source, earlier: bool) -> Iterator[Slot]:
    """The untrusted texts of one message's content (text, tool results, text documents)."""
    if isinstance(content, str):
        yield Slot(source, path, content, earlier)
        return
    if not isinstance(content, list):
        return
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text") and isinstance(block.get("text"), str):
            yield Slot(source, (*path, j, "text"), block["text"], earlier)
        elif kind == "tool_result":
            yield from content_slots((*path, j, "content"), block.get("content"), "tool", earlier)
        elif kind == "document":
            src = block.get("source")
            if (
                isinstance(src, dict)
                and src.get("type") == "text"
                and isinstance(src.get("data"), str)
            ):
                yield Slot("tool", (*path, j, "source", "data"), src["data"], earlier)


def last_assistant(messages: Sequence[Any]) -> int:
    """The index just after the last assistant turn (0 when there is none)."""
    last = 0
    for i, m in enumerate(messages):
        if isinstance(m, dict) and m.get("role") == "assistant":
            last = i + 1
    return last


class Wire(ABC):
    """A wire format Bastion sends requests in and reads answers in (client or provider)."""

    format: ClassVar[Format]
    # a trailing assistant turn continues the answer (prefill) rather than being history
    prefill: ClassVar[bool]
    # a stream answers with usage only when asked (Bastion asks; the client may not have)
    usage_on_request: ClassVar[bool]

    # -- whole answers ----------------------------------------------------------------------

    @abstractmethod
    def observe_body(self, call: Call, obj: dict[str, Any]) -> Usage:
        """Text, tool calls, usage, id and finish reason of a whole answer into the call;
        returns the answer's own usage."""

    @abstractmethod
    def filter_body(self, obj: dict[str, Any], text: TextRun) -> dict[str, Any]:
        """The answer with the filters applied to each text (a new dict)."""

    @abstractmethod
    def edit_tool_calls(self, obj: dict[str, Any], edit: EditArgs) -> bool:
        """Offer each tool call of a whole answer to ``edit`` (mutates); True when one changed."""

    @abstractmethod
    def answer_text(self, raw: bytes) -> str:
        """The assistant text of a whole answer ("" when there is none)."""

    # -- streams ----------------------------------------------------------------------------

    @abstractmethod
    def observe_event(self, w: WatchState, ev: SSEEvent, obj: dict[str, Any] | None = None) -> bool:
        """Take one event into the watcher's state; whether it carried model output.

        ``obj``: the event's data already parsed (``maybe_object``), so it is parsed once;
        None when not known (or not an object): the wire reads ``ev.data`` itself.
        Raises ``MalformedEvent`` for an event that is not the JSON its format promises."""

    def ended_cleanly(self, w: WatchState) -> bool:
        """The body ended without its end marker, yet everything the answer owes was seen."""
        return False

    def filter_event(self, ev: SSEEvent, text: TextRun, state: dict[str, Any]) -> list[SSEEvent]:
        """One event with the filters applied to the text it adds: the events to pass on."""
        return [e for e, _ in self.filter_parsed(ev, None, text, state)]

    @abstractmethod
    def filter_parsed(
        self, ev: SSEEvent, obj: dict[str, Any] | None, text: TextRun, state: dict[str, Any]
    ) -> list[Parsed]:
        """``filter_event`` given the event's parsed data (None: not known), each event passed
        on with its own parsed data (the same dict when unchanged, the one it was built from
        when rewritten; None when not known)."""

    @abstractmethod
    def delta_text(self, data: bytes) -> str | None:
        """The text a stream event adds, or None."""

    @abstractmethod
    def with_delta_text(self, data: bytes, text: str) -> bytes:
        """The same stream event carrying ``text`` instead."""

    @abstractmethod
    def tool_hold(self, judge: HoldJudge) -> ToolHold:
        """A new hold of this format's streamed tool calls, judged by ``judge``."""

    # -- requests sent ----------------------------------------------------------------------

    @abstractmethod
    def prompt_caching(
        self,
        body: dict[str, Any],
        provider_kind: str,
        *,
        stable_messages: int,
        feature: str | None,
        model: str,
    ) -> dict[str, Any]:
        """The body with this format's prompt-caching hints for the provider."""

    def upstream_fields(self, body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        """The body with what this format's providers need beyond the client's fields (the
        limit field a model takes, usage asked for in a stream); mutates and returns it."""
        return body

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class Dialect(Wire):
    """A wire format a client speaks: what the gateway reads of its requests and answers in it."""

    # the request fields that bound the answer's length (the first is the one to inject)
    limit_fields: ClassVar[tuple[str, ...]]

    # -- requests ---------------------------------------------------------------------------

    @abstractmethod
    def validate(self, body: dict[str, Any]) -> None:
        """Raise ``InvalidRequest`` (naming the field) for a body this format does not allow."""

    @abstractmethod
    def end_user(self, body: dict[str, Any]) -> str | None:
        """The end-user id the request names, if any."""

    @abstractmethod
    def system_text(self, body: dict[str, Any]) -> str:
        """The trusted instructions of a request."""

    @abstractmethod
    def untrusted_texts(self, body: dict[str, Any], scope: Scope = "last") -> Iterator[Slot]:
        """User turns and tool results after the last assistant turn, or (``all``) every one,
        those before it marked ``earlier``."""

    @abstractmethod
    def response_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON schema the request asks its answer to follow, if any."""

    @abstractmethod
    def wants_usage(self, body: dict[str, Any]) -> bool:
        """Whether a streamed answer should carry usage to this client."""

    @abstractmethod
    def place_prompt(
        self, body: dict[str, Any], rendered: Any, history: list[dict[str, Any]]
    ) -> None:
        """Put a server-side template (``Prompt``) before the client's history in ``body``."""

    @abstractmethod
    def trace_system(self, body: dict[str, Any], parts: TraceParts) -> list[dict[str, Any]]:
        """The request's system instructions as trace parts ([] when they are messages)."""

    @abstractmethod
    def trace_messages(self, body: dict[str, Any], parts: TraceParts) -> Iterator[dict[str, Any]]:
        """The request's messages as the conventions' messages (``{"role", "parts"}``), newest
        first and lazily: the caller stops once older ones could not fit its bound."""

    # -- answers ----------------------------------------------------------------------------

    @abstractmethod
    def error_body(self, exc: BastionError) -> dict[str, Any]:
        """The error object a client of this format parses."""

    def render_error(self, exc: BastionError) -> bytes:
        return orjson.dumps(self.error_body(exc))

    @abstractmethod
    def error_type(self, exc: BastionError) -> str:
        """The error type this format's SDKs know the error by."""

    @abstractmethod
    def error_event(self, message: str, type_: str = "api_error") -> bytes:
        """An in-band stream error: the stream never ends looking successful."""

    @abstractmethod
    def request_id_headers(self, rid: str | None) -> dict[str, str]:
        """Where this format's SDKs look for the provider's request id."""

    @abstractmethod
    def model_object(self, model: str) -> dict[str, Any]:
        """One model as this format's models endpoint describes it (``GET /v1/models/{id}``)."""

    @abstractmethod
    def model_list(self, models: Sequence[str]) -> dict[str, Any]:
        """The models endpoint's list of these models (``GET /v1/models``)."""

    @abstractmethod
    def canned_body(self, model: str, text: str) -> bytes:
        """A normal-looking whole answer carrying ``text`` (the degraded message)."""

    @abstractmethod
    def canned_stream(self, model: str, text: str, include_usage: bool) -> list[bytes]:
        """The same as a complete stream."""

    # -- carrying a cut stream on -----------------------------------------------------------

    @abstractmethod
    def stream_view(self) -> StreamView:
        """A follower of what one client stream was sent (``ClientView``)."""

    @abstractmethod
    def splicer(self, source: Wire, view: StreamView, *, base: Usage, **kw: Any) -> Splicer:
        """A ``StreamSplicer`` carrying the client's stream on from ``source``'s events."""
