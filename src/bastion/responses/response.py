"""The gateway's Chat Completions answer as a Responses API ``response`` object.

One builder for both the body and the stream's lifecycle events, so the object a streaming
client accumulates is the one a non-streaming client gets. Item ids are derived from the
response id (``msg_<id>``, ``fc_<id>_<n>``): the stream's ``output_item.added`` and its
final ``response.completed`` must name the same items.
"""

from __future__ import annotations

from typing import Any

from ..providers.translate._common import as_dict, as_int, as_list, as_str

RESPONSE_PREFIX = "resp_"

# chat finish reasons that end a response early: status "incomplete" with this reason
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(request_id: str | None, fallback: str) -> str:
    """``resp_`` plus the id of the gateway's record of the call (Bastion mints it)."""
    base = request_id.removeprefix("req_") if request_id else fallback
    return RESPONSE_PREFIX + base


def message_item_id(resp_id: str, n: int = 0) -> str:
    base = resp_id.removeprefix(RESPONSE_PREFIX)
    return f"msg_{base}" if n == 0 else f"msg_{base}_{n}"


def call_item_id(resp_id: str, n: int) -> str:
    return f"fc_{resp_id.removeprefix(RESPONSE_PREFIX)}_{n}"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": parts,
        "role": "assistant",
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def usage(chat_usage: object) -> dict[str, Any] | None:
    """Chat usage in the Responses shape; input_tokens include cached ones, as in chat."""
    u = as_dict(chat_usage)
    if not u:
        return None
    prompt = as_dict(u.get("prompt_tokens_details"))
    completion = as_dict(u.get("completion_tokens_details"))
    inp, out = as_int(u.get("prompt_tokens")), as_int(u.get("completion_tokens"))
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": as_int(prompt.get("cached_tokens")),
            "cache_write_tokens": as_int(prompt.get("cache_write_tokens")),
        },
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": as_int(completion.get("reasoning_tokens"))},
        "total_tokens": inp + out,
    }


def status_of(finish_reason: object) -> tuple[str, dict[str, Any] | None]:
    """The response status and incomplete_details a chat finish reason means."""
    reason = INCOMPLETE.get(str(finish_reason)) if finish_reason is not None else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def build(
    resp_id: str,
    echo: dict[str, Any],
    *,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    completed_at: int | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """A ``response`` object: the echoed request fields around this answer's status and output."""
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": incomplete_details,
        **echo,
        "model": model or echo.get("model"),
        "output": output,
        "usage": usage,
    }


def output_items(resp_id: str, message: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """A chat assistant message as output items: its text (or refusal), then its tool calls."""
    items: list[dict[str, Any]] = []
    content = message.get("content")
    text = (
        content
        if isinstance(content, str)
        else "".join(as_str(as_dict(p).get("text")) for p in as_list(content))
    )
    refusal = as_str(message.get("refusal"))
    if text or refusal:
        part = text_part(text) if text else {"type": "refusal", "refusal": refusal}
        items.append(message_item(message_item_id(resp_id), [part], status))
    for n, call in enumerate(as_list(message.get("tool_calls"))):
        fn = as_dict(as_dict(call).get("function"))
        items.append(
            call_item(
                call_item_id(resp_id, n),
                as_str(as_dict(call).get("id")),
                as_str(fn.get("name")),
                as_str(fn.get("arguments")),
                "completed",
            )
        )
    return items


def from_chat(
    chat: dict[str, Any], resp_id: str, echo: dict[str, Any], *, now: int
) -> dict[str, Any]:
    """A non-streaming chat.completion body as a response object (first choice)."""
    choices = as_list(chat.get("choices"))
    choice = as_dict(choices[0]) if choices else {}
    status, details = status_of(choice.get("finish_reason"))
    created = as_int(chat.get("created")) or now
    return build(
        resp_id,
        echo,
        created_at=created,
        status=status,
        incomplete_details=details,
        output=output_items(
            resp_id,
            as_dict(choice.get("message")),
            "completed" if status == "completed" else status,
        ),
        usage=usage(chat.get("usage")),
        completed_at=now if status == "completed" else None,
        model=as_str(chat.get("model")) or None,
    )
