"""One draft, start to finish: retrieve, build, call, run tools, stream, record.

    retrieve   the documents this agent may see (ACL in the index query)
    build      the live template version through the injection-aware builder
    call       Bastion streams the model's turn (library or gateway, same events)
    tools      the model asks, the sandbox decides for this agent, results go back fenced
    stream     text deltas reach the page as they arrive; a canary watch runs alongside
    record     the draft is stored with its trace id and prompt version

Every way the AI path fails ends as one ``unavailable`` event: the page switches to the
manual reply, and nothing the agent typed is lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bastion.observability.tracecontext import format_traceparent, new_id
from bastion.safety.prompting import LeakIndex, TemplateRegistry
from bastion.safety.tools import ToolCall, ToolExecutor, ToolResult, results_to_anthropic

from . import prompts, simscript
from .backends import Backend, CallContext, DraftingUnavailable
from .billing import Billing
from .knowledge import HelpCenter
from .seed import Agent, HelpDoc, Ticket
from .tickets import TicketStore

log = logging.getLogger("support_drafter.drafter")

MAX_ROUNDS = 3
MAX_TOKENS = 600


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event for the page."""

    kind: str
    data: dict[str, Any]

    def sse(self) -> bytes:
        return b"event: " + self.kind.encode() + b"\ndata: " + orjson.dumps(self.data) + b"\n\n"


@dataclass(slots=True)
class Turn:
    """One streamed model turn, rebuilt from Anthropic stream events."""

    blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    partial: dict[int, list[str]] = field(default_factory=dict)
    stop_reason: str | None = None
    text: list[str] = field(default_factory=list)

    def feed(self, ev: dict[str, Any]) -> str | None:
        """Take one event; return the text it adds to the draft, if any."""
        kind = ev.get("type")
        if kind == "content_block_start":
            block = dict(ev.get("content_block") or {})
            self.blocks[int(ev.get("index", 0))] = block
        elif kind == "content_block_delta":
            index = int(ev.get("index", 0))
            delta = ev.get("delta") or {}
            if delta.get("type") == "text_delta":
                piece = str(delta.get("text", ""))
                self.text.append(piece)
                block = self.blocks.setdefault(index, {"type": "text", "text": ""})
                block["text"] = str(block.get("text", "")) + piece
                return piece
            if delta.get("type") == "input_json_delta":
                self.partial.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif kind == "message_delta":
            self.stop_reason = (ev.get("delta") or {}).get("stop_reason") or self.stop_reason
        return None

    def calls(self) -> list[ToolCall]:
        out = []
        for i, b in sorted(self.blocks.items()):
            if b.get("type") == "tool_use":
                raw = "".join(self.partial.get(i, ())) or "{}"
                out.append(ToolCall(str(b.get("id", "")), str(b.get("name", "")), raw))
        return out

    def assistant_message(self) -> dict[str, Any]:
        """The turn as the assistant message to send back with the tool results."""
        content: list[dict[str, Any]] = []
        for i, b in sorted(self.blocks.items()):
            if b.get("type") == "text" and b.get("text"):
                content.append({"type": "text", "text": b["text"]})
            elif b.get("type") == "tool_use":
                raw = "".join(self.partial.get(i, ())) or "{}"
                try:
                    args = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    args = {}
                content.append(
                    {"type": "tool_use", "id": b.get("id"), "name": b.get("name"), "input": args}
                )
        return {"role": "assistant", "content": content}


def tool_summary(r: ToolResult) -> str:
    """What the page shows about a tool call: the outcome, never more than the agent may see."""
    c: Any = r.content
    if r.ok and isinstance(c, dict):
        if not c.get("invoice"):
            return "no invoice on file"
        return f"{c['invoice']} · {c['amount']} {c['currency']} · {c['date']} · {c['status']}"
    return f"refused: {r.error or 'error'}"


