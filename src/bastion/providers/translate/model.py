"""The provider-neutral model every translation passes through: 2N converters, not N².

Requests, responses and stream events of both wire formats are parsed into these
dataclasses and emitted from them. Only what both formats can express lives here;
anything else is dropped at parse time (each format module lists what it drops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """Turn roles once system text is hoisted out and tool results are folded into user turns."""

    USER = "user"
    ASSISTANT = "assistant"


class StopReason(StrEnum):
    """Why generation ended, in words both formats can be mapped to and from."""

    END_TURN = "end_turn"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_USE = "tool_use"
    REFUSAL = "refusal"
    ERROR = "error"


class ToolChoiceMode(StrEnum):
    """Tool policy: OpenAI auto/required/none/named ↔ Anthropic auto/any/none/tool."""

    AUTO = "auto"
    ANY = "any"
    NONE = "none"
    TOOL = "tool"


class ErrorKind(StrEnum):
    """Error categories both formats share, so an error keeps its meaning across the boundary."""

    INVALID_REQUEST = "invalid_request"
    CONTEXT_LENGTH = "context_length"
    AUTHENTICATION = "authentication"
    BILLING = "billing"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit"
    API_ERROR = "api_error"
    TIMEOUT = "timeout"
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text content."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, either inline (``data`` is base64 with ``media_type``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """An assistant tool call; ``arguments`` is always an object (``{"_raw": s}`` if invalid)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    """The result of a tool call, sent back in a user turn."""

    tool_call_id: str
    content: tuple[TextPart | ImagePart, ...] = ()
    is_error: bool = False


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn."""

    role: Role
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Tool:
    """A client tool: name, description and the JSON schema of its arguments."""

    name: str
    description: str | None
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Tool-use policy; ``name`` is set only for ``ToolChoiceMode.TOOL``."""

    mode: ToolChoiceMode
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A chat request stripped of its wire format."""

    messages: tuple[Message, ...]
    system: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    user_id: str | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; ``input_tokens`` excludes cache reads and writes (Anthropic's convention)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0


@dataclass(frozen=True, slots=True)
class Response:
    """A complete (non-streaming) answer stripped of its wire format."""

    id: str
    model: str
    parts: tuple[TextPart | ToolCallPart, ...]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The stream opened: the message id, model and whatever usage is known up front."""

    id: str
    model: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class TextDelta:
    """More answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A new tool call; ``key`` counts tool calls from 0 in the order they started."""

    key: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of the JSON arguments of tool call ``key``."""

    key: int
    arguments: str


@dataclass(frozen=True, slots=True)
class StreamFinish:
    """The source said why it stopped (may come before the final usage)."""

    stop_reason: StopReason
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class UsageUpdate:
    """Cumulative usage so far (replaces, never adds to, the previous value)."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The source's final marker (Anthropic ``message_stop``, OpenAI ``[DONE]``)."""


@dataclass(frozen=True, slots=True)
class StreamError:
    """An in-band error reported by the source mid-stream."""

    kind: ErrorKind
    message: str


StreamEvent = (
    StreamStart
    | TextDelta
    | ToolCallStart
    | ToolCallDelta
    | StreamFinish
    | UsageUpdate
    | StreamEnd
    | StreamError
)
