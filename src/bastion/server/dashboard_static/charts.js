// Bastion dashboard: the figures - spend against caps, spend by key/user/model/feature,
// line charts of latency and rates, stage tables - hand-drawn SVG and tables.

import { $, clear, el, hhmm, ms, pct, sv, usd } from "./dom.js";

export const COLORS = {
  p50: "#2563eb", p95: "#93c5fd", ttft50: "#059669", ttft95: "#6ee7b7",
  error: "#dc2626", retry: "#d97706", failover: "#7c3aed",
};

export const STAGE_NAMES = {
  auth_routing: "auth & routing", guards: "guards", retrieval: "retrieval",
  first_token: "first token", total: "total",
};

// -- spend by key, user, model and feature over the range ----------------------------------

export const SPEND_BY = [["key", "By key"], ["user", "By user"], ["model", "By model"], ["feature", "By feature"]];

export function renderSpendBreakdown(res) {
  const box = $("spend-breakdown");
  clear(box);
  box.dataset.total = String(res.total_usd);
  for (const [by, title] of SPEND_BY) {
    const rows = res.by[by] || [];
    const body = el("tbody");
    const top = Math.max(1e-12, ...rows.map((r) => r.spend_usd));
    for (const r of rows) {
      const share = res.total_usd > 0 ? r.spend_usd / res.total_usd : 0;
      const fill = el("span", { class: "meter-fill" });
      fill.style.width = ((r.spend_usd / top) * 100).toFixed(1) + "%";
      body.append(el("tr", { class: "spend-by-row" + (r.others ? " others" : ""), "data-group": r.group === null ? "" : r.group,
        "data-spend": r.spend_usd },
      el("td", { class: "who", title: r.group === null || r.group === r.label ? r.label : `${r.label} (${r.group})` }, r.label),
      el("td", { class: "bar" }, el("span", { class: "meter spend-meter" }, fill)),
      el("td", { class: "num usd" }, usd(r.spend_usd)),
      el("td", { class: "num share muted" }, pct(share))));
    }
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No spend in this range.")));
    box.append(el("div", { class: "spend-by", "data-by": by },
      el("h3", {}, title),
      el("table", { class: "spend-by-table" }, body)));
  }
}

// -- spend by feature vs cap (horizontal bars) ---------------------------------------------

export function renderSpend(s) {
  const box = $("spend-chart");
  $("spend-day").textContent = `${s.day} (${s.timezone})`;
  const rows = s.spend.features;
  clear(box);
  if (!rows.length) {
    box.append(el("p", { class: "empty" }, "No spend recorded today, and no feature has a cap."));
    return;
  }
  // drawn at the box's own width, so text keeps its size on a phone; narrow boxes put the
  // figures on a line of their own above the bar
  const W = chartWidth(box), narrow = W < 560;
  const rowH = narrow ? 46 : 34, labelW = narrow ? 0 : 130, valueW = narrow ? 0 : 190;
  const trackW = narrow ? W : W - labelW - valueW - 10;
  const maxUncapped = Math.max(1e-9, ...rows.filter((r) => r.cap_usd === null).map((r) => r.spent_usd));
  const svg = sv("svg", { viewBox: `0 0 ${W} ${rows.length * rowH + 6}`, role: "img",
    "aria-label": "spend by feature against its daily cap", class: "spend-svg" });
  rows.forEach((r, i) => {
    const top = i * rowH + 6;
    const y = narrow ? top + 20 : top;
    const scale = r.cap_usd ? r.cap_usd : r.cap_usd === 0 ? 1e-9 : maxUncapped;
    const frac = Math.min(1, r.spent_usd / scale);
    const level = r.cap_usd === null ? "nocap" : frac >= 0.8 ? "hot" : frac >= 0.5 ? "warm" : "ok";
    const g = sv("g", { class: "spend-row", "data-feature": r.feature, "data-spent": r.spent_usd,
      "data-cap": r.cap_usd === null ? "" : r.cap_usd });
    const barH = narrow ? 16 : 20;
    g.append(sv("text", { x: 0, y: top + 15, class: "bar-label" }, r.feature));
    g.append(sv("rect", { x: labelW, y, width: trackW, height: barH, rx: 4, class: "bar-track" }));
    const w = r.spent_usd > 0 ? Math.max(2, frac * trackW) : 0;
    g.append(sv("rect", { x: labelW, y, width: w.toFixed(2), height: barH, rx: 4, class: "bar-fill " + level }));
    if (r.cap_usd !== null) {
      const capX = labelW + trackW - (narrow ? 1 : 0);
      g.append(sv("line", { x1: capX, x2: capX, y1: y - 3, y2: y + barH + 3, class: "cap-mark" }));
    }
    const capText = r.cap_usd === null ? "no cap" : `of ${usd(r.cap_usd)} (${pct(r.spent_usd / (r.cap_usd || 1e-9))})`;
    if (narrow) {
      const figures = sv("text", { x: W, y: top + 15, "text-anchor": "end", class: "bar-value" });
      figures.append(sv("tspan", { class: "spent" }, usd(r.spent_usd)),
        sv("tspan", { class: "cap muted-fill", dx: 6 }, capText));
      g.append(figures);
    } else {
      g.append(sv("text", { x: labelW + trackW + 10, y: y + 15, class: "bar-value spent" }, usd(r.spent_usd)));
      g.append(sv("text", { x: labelW + trackW + 92, y: y + 15, class: "bar-value cap muted-fill" }, capText));
    }
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

export function niceScale(v) {
  // a round top and step so tick labels read 0, 5, 10… rather than 0, 6.25, 12.5…
  if (!(v > 0)) return { max: 1, step: 0.25 };
  const raw = v / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
  return { max: Math.ceil(v / step - 1e-9) * step, step };
}

// the width a chart is drawn at: its box's, so 11 px axis text stays 11 px on a phone
export function chartWidth(box) {
  const w = Math.round(box.clientWidth || 0);
  return w >= 280 ? Math.min(w, 1400) : 640;
}

export function lineChart(box, legend, data, lines, fmtY) {
  clear(box, legend);
  const pts = data.series;
  const W = chartWidth(box), H = W < 560 ? 180 : 220, L = 54, R = 12, T = 10, B = 26;
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

export function renderLatency(lat) {
  lineChart($("latency-chart"), $("latency-legend"), lat, [
    { key: "latency_p50", name: "latency p50", color: COLORS.p50, get: (p) => p.latency_p50 },
    { key: "latency_p95", name: "latency p95", color: COLORS.p95, get: (p) => p.latency_p95 },
    { key: "ttft_p50", name: "TTFT p50", color: COLORS.ttft50, get: (p) => p.ttft_p50 },
    { key: "ttft_p95", name: "TTFT p95", color: COLORS.ttft95, get: (p) => p.ttft_p95 },
  ], (v) => (v >= 1000 ? +(v / 1000).toFixed(2) + " s" : +v.toFixed(1) + " ms"));
}

export function renderRates(lat) {
  lineChart($("rates-chart"), $("rates-legend"), lat, [
    { key: "error_rate", name: "errors", color: COLORS.error, get: (p) => p.error_rate },
    { key: "retry_rate", name: "retries", color: COLORS.retry, get: (p) => p.retry_rate },
    { key: "failover_rate", name: "failovers", color: COLORS.failover, get: (p) => p.failover_rate },
  ], (v) => +(v * 100).toFixed(1) + "%");
}

export function renderStages(res) {
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

export function stageRow(s) {
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
