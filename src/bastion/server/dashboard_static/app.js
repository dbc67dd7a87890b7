// Bastion dashboard: vanilla JS, hand-drawn SVG charts, every text node set via textContent.
"use strict";

(() => {
  const KEY = "bastion.adminKey";
  const REFRESH_MS = 5000;
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLORS = {
    p50: "#2563eb", p95: "#93c5fd", ttft50: "#059669", ttft95: "#6ee7b7",
    error: "#dc2626", retry: "#d97706", failover: "#7c3aed",
  };
  const $ = (id) => document.getElementById(id);
  const STAGE_NAMES = {
    auth_routing: "auth & routing", guards: "guards", retrieval: "retrieval",
    first_token: "first token", total: "total",
  };
  let timer = null;
  let busy = false;
  let again = false; // a refresh was asked for while one was running (a filter changed)
  // review items already drawn, by request id: a refresh keeps them (and a half-typed note)
  const reviewNodes = new Map();
  let reviewEpoch = 0; // bumped by each verdict, so an older refresh cannot draw over it

  class Refused extends Error {}

  // -- DOM helpers ---------------------------------------------------------------------------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }

  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.setAttribute("class", v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function clear(...nodes) { for (const n of nodes) n.replaceChildren(); }

  // -- formatting ----------------------------------------------------------------------------

  function usd(v) {
    if (v === null || v === undefined) return "—";
    if (v === 0) return "$0.00";
    if (Math.abs(v) < 0.01) return "$" + v.toFixed(6);
    if (Math.abs(v) < 1) return "$" + v.toFixed(4);
    return "$" + v.toFixed(2);
  }
  const pct = (v) => (v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%");
  const ms = (v) => (v === null || v === undefined ? "—" : (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms");
  const hhmm = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  const hms = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

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
      "spend-day", "updated", "stages", "review-list", "review-count"]) clear($(id));
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
      const minutes = $("range").value;
      const epoch = reviewEpoch;
      const [summary, latency, calls, breakers, stages, review, quality] = await Promise.all([
        api("/admin/api/summary"),
        api(`/admin/api/latency?minutes=${minutes}&buckets=30`),
        api("/admin/api/calls?limit=50"),
        api("/admin/api/breakers"),
        api(`/admin/api/stages?minutes=${minutes}`),
        api(`/admin/api/review?limit=50&status=${encodeURIComponent($("review-status").value)}`),
        api("/admin/api/quality"),
      ]);
      if (!key || sessionStorage.getItem(KEY) !== key) return; // signed out while loading
      showApp();
      renderKpis(summary);
      renderSpend(summary);
      renderKill(summary.kill);
      renderLatency(latency);
      renderRates(latency);
      renderCalls(calls.calls);
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

  function renderKpis(s) {
    const c = s.calls;
    const g = s.spend.global_cap_usd;
    const cards = [
      ["spend-total", "Spend today", usd(s.spend.total_usd), g === null ? "no global cap" : "of " + usd(g) + " cap"],
      ["requests", "Requests", String(c.requests), `last ${c.window_hours} h`],
      ["error-rate", "Error rate", pct(c.error_rate), `${c.errors} errors`],
      ["retry-rate", "Retry rate", pct(c.retry_rate), "calls retried"],
      ["failover-rate", "Failover rate", pct(c.failover_rate), "served by a backup"],
      ["latency", "Latency p50 / p95", `${ms(c.latency_p50)} / ${ms(c.latency_p95)}`, `TTFT p50 ${ms(c.ttft_p50)}`],
      ["cache-savings", "Cache savings", usd(s.cache.savings_usd_estimate),
        `${s.cache.read_tokens} cached tokens (est.)`],
    ];
    clear($("kpis"));
    for (const [id, label, value, sub] of cards) {
      $("kpis").append(el("div", { class: "kpi", "data-kpi": id },
        el("div", { class: "kpi-label" }, label),
        el("div", { class: "kpi-value" }, value),
        el("div", { class: "kpi-sub muted" }, sub)));
    }
  }

  // -- spend by feature vs cap (horizontal bars) ---------------------------------------------

  function renderSpend(s) {
    const box = $("spend-chart");
    $("spend-day").textContent = `${s.day} (${s.timezone})`;
    const rows = s.spend.features;
    clear(box);
    if (!rows.length) {
      box.append(el("p", { class: "empty" }, "No spend recorded today, and no feature has a cap."));
      return;
    }
    const W = 640, rowH = 34, labelW = 130, valueW = 190, trackW = W - labelW - valueW - 10;
    const maxUncapped = Math.max(1e-9, ...rows.filter((r) => r.cap_usd === null).map((r) => r.spent_usd));
    const svg = sv("svg", { viewBox: `0 0 ${W} ${rows.length * rowH + 6}`, role: "img",
      "aria-label": "spend by feature against its daily cap", class: "spend-svg" });
    rows.forEach((r, i) => {
      const y = i * rowH + 6;
      const scale = r.cap_usd ? r.cap_usd : r.cap_usd === 0 ? 1e-9 : maxUncapped;
      const frac = Math.min(1, r.spent_usd / scale);
      const level = r.cap_usd === null ? "nocap" : frac >= 0.8 ? "hot" : frac >= 0.5 ? "warm" : "ok";
      const g = sv("g", { class: "spend-row", "data-feature": r.feature, "data-spent": r.spent_usd,
        "data-cap": r.cap_usd === null ? "" : r.cap_usd });
      g.append(sv("text", { x: 0, y: y + 15, class: "bar-label" }, r.feature));
      g.append(sv("rect", { x: labelW, y, width: trackW, height: 20, rx: 4, class: "bar-track" }));
      const w = r.spent_usd > 0 ? Math.max(2, frac * trackW) : 0;
      g.append(sv("rect", { x: labelW, y, width: w.toFixed(2), height: 20, rx: 4, class: "bar-fill " + level }));
      if (r.cap_usd !== null) {
        g.append(sv("line", { x1: labelW + trackW, x2: labelW + trackW, y1: y - 3, y2: y + 23, class: "cap-mark" }));
      }
      const capText = r.cap_usd === null ? "no cap" : `of ${usd(r.cap_usd)} (${pct(r.spent_usd / (r.cap_usd || 1e-9))})`;
      g.append(sv("text", { x: labelW + trackW + 10, y: y + 15, class: "bar-value spent" }, usd(r.spent_usd)));
      g.append(sv("text", { x: labelW + trackW + 92, y: y + 15, class: "bar-value cap muted-fill" }, capText));
      const held = r.reserved_usd ? `, ${usd(r.reserved_usd)} held by calls in flight` : "";
      g.append(sv("title", {}, `${r.feature}: ${usd(r.spent_usd)} spent today ${r.cap_usd === null ? "(no cap)" : "of " + usd(r.cap_usd)}${held}`));
      svg.append(g);
    });
    box.append(svg);
    const caps = s.spend;
    box.append(el("p", { class: "muted small caps-note" },
      `Global cap ${caps.global_cap_usd === null ? "none" : usd(caps.global_cap_usd)} · per-user cap ` +
      `${caps.per_user_cap_usd === null ? "none" : usd(caps.per_user_cap_usd)} · per-key cap ` +
      `${caps.per_key_cap_usd === null ? "none" : usd(caps.per_key_cap_usd)} · spend is read from the ledger, ` +
      "so it lags a call by well under a second."));
  }

  // -- line charts -----------------------------------------------------------------------------

  function niceScale(v) {
    // a round top and step so tick labels read 0, 5, 10… rather than 0, 6.25, 12.5…
    if (!(v > 0)) return { max: 1, step: 0.25 };
    const raw = v / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
    return { max: Math.ceil(v / step - 1e-9) * step, step };
  }

  function lineChart(box, legend, data, lines, fmtY) {
    clear(box, legend);
    const pts = data.series;
    const W = 640, H = 220, L = 54, R = 12, T = 10, B = 26;
    const vals = lines.flatMap((ln) => pts.map((p) => ln.get(p)).filter((v) => v !== null && v !== undefined));
    const { max: ymax, step } = niceScale(Math.max(0, ...vals));
    const x = (t) => L + ((t - data.start) / (data.end - data.start)) * (W - L - R);
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "line-svg" });
    for (let i = 0; i * step <= ymax + 1e-12; i++) {
      const v = i * step;
      svg.append(sv("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "gridline" }));
      svg.append(sv("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, fmtY(v)));
    }
    [["start", data.start], ["middle", (data.start + data.end) / 2], ["end", data.end]].forEach(([anchor, t]) => {
      svg.append(sv("text", { x: x(t), y: H - 8, class: "axis", "text-anchor": anchor }, hhmm(t)));
    });
    if (!vals.length) {
      svg.append(sv("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no calls in this range"));
    }
    for (const ln of lines) {
      let d = "";
      let pen = false;
      const g = sv("g", { class: "series", "data-series": ln.key });
      for (const p of pts) {
        const v = ln.get(p);
        if (v === null || v === undefined) { pen = false; continue; }
        const cx = x((p.t + p.t_end) / 2), cy = y(v);
        d += (pen ? "L" : "M") + cx.toFixed(1) + " " + cy.toFixed(1) + " ";
        pen = true;
        const dot = sv("circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 3, fill: ln.color, "data-value": v });
        dot.append(sv("title", {}, `${ln.name} ${hhmm(p.t)}: ${fmtY(v)} (${p.requests} calls)`));
        g.append(dot);
      }
      if (d) g.prepend(sv("path", { d, fill: "none", stroke: ln.color, "stroke-width": 2, class: ln.dash ? "dash" : "" }));
      svg.append(g);
      legend.append(el("span", { class: "key" }, el("i", { class: "swatch", "data-color": ln.key }), ln.name));
      legend.lastChild.firstChild.style.background = ln.color;
    }
    box.append(svg);
  }

  function renderLatency(lat) {
    lineChart($("latency-chart"), $("latency-legend"), lat, [
      { key: "latency_p50", name: "latency p50", color: COLORS.p50, get: (p) => p.latency_p50 },
      { key: "latency_p95", name: "latency p95", color: COLORS.p95, get: (p) => p.latency_p95 },
      { key: "ttft_p50", name: "TTFT p50", color: COLORS.ttft50, get: (p) => p.ttft_p50 },
      { key: "ttft_p95", name: "TTFT p95", color: COLORS.ttft95, get: (p) => p.ttft_p95 },
    ], (v) => (v >= 1000 ? +(v / 1000).toFixed(2) + " s" : +v.toFixed(1) + " ms"));
  }

  function renderRates(lat) {
    lineChart($("rates-chart"), $("rates-legend"), lat, [
      { key: "error_rate", name: "errors", color: COLORS.error, get: (p) => p.error_rate },
      { key: "retry_rate", name: "retries", color: COLORS.retry, get: (p) => p.retry_rate },
      { key: "failover_rate", name: "failovers", color: COLORS.failover, get: (p) => p.failover_rate },
    ], (v) => +(v * 100).toFixed(1) + "%");
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

  async function toggleKill(on, scope) {
    const btn = $("kill-toggle");
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
    const open = new Map(b.recently_open.map((r) => [r.deployment, r.last_seen]));
    const list = el("ul", { class: "plain breakers" });
    for (const d of b.deployments) {
      const st = d.state || (open.has(d.deployment) ? "seen open" : b.live ? "closed" : "no recent trips");
      const cls = st === "closed" || st === "no recent trips" ? "on" : st === "half_open" ? "warn" : "off";
      list.append(el("li", { "data-deployment": d.deployment },
        el("span", { class: "badge " + cls }, st), " ", el("code", {}, d.deployment)));
    }
    box.append(list);
    if (!b.live) {
      box.append(el("p", { class: "muted small" },
        "Live breaker state is not exposed by this counter store; states come from recent calls that skipped an open breaker."));
    }
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
  }

  function renderStages(res) {
    const box = $("stages");
    clear(box);
    if (!res.features.length) {
      box.append(el("p", { class: "empty" }, "No calls in this range."));
      return;
    }
    for (const f of res.features) {
      const body = el("tbody");
      for (const s of f.stages) body.append(stageRow(s));
      const sub = `${f.requests} call${f.requests === 1 ? "" : "s"} · ${pct(f.over_budget_rate)} over budget`;
      box.append(el("div", { class: "stage-feature", "data-feature": f.feature },
        el("h3", {}, el("span", {}, f.feature), el("small", {}, sub)),
        el("div", { class: "table-wrap" }, el("table", { class: "stage-table" },
          el("thead", {}, el("tr", {}, el("th", {}, "stage"), el("th", { class: "num" }, "p50"),
            el("th", { class: "num" }, "p95"), el("th", {}, "p95 vs budget"),
            el("th", { class: "num" }, "budget"), el("th", { class: "num" }, "over budget"))),
          body))));
    }
  }

  function stageRow(s) {
    const over = s.p95_over_budget;
    const budget = s.budget_ms;
    const p95 = el("td", { class: "num p95" }, ms(s.p95));
    if (over) p95.append(el("span", { class: "badge off" }, "over"));
    let meter;
    if (budget === null) {
      meter = el("span", { class: "muted small" }, "no budget");
    } else if (s.p95 === null) {
      meter = el("span", { class: "muted small" }, "not measured");
    } else {
      // the track spans twice the budget; the mark in the middle is the budget
      const fill = el("span", { class: "meter-fill " + (over ? "hot" : s.p95 > 0.8 * budget ? "warn" : "ok") });
      fill.style.width = (Math.min(1, s.p95 / (2 * budget)) * 100).toFixed(1) + "%";
      meter = el("span", { class: "meter", title: `p95 ${ms(s.p95)} against a budget of ${ms(budget)}` },
        fill, el("span", { class: "meter-mark" }));
    }
    const share = s.over_budget_rate === null ? "—" : `${pct(s.over_budget_rate)} (${s.over_budget_calls})`;
    return el("tr", { class: over ? "over" : "", "data-stage": s.stage, "data-over": over ? "true" : "false",
      "data-p95": s.p95 === null ? "" : s.p95, "data-budget": budget === null ? "" : budget,
      "data-over-rate": s.over_budget_rate === null ? "" : s.over_budget_rate },
    el("td", {}, STAGE_NAMES[s.stage] || s.stage),
    el("td", { class: "num" }, ms(s.p50)),
    p95,
    el("td", {}, meter),
    el("td", { class: "num" }, budget === null ? "—" : ms(budget)),
    el("td", { class: "num over-share" + (s.over_budget_calls ? " error" : "") }, share));
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
    const trace = el("button", { type: "button", class: "link trace-link", title: "look up trace " + it.trace_id,
      "data-trace-id": it.trace_id }, "trace " + it.trace_id.slice(0, 8) + "…");
    trace.addEventListener("click", async () => {
      $("trace-input").value = it.trace_id;
      await lookupTrace(it.trace_id);
      $("trace-result").scrollIntoView({ block: "nearest" });
    });
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

  function renderCalls(calls) {
    const body = $("calls-body");
    clear(body);
    if (!calls.length) {
      body.append(el("tr", {}, el("td", { colspan: 11, class: "empty" }, "No calls recorded yet.")));
      return;
    }
    for (const c of calls) {
      const link = el("button", { type: "button", class: "link trace-link", title: c.trace_id, "data-trace-id": c.trace_id },
        c.trace_id.slice(0, 8) + "…");
      link.addEventListener("click", () => { $("trace-input").value = c.trace_id; lookupTrace(c.trace_id); });
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
      box.append(el("h3", {}, `Trace ${res.trace_id} · ${res.calls.length} call(s)`),
        el("div", { class: "table-wrap" }, el("table", { class: "trace-table" }, el("tbody", {}, ...rows))), ...details);
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
    });
    $("signout").addEventListener("click", () => showLogin("Signed out."));
    $("refresh").addEventListener("click", refresh);
    $("range").addEventListener("change", refresh);
    $("review-status").addEventListener("change", refresh);
    $("kill-toggle").addEventListener("click", (ev) => toggleKill(ev.currentTarget.dataset.next === "on"));
    $("trace-form").addEventListener("submit", (ev) => { ev.preventDefault(); lookupTrace($("trace-input").value); });
    document.addEventListener("visibilitychange", () => { if (!document.hidden && sessionStorage.getItem(KEY)) refresh(); });
    if (sessionStorage.getItem(KEY)) refresh();
    else showLogin("");
  });
})();
