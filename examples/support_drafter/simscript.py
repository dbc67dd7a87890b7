"""What the built-in simulator says when it plays the drafter.

The simulator writes filler prose unless a request carries a ``[[sim:reply=...]]``
directive, so in simulator mode the app adds one, as its own text block after the
fenced data, only on a turn where no tool call is expected. It is composed from
trusted values alone — the help center's own one-line summaries of the documents in
the prompt, and the sandbox's tool results — never from ticket text, so it cannot
carry an injection past the fence. With a real model it is never added
(``Settings.scripted``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bastion.safety.tools import ToolResult

from .seed import HelpDoc


def reply_text(docs: Sequence[HelpDoc], results: Sequence[ToolResult]) -> str:
    """A short draft citing each document by ``[doc_id]`` after the sentence it supports."""
    body = ["Thanks for getting in touch with us."]
    body += [_tool_sentence(r) for r in results]
    body += [f"{d.summary.rstrip('.')} [{d.id}]." for d in docs[:3] if d.summary]
    if not docs:
        body.append("A colleague will look into this and follow up with you shortly.")
    paragraphs = [
        "Hi there,",
        " ".join(body),
        "If anything is still unclear, just reply to this email.",
        "Best regards,\nAcme Support",
    ]
    return "\n\n".join(paragraphs).replace("]]", "] ]")


def _tool_sentence(r: ToolResult) -> str:
    content: Any = r.content
    if r.ok and isinstance(content, dict) and content.get("invoice"):
        return (
            f"I can see your last invoice, {content['invoice']} of {content['date']}, "
            f"for {content['amount']} {content['currency']}."
        )
    return "I have asked a colleague with access to billing to check the charges on your account."


def directive(docs: Sequence[HelpDoc], results: Sequence[ToolResult]) -> dict[str, str]:
    """The text block that makes the simulator answer with ``reply_text``."""
    return {"type": "text", "text": f"[[sim:reply={reply_text(docs, results)}]]"}
