"""Server-rendered HTML: Python string templates, every value through ``html.escape``.

Ticket text, customer details and model output are untrusted; they are only ever
inserted as escaped text (here) or as DOM text nodes (``static/app.js``). A citation
becomes a link only when it names a document that was in that draft's prompt and that
the viewing agent may see.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote

from .seed import Agent, HelpDoc, Ticket
from .tickets import Draft, Reply, TicketRow

UNAVAILABLE = "Drafting unavailable — please reply manually"
_CITE = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9._-]{0,127})\]")


def e(value: object) -> str:
    return escape(str(value), quote=True)


def doc_href(doc_id: str) -> str:
    return "/docs/" + quote(doc_id, safe="")


def render_citations(text: str, linkable: Iterable[str]) -> str:
    """Escaped draft text with ``[doc_id]`` turned into links for the allowed ids only."""
    allowed = set(linkable)
    out: list[str] = []
    pos = 0
    for m in _CITE.finditer(text):
        out.append(e(text[pos : m.start()]))
        doc_id = m.group(1)
        if doc_id in allowed:
            out.append(
                f'<a class="cite" data-doc="{e(doc_id)}" href="{e(doc_href(doc_id))}">'
                f"[{e(doc_id)}]</a>"
            )
        else:
            out.append(e(m.group()))
        pos = m.end()
    out.append(e(text[pos:]))
    return "".join(out)


def layout(
    title: str,
    body: str,
    *,
    agent: Agent | None,
    mode: str,
    ai_on: bool | None,
    page: str,
    data: dict[str, str] | None = None,
) -> str:
    attrs = "".join(f' data-{k}="{e(v)}"' for k, v in (data or {}).items())
    header = ""
    if agent is not None:
        ai = "unknown" if ai_on is None else ("on" if ai_on else "off")
        label = {"on": "AI drafting on", "off": "AI drafting off", "unknown": "AI drafting"}[ai]
        toggle = ""
        if agent.can("lead"):
            toggle = (
                f'<button id="kill-toggle" type="button" data-on="{ai}">'
                f"{'Turn AI drafting on' if ai == 'off' else 'Turn AI drafting off'}</button>"
            )
        header = f"""
  <span id="ai-state" data-ai="{ai}">{label}</span>{toggle}
  <span class="who">Signed in as <strong id="agent-name" data-agent="{e(agent.id)}">{e(agent.name)}</strong>
    ({e(agent.tier)})</span>
  <form method="post" action="/logout" class="inline"><button type="submit">Switch agent</button></form>"""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · Acme support desk</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body data-page="{e(page)}"{attrs}>
<header class="top">
  <a class="brand" href="/">Acme support desk</a>
  <span class="mode" id="mode">{e(mode)}</span>{header}
</header>
<main>
{body}
</main>
</body>
</html>
"""


def sign_in(agents: Sequence[Agent]) -> str:
    buttons = "\n".join(
        f'<button type="submit" name="agent" value="{e(a.id)}" id="login-{e(a.id)}">'
        f"{e(a.name)} <small>{e(a.tier)}{', billing' if a.can('billing') else ''}</small></button>"
        for a in agents
    )
    return f"""<section class="card narrow">
<h1>Sign in</h1>
<p>A demo desk: pick an agent. Each sees different help-center documents and tools.</p>
<form method="post" action="/login" class="agents">
{buttons}
</form>
</section>"""


def inbox(rows: Sequence[TicketRow]) -> str:
    trs = "\n".join(
        f"""<tr class="ticket-row" data-ticket="{e(r.ticket.id)}">
  <td><a href="/tickets/{e(quote(r.ticket.id))}">{e(r.ticket.id)}</a></td>
  <td><a href="/tickets/{e(quote(r.ticket.id))}">{e(r.ticket.subject)}</a></td>
  <td>{e(r.ticket.customer_name)}</td>
  <td><span class="tag">{e(r.ticket.category)}</span></td>
  <td>{r.replies}</td>
  <td class="mono">{e(r.last_trace or "—")}</td>
</tr>"""
        for r in rows
    )
    return f"""<h1>Inbox</h1>
<table class="inbox">
<thead><tr><th>Ticket</th><th>Subject</th><th>Customer</th><th>Category</th><th>Replies</th>
<th>Last draft trace</th></tr></thead>
<tbody>
{trs}
</tbody>
</table>"""


def _replies(replies: Sequence[Reply]) -> str:
    if not replies:
        return '<p class="muted" id="no-replies">No replies yet.</p><ol id="replies"></ol>'
    items = "\n".join(
        f"""<li class="reply" data-reply="{r.id}" data-agent="{e(r.agent)}">
  <div class="reply-head">{e(r.agent)} · {e(time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created)))} UTC
  {f'· from draft <span class="mono trace">{e(r.trace_id)}</span>' if r.trace_id else "· manual"}</div>
  <div class="reply-body">{e(r.body)}</div>
</li>"""
        for r in replies
    )
    return f'<ol id="replies">\n{items}\n</ol>'