class Drafter:
    """Holds what every draft shares; ``draft`` runs one."""

    def __init__(
        self,
        *,
        backend: Backend,
        help_center: HelpCenter,
        billing: Billing,
        executor: ToolExecutor,
        templates: TemplateRegistry,
        store: TicketStore,
        model: str,
        scripted: bool,
    ) -> None:
        self.backend = backend
        self.help = help_center
        self.billing = billing
        self.executor = executor
        self.templates = templates
        self.store = store
        self.model = model
        self.scripted = scripted

    async def draft(self, ticket: Ticket, agent: Agent) -> AsyncIterator[Event]:
        """Stream one draft as events: meta, token*, tool*, then done or unavailable."""
        trace_id = new_id(16)
        template = prompts.live(self.templates)
        ctx = CallContext(
            user=agent.id,
            conversation=ticket.id,
            prompt_version=template.ref,
            traceparent=format_traceparent(trace_id, new_id(8)),
        )
        retrieval = await self.help.for_ticket(ticket, agent)
        docs: list[HelpDoc] = [
            self.help.docs[d.id] for d in retrieval.docs if d.id in self.help.docs
        ]
        prompt = prompts.render(self.templates, ticket, self.help.prompt_docs(retrieval))
        yield Event(
            "meta",
            {
                "trace_id": trace_id,
                "prompt_version": template.ref,
                "backend": self.backend.mode,
                "dashboard_url": self.backend.dashboard_url,
                "docs": [{"id": d.id, "title": d.title, "internal": d.internal} for d in docs],
                "retrieval_degraded": retrieval.degraded,
            },
        )
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            **prompt.to_anthropic(cache_docs=True),
        }
        offered = self.billing.definitions(ticket) if self.billing.offered_for(ticket) else []
        if offered:
            body["tools"] = offered
        messages: list[dict[str, Any]] = body["messages"]
        leaks = LeakIndex([prompt.canary or ""], prompt.system).watcher("flag", hold=False)
        text: list[str] = []
        results: list[ToolResult] = []
        tool_log: list[dict[str, Any]] = []
        status, reason = "done", None
        try:
            for round_no in range(MAX_ROUNDS):
                if self.scripted and (not offered or round_no > 0):
                    messages[-1]["content"].append(simscript.directive(docs, results))
                if offered and round_no == MAX_ROUNDS - 1:
                    body["tool_choice"] = {"type": "none"}
                turn = Turn()
                async for ev in self.backend.stream(body, ctx):
                    piece = turn.feed(ev)
                    if piece:
                        leaks.feed(piece)
                        text.append(piece)
                        yield Event("token", {"text": piece})
                calls = turn.calls()
                if turn.stop_reason != "tool_use" or not calls:
                    break
                if turn.text:  # narration before a tool call is not part of the draft
                    text.clear()
                    yield Event("reset", {})
                messages.append(turn.assistant_message())
                done = await self.executor.run_calls(
                    calls, agent.principal(), conversation_id=ticket.id
                )
                results.extend(done)
                for r in done:
                    entry = {"name": r.name, "ok": r.ok, "summary": tool_summary(r)}
                    tool_log.append(entry)
                    yield Event("tool", entry)
                messages.append(results_to_anthropic(done))
        except DraftingUnavailable as exc:
            log.info("drafting unavailable for %s (trace %s): %s", ticket.id, trace_id, exc.reason)
            status, reason = "unavailable", exc.reason
        if status == "done" and leaks.finish().leaked:
            status, reason = "withheld", "the draft repeated the confidential prompt"
        draft_text = "".join(text) if status == "done" else ""
        draft_id = await self.store.add_draft(
            ticket_id=ticket.id,
            agent=agent.id,
            trace_id=ctx.response_trace_id() or trace_id,
            prompt_version=template.ref,
            status=status,
            text=draft_text,
            doc_ids=[d.id for d in docs],
            tools=tool_log,
            reason=reason,
        )
        if status == "unavailable":
            yield Event(
                "unavailable",
                {"reason": reason, "trace_id": trace_id, "draft_id": draft_id},
            )
        else:
            yield Event(
                "done",
                {
                    "status": status,
                    "reason": reason,
                    "draft_id": draft_id,
                    "trace_id": trace_id,
                    "text": draft_text,
                },
            )
