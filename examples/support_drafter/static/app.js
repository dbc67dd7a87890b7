// The support desk's only script: stream a draft into the page, show the AI state, keep the
// manual reply working. Model output is only ever inserted as text nodes; a [doc_id] becomes
// a link only for documents that were in this draft's prompt.
"use strict";

(function () {
  const UNAVAILABLE = "Drafting unavailable — please reply manually";
  const $ = (id) => document.getElementById(id);
  const CITE = /\[([A-Za-z0-9][A-Za-z0-9._-]{0,127})\]/g;

  function renderDraft(el, text, allowed) {
    const frag = document.createDocumentFragment();
    let pos = 0;
    for (const m of text.matchAll(CITE)) {
      frag.appendChild(document.createTextNode(text.slice(pos, m.index)));
      if (allowed.has(m[1])) {
        const a = document.createElement("a");
        a.className = "cite";
        a.href = "/docs/" + encodeURIComponent(m[1]);
        a.dataset.doc = m[1];
        a.textContent = m[0];
        frag.appendChild(a);
      } else {
        frag.appendChild(document.createTextNode(m[0]));
      }
      pos = m.index + m[0].length;
    }
    frag.appendChild(document.createTextNode(text.slice(pos)));
    el.replaceChildren(frag);
  }

  function setAiState(word) {
    const badge = $("ai-state");
    if (badge) {
      badge.dataset.ai = word;
      badge.textContent = word === "off" ? "AI drafting off" : word === "on" ? "AI drafting on" : "AI drafting";
    }
    const toggle = $("kill-toggle");
    if (toggle) {
      toggle.dataset.on = word;
      toggle.textContent = word === "off" ? "Turn AI drafting on" : "Turn AI drafting off";
    }
    // the Draft button stays live: Bastion itself answers degraded, the page only mirrors it
    if (word === "off") showUnavailable("kill_switch");
    else if (word === "on" && $("ai-unavailable") && $("ai-unavailable").dataset.reason === "kill_switch") hideUnavailable();
  }

  function showUnavailable(reason) {
    const box = $("ai-unavailable");
    if (!box) return;
    box.textContent = UNAVAILABLE;
    box.dataset.reason = reason || "unavailable";
    box.hidden = false;
  }

  function hideUnavailable() {
    const box = $("ai-unavailable");
    if (box) { box.hidden = true; delete box.dataset.reason; }
  }

  async function pollStatus() {
    try {
      const r = await fetch("/api/status", { cache: "no-store" });
      if (r.ok) setAiState((await r.json()).ai);
    } catch (_) { /* the desk keeps working without the badge */ }
  }

  function parseEvents(buffer, onEvent) {
    let idx;
    while ((idx = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, idx);
      buffer = buffer.slice(idx + 2);
      let name = "message";
      const data = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
    return buffer;
  }

  async function draft(ticketId) {
    const btn = $("draft-btn"), status = $("draft-status"), textEl = $("draft-text");
    const docsEl = $("draft-docs"), toolsEl = $("draft-tools"), use = $("use-draft");
    let text = "";
    let allowed = new Set();
    let finished = false;
    btn.disabled = true;
    use.hidden = true;
    hideUnavailable();
    status.dataset.state = "starting";
    status.textContent = "drafting…";
    textEl.replaceChildren();
    docsEl.replaceChildren();
    toolsEl.replaceChildren();

    const handlers = {
      meta(d) {
        $("draft-trace").textContent = d.trace_id;
        $("draft-prompt").textContent = d.prompt_version;
        allowed = new Set(d.docs.map((x) => x.id));
        for (const doc of d.docs) {
          const li = document.createElement("li");
          const a = document.createElement("a");
          a.href = "/docs/" + encodeURIComponent(doc.id);
          a.dataset.doc = doc.id;
          a.textContent = doc.title;
          li.appendChild(a);
          if (doc.internal) {
            const tag = document.createElement("span");
            tag.className = "tag";
            tag.textContent = "internal";
            li.append(" ", tag);
          }
          docsEl.appendChild(li);
        }
        if (d.retrieval_degraded) {
          const li = document.createElement("li");
          li.textContent = "help center unavailable: drafting without documents";
          docsEl.appendChild(li);
        }
        status.dataset.state = "streaming";
      },
      token(d) {
        text += d.text;
        status.dataset.state = "streaming";
        renderDraft(textEl, text, allowed);
      },
      reset() {
        text = "";
        textEl.replaceChildren();
      },
      tool(d) {
        const li = document.createElement("li");
        li.className = "tool";
        li.dataset.ok = String(d.ok);
        li.textContent = d.name + ": " + d.summary;
        toolsEl.appendChild(li);
      },
      done(d) {
        finished = true;
        if (d.status === "done") {
          renderDraft(textEl, d.text, allowed);
          status.dataset.state = "done";
          status.textContent = "done";
          use.hidden = false;
          use.dataset.trace = d.trace_id;
        } else {
          textEl.replaceChildren(document.createTextNode("Draft withheld: " + (d.reason || "")));
          status.dataset.state = d.status;
          status.textContent = d.status;
        }
      },
      unavailable(d) {
        finished = true;
        text = "";
        textEl.replaceChildren();
        status.dataset.state = "unavailable";
        status.textContent = "unavailable";
        showUnavailable(d.reason);
        $("reply-body").focus();
      },
    };

    try {
      const resp = await fetch("/tickets/" + encodeURIComponent(ticketId) + "/draft", {
        method: "POST",
        headers: { accept: "text/event-stream" },
      });
      if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), (name, data) => {
          const h = handlers[name];
          if (h) h(data);
        });
      }
    } catch (err) {
      handlers.unavailable({ reason: "network" });
    }
    if (!finished) handlers.unavailable({ reason: "interrupted" });
    btn.disabled = false;
  }

  function useDraft() {
    const text = $("draft-text").textContent || "";
    // citations are for the agent; the customer gets the words
    $("reply-body").value = text.replace(CITE, "").replace(/ +([.,;:])/g, "$1").trim();
    $("reply-trace").value = $("use-draft").dataset.trace || $("draft-trace").textContent || "";
    $("reply-body").focus();
  }

  async function toggleAi() {
    const toggle = $("kill-toggle");
    const turnOn = toggle.dataset.on === "off";
    toggle.disabled = true;
    try {
      const r = await fetch("/api/ai", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ on: turnOn }),
      });
      const data = await r.json();
      if (r.ok) setAiState(data.ai);
      else alert(data.error || "could not switch AI drafting");
    } finally {
      toggle.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const body = document.body;
    const toggle = $("kill-toggle");
    if (toggle) toggle.addEventListener("click", toggleAi);
    if (body.dataset.page === "ticket") {
      $("draft-btn").addEventListener("click", () => draft(body.dataset.ticket));
      $("use-draft").addEventListener("click", useDraft);
      const trace = $("use-draft").hidden ? "" : $("draft-trace").textContent;
      if (trace) $("use-draft").dataset.trace = trace;
    }
    if ($("ai-state")) {
      setAiState($("ai-state").dataset.ai);
      setInterval(pollStatus, 500);
    }
  });
})();