def _draft_history(drafts: Sequence[Draft]) -> str:
    if not drafts:
        return ""
    rows = "\n".join(
        f"""<tr class="draft-row" data-status="{e(d.status)}"><td>{e(d.agent)}</td>
<td>{e(d.status)}{f" ({e(d.reason)})" if d.reason else ""}</td><td>{e(d.prompt_version)}</td>
<td class="mono">{e(d.trace_id)}</td></tr>"""
        for d in reversed(drafts[-10:])
    )
    return f"""<details class="history"><summary>Draft history (trace ids for the dashboard)</summary>
<table><thead><tr><th>Agent</th><th>Status</th><th>Prompt</th><th>Trace id</th></tr></thead>
<tbody>{rows}</tbody></table></details>"""


def ticket_page(
    ticket: Ticket,
    *,
    replies: Sequence[Reply],
    drafts: Sequence[Draft],
    last: Draft | None,
    last_docs: Sequence[HelpDoc],
    injection_reasons: Sequence[str],
    dashboard_url: str | None,
) -> str:
    warn = ""
    if injection_reasons:
        warn = (
            '<p class="warning" id="injection-warning">This ticket looks like a prompt-injection '
            f"attempt ({e(', '.join(injection_reasons[:4]))}). The drafter treats it as data; "
            "review any draft carefully.</p>"
        )
    draft_text = ""
    trace = prompt_version = ""
    state = "idle"
    if last is not None:
        trace, prompt_version = last.trace_id, last.prompt_version
        if last.status == "done":
            state = "done"
            draft_text = render_citations(last.text, (d.id for d in last_docs))
        else:
            state = last.status
    docs = "".join(
        f'<li><a href="{e(doc_href(d.id))}" data-doc="{e(d.id)}">{e(d.title)}</a>'
        f"{' <span class=tag>internal</span>' if d.internal else ''}</li>"
        for d in last_docs
    )
    tools = ""
    if last is not None:
        tools = "".join(
            f'<li class="tool" data-ok="{str(t.get("ok")).lower()}">{e(t.get("name"))}: '
            f"{e(t.get('summary'))}</li>"
            for t in last.tools
        )
    dash = (
        f'<a id="dashboard-link" href="{e(dashboard_url)}" target="_blank" rel="noopener">'
        "look it up in the Bastion dashboard</a>"
        if dashboard_url
        else ""
    )
    return f"""<p class="crumbs"><a href="/">Inbox</a> / {e(ticket.id)}</p>
<h1 id="ticket-subject">{e(ticket.subject)}</h1>
<p class="meta">{e(ticket.id)} · {e(ticket.customer_name)} &lt;{e(ticket.customer_email)}&gt; ·
  <span class="mono">{e(ticket.customer_id)}</span> · <span class="tag">{e(ticket.category)}</span></p>
{warn}
<div class="columns">
<section class="card">
  <h2>Customer message</h2>
  <div class="ticket-body" id="ticket-body">{e(ticket.body)}</div>
  <h2>Replies</h2>
  {_replies(replies)}
  <form method="post" action="/tickets/{e(quote(ticket.id))}/replies" id="reply-form">
    <label for="reply-body">Reply to the customer</label>
    <textarea id="reply-body" name="body" rows="8" required></textarea>
    <input type="hidden" id="reply-trace" name="trace_id" value="">
    <button type="submit" id="send-reply">Send reply</button>
  </form>
</section>
<section class="card" id="draft-panel">
  <h2>AI draft</h2>
  <p id="ai-unavailable" class="unavailable" role="alert" hidden>{e(UNAVAILABLE)}</p>
  <button type="button" id="draft-btn">Draft reply</button>
  <span id="draft-status" data-state="{e(state)}">{e(state if state != "idle" else "")}</span>
  <p class="draft-meta">Trace id <span class="mono" id="draft-trace">{e(trace)}</span>
    · prompt <span class="mono" id="draft-prompt">{e(prompt_version)}</span> {dash}</p>
  <h3>Documents used</h3>
  <ul id="draft-docs">{docs}</ul>
  <h3>Tools</h3>
  <ul id="draft-tools">{tools}</ul>
  <div id="draft-text" class="draft" aria-live="polite">{draft_text}</div>
  <button type="button" id="use-draft" {"" if state == "done" else "hidden"}>Use draft</button>
  {_draft_history(drafts)}
</section>
</div>"""


def doc_page(doc: HelpDoc) -> str:
    tag = ' <span class="tag">internal</span>' if doc.internal else ""
    return f"""<p class="crumbs"><a href="/">Inbox</a> / help center</p>
<h1 id="doc-title" data-doc="{e(doc.id)}">{e(doc.title)}{tag}</h1>
<p class="mono">{e(doc.id)}</p>
<div class="doc-body card">{e(doc.body)}</div>"""


def not_found(what: str) -> str:
    return f'<h1>Not found</h1><p>{e(what)}</p><p><a href="/">Back to the inbox</a></p>'
