// Bastion dashboard, Keys view: list, create, edit limits and revoke virtual keys.
// Standalone (app.js owns sign-in): it reads the same session key, and draws only while the
// dashboard is shown; when app.js hides it (sign-out, refused key) every row is dropped.
"use strict";

(() => {
  const KEY = "bastion.adminKey";
  const $ = (id) => document.getElementById(id);
  const LIMITS = [
    ["daily_usd", "daily $", "number", "0.01"],
    ["monthly_usd", "monthly $", "number", "0.01"],
    ["rpm", "RPM", "number", "1"],
    ["tpm", "TPM", "number", "1"],
    ["models", "models (a,b)", "text", null],
    ["expires_at", "expires", "date", null],
    ["team", "team", "text", null],
    ["owner", "owner", "text", null],
  ];
  let loading = 0; // bumped by each load: an older answer never draws over a newer one

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }

  const usd = (v) => (v === null || v === undefined ? "—" : "$" + (v < 1 ? v.toFixed(4) : v.toFixed(2)));
  const capped = (spent, cap) => (cap === null || cap === undefined ? usd(spent) : `${usd(spent)} / ${usd(cap)}`);

  class Refused extends Error {}

  async function api(method, path, body) {
    const key = sessionStorage.getItem(KEY);
    if (!key) throw new Refused("signed out");
    const res = await fetch(path, {
      method, cache: "no-store",
      headers: { "x-api-key": key, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    const msg = data && data.error && data.error.message ? data.error.message : res.statusText;
    if (res.status === 401 || res.status === 403) throw new Refused(`${res.status}: ${msg}`);
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${msg}`);
    return data;
  }

  function showError(err) {
    $("keys-error").textContent = err ? err.message : "";
  }

  function limitInputs(prefix, values) {
    return LIMITS.map(([name, label, type, step]) => {
      let v = values ? values[name] : null;
      if (name === "models" && Array.isArray(v)) v = v.join(",");
      if (name === "expires_at" && values && values.expires) v = values.expires.slice(0, 10);
      const input = el("input", { type, name, step, min: type === "number" ? "0" : null,
        id: `${prefix}-${name}`, placeholder: label, "aria-label": label });
      if (v !== null && v !== undefined) input.value = String(v);
      return el("label", { class: "key-field" }, el("span", { class: "label" }, label), input);
    });
  }

  function formValues(form, keepEmpty) {
    const out = {};
    for (const [name] of LIMITS) {
      const v = form.elements[name].value.trim();
      if (v !== "" || keepEmpty) out[name] = v === "" ? null : v;
    }
    return out;
  }

  function buildCard() {
    const card = $("keys-card");
    const create = el("form", { id: "key-create", class: "trace-form key-form", autocomplete: "off" },
      el("label", { class: "key-field" }, el("span", { class: "label" }, "name"),
        el("input", { type: "text", name: "name", id: "key-new-name", required: "", maxlength: "100", "aria-label": "key name" })),
      ...limitInputs("key-new"),
      el("button", { type: "submit", id: "key-create-btn" }, "Create key"));
    create.addEventListener("submit", (ev) => { ev.preventDefault(); createKey(create); });
    const reload = el("button", { type: "button", id: "keys-reload" }, "Reload keys");
    reload.addEventListener("click", load);
    card.replaceChildren(
      el("div", { class: "card-head" },
        el("h2", {}, "Keys ", el("small", { id: "keys-note", class: "muted" })), reload),
      create,
      el("div", { id: "key-secret", role: "status" }),
      el("p", { id: "keys-error", class: "error", role: "alert" }),
      spendBox(),
      el("h3", {}, "All keys"),
      el("div", { class: "table-wrap" },
        el("table", { id: "keys-table", class: "tbl" },
          el("thead", {}, el("tr", {}, ...["name", "id", "team", "owner", "status", "today", "this month",
            "RPM", "TPM", "models", "expires", ""].map((h) => el("th", {}, h)))),
          el("tbody", { id: "keys-body" }))));
    card.hidden = false;
  }

  // spend by key, user, team or model over the last N days (the ledger, as `bastion spend`)
  function spendBox() {
    const by = el("select", { id: "keys-spend-by", "aria-label": "spend by" },
      ...["team", "key", "user", "model"].map((v) => el("option", { value: v }, "spend by " + v)));
    const days = el("select", { id: "keys-spend-days", "aria-label": "spend days" },
      ...[["1", "today"], ["7", "last 7 days"], ["30", "last 30 days"]].map(([v, t]) => el("option", { value: v }, t)));
    by.addEventListener("change", loadSpend);
    days.addEventListener("change", loadSpend);
    return el("div", { class: "key-spend" }, el("h3", {}, "Spend"), el("div", { class: "trace-form" }, by, days),
      el("div", { class: "table-wrap" }, el("table", { id: "keys-spend", class: "tbl" },
        el("thead", {}, el("tr", {}, el("th", {}, "group"), el("th", { class: "num" }, "spend"))),
        el("tbody", { id: "keys-spend-body" }))));
  }

  async function loadSpend() {
    const mine = loading;
    try {
      const q = `by=${encodeURIComponent($("keys-spend-by").value)}&days=${encodeURIComponent($("keys-spend-days").value)}`;
      const res = await api("GET", "/admin/api/keys/spend?" + q);
      if (mine !== loading || $("app").hidden) return;
      const rows = res.rows.map((r) => el("tr", { class: "spend-row", "data-group": r.group === null ? "" : r.group },
        el("td", {}, r.label), el("td", { class: "num" }, usd(r.spend_usd))));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "2", class: "muted" }, `no spend ${res.from} .. ${res.to}`)));
      $("keys-spend-body").replaceChildren(...rows);
    } catch (err) {
      if (!(err instanceof Refused)) showError(err);
    }
  }

  function row(k) {
    const tr = el("tr", { class: "key-row", "data-key-id": k.id, "data-status": k.status },
      el("td", {}, k.name), el("td", {}, el("code", {}, k.id)), el("td", {}, k.team || "—"),
      el("td", {}, k.owner || "—"), el("td", { class: "key-status" }, k.status),
      el("td", { class: "num key-today" }, capped(k.today_usd, k.daily_usd)),
      el("td", { class: "num key-month" }, capped(k.month_usd, k.monthly_usd)),
      el("td", { class: "num" }, k.rpm === null ? "—" : k.rpm),
      el("td", { class: "num" }, k.tpm === null ? "—" : k.tpm),
      el("td", {}, k.models.length ? k.models.join(", ") : "any"),
      el("td", {}, k.expires ? k.expires.replace("T00:00:00Z", "") : "never"));
    const actions = el("td", { class: "key-actions" });
    if (k.status !== "revoked") {
      const edit = el("button", { type: "button", class: "key-edit" }, "Edit limits");
      const revoke = el("button", { type: "button", class: "danger key-revoke" }, "Revoke");
      edit.addEventListener("click", () => openEdit(tr, k));
      revoke.addEventListener("click", () => {
        if (revoke.dataset.armed !== "1") { // a second click confirms: nothing is revoked by one slip
          revoke.dataset.armed = "1";
          revoke.textContent = "Confirm revoke";
          return;
        }
        patch({ id: k.id, revoked: true });
      });
      actions.append(edit, revoke);
    }
    tr.append(actions);
    return tr;
  }

  function openEdit(tr, k) {
    const old = document.querySelector(".key-edit-row");
    if (old) old.remove();
    const form = el("form", { class: "trace-form key-form key-edit-form", autocomplete: "off" },
      ...limitInputs(`key-edit-${k.id}`, k),
      el("button", { type: "submit", class: "key-save" }, "Save limits"));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); patch({ id: k.id, ...formValues(form, true) }); });
    tr.after(el("tr", { class: "key-edit-row" }, el("td", { colspan: "12" }, form)));
  }

  async function patch(body) {
    showError(null);
    try {
      await api("PATCH", "/admin/api/keys", body);
      await load();
    } catch (err) { showError(err); }
  }

  async function createKey(form) {
    showError(null);
    const box = $("key-secret");
    box.replaceChildren();
    try {
      const res = await api("POST", "/admin/api/keys", { name: form.elements.name.value.trim(), ...formValues(form, false) });
      box.append(el("p", {}, `Key ${res.key.name} (${res.key.id}) created. Its secret is shown this once: `,
        el("code", { id: "key-secret-value" }, res.secret)));
      form.reset();
      await load();
    } catch (err) { showError(err); }
  }

  async function load() {
    const mine = ++loading;
    try {
      const res = await api("GET", "/admin/api/keys");
      if (mine !== loading || $("app").hidden) return;
      $("keys-note").textContent = `spend today (${res.day}) and this month (${res.month}), ${res.timezone}`;
      $("keys-body").replaceChildren(...res.keys.map(row));
      await loadSpend();
      document.body.dataset.keys = "ready";
    } catch (err) {
      if (!(err instanceof Refused)) showError(err); // app.js signs a refused key out
    }
  }

  function drop() {
    loading++;
    for (const id of ["keys-body", "keys-spend-body", "key-secret", "keys-note", "keys-error"]) { const n = $(id); if (n) n.replaceChildren(); }
    delete document.body.dataset.keys;
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!$("keys-card") || !$("app")) return;
    buildCard();
    new MutationObserver(() => { if ($("app").hidden) drop(); else load(); })
      .observe($("app"), { attributes: true, attributeFilter: ["hidden"] });
    if (!$("app").hidden) load();
  });
})();
