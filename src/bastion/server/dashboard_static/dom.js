// Bastion dashboard: DOM and number helpers shared by its modules; text is set as text, never as markup.

const SVGNS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

// -- DOM helpers ---------------------------------------------------------------------------

export function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

export function sv(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  setAttrs(e, attrs);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

export function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.setAttribute("class", v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
}

export function clear(...nodes) { for (const n of nodes) n.replaceChildren(); }

// -- formatting ----------------------------------------------------------------------------

export function usd(v) {
  if (v === null || v === undefined) return "—";
  if (v === 0) return "$0.00";
  if (Math.abs(v) < 0.01) return "$" + v.toFixed(6);
  if (Math.abs(v) < 1) return "$" + v.toFixed(4);
  return "$" + v.toFixed(2);
}
export const pct = (v) => (v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%");
export const ms = (v) => (v === null || v === undefined ? "—" : (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms");
// "1.1 / 7.4 ms": one unit for a pair, so the figure fits a tile
export const msPair = (a, b) => (a === null || a === undefined || b === null || b === undefined
  ? `${ms(a)} / ${ms(b)}` : `${ms(a).replace(" ms", "")} / ${ms(b)}`);
export const hhmm = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
export const hms = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
