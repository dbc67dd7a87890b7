// Bastion dashboard: vanilla JS (ES modules, no build step), every text node set via textContent.
// This module signs in, refreshes every panel over one time range, and owns the kill switch,
// breakers, quality, review queue, calls and traces; the figures are drawn by charts.js.

import { $, clear, el, hhmm, hms, ms, msPair, pct, usd } from "./dom.js";
import {
  renderLatency, renderRates, renderSpend, renderSpendBreakdown, renderStages,
} from "./charts.js";

(() => {
  const KEY = "bastion.adminKey";
  const REFRESH_MS = 5000;
  let timer = null;
  let busy = false;
  let again = false; // a refresh was asked for while one was running (a filter changed)
  let drawn = null; // the last answers the charts were drawn from, to redraw them at a new width
  let resizing = null;
  // review items already drawn, by request id: a refresh keeps them (and a half-typed note)
  const reviewNodes = new Map();
  let reviewEpoch = 0; // bumped by each verdict, so an older refresh cannot draw over it

  class Refused extends Error {}

  // -- API -----------------------------------------------------------------------------------

  async function api(path, init) {
    const key = sessionStorage.getItem(KEY);
    if (!key) throw new Refused("no key");
    const res = await fetch(path, {
      cache: "no-store",
      ...init,
      headers: { "x-api-key": key, "content-type": "application/json" },
    });
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    const msg = body && body.error && body.error.message ? body.error.message : res.statusText;
    if (res.status === 401 || res.status === 403) throw new Refused(`${res.status}: ${msg}`);
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}: ${msg}`);
    return body;
  }

  // -- session -------------------------------------------------------------------------------

  function showLogin(message) {
    sessionStorage.removeItem(KEY);
    if (timer) clearTimeout(timer);
    timer = null;
    // no data may outlive a refused key: empty every container before hiding them
    for (const id of ["kpis", "spend-chart", "kill-state", "kill-others", "latency-chart",
      "latency-legend", "rates-chart", "rates-legend", "breakers", "calls-body", "trace-result",
      "spend-day", "updated", "stages", "review-list", "review-count", "spend-breakdown"]) clear($(id));
    const dlg = $("kill-confirm");
    if (dlg && dlg.open) dlg.close("cancel");
    drawn = null; // nothing drawn from a refused key's answers may come back on a resize
    reviewNodes.clear();
    reviewEpoch++;
    $("review-empty").hidden = true;
    $("app").hidden = true;
    for (const id of ["signout", "refresh", "range"]) $(id).hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    document.body.dataset.state = "locked";
  }

  function showApp() {
    $("login").hidden = true;
    $("app").hidden = false;
    for (const id of ["signout", "refresh", "range"]) $(id).hidden = false;
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    again = false;
    if (timer) clearTimeout(timer);
    const key = sessionStorage.getItem(KEY);
    try {
      // one range for every tile, chart and table of this refresh, sent with each request
      const minutes = encodeURIComponent($("range").value);
      const epoch = reviewEpoch;
      const [summary, latency, calls, breakers, stages, review, quality, spend] = await Promise.all([
        api(`/admin/api/summary?minutes=${minutes}`),
        api(`/admin/api/latency?minutes=${minutes}&buckets=30`),
        api(`/admin/api/calls?limit=50&minutes=${minutes}`),
        api(`/admin/api/breakers?minutes=${minutes}`),
        api(`/admin/api/stages?minutes=${minutes}`),
        api(`/admin/api/review?limit=50&status=${encodeURIComponent($("review-status").value)}`),
        api("/admin/api/quality"),
        api(`/admin/api/spend?minutes=${minutes}`),
      ]);
      if (!key || sessionStorage.getItem(KEY) !== key) return; // signed out while loading
      showApp();
      const range = rangeLabel(summary.window.minutes);
      document.body.dataset.rangeMinutes = String(summary.window.minutes);
      for (const n of document.querySelectorAll(".range-label")) n.textContent = range;
      renderKpis(summary, range);
      drawn = { summary, latency };
      renderSpend(summary);
      renderSpendBreakdown(spend);
      renderKill(summary.kill);
      renderLatency(latency);
      renderRates(latency);
      renderCalls(calls.calls, range);
      renderBreakers(breakers);
      renderStages(stages);
      renderQuality(quality);
      if (epoch === reviewEpoch) renderReview(review);
      $("updated").textContent = "updated " + hms(summary.generated_at);
      document.body.dataset.state = "ready";
    } catch (err) {
      if (err instanceof Refused) { showLogin("Key refused (" + err.message + ")"); return; }
      $("updated").textContent = "refresh failed: " + err.message;
    } finally {
      busy = false;
    }
    if (!document.hidden && sessionStorage.getItem(KEY)) timer = setTimeout(refresh, again ? 0 : REFRESH_MS);
  }

  // -- key figures ---------------------------------------------------------------------------

  // "last hour" for 60: the select's own wording when it has the value, else in minutes/hours
  function rangeLabel(minutes) {
    const opt = Array.from($("range").options).find((o) => Number(o.value) === minutes);
    if (opt) return opt.textContent;
    return minutes % 60 ? `last ${minutes} min` : `last ${minutes / 60} h`;
  }

  function renderKpis(s, range) {
    const c = s.calls;
    const g = s.spend.global_cap_usd;
    const today = `today ${usd(s.spend.total_usd)}` + (g === null ? ", no global cap" : ` of ${usd(g)} cap`);
    const partial = c.sampled ? ` (newest ${c.sample_limit})` : "";
    const cards = [
      ["spend-total", "Spend", usd(s.spend.range_usd), today],
      ["requests", "Requests", String(c.requests) + (c.sampled ? "+" : ""), range + partial],
      ["error-rate", "Error rate", pct(c.error_rate), `${c.errors} errors, ${range}`],
      ["retry-rate", "Retry rate", pct(c.retry_rate), `calls retried, ${range}`],
      ["failover-rate", "Failover rate", pct(c.failover_rate), `served by a backup, ${range}`],
      ["latency", "Latency p50 / p95", msPair(c.latency_p50, c.latency_p95), `TTFT p50 ${ms(c.ttft_p50)}, ${range}`],
      ["cache-savings", "Cache savings", usd(s.cache.savings_usd_estimate),
        `${s.cache.read_tokens} cached tokens (est.), ${range}`],
    ];
    clear($("kpis"));
    for (const [id, label, value, sub] of cards) {
      $("kpis").append(el("div", { class: "kpi", "data-kpi": id, "data-range": s.window.minutes },
        el("div", { class: "kpi-label" }, label),
        el("div", { class: "kpi-value" }, value),
        el("div", { class: "kpi-sub muted" }, sub)));
    }
  }

  // -- kill switch -----------------------------------------------------------------------------

  function renderKill(kill) {
    const sw = kill.switches || {};
    const global = sw.global;
    const state = $("kill-state");
    clear(state, $("kill-others"));
    state.dataset.on = global ? "true" : "false";
    if (global) {
      state.append(el("span", { class: "badge off" }, "AI OFF"),
        el("span", { class: "muted", "data-kill-who": "global" }, " " + killedBy(global)));
    } else {
      state.append(el("span", { class: "badge on" }, "AI ON"), el("span", { class: "muted" }, " serving traffic"));
    }
    const btn = $("kill-toggle");
    btn.dataset.next = global ? "off" : "on";
    btn.textContent = global ? "Turn AI back on" : "Kill all AI traffic";
    btn.className = global ? "primary" : "danger";
    for (const [name, info] of Object.entries(sw)) {
      if (name === "global") continue;
      const [kind, target] = name.split(/:(.*)/s);
      const off = el("button", { type: "button", class: "small" }, "turn off");
      off.addEventListener("click", () => toggleKill(false, { [kind === "key" ? "key_id" : "feature"]: target }));
      $("kill-others").append(el("li", { "data-switch": name },
        el("span", { class: "badge off" }, name), " " + killedBy(info) + " ", off));
    }
  }

  // who turned a switch on and when: UTC as the CLI prints it, and how long traffic has been off
  function killedBy(info) {
    const m = info.meta || {};
    const who = info.who || m.who || "?";
    const via = info.via ? ` via ${info.via}` : "";
    const when = info.at_iso ? ` at ${info.at_iso} (${info.since})` : "";
    return `killed by ${who}${via}${when}`;
  }

  // Killing all traffic takes a typed word in a modal; turning AI back on takes one click.
  const KILL_WORD = "KILL";

  function killDialog() {
    let dlg = $("kill-confirm");
    if (dlg) return dlg;
    const input = el("input", { id: "kill-confirm-input", type: "text", autocomplete: "off", spellcheck: "false",
      "aria-describedby": "kill-confirm-help" });
    const go = el("button", { id: "kill-confirm-go", type: "submit", value: "kill", class: "danger", disabled: true },
      "Kill all AI traffic");
    const cancel = el("button", { id: "kill-confirm-cancel", type: "button", value: "cancel" }, "Cancel");
    dlg = el("dialog", { id: "kill-confirm", class: "confirm", "aria-labelledby": "kill-confirm-title" },
      el("form", { method: "dialog" },
        el("h2", { id: "kill-confirm-title" }, "Kill all AI traffic?"),
        el("p", {}, "Every replica stops calling models within about a second. Callers get the configured " +
          "degraded answer until someone turns AI back on."),
        el("label", { for: "kill-confirm-input", id: "kill-confirm-help" }, "Type ", el("code", {}, KILL_WORD), " to confirm"),
        input,
        el("div", { class: "confirm-actions" }, cancel, go)));
    input.addEventListener("input", () => { go.disabled = input.value.trim() !== KILL_WORD; });
    cancel.addEventListener("click", () => dlg.close("cancel"));
    document.body.append(dlg);
    return dlg;
  }

  function confirmKill() {
    const dlg = killDialog();
    const input = $("kill-confirm-input");
    input.value = "";
    $("kill-confirm-go").disabled = true;
    dlg.returnValue = "cancel";
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => {
        // Escape closes the dialog without a value: only the typed word and the button kill
        resolve(dlg.returnValue === "kill" && input.value.trim() === KILL_WORD);
      }, { once: true });
      dlg.showModal();
      input.focus();
    });
  }

  async function toggleKill(on, scope) {
    const btn = $("kill-toggle");
    if (on && !scope && !(await confirmKill())) return;
    btn.disabled = true;
    try {
      await api("/admin/kill", { method: "POST", body: JSON.stringify({ on, ...(scope || {}) }) });
      const kill = await api("/admin/kill");
      renderKill(kill);
    } catch (err) {
      if (err instanceof Refused) { showLogin("Key refused (" + err.message + ")"); return; }
      $("kill-state").append(el("p", { class: "error" }, err.message));
    } finally {
      btn.disabled = false;
    }
  }

  // -- breakers --------------------------------------------------------------------------------

  function renderBreakers(b) {
    const box = $("breakers");
    clear(box);
    if (!b.enabled) { box.append(el("p", { class: "muted" }, "Circuit breakers are disabled in config.")); return; }
    const skipped = new Map(b.recently_open.map((r) => [r.deployment, r]));
    const list = el("ul", { class: "plain breakers" });
    for (const d of b.deployments) {
      const st = d.state || "unknown";
      const cls = st === "closed" ? "on" : st === "half_open" ? "warn" : st === "unknown" ? "" : "off";
      let detail = "";
      if (st === "open") detail = d.retry_after_seconds > 0 ? `probe in ${Math.ceil(d.retry_after_seconds)} s` : "next call probes";
      else if (st === "half_open") detail = "probe in flight";
      const seen = skipped.get(d.deployment);
      if (seen) detail += (detail ? " · " : "") + `skipped by ${seen.calls} call${seen.calls === 1 ? "" : "s"}`;
      list.append(el("li", { "data-deployment": d.deployment, "data-state": st },
        el("span", { class: "badge " + cls }, st.replace("_", "-")), " ", el("code", {}, d.deployment),
        detail ? el("span", { class: "muted small breaker-detail" }, " " + detail) : ""));
    }
    box.append(list);
    box.append(el("p", { class: "muted small" }, b.live
      ? "Read live from the shared counter store, so a breaker any replica opened shows here."
      : "The counter store is unreachable: live breaker state is unknown."));
  }

  // -- latency budget by stage ----------------------------------------------------------------

  function renderQuality(res) {
    const body = $("quality-body");
    body.replaceChildren();
    let rows = 0;
    for (const [feature, scorers] of Object.entries(res.features || {})) {
      for (const [scorer, v] of Object.entries(scorers)) {
        const pct = (100 * v.pass_rate).toFixed(1) + "%";
        const tr = el("tr", { "data-feature": feature, "data-scorer": scorer, "data-pass": String(v.pass_rate) },
          el("td", {}, feature), el("td", {}, scorer), el("td", {}, pct), el("td", {}, String(v.n)));
        body.appendChild(tr);
        rows += 1;
      }
    }
    $("quality-table").hidden = rows === 0;
    $("evals-empty").hidden = rows > 0; // one or the other, never a table under "no scores yet"
  }

  // -- review queue ----------------------------------------------------------------------------

  const reviewSig = (it) => [it.status, it.note, it.reviewed_at].join("\u0000");

  function when(t) {
    const d = new Date(t * 1000);
    return d.toDateString() === new Date().toDateString() ? hms(t) : d.toLocaleDateString() + " " + hhmm(t);
  }

  function reasonChip(r) {
    if (r === "sample") return el("span", { class: "reason", title: "in the random review sample" }, "sampled");
    const name = r.startsWith("flag:") ? r.slice(5) : r;
    return el("span", { class: "reason flag", title: r }, "flagged: " + name.replace(/_/g, " "));
  }

  function reviewText(label, text, chars) {
    const more = chars > text.length - (text.endsWith("…") ? 1 : 0) ? ` · preview of ${chars} chars` : "";
    return el("div", {}, el("div", { class: "label" }, label + more), el("pre", { class: "review-" + label }, text || "—"));
  }

  function reviewItem(it) {
    const badge = { pending: "badge warn", good: "badge on", bad: "badge off" }[it.status] || "badge";
    const trace = traceLink(it.trace_id, "trace " + it.trace_id.slice(0, 8) + "…");
    const node = el("article", { class: "review-item", "data-request-id": it.request_id, "data-status": it.status },
      el("div", { class: "review-head" },
        el("span", { class: badge + " review-status" }, it.status),
        el("span", { class: "muted" }, when(it.ts)),
        el("span", { class: "feature" }, it.feature || "default"),
        el("code", { class: "model" }, it.model),
        it.prompt_version ? el("code", { class: "muted" }, it.prompt_version) : "",
        el("span", { class: "reasons" }, ...it.reasons.map(reasonChip)),
        trace),
      el("div", { class: "review-text" },
        reviewText("input", it.input_text, it.input_chars), reviewText("output", it.output_text, it.output_chars)));
    if (it.status !== "pending") {
      const at = it.reviewed_at ? ` at ${when(it.reviewed_at)}` : "";
      node.append(el("p", { class: "review-note-shown" },
        el("span", { class: "muted" }, `marked ${it.status}${at}` + (it.note ? ": " : "")),
        el("span", { class: "review-note-text" }, it.note || "")));
    }
    const note = el("input", { type: "text", class: "review-note", maxlength: 2000, "aria-label": "review note",
      placeholder: it.status === "pending" ? "note (optional)" : "change the note or verdict" });
    note.value = it.note || "";
    const good = el("button", { type: "button", class: "good mark-good" }, "Good");
    const bad = el("button", { type: "button", class: "bad mark-bad" }, "Bad");
    const exp = el("button", { type: "button", class: "export", disabled: it.status === "pending",
      title: it.status === "pending" ? "mark the item first" : "export as an eval case (re-scrubbed)" }, "Export eval case");
    good.addEventListener("click", () => markReview(node, it, "good"));
    bad.addEventListener("click", () => markReview(node, it, "bad"));
    exp.addEventListener("click", () => exportReview(node, it));
    node.append(el("div", { class: "review-actions" }, note, good, bad, exp),
      el("p", { class: "error review-error" }),
      el("pre", { class: "export-json", hidden: true }));
    return node;
  }

  function renderReview(res) {
    const box = $("review-list");
    const filtered = res.status !== "all";
    $("review-count").textContent = `${res.pending}${res.pending_more ? "+" : ""} pending`;
    const empty = $("review-empty");
    empty.hidden = res.items.length > 0 || filtered;
    const nodes = res.items.map((it) => {
      const sig = reviewSig(it);
      const old = reviewNodes.get(it.request_id);
      if (old && old.sig === sig) return old.node;
      const node = reviewItem(it);
      const draft = old && old.node.querySelector(".review-note").value;
      if (draft && draft !== (old.note || "")) node.querySelector(".review-note").value = draft;
      reviewNodes.set(it.request_id, { sig, node, note: it.note });
      return node;
    });
    const listed = new Set(res.items.map((it) => it.request_id));
    for (const id of [...reviewNodes.keys()]) if (!listed.has(id)) reviewNodes.delete(id);
    if (!res.items.length && filtered) nodes.push(el("p", { class: "empty" }, `No ${res.status} items.`));
    const current = Array.from(box.children);
    if (current.length === nodes.length && current.every((n, i) => n === nodes[i])) return;
    const active = document.activeElement;
    box.replaceChildren(...nodes);
    if (active && active.isConnected && document.activeElement !== active) active.focus();
  }

  async function markReview(node, it, verdict) {
    const buttons = node.querySelectorAll("button");
    for (const b of buttons) b.disabled = true;
    const key = sessionStorage.getItem(KEY);
    const errBox = node.querySelector(".review-error");
    errBox.textContent = "";
    reviewEpoch++;
    try {
      const res = await api("/admin/api/review/mark", { method: "POST",
        body: JSON.stringify({ request_id: it.request_id, verdict, note: node.querySelector(".review-note").value }) });
      reviewEpoch++; // a refresh that left before this verdict landed must not redraw the item
      if (sessionStorage.getItem(KEY) !== key) return;
      const shown = node.isConnected ? node : (reviewNodes.get(it.request_id) || {}).node;
      const fresh = reviewItem(res.item);
      reviewNodes.set(it.request_id, { sig: reviewSig(res.item), node: fresh, note: res.item.note });
      if (shown && shown.isConnected) shown.replaceWith(fresh);
      api("/admin/api/review?limit=1&status=pending").then((r) => {
        $("review-count").textContent = `${r.pending}${r.pending_more ? "+" : ""} pending`;
      }).catch(() => {});
    } catch (err) {
      if (err instanceof Refused) { showLogin("Key refused (" + err.message + ")"); return; }
      errBox.textContent = err.message;
      for (const b of buttons) b.disabled = b.classList.contains("export") && it.status === "pending";
    }
  }

  async function exportReview(node, it) {
    const out = node.querySelector(".export-json");
    const errBox = node.querySelector(".review-error");
    errBox.textContent = "";
    const key = sessionStorage.getItem(KEY);
    try {
      const res = await api("/admin/api/review/export", { method: "POST", body: JSON.stringify({ request_id: it.request_id }) });
      if (sessionStorage.getItem(KEY) !== key) return;
      out.textContent = JSON.stringify(res, null, 2);
      out.hidden = false;
    } catch (err) {
      if (err instanceof Refused) { showLogin("Key refused (" + err.message + ")"); return; }
      errBox.textContent = err.message;
    }
  }

  // -- calls and traces ------------------------------------------------------------------------

  function flagList(c) {
    const f = [];
    if (c.stream) f.push("stream");
    if (c.retried) f.push("retried");
    if (c.failover) f.push("failover");
    if (c.hedged) f.push("hedged");
    if (c.degraded) f.push("degraded");
    for (const x of c.findings || []) {
      if (x.action !== "passed") f.push(`${x.kind}:${x.action}`);
    }
    return f.join(" ");
  }

  function callCells(c) {
    const status = el("span", { class: c.status >= 400 ? "badge off" : "badge on" }, String(c.status));
    if (c.error_type) status.title = c.error_type;
    return [
      el("td", {}, hms(c.ts)),
      el("td", {}, c.feature || "—"),
      el("td", {}, c.model),
      el("td", {}, el("code", {}, c.deployment || "—")),
      el("td", {}, status),
      el("td", { class: "num" }, ms(c.latency_ms)),
      el("td", { class: "num" }, ms(c.ttft_ms)),
      el("td", { class: "num" }, `${c.input_tokens}/${c.output_tokens}/${c.cache_read_tokens}`),
      el("td", { class: "num cost" }, usd(c.cost_usd)),
      el("td", { class: "flags" }, flagList(c)),
    ];
  }

  // A call's trace view has its own address (#trace=<id>): a link to open, share or bookmark.
  const traceHref = (id) => "#trace=" + encodeURIComponent(id);

  function traceLink(id, text) {
    const a = el("a", { class: "trace-link", href: traceHref(id), title: "open trace " + id, "data-trace-id": id }, text);
    // the same address twice fires no hashchange: open it again by hand
    a.addEventListener("click", () => { if (location.hash === a.getAttribute("href")) openTrace(id); });
    return a;
  }

  function traceFromHash() {
    const m = /^#trace=(.+)$/.exec(location.hash);
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (_) { return null; }
  }

  async function openTrace(id) {
    $("trace-input").value = id;
    await lookupTrace(id);
    if ($("trace-result").isConnected && !$("app").hidden) $("trace-result").scrollIntoView({ block: "start" });
  }

  function renderCalls(calls, range) {
    const body = $("calls-body");
    clear(body);
    if (!calls.length) {
      body.append(el("tr", {}, el("td", { colspan: 11, class: "empty" }, `No calls recorded in the ${range || "range"}.`)));
      return;
    }
    for (const c of calls) {
      const link = traceLink(c.trace_id, c.trace_id.slice(0, 8) + "…");
      const tr = el("tr", { class: "call-row" + (c.status >= 400 ? " failed" : ""), "data-request-id": c.request_id,
        "data-trace-id": c.trace_id, "data-status": c.status, "data-feature": c.feature || "" },
      ...callCells(c), el("td", {}, link));
      tr.title = c.input_text ? "input: " + c.input_text : "";
      body.append(tr);
    }
  }

  async function lookupTrace(traceId) {
    const box = $("trace-result");
    clear(box);
    const id = traceId.trim();
    if (!id) return;
    try {
      const key = sessionStorage.getItem(KEY);
      const res = await api("/admin/api/trace?trace_id=" + encodeURIComponent(id));
      if (sessionStorage.getItem(KEY) !== key) return;
      box.dataset.traceId = res.trace_id;
      if (!res.calls.length) {
        box.append(el("p", { class: "empty" }, `No calls recorded for trace ${res.trace_id}.`));
        return;
      }
      const rows = res.calls.map((c) => {
        const tr = el("tr", { class: "trace-call", "data-request-id": c.request_id }, ...callCells(c));
        return tr;
      });
      const details = res.calls.map((c) => el("details", { class: "trace-text" },
        el("summary", {}, `${c.request_id} · ${c.model} · ${c.status}`),
        el("div", { class: "label" }, "input"), el("pre", {}, c.input_text || "—"),
        el("div", { class: "label" }, "output"), el("pre", {}, c.output_text || "—")));
      const close = el("button", { type: "button", class: "small trace-close" }, "Close");
      close.addEventListener("click", () => {
        clear(box);
        delete box.dataset.traceId;
        if (traceFromHash() !== null) history.replaceState(null, "", location.pathname + location.search);
      });
      box.append(el("div", { class: "trace-head" },
        el("h3", {}, `Trace ${res.trace_id} · ${res.calls.length} call(s)`),
        el("a", { class: "small", href: traceHref(res.trace_id) }, "link to this trace"), close),
        el("div", { class: "table-wrap" }, el("table", { class: "trace-table" },
          el("thead", {}, el("tr", {}, ...["time", "feature", "model", "deployment", "status"].map((h) => el("th", {}, h)),
            ...["latency", "TTFT", "tokens in/out/cached", "cost"].map((h) => el("th", { class: "num" }, h)), el("th", {}, "flags"))),
          el("tbody", {}, ...rows))), ...details);
    } catch (err) {
      if (err instanceof Refused) { showLogin("Key refused (" + err.message + ")"); return; }
      box.append(el("p", { class: "error" }, err.message));
    }
  }

  // -- wiring ----------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("key-input").value.trim();
      $("key-input").value = "";
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      $("login-error").textContent = "";
      refresh();
      const id = traceFromHash();
      if (id !== null) openTrace(id);
    });
    $("signout").addEventListener("click", () => showLogin("Signed out."));
    $("refresh").addEventListener("click", refresh);
    $("range").addEventListener("change", refresh);
    $("review-status").addEventListener("change", refresh);
    $("kill-toggle").addEventListener("click", (ev) => toggleKill(ev.currentTarget.dataset.next === "on"));
    $("trace-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = $("trace-input").value.trim();
      if (!id) return;
      if (location.hash === traceHref(id)) lookupTrace(id);
      else location.hash = traceHref(id); // the lookup follows the address, so it can be shared
    });
    // charts are drawn at their box's width: draw them again when it changes (a phone turned)
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (!drawn || $("app").hidden) return;
        renderSpend(drawn.summary);
        renderLatency(drawn.latency);
        renderRates(drawn.latency);
      }, 150);
    });
    window.addEventListener("hashchange", () => {
      const id = traceFromHash();
      if (id !== null && sessionStorage.getItem(KEY)) openTrace(id);
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden && sessionStorage.getItem(KEY)) refresh(); });
    if (sessionStorage.getItem(KEY)) {
      refresh();
      const id = traceFromHash();
      if (id !== null) openTrace(id);
    } else showLogin("");
  });
})();
