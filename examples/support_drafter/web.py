"""The ASGI app: a handful of routes over plain ASGI (no framework is installed, none is needed).

Sessions are a signed cookie naming the agent (a demo sign-in; a real desk takes identity
from its SSO). ``POST /tickets/{id}/draft`` streams server-sent events into a ``fetch``
reader on the page, relayed as the model produces them and cancelled when the page goes
away. In library mode the Bastion dashboard is mounted at ``/dashboard`` on the same
gateway, so a trace id on a ticket can be looked up right here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import orjson

from bastion import Gateway
from bastion.safety.prompting import InjectionScanner

from . import pages
from .backends import Backend
from .drafter import Drafter, Event
from .knowledge import HelpCenter
from .seed import Agent
from .tickets import TicketStore

log = logging.getLogger("support_drafter.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"frame-ancestors 'none'",
    ),
]
COOKIE = "desk_agent"
MAX_FORM = 64 * 1024


@dataclasses.dataclass(slots=True)
class Request:
    scope: Scope
    receive: Receive
    path: str
    method: str
    headers: dict[str, str]

    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k:
                out[k] = v
        return out

    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.scope.get("query_string", b"").decode("latin-1"))

    async def body(self, limit: int = MAX_FORM) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise ConnectionAbortedError
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ValueError("request body too large")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    async def form(self) -> dict[str, str]:
        raw = (await self.body()).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), *SECURITY_HEADERS, *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def html(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await respond(send, status, text.encode(), "text/html; charset=utf-8", extra)


async def json(send: Send, status: int, data: Any) -> None:
    await respond(send, status, orjson.dumps(data), "application/json")


async def redirect(send: Send, to: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"location", to.encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


class DeskApp:
    """Routes, sessions and pages around one ``Drafter``."""

    def __init__(
        self,
        *,
        agents: dict[str, Agent],
        store: TicketStore,
        help_center: HelpCenter,
        drafter: Drafter,
        backend: Backend,
        secret: bytes,
        mode_label: str,
        gateway: Gateway | None = None,
        debug: bool = False,
    ) -> None:
        self.agents = agents
        self.store = store
        self.help = help_center
        self.drafter = drafter
        self.backend = backend
        self._secret = secret
        self.mode_label = mode_label
        self.gateway = gateway
        self.debug = debug
        self.scanner = InjectionScanner()
        self._static = {
            p.name: p.read_bytes() for p in STATIC.iterdir() if p.suffix in STATIC_TYPES
        }
        self._bastion: ASGIApp | None = None
        if gateway is not None:
            from bastion.server.app import create_app

            self._bastion = create_app(gateway)

    # -- sessions -------------------------------------------------------------------------

    def _sign(self, agent_id: str) -> str:
        mac = hmac.new(self._secret, agent_id.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{agent_id}.{mac}"

    def agent_of(self, req: Request) -> Agent | None:
        value = req.cookies().get(COOKIE, "")
        agent_id = value.partition(".")[0]
        if not agent_id or not hmac.compare_digest(self._sign(agent_id), value):
            return None
        return self.agents.get(agent_id)

    def _cookie(self, value: str, max_age: int) -> list[tuple[bytes, bytes]]:
        c = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        return [(b"set-cookie", c.encode())]

    # -- dispatch -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                kind = msg["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        req = Request(scope, receive, path, method, headers)
        try:
            await self._route(req, send)
        except ConnectionAbortedError:
            return
        except ValueError as exc:
            await html(send, 400, pages.not_found(str(exc)))

    async def _route(self, req: Request, send: Send) -> None:
        path, method = req.path, req.method
        if self._bastion is not None and (
            path.startswith(("/dashboard", "/admin/api/")) or path == "/admin/kill"
        ):
            await self._bastion(req.scope, req.receive, send)
            return
        if path.startswith("/static/") and method == "GET":
            await self._static_file(path.removeprefix("/static/"), send)
            return
        if path == "/healthz":
            await json(send, 200, {"status": "ok"})
            return
        if path == "/login" and method == "POST":
            form = await req.form()
            agent = self.agents.get(form.get("agent", ""))
            if agent is None:
                await redirect(send, "/")
                return
            await redirect(send, "/", self._cookie(self._sign(agent.id), 8 * 3600))
            return
        if path == "/logout" and method == "POST":
            await redirect(send, "/", self._cookie("", 0))
            return
        if self.debug and path.startswith("/debug/"):
            await self._debug(req, send)
            return
        agent = self.agent_of(req)
        if agent is None:
            if path.startswith("/api/") or method != "GET":
                await json(send, 401, {"error": "sign in first"})
                return
            body = pages.sign_in(list(self.agents.values()))
            await html(send, 200, self._layout("Sign in", body, None, None, "sign-in"))
            return
        parts = [p for p in path.split("/") if p]
        if path == "/" and method == "GET":
            await self._inbox(agent, send)
        elif len(parts) == 2 and parts[0] == "tickets" and method == "GET":
            await self._ticket(agent, parts[1], send)
        elif len(parts) == 3 and parts[0] == "tickets" and parts[2] == "draft" and method == "POST":
            await self._draft(req, agent, parts[1], send)
        elif (
            len(parts) == 3 and parts[0] == "tickets" and parts[2] == "replies" and method == "POST"
        ):
            await self._reply(req, agent, parts[1], send)
        elif len(parts) == 2 and parts[0] == "docs" and method == "GET":
            await self._doc(agent, parts[1], send)
        elif path == "/api/status" and method == "GET":
            await json(send, 200, {"ai": _ai_word(await self._ai_on()), "agent": agent.id})
        elif path == "/api/ai" and method == "POST":
            await self._toggle_ai(req, agent, send)
        else:
            await html(
                send, 404, self._layout("Not found", pages.not_found(path), agent, None, "404")
            )

    # -- pages ----------------------------------------------------------------------------

    def _layout(
        self,
        title: str,
        body: str,
        agent: Agent | None,
        ai_on: bool | None,
        page: str,
        data: dict[str, str] | None = None,
    ) -> str:
        return pages.layout(
            title, body, agent=agent, mode=self.mode_label, ai_on=ai_on, page=page, data=data
        )

    async def _ai_on(self) -> bool | None:
        try:
            return await self.backend.ai_on()
        except Exception:  # the status badge must never break a page
            log.exception("AI status unavailable")
            return None

    async def _inbox(self, agent: Agent, send: Send) -> None:
        rows = await self.store.tickets(agent.tenant)
        body = pages.inbox(rows)
        await html(send, 200, self._layout("Inbox", body, agent, await self._ai_on(), "inbox"))

    async def _ticket(self, agent: Agent, ticket_id: str, send: Send) -> None:
        ticket = await self.store.ticket(ticket_id, agent.tenant)
        if ticket is None:
            await html(
                send, 404, self._layout("Not found", pages.not_found(ticket_id), agent, None, "404")
            )
            return
        drafts = await self.store.drafts(ticket.id)
        own = [d for d in drafts if d.agent == agent.id]
        last = own[-1] if own else None
        last_docs = []
        if last is not None:
            for doc_id in last.doc_ids:
                doc = self.help.visible(doc_id, agent.access())
                if doc is not None:
                    last_docs.append(doc)
        scan = self.scanner.scan(f"{ticket.subject}\n{ticket.body}", source="user")
        body = pages.ticket_page(
            ticket,
            replies=await self.store.replies(ticket.id),
            drafts=drafts,
            last=last,
            last_docs=last_docs,
            injection_reasons=scan.reasons if scan.flagged else [],
            dashboard_url=self.backend.dashboard_url,
        )
        page = self._layout(
            ticket.subject, body, agent, await self._ai_on(), "ticket", {"ticket": ticket.id}
        )
        await html(send, 200, page)

    async def _doc(self, agent: Agent, doc_id: str, send: Send) -> None:
        doc = self.help.visible(doc_id, agent.access())
        if doc is None:  # not "forbidden": an agent cannot even learn that it exists
            await html(
                send, 404, self._layout("Not found", pages.not_found(doc_id), agent, None, "404")
            )
            return
        await html(send, 200, self._layout(doc.title, pages.doc_page(doc), agent, None, "doc"))

    async def _static_file(self, name: str, send: Send) -> None:
        data = self._static.get(name)
        if data is None:
            await respond(send, 404, b"not found", "text/plain")
            return
        ctype = STATIC_TYPES[Path(name).suffix]
        await respond(send, 200, data, ctype, [(b"cache-control", b"no-cache")])

    # -- actions --------------------------------------------------------------------------

    async def _reply(self, req: Request, agent: Agent, ticket_id: str, send: Send) -> None:
        """The manual path: works whatever state the AI is in."""
        ticket = await self.store.ticket(ticket_id, agent.tenant)
        form = await req.form()
        text = form.get("body", "").strip()
        if ticket is None or not text:
            await redirect(send, f"/tickets/{quote(ticket_id)}")
            return
        trace = form.get("trace_id", "").strip()
        trace_id = (
            trace if len(trace) == 32 and all(c in "0123456789abcdef" for c in trace) else None
        )
        await self.store.add_reply(ticket.id, agent.id, text, trace_id)
        await redirect(send, f"/tickets/{quote(ticket.id)}#replies")

    async def _toggle_ai(self, req: Request, agent: Agent, send: Send) -> None:
        if not agent.can("lead"):
            await json(send, 403, {"error": "only a team lead may switch AI drafting"})
            return
        try:
            data = orjson.loads(await req.body() or b"{}")
            on = data.get("on") if isinstance(data, dict) else None
            if not isinstance(on, bool):
                raise ValueError("on: a boolean is required")
            await self.backend.set_ai(on, who=agent.id)
        except (ValueError, orjson.JSONDecodeError) as exc:
            await json(send, 400, {"error": str(exc)})
            return
        except PermissionError as exc:
            await json(send, 409, {"error": str(exc)})
            return
        await json(send, 200, {"ai": _ai_word(await self._ai_on())})

    async def _draft(self, req: Request, agent: Agent, ticket_id: str, send: Send) -> None:
        ticket = await self.store.ticket(ticket_id, agent.tenant)
        if ticket is None:
            await json(send, 404, {"error": "no such ticket"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache, no-transform"),
                    (b"x-accel-buffering", b"no"),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await _relay(self.drafter.draft(ticket, agent), req.receive, send)

    # -- debug (tests) ---------------------------------------------------------------------

    async def _debug(self, req: Request, send: Send) -> None:
        gw = self.gateway
        if req.path == "/debug/sim-requests" and gw is not None:
            trace = (req.query().get("trace") or [""])[0]
            out = [
                {"path": r.path, "headers": r.headers, "body": r.body}
                for r in gw.simulator.requests
                if not trace or trace in r.headers.get("traceparent", "")
            ]
            await json(send, 200, out)
        elif req.path == "/debug/info":
            sim = gw.simulator if gw is not None else None
            info = {
                "backend": self.backend.mode,
                "obey_injections": sim.obey_injections if sim is not None else None,
            }
            await json(send, 200, info)
        elif req.path == "/debug/calls" and gw is not None:
            calls = await gw.store.recent_calls(200)
            await json(send, 200, [dataclasses.asdict(c) for c in calls])
        else:
            await json(send, 404, {"error": "not found"})


async def _relay(events: AsyncIterator[Event], receive: Receive, send: Send) -> None:
    """Send each event as it comes; stop the draft (and its upstream call) if the page leaves."""

    async def pump() -> None:
        try:
            try:
                async for ev in events:
                    await send({"type": "http.response.body", "body": ev.sse(), "more_body": True})
            except Exception:  # a bug on the AI path still ends in the manual reply
                log.exception("drafting failed")
                ev = Event("unavailable", {"reason": "app_error"})
                await send({"type": "http.response.body", "body": ev.sse(), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    sender = asyncio.ensure_future(pump())
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (watcher, sender):
            if not t.done():
                t.cancel()
        for t in (watcher, sender):
            with contextlib.suppress(asyncio.CancelledError):
                await t


def _ai_word(on: bool | None) -> str:
    return "unknown" if on is None else ("on" if on else "off")
