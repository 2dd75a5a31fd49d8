// Formatting for the page in its language (i18n.js): powers arrive in W (docs/definitions.md "Signs") and are
// shown in kW; dates and times always in Europe/Berlin, whatever the browser's zone.
import { locale, t } from "./i18n.js";

export const ZONE = "Europe/Berlin";

// Intl formatters per locale, made once each.
const made = new Map();
function fmt(name, make) {
  const key = `${locale()}|${name}`;
  if (!made.has(key)) made.set(key, make(locale()));
  return made.get(key);
}
const timeFmt = () => fmt("time", (l) => new Intl.DateTimeFormat(l, { timeZone: ZONE, hour: "2-digit", minute: "2-digit" }));
const clockFmt = () => fmt("clock", (l) => new Intl.DateTimeFormat(l, { timeZone: ZONE, hour: "2-digit", minute: "2-digit", second: "2-digit" }));
const dateTimeFmt = () => fmt("dateTime", (l) => new Intl.DateTimeFormat(l, { timeZone: ZONE, day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" }));
const headerFmt = () => fmt("header", (l) => new Intl.DateTimeFormat(l, { timeZone: ZONE, weekday: "short", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" }));
const dayFmt = new Intl.DateTimeFormat("en-GB", { timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit" });
const offsetFmt = new Intl.DateTimeFormat("en-GB", { timeZone: ZONE, timeZoneName: "longOffset" });

// Europe/Berlin's offset from UTC at ``ms`` in ms (+3,600,000 in winter, +7,200,000 in summer).
export function berlinOffsetMs(ms) {
  const name = offsetFmt.formatToParts(new Date(ms)).find((p) => p.type === "timeZoneName").value; // "GMT+02:00"
  const m = /GMT([+-])(\d{2}):(\d{2})/.exec(name);
  return m ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) * 60_000 : 0;
}

const finite = (v) => v !== null && v !== undefined && Number.isFinite(v);

// A number in the page's language with ``digits`` decimals.
export function num(value, digits = 0) {
  if (!finite(value)) return "–";
  return fmt(`num${digits}`, (l) => new Intl.NumberFormat(l, { minimumFractionDigits: digits, maximumFractionDigits: digits })).format(value);
}

export function kw(watts, digits = 1) {
  return finite(watts) ? num(watts / 1000, digits) : "–";
}

export function kwUnit(watts) {
  if (!finite(watts)) return "–";
  return Math.abs(watts) >= 1e6 ? `${kw(watts / 1000, 2)} MW` : `${kw(watts)} kW`;
}

export function percent(fraction) {
  if (!finite(fraction)) return "–";
  return `${num(Math.round(fraction * 100))} %`; // "50 %" in both languages (DIN 5008 and the SI brochure)
}

export function hhmm(ms) {
  return timeFmt().format(new Date(ms));
}

// The header clock: weekday, day, month and time in Berlin.
export function clock(ms) {
  return headerFmt().format(new Date(ms));
}

// A timestamp in Berlin time: the time of day when it is on the same day as ``nowMs``, else day and time.
export function when(iso, nowMs) {
  if (!iso) return "–";
  const d = new Date(iso);
  const today = nowMs !== undefined && dayFmt.format(d) === dayFmt.format(new Date(nowMs));
  return today ? clockFmt().format(d) : dateTimeFmt().format(d);
}

export function ago(iso, nowMs) {
  if (!iso) return t("ago.never");
  const s = Math.max(0, Math.round((nowMs - Date.parse(iso)) / 1000));
  if (s < 90) return t("ago.s", { n: num(s) });
  if (s < 5400) return t("ago.min", { n: num(Math.round(s / 60)) });
  return t("ago.h", { n: num(Math.round(s / 3600)) });
}

// Builds an element; children may be strings or nodes. Text is always set as text, never as HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function replaceRows(tbody, rows, emptyText, columns) {
  if (rows.length === 0) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: columns, class: "muted", text: emptyText })));
  } else {
    tbody.replaceChildren(...rows);
  }
}
