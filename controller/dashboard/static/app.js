// The operator dashboard: signs in with a bearer token kept in sessionStorage, polls the API, draws the fleet,
// and sends operator commands. Powers arrive in W with the signs of docs/definitions.md "Signs"; the page shows kW.
// The page applies no grid rule: ceilings, caps and "curtailed" come from the API as the controller applies them.
// The long lists (sites, devices, alarms, audit) are paged, sorted and filtered by the API, so one refresh stays
// small at any fleet size; the chart reads the plan's totals for its scope (/api/v1/plan/totals).
import { drawChart, legend } from "./chart.js";
import { ago, clock, el, hhmm, kw, kwUnit, num, percent, replaceRows, when } from "./format.js";
import { initialLanguage, language, setLanguage, t, tn, translatePage } from "./i18n.js";
import { exampleCsv, parseScheduleCsv, ScheduleError } from "./schedule.js";

const TOKEN_KEY = "sparcs.token";
const TRAIL_KEY = "sparcs.forecastTrail";
const FAST_MS = 5000; // fleet, lists, plan totals, commands
const SLOW_MS = 60000; // history (and at once after a new dispatch or a change of the chart's scope)
const HOUR_MS = 3_600_000;
const QUARTER_MS = 900_000;
// The chart's 12 h past in 5-minute means: 144 points (about 30 KB at any fleet size) keep a refresh that
// reloads it within the page's 200 KB; the chart is about 500 px wide for those 12 h.
const HISTORY_RESOLUTION_S = 300;
const PAGE = { sites: 25, devices: 25, alarms: 15, audit: 15 };
const VALID_MINUTES = [15, 30, 60, 120, 240, 480];

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  session: null,
  data: {},
  slow: { at: 0, key: null, error: null },
  timer: null,
  generation: 0,
  failedSince: null,
  chartSite: "", // "" = the whole fleet (or the group in chartGroup)
  chartGroup: "", // a group's id: the chart shows the sum of its sites
  // what each list shows: its page (offset), sort key ("-key" descending) and filters; the API does the work
  lists: {
    sites: { offset: 0, sort: "id", q: "", group: "", status: "" },
    devices: { offset: 0, sort: "id", site: "", kind: "", problems: false },
    alarms: { offset: 0, active: false },
    audit: { offset: 0 },
  },
  offsetMs: 0, // the controller's clock minus this browser's (a twin or demo may run on a sim clock)
  // Forecasts this tab has seen per chart scope and quarter-hour start (ms): [pv_available_w, load_w]. The API
  // keeps only the plan in force, so this is how the chart compares past measurements with what was forecast.
  trail: storedTrail(),
  exampleShown: false,
};

function storedTrail() {
  try {
    return JSON.parse(sessionStorage.getItem(TRAIL_KEY) || "{}");
  } catch {
    return {}; // unreadable (edited by hand?): start a new trail
  }
}

// "Now" on the controller's clock: the chart, ages and command expiries all use it.
const serverNow = () => Date.now() + state.offsetMs;

const SERIES = [
  { id: "pv", color: "#a86f00", style: "solid" },
  { id: "pv-plan", color: "#a86f00", style: "dash" },
  { id: "pv-fc", color: "#a86f00", style: "dot", width: 1.5 },
  { id: "load", color: "#2f6fbf", style: "solid" },
  { id: "load-fc", color: "#2f6fbf", style: "dash" },
  { id: "battery", color: "#24804a", style: "solid" },
  { id: "battery-plan", color: "#24804a", style: "dash" },
  { id: "export", color: "#b03a8c", style: "solid" },
  { id: "export-plan", color: "#b03a8c", style: "dash" },
  { id: "schedule", color: "#222", style: "solid", width: 2.5, step: true },
];
const named = (s) => ({ ...s, name: t(`series.${s.id}`) });

// ---------------------------------------------------------------------------------------------- API

class AuthError extends Error {}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  let payload = null;
  try {
    payload = await r.json();
  } catch {
    payload = null;
  }
  if (r.status === 401) throw new AuthError(payload?.error || "the token was not accepted");
  return { ok: r.ok, status: r.status, body: payload, total: Number(r.headers.get("X-Total-Count") ?? NaN) };
}

async function read(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(`${path}: ${r.body?.error || r.status}`);
  return r.body;
}

// One page of a list route: {rows, total}.
async function readPage(path, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== false && v !== null));
  const full = `${path}?${query}`;
  const r = await api(full);
  if (!r.ok) throw new Error(`${full}: ${r.body?.error || r.status}`);
  return { rows: r.body, total: Number.isFinite(r.total) ? r.total : r.body.length };
}

// ----------------------------------------------------------------------------------- sign in / out

function showLogin(message = "") {
  stopPolling();
  state.session = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  setLive("live.signedOut", "muted");
  $("login-error").textContent = message;
  $("token-input").value = "";
  $("token-input").focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(TRAIL_KEY);
  state.trail = {};
  state.token = null;
  showLogin(message);
}

async function start() {
  try {
    const r = await api("/api/v1/session");
    if (!r.ok) throw new Error(r.body?.error || `HTTP ${r.status}`);
    state.session = r.body;
  } catch (err) {
    if (err instanceof AuthError) signOut(t("login.failed", { why: err.message }));
    else showLogin(t("login.unreachable", { why: err.message }));
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `${state.session.name} (${state.session.role})`;
  setCommandAccess();
  $("tiles").setAttribute("tabindex", "-1");
  $("tiles").focus(); // keyboard users land on the page they signed in to
  await tick();
}

function stopPolling() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

// One refresh now, then every FAST_MS. A tick started while another is waiting for the API supersedes it, so
// commands and scope changes show at once and there is only ever one timer.
async function tick() {
  stopPolling();
  const gen = ++state.generation;
  try {
    await refresh();
  } catch (err) {
    if (err instanceof AuthError) {
      signOut(t("login.signedOutWhy", { why: err.message }));
      return;
    }
    console.warn("refresh failed:", err.message);
  }
  if (state.token && gen === state.generation) state.timer = setTimeout(tick, FAST_MS);
}

// ------------------------------------------------------------------------------------------ polling

function chartScopeQuery() {
  if (state.chartGroup) return `?group=${encodeURIComponent(state.chartGroup)}`;
  if (state.chartSite) return `?site=${encodeURIComponent(state.chartSite)}`;
  return "";
}

function listParams() {
  const { sites, devices, alarms, audit } = state.lists;
  return {
    sites: { limit: PAGE.sites, offset: sites.offset, sort: sites.sort, q: sites.q, group: sites.group, status: sites.status },
    devices: { limit: PAGE.devices, offset: devices.offset, sort: devices.sort, site: devices.site, kind: devices.kind, problems: devices.problems },
    alarms: { limit: PAGE.alarms, offset: alarms.offset, active_only: alarms.active },
    audit: { limit: PAGE.audit, offset: audit.offset },
  };
}

async function refresh() {
  let fast;
  const p = listParams();
  try {
    fast = await Promise.all([
      read("/api/v1/fleet"),
      readPage("/api/v1/sites", p.sites),
      readPage("/api/v1/devices", p.devices),
      read(`/api/v1/plan/totals${chartScopeQuery()}`),
      read("/api/v1/commands"),
      readPage("/api/v1/alarms", p.alarms),
      readPage("/api/v1/audit", p.audit),
      fetch("/readyz", { cache: "no-store" }).then((r) => r.json()),
      read("/api/v1/groups"),
      readPage("/api/v1/sites", { status: "stale", limit: 10 }),
      readPage("/api/v1/alarms", { active_only: true, severity: "critical", limit: 1 }),
      state.chartSite ? read(`/api/v1/sites/${encodeURIComponent(state.chartSite)}`) : null,
    ]);
  } catch (err) {
    if (err instanceof AuthError) throw err;
    state.failedSince = state.failedSince || serverNow();
    renderBanners(err.message);
    setLive("live.lost", "bad");
    throw err;
  }
  state.failedSince = null;
  const [fleet, sites, devices, totals, commands, alarms, audit, ready, groups, staleSites, critical, site] = fast;
  state.offsetMs = Date.parse(totals.ts) - Date.now();
  Object.assign(state.data, { fleet, sites, devices, totals, commands, alarms, audit, ready, groups, staleSites, critical, site });
  const now = serverNow();
  if (!state.exampleShown) {
    $("schedule-example").textContent = exampleCsv(now);
    state.exampleShown = true;
  }
  if (totals.plan) recordForecast(totals.plan, now);
  const dispatch = fleet.last_dispatch;
  const slowKey = `${dispatch}|${state.chartSite}|${state.chartGroup}`;
  if (now - state.slow.at > SLOW_MS || slowKey !== state.slow.key) {
    const start = new Date(now - 12 * HOUR_MS).toISOString();
    const end = new Date(now).toISOString();
    const scope = state.chartSite ? `&site=${encodeURIComponent(state.chartSite)}` : "";
    const span = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}&resolution_s=${HISTORY_RESOLUTION_S}`;
    const historyPath = state.chartGroup
      ? `/api/v1/groups/${encodeURIComponent(state.chartGroup)}/history?${span}`
      : `/api/v1/history?${span}${scope}`;
    try {
      state.data.history = await read(historyPath);
      // last_dispatch is set when a dispatch starts: until its plan is stored, ask again at the next tick
      const planMs = totals.plan ? totals.plan.start_s * 1000 : Infinity;
      const pending = dispatch && planMs < Date.parse(dispatch) - 2000 && now - Date.parse(dispatch) < 2 * SLOW_MS;
      state.slow = { at: now, key: pending ? null : slowKey, error: null };
    } catch (err) {
      if (err instanceof AuthError) throw err;
      state.slow.error = err.message; // the chart keeps its last data; the banner says why
    }
  }
  render(now);
  updateClock();
}

function setLive(key, kind, params = {}) {
  const pill = $("live");
  pill.dataset.key = key;
  pill.dataset.params = JSON.stringify(params);
  pill.textContent = t(key, params);
  pill.className = `pill pill-${kind}`;
}

// ------------------------------------------------------------------------------------------ render

// Rows are rebuilt on every refresh: a control inside one carries data-focus, so keyboard focus stays on it.
function render(now) {
  const focused = document.activeElement?.dataset?.focus;
  renderAll(now);
  if (focused) document.querySelector(`[data-focus="${CSS.escape(focused)}"]`)?.focus();
}

function renderAll(now) {
  const { fleet, ready } = state.data;
  renderTiles(fleet, now);
  renderBanners(null);
  if (ready.ready) setLive("live.live", "good", { time: hhmm(now) });
  else setLive("live.stale", "bad");
  renderChart(now);
  renderForecastVsActual(now);
  renderGroups();
  renderSites();
  renderDevices(now);
  renderAlarms();
  renderAudit();
  renderCommands();
}

function setTile(id, text, watts) {
  const node = $(id);
  node.textContent = text;
  if (watts !== undefined) node.dataset.w = watts === null ? "" : String(watts);
}

function renderTiles(fleet, now) {
  const n = fleet.now || {};
  $("tiles").dataset.ts = n.ts || "";
  setTile("t-pv", kwUnit(n.pv_w), n.pv_w);
  setTile("t-load", kwUnit(n.load_w), n.load_w);
  setTile("t-battery", kwUnit(n.battery_w), n.battery_w);
  setTile("t-export", kwUnit(n.export_w), n.export_w);
  setTile("t-grid", kwUnit(n.grid_w), n.grid_w);
  setTile("t-soc", percent(n.soc));
  setTile("t-flex-up", kwUnit(n.flex_up_w), n.flex_up_w);
  setTile("t-flex-down", kwUnit(n.flex_down_w), n.flex_down_w);
  setTile("t-devices", n.total === undefined ? "–" : `${num(n.online)} / ${num(n.stale)} / ${num(n.total)}`);
  const path = fleet.paused ? t("plan.paused") : fleet.plan_path || t("plan.none");
  setTile("t-plan", path);
  $("t-plan").className = `value small ${fleet.paused || (fleet.plan_path || "").startsWith("fallback") ? "warn" : ""}`;
  $("t-plan-hint").textContent = t("plan.made", { ago: ago(fleet.last_dispatch, now) });
}

function renderBanners(fetchError) {
  const { fleet, ready, totals, commands, staleSites, critical } = state.data;
  const out = [];
  const banner = (kind, title, text) => out.push(el("div", { class: `banner ${kind}`, role: "alert" }, el("strong", { text: title }), ` ${text}`));
  if (fetchError) banner("bad", t("banner.lost"), t("banner.lostText", { time: hhmm(state.failedSince), why: fetchError }));
  if (state.slow.error) banner("warn", t("banner.chart"), t("banner.chartText", { why: state.slow.error }));
  if (ready && !ready.ready) banner("bad", t("banner.stale"), t("banner.staleText", { problems: ready.problems.join("; ") }));
  if (fleet?.plan_path?.startsWith("fallback")) {
    const why = totals?.plan?.reason ? ` — ${totals.plan.reason}` : "";
    const path = t(`path.${fleet.plan_path}`);
    banner("warn", t("banner.fallback"), t("banner.fallbackText", { path, why }));
  }
  if (fleet?.paused) {
    const p = (commands || []).find((c) => c.kind === "pause");
    const by = p ? `${t("banner.pausedBy", { who: p.who, since: when(p.created_at, serverNow()) })}${p.params.reason ? ` (${p.params.reason})` : ""}` : "";
    banner("warn", t("banner.paused"), `${by}${t("banner.pausedText")}`);
  }
  const stale = fleet?.now?.stale || 0;
  if (stale > 0) {
    const ids = (staleSites?.rows || []).map((s) => s.id);
    const more = (staleSites?.total || 0) > ids.length ? ", …" : "";
    const nSites = staleSites?.total || ids.length;
    banner("warn", tn("banner.devicesStale", stale), tn("banner.devicesStaleText", nSites, { sites: ids.join(", ") + more }));
  }
  const nCritical = critical?.total || 0;
  if (nCritical) banner("bad", tn("banner.critical", nCritical), t("banner.criticalText"));
  $("banners").replaceChildren(...out);
}

function periodStarts(startS, periodS) {
  const out = [];
  let t0 = startS * 1000;
  for (const p of periodS) {
    out.push(t0);
    t0 += p * 1000;
  }
  return out;
}

const scopeKey = () => (state.chartGroup ? `group:${state.chartGroup}` : state.chartSite ? `site:${state.chartSite}` : "fleet");

// Plan and forecast of the chart's scope as series, [ms, W] pairs at period starts (values hold for the period).
// Export is the sum of each site's gross export on both sides, planned and measured (docs/definitions.md "Signs").
function planSeries() {
  const plan = state.data.totals?.plan;
  const res = {};
  if (!plan) return res;
  const starts = periodStarts(plan.start_s, plan.period_s);
  const zip = (vals) => starts.map((t0, i) => [t0, vals[i]]);
  const past = trailPoints(starts[0]);
  res.pv = zip(plan.pv_w);
  res.battery = zip(plan.battery_w);
  res.export = zip(plan.export_w);
  res.pvAvailable = [...past.map(([q, pv]) => [q, pv]), ...zip(plan.pv_available_w)];
  res.load = [...past.map(([q, , load]) => [q, load]), ...zip(plan.load_w)];
  res.ceiling = zip(plan.export_ceiling_w);
  return res;
}

// Keeps each quarter-hour's forecast for the chart's scope as it stood when the quarter-hour began.
function recordForecast(plan, now) {
  const trail = (state.trail[scopeKey()] ||= {});
  periodStarts(plan.start_s, plan.period_s).forEach((t0, i) => {
    // a second of slack: period starts summed from float seconds land a hair before the quarter-hour
    const q = Math.floor((t0 + 1000) / QUARTER_MS) * QUARTER_MS;
    if (q <= now && trail[q]) return;
    trail[q] = [plan.pv_available_w[i], plan.load_w[i]];
  });
  for (const t of Object.values(state.trail)) for (const q of Object.keys(t)) if (Number(q) < now - 13 * HOUR_MS) delete t[q];
  try {
    sessionStorage.setItem(TRAIL_KEY, JSON.stringify(state.trail));
  } catch {
    // storage full: the chart still has this tab's memory of the trail
  }
}

// Past forecasts from the trail for the chart's scope, before ``beforeMs``: [[ms, pv_w, load_w]].
function trailPoints(beforeMs) {
  return Object.entries(state.trail[scopeKey()] || {})
    .map(([q, v]) => [Number(q), v[0], v[1]])
    .filter(([q]) => q < beforeMs)
    .sort((a, b) => a[0] - b[0]);
}

// The operator's export schedule from the active schedule commands; a newer command wins per quarter-hour.
function scheduleSeries() {
  const byStart = new Map();
  const cmds = (state.data.commands || []).filter((c) => c.kind === "schedule").sort((a, b) => a.id - b.id);
  for (const c of cmds) for (const [t0, w] of c.params.points_s) byStart.set(t0 * 1000, w);
  return [...byStart.entries()].sort((a, b) => a[0] - b[0]);
}

// The export ceiling of the chart's scope (W, summed by the API): now from the chart's start, then per planned
// quarter-hour. The API applies the grid rules (docs/definitions.md "Grid rules"); the page draws what it serves.
function ceilingSeries(t0, plan) {
  const totals = state.data.totals;
  if (!totals || !totals.sites) return null;
  const points = [[t0, totals.export_ceiling_now_w], ...(plan.ceiling || []).filter(([, v]) => Number.isFinite(v))];
  return points.sort((a, b) => a[0] - b[0]);
}

function commandBands() {
  const bands = [];
  for (const c of state.data.commands || []) {
    const from = Date.parse(c.start);
    const to = c.expires_at ? Date.parse(c.expires_at) : Infinity;
    const scope = commandScope(c);
    if (c.kind === "stage") bands.push({ from, to, kind: "stage", label: `${c.params.stage} · ${scope}` });
    else if (c.kind === "para14a") bands.push({ from, to, kind: "para14a", label: `§14a · ${scope}` });
    else if (c.kind === "pause") bands.push({ from, to, kind: "pause", label: t("plan.paused") });
  }
  return bands;
}

function chartSeries(now) {
  const hist = (state.data.history?.points || []).map((p) => ({ ...p, t: Date.parse(p.ts) }));
  const past = (key) => hist.map((p) => [p.t, p[key]]);
  const plan = planSeries();
  const points = {
    pv: past("pv_w"),
    "pv-plan": plan.pv || [],
    "pv-fc": plan.pvAvailable || [],
    load: past("load_w"),
    "load-fc": plan.load || [],
    battery: past("battery_w"),
    "battery-plan": plan.battery || [],
    export: past("export_w"),
    "export-plan": plan.export || [],
    schedule: state.chartSite || state.chartGroup ? [] : scheduleSeries(), // the schedule is the fleet's
  };
  const planned = new Set(["pv-plan", "pv-fc", "load-fc", "battery-plan", "export-plan"]);
  return { plan, series: SERIES.map((s) => ({ ...named(s), step: s.step || planned.has(s.id), points: points[s.id] })), now };
}

function renderChart(now) {
  $("chart").dataset.planStart = state.data.totals?.plan?.start || "";
  const t0 = now - 12 * HOUR_MS;
  const t1 = now + 12 * HOUR_MS;
  const { plan, series } = chartSeries(now);
  const ceilingPoints = ceilingSeries(t0, plan);
  const ceiling = ceilingPoints && {
    points: ceilingPoints,
    color: "#c0392b",
    label: t("chart.ceiling", {
      sum: state.chartSite ? "" : t("chart.ceilingSum"),
      kw: kw(Math.max(...ceilingPoints.map(([, v]) => v)), state.chartSite ? 1 : 0),
    }),
  };
  legend($("chart-legend"), [...SERIES.map(named), { name: t("series.ceiling"), color: "#c0392b", style: "dashdot", width: 1.5 }]);
  drawChart($("chart"), { t0, t1, nowMs: now, series, bands: commandBands(), ceiling, nowLabel: t("chart.now", { time: hhmm(now) }), aboveScale: (label) => t("chart.aboveScale", { label }) });
  renderChartTable(series, t0, t1);
}

// The chart's table alternative: each series at every full hour of the chart's window (kW), measured or planned.
function renderChartTable(series, t0, t1) {
  const hours = [];
  for (let h = Math.ceil(t0 / HOUR_MS) * HOUR_MS; h <= t1; h += HOUR_MS) hours.push(h);
  const shown = series.filter((s) => s.points.length);
  $("chart-table-head").replaceChildren(el("th", { scope: "col", text: t("chart.time") }), ...shown.map((s) => el("th", { scope: "col", class: "num", text: s.name })));
  const at = (s, h) => {
    const hit = s.step
      ? [...s.points].reverse().find(([p]) => p <= h && h < p + QUARTER_MS)
      : s.points.find(([p]) => Math.abs(p - h) <= 60_000);
    return hit ? hit[1] : null;
  };
  $("chart-table-body").replaceChildren(
    ...hours.map((h) => el("tr", {}, el("th", { scope: "row", text: hhmm(h) }), ...shown.map((s) => el("td", { class: "num", text: kw(at(s, h)) })))),
  );
}

function renderForecastVsActual(now) {
  const group = state.chartGroup && state.data.groups?.find((g) => g.id === state.chartGroup);
  const n = state.chartSite ? state.data.site?.now : group ? group.now : state.data.fleet?.now;
  const plan = planSeries();
  const at = (pts) => {
    const hit = (pts || []).find(([t0]) => t0 <= now && now < t0 + QUARTER_MS);
    return hit ? hit[1] : null;
  };
  const rows = [
    ["fva.pvAvailable", at(plan.pvAvailable), n?.pv_w],
    ["fva.pvPlanned", at(plan.pv), n?.pv_w],
    ["fva.load", at(plan.load), n?.load_w],
    ["fva.battery", at(plan.battery), n?.battery_w],
    ["fva.export", at(plan.export), n?.export_w],
  ].map(([key, fc, actual]) => {
    const dev = fc !== null && Number.isFinite(actual) ? actual - fc : null;
    return el("tr", { "data-row": key },
      el("th", { scope: "row", text: t(key) }),
      el("td", { class: "num", text: `${kw(fc)} kW` }),
      el("td", { class: "num", text: `${kw(actual)} kW` }),
      el("td", { class: "num", text: dev === null ? "–" : `${dev >= 0 ? "+" : ""}${kw(dev)} kW` }));
  });
  $("fva").replaceChildren(...rows);
}

function siteStatus(s) {
  const chips = [];
  const now = s.now;
  if (!now) chips.push([t("status.noData"), "muted"]);
  else if (now.devices_stale > 0) chips.push([t("status.staleOf", { n: now.devices_stale, total: now.devices_total }), "bad"]);
  else if (now.devices_online === now.devices_total) chips.push([t("status.online"), "good"]);
  else chips.push([t("status.onlineOf", { n: now.devices_online, total: now.devices_total }), "warn"]);
  // "curtailed" is the API's (docs/definitions.md "Grid rules"); the page names what limits the site
  if (s.curtailed) {
    const text = s.stage ? t("status.curtailedStage", { stage: s.stage }) : s.guard_limit_w !== null ? t("status.curtailedGuard") : t("status.curtailed");
    chips.push([text, "warn"]);
  }
  if (s.para14a) chips.push(["§14a", "info"]);
  return chips;
}

function chip([text, kind]) {
  return el("span", { class: `chip chip-${kind}`, text });
}

// Groups (GET /api/v1/groups): the table, and the group choices of the commands, the sites filter and the chart.
function renderGroups() {
  const groups = state.data.groups || [];
  const names = `${language()}|${groups.map((g) => g.id).join("|")}`;
  const chartKey = `${names}|${state.chartSite}`;
  if ($("chart-scope").dataset.scopes !== chartKey) {
    $("chart-scope").replaceChildren(
      el("option", { value: "", text: t("chart.wholeFleet") }),
      ...groups.map((g) => el("option", { value: `group:${g.id}`, text: t("chart.group", { id: g.id }) })),
      ...(state.chartSite ? [el("option", { value: state.chartSite, text: t("chart.site", { id: state.chartSite }) })] : []));
    $("chart-scope").dataset.scopes = chartKey;
  }
  $("chart-scope").value = state.chartGroup ? `group:${state.chartGroup}` : state.chartSite;
  if ($("cmd-group").dataset.names !== names) {
    const options = () => groups.map((g) => el("option", { value: g.id, text: `${g.id}${g.name ? ` — ${g.name}` : ""}` }));
    $("cmd-group").replaceChildren(...options());
    $("cmd-group").dataset.names = names;
    $("sites-group").replaceChildren(el("option", { value: "", text: t("filter.allSites") }), ...options());
    $("sites-group").value = state.lists.sites.group;
  }
  $("cmd-scope-group").disabled = groups.length === 0;
  $("cmd-group").disabled = groups.length === 0;
  const rows = groups.map((g) => {
    const limits = [];
    const stages = [...new Set(Object.values(g.stages).filter((v) => v))];
    if (stages.length) limits.push(t("limit.stage", { stage: stages.join("/") }));
    if (Object.values(g.para14a).some((v) => v)) limits.push("§14a");
    if (g.pool_limit_pct !== null) limits.push(t("limit.pool", { pct: num(g.pool_limit_pct), until: when(g.pool_limit_expires_at, serverNow()) }));
    return el("tr", { "data-group": g.id },
      el("td", {},
        el("button", { type: "button", class: "link-btn", "data-focus": `group:${g.id}`, "aria-label": t("groups.show", { id: g.id }), onclick: () => showGroup(g.id) }, el("strong", { text: g.id })),
        el("div", { class: "muted small", text: g.name || "" })),
      el("td", { text: g.kind }),
      el("td", { class: "num", text: num(g.sites.length) }),
      el("td", { class: "num", text: kw(g.now.export_w) }),
      el("td", { class: "num", text: kw(g.rating_w) }),
      el("td", { class: "small wrap", text: limits.join(", ") }));
  });
  replaceRows($("groups"), rows, t("groups.none"), 6);
  $("groups-card").hidden = groups.length === 0;
}

// Drill down from the groups table (or the sites card's group choice): the group's sites and chart.
function showGroup(groupId) {
  state.lists.sites.group = groupId;
  state.lists.sites.offset = 0;
  $("sites-group").value = groupId;
  setChartScope(groupId ? `group:${groupId}` : "");
}

function renderSites() {
  const { rows: sites, total } = state.data.sites;
  const rows = sites.map((s) => {
    const n = s.now || {};
    const limits = [];
    if (s.stage) limits.push(t("limit.stage", { stage: s.stage }));
    if (s.guard_limit_w !== null) limits.push(t("limit.guard", { kw: kw(s.guard_limit_w) }));
    if (n.pv_limit_w !== null && n.pv_limit_w !== undefined) limits.push(t("limit.pv", { kw: kw(n.pv_limit_w) }));
    const current = s.id === state.chartSite;
    return el("tr", { "data-site": s.id, class: current ? "current" : "" },
      el("td", {},
        el("button", { type: "button", class: "link-btn", "data-focus": `site:${s.id}`, "aria-label": t("sites.show", { id: s.id }), "aria-pressed": current ? "true" : "false", onclick: () => showSite(s.id) },
          el("strong", { text: s.id })),
        el("div", { class: "muted small", text: s.name })),
      el("td", {}, ...siteStatus(s).map(chip)),
      el("td", { class: "num", text: kw(n.pv_w) }),
      el("td", { class: "num", text: kw(n.load_w) }),
      el("td", { class: "num", text: kw(n.battery_w) }),
      el("td", { class: "num", text: kw(n.export_w) }),
      el("td", { class: "num", text: s.feed_in_cap_w === null ? t("limit.none") : kw(s.feed_in_cap_w) }),
      el("td", { class: "num", text: percent(n.soc) }),
      el("td", { class: "small wrap", text: limits.join(", ") }));
  });
  replaceRows($("sites"), rows, t("sites.none"), 9);
  $("sites-count").textContent = t("sites.count", { n: num(total) });
  renderSortHeaders("sites-table", state.lists.sites);
  renderPager("sites-pager", "sites", total, sites.length);
}

// Drill down from the sites table: the site's chart and its devices; the site joins the commands' chosen sites.
function showSite(siteId) {
  state.lists.devices.site = siteId;
  state.lists.devices.offset = 0;
  $("device-site").value = siteId;
  const chosen = $("cmd-sites").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!chosen.includes(siteId)) $("cmd-sites").value = [...chosen, siteId].join(", ");
  setChartScope(siteId);
}

// ``value``: "" (the fleet), a site id, or "group:ID".
function setChartScope(value) {
  const group = value.startsWith("group:") ? value.slice("group:".length) : "";
  state.chartGroup = group;
  state.chartSite = group ? "" : value;
  renderChartTitle();
  tick();
}

function renderChartTitle() {
  const g = state.chartGroup;
  $("chart-title").textContent = g ? t("chart.group", { id: g }) : state.chartSite ? t("chart.site", { id: state.chartSite }) : t("chart.fleet");
}

// Sortable column headers: a button per sortable column; aria-sort tells the order in force.
function renderSortHeaders(tableId, list) {
  for (const th of document.querySelectorAll(`#${tableId} th[data-sort]`)) {
    const key = th.dataset.sort;
    const label = th.dataset.label || th.textContent;
    th.dataset.label = label;
    const active = list.sort.replace(/^-/, "") === key;
    const desc = list.sort.startsWith("-");
    th.setAttribute("aria-sort", active ? (desc ? "descending" : "ascending") : "none");
    let btn = th.querySelector("button");
    if (!btn) {
      btn = el("button", { type: "button", class: "sort-btn" });
      btn.addEventListener("click", () => {
        const now = list.sort.replace(/^-/, "") === key && !list.sort.startsWith("-") ? `-${key}` : key;
        list.sort = now;
        list.offset = 0;
        tick();
      });
      th.replaceChildren(btn);
    }
    btn.textContent = `${label}${active ? (desc ? " ▼" : " ▲") : ""}`;
    btn.setAttribute("aria-label", `${t("sort.by", { col: label })}${active ? ` (${t(desc ? "sort.desc" : "sort.asc")})` : ""}`);
  }
}

// A pager under a list: previous, next, and which rows of how many are shown.
function renderPager(id, name, total, shown) {
  const list = state.lists[name];
  const size = PAGE[name];
  const pager = $(id);
  const from = total ? list.offset + 1 : 0;
  const go = (offset) => () => {
    list.offset = offset;
    tick();
  };
  let prev = pager.querySelector(".prev");
  let next = pager.querySelector(".next");
  let info = pager.querySelector(".info");
  if (!prev) {
    prev = el("button", { type: "button", class: "prev small-btn" });
    next = el("button", { type: "button", class: "next small-btn" });
    info = el("span", { class: "info muted small" });
    prev.addEventListener("click", () => go(Math.max(0, list.offset - size))());
    next.addEventListener("click", () => go(list.offset + size)());
    pager.replaceChildren(prev, info, next);
  }
  prev.textContent = `‹ ${t("pager.prev")}`;
  next.textContent = `${t("pager.next")} ›`;
  prev.disabled = list.offset === 0;
  next.disabled = list.offset + shown >= total;
  info.textContent = t("pager.of", { from: num(from), to: num(list.offset + shown), total: num(total) });
}

function qualityChip(values) {
  const counts = { good: 0, missing: 0, bad: 0 };
  for (const v of Object.values(values || {})) counts[v.quality] = (counts[v.quality] || 0) + 1;
  if (counts.bad) return chip([t("quality.bad", { n: counts.bad }), "bad"]);
  if (counts.missing) return chip([t("quality.missing", { n: counts.missing }), "warn"]);
  if (counts.good) return chip([t("quality.good"), "good"]);
  return chip([t("quality.none"), "muted"]);
}

function setVsRead(set, readW) {
  if (set === undefined) return `– / ${kw(readW)}`;
  return `${set === null ? t("setpoint.released") : kw(set)} / ${kw(readW)}`;
}

// A hybrid inverter has both roles (docs/devices.md "Hybrid inverters").
const hasPv = (d) => d.kind === "pv_inverter" || d.kind === "hybrid";
const hasBattery = (d) => d.kind === "battery" || d.kind === "hybrid";

// What the device does when the controller stops writing (docs/devices.md "Fail-safes").
function failSafeText(d) {
  const fs = d.fail_safe;
  if (!fs) return t("failsafe.unknown");
  if (d.kind === "meter") return "–";
  if (fs.kind === "revert_timer") return t("failsafe.revert");
  if (fs.kind === "watchdog") return t("failsafe.watchdog", { s: num(fs.interval_s) });
  return d.accept_no_fail_safe ? t("failsafe.accepted") : t("failsafe.monitor");
}

// The per-device control switch (PUT /api/v1/devices/{id}/control): monitor only, or controlled again.
function controlCell(d) {
  if (d.kind === "meter") return el("td", { text: "–" });
  const sw = d.control_switch || {};
  const on = sw.switch !== "monitor-only";
  const text = d.control ? t("devices.controlled") : sw.config === false ? t("devices.fleetOff") : t("devices.monitor");
  const cell = el("td", {}, chip([text, d.control ? "good" : "muted"]));
  if (state.session?.may_command && sw.config !== false) { // the fleet file's "control: false" is not switched here
    cell.append(el("button", {
      type: "button", class: "small-btn switch", "data-device": d.id, "data-focus": `switch:${d.id}`,
      "aria-label": on ? t("devices.switchLabelOff", { id: d.id }) : t("devices.switchLabelOn", { id: d.id }),
      onclick: () => switchDevice(d.id, !on),
      text: on ? t("devices.switchOff") : t("devices.switchOn"),
    }));
  }
  return cell;
}

function renderDevices(now) {
  const { rows: shown, total } = state.data.devices;
  const rows = shown.map((d) => {
    const sp = d.setpoint;
    const statusKind = d.status === "online" ? "good" : d.status === "stale" ? "bad" : "muted";
    return el("tr", { "data-device": d.id },
      el("td", { text: d.id }),
      el("td", { text: d.site }),
      el("td", { text: t(`kind.${d.kind}`) }),
      el("td", {}, chip([t(`status.${d.status}`), statusKind])),
      controlCell(d),
      el("td", { title: d.fail_safe ? d.fail_safe.note : "", text: failSafeText(d) }),
      el("td", {}, qualityChip(d.values)),
      el("td", { title: when(d.last_seen, serverNow()), text: ago(d.last_seen, now) }),
      el("td", { class: "num", text: hasPv(d) ? kw(d.actual.pv_w) : "" }),
      el("td", { class: "num", text: hasPv(d) ? setVsRead(sp ? sp.pv_limit_w : undefined, d.actual.pv_limit_w) : "" }),
      el("td", { class: "num", text: hasBattery(d) ? setVsRead(sp ? sp.battery_w : undefined, d.actual.battery_w) : "" }),
      el("td", { class: "small error-text wrap", text: d.error || "" }));
  });
  replaceRows($("devices"), rows, t("devices.none"), 12);
  $("devices-count").textContent = t("devices.count", { n: num(total) });
  renderSortHeaders("devices-table", state.lists.devices);
  renderPager("devices-pager", "devices", total, shown.length);
}

function renderAlarms() {
  const { rows: alarms, total } = state.data.alarms;
  const rows = alarms.map((a) =>
    el("tr", { class: a.cleared_at ? "cleared" : "" },
      el("td", { text: when(a.raised_at, serverNow()) }),
      el("td", {}, chip([t(`severity.${a.severity}`), a.cleared_at ? "muted" : a.severity === "critical" ? "bad" : "warn"])),
      el("td", { text: a.source }),
      el("td", { class: "wrap", text: a.message }),
      el("td", { text: a.cleared_at ? when(a.cleared_at, serverNow()) : t("alarms.stillActive") })));
  replaceRows($("alarms"), rows, t("alarms.none"), 5);
  $("alarms-count").textContent = t("alarms.active", { n: num(alarms.filter((a) => !a.cleared_at).length) });
  renderPager("alarms-pager", "alarms", total, alarms.length);
}

function shortParams(p) {
  if (!p) return "";
  if (Array.isArray(p.points_s)) return t("audit.quarters", { n: num(p.points_s.length) });
  return Object.entries(p)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" ");
}

function renderAudit() {
  const { rows: audit, total } = state.data.audit;
  const rows = audit.map((a) =>
    el("tr", {},
      el("td", { text: when(a.ts, serverNow()) }),
      el("td", { text: a.who }),
      el("td", { text: a.action }),
      el("td", { class: "small wrap", text: shortParams(a.params) }),
      el("td", { text: a.result })));
  replaceRows($("audit"), rows, t("audit.none"), 5);
  renderPager("audit-pager", "audit", total, audit.length);
}

function commandScope(c) {
  if (c.params.group) return t("scope.target.group", { id: c.params.group });
  if (c.params.sites) return c.params.sites.join(", ");
  return c.kind === "schedule" || c.kind === "pause" ? t("active.fleet") : t("scope.target.all");
}

function renderCommands() {
  const may = state.session?.may_command;
  const rows = (state.data.commands || []).map((c) => {
    const what = c.kind === "stage" ? t("active.stage", { stage: c.params.stage }) : c.kind === "para14a" ? "§14a" : c.kind;
    const cancel = may
      ? el("button", { type: "button", class: "small-btn", "data-focus": `cancel:${c.id}`, "aria-label": t("active.cancelLabel", { id: c.id }), onclick: () => cancelCommand(c.id), text: t("active.cancel") })
      : "";
    return el("tr", { "data-command": c.id },
      el("td", { text: String(c.id) }),
      el("td", { text: what }),
      el("td", { class: "scope", text: commandScope(c) }),
      el("td", { text: when(c.start, serverNow()) }),
      el("td", { text: c.expires_at ? when(c.expires_at, serverNow()) : t("active.untilResumed") }),
      el("td", { text: c.who }),
      el("td", {}, cancel));
  });
  replaceRows($("active-commands"), rows, t("active.none"), 7);
}

// ---------------------------------------------------------------------------------------- commands

function setCommandAccess() {
  const may = state.session.may_command;
  $("cmd-fieldset").disabled = !may;
  const reason = $("cmd-reason");
  reason.hidden = may;
  reason.textContent = may ? "" : t("cmd.needOperator", { name: state.session.name, role: state.session.role });
}

function showResult(ok, text) {
  const node = $("cmd-result");
  node.className = ok ? "ok" : "error";
  node.textContent = text;
}

async function send(path, body, describe, method = "POST") {
  try {
    const r = await api(path, { method, body });
    if (r.ok) showResult(true, describe(r.body));
    else showResult(false, t("cmd.refused", { status: r.status, why: r.body?.error || t("cmd.noReason") }));
  } catch (err) {
    if (err instanceof AuthError) return signOut(t("login.signedOutWhy", { why: err.message }));
    showResult(false, t("cmd.notSent", { why: err.message }));
  }
  await tick();
}

// The sites a stage or §14a command goes to, from the scope box: {body part, target text} or an error text.
function commandTarget() {
  const scope = document.querySelector("input[name=cmd-scope]:checked").value;
  if (scope === "chosen") {
    const sites = $("cmd-sites").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (sites.length === 0) return { error: t("scope.needSites") };
    return { part: { sites }, target: sites.join(", ") };
  }
  if (scope === "group") {
    const group = $("cmd-group").value;
    if (!group) return { error: t("scope.needGroup") };
    return { part: { group }, target: t("scope.target.group", { id: group }) };
  }
  return { part: {}, target: t("scope.target.all") };
}

const expiry = (selectId) => new Date(serverNow() + Number($(selectId).value) * 60_000).toISOString();

function onStage(ev) {
  ev.preventDefault();
  const stage = $("stage-select").value;
  const to = commandTarget();
  if (to.error) return showResult(false, to.error);
  const body = { stage, expires_at: expiry("stage-minutes"), ...to.part };
  send("/api/v1/commands/stage", body, (r) =>
    t("stage.accepted", { stage, id: r.command.id, target: to.target, until: when(r.command.expires_at, serverNow()) }));
}

function onPara14a(ev) {
  ev.preventDefault();
  const to = commandTarget();
  if (to.error) return showResult(false, to.error);
  send("/api/v1/commands/para14a", { expires_at: expiry("para14a-minutes"), ...to.part }, (r) =>
    t("para14a.accepted", { id: r.command.id, target: to.target, until: when(r.command.expires_at, serverNow()) }));
}

function onSchedule(ev) {
  ev.preventDefault();
  let body;
  try {
    body = parseScheduleCsv($("schedule-csv").value);
  } catch (err) {
    if (err instanceof ScheduleError) return showResult(false, t("schedule.notSent", { why: err.message }));
    throw err;
  }
  send("/api/v1/commands/schedule", body, (r) => t("schedule.accepted", { n: body.points.length, id: r.command.id }));
}

async function onScheduleFile() {
  const file = $("schedule-file").files[0];
  if (file) $("schedule-csv").value = await file.text();
}

function onPause(ev) {
  ev.preventDefault();
  const reason = $("pause-reason").value.trim();
  send("/api/v1/commands/pause", { reason: reason || null }, (r) => t("pause.accepted", { id: r.command.id }));
}

function onResume() {
  send("/api/v1/commands/resume", undefined, (r) => (r.resumed ? t("pause.resumed") : t("pause.notPaused")));
}

function onDispatch() {
  send("/api/v1/commands/dispatch-now", undefined, (r) => (r.requested ? t("dispatch.accepted") : t("dispatch.paused")));
}

function switchDevice(id, controlled) {
  send(`/api/v1/devices/${encodeURIComponent(id)}/control`, { controlled }, () =>
    t("devices.switched", { id, state: controlled ? t("devices.controlled") : t("devices.monitor") }), "PUT");
}

async function cancelCommand(id) {
  try {
    const r = await api(`/api/v1/commands/${id}`, { method: "DELETE" });
    showResult(r.ok, r.ok ? t("active.cancelled", { id }) : t("cmd.refused", { status: r.status, why: r.body?.error }));
  } catch (err) {
    if (err instanceof AuthError) return signOut(t("login.signedOutWhy", { why: err.message }));
    showResult(false, t("cmd.notSent", { why: err.message }));
  }
  await tick();
}

// ------------------------------------------------------------------------------------------- wiring

function updateClock() {
  $("clock").textContent = clock(serverNow());
}

// The page in ``lang``: static texts, the options made here, and everything rendered from data.
function applyLanguage(lang, remember) {
  setLanguage(lang, remember);
  $("lang").value = language();
  translatePage();
  for (const sel of document.querySelectorAll("select.minutes")) {
    const keep = sel.value || "60";
    sel.replaceChildren(...VALID_MINUTES.map((m) => el("option", { value: m, text: m < 60 ? t("cmd.minutes", { n: m }) : t("cmd.hours", { n: m / 60 }) })));
    sel.value = keep;
  }
  document.title = `SPARCS — ${t("app.sub")}`;
  for (const th of document.querySelectorAll("th[data-sort]")) th.dataset.label = t(th.dataset.i18n);
  const live = $("live");
  if (live.dataset.key) live.textContent = t(live.dataset.key, JSON.parse(live.dataset.params || "{}"));
  else setLive("live.signedOut", "muted");
  renderChartTitle();
  updateClock();
  if (state.session) setCommandAccess();
  if (state.data.fleet) render(serverNow());
}

// A filter field changes a list's query: back to its first page, refreshed at once (text fields after a pause).
function onFilter(list, key, value, delayMs = 0) {
  state.lists[list][key] = value;
  state.lists[list].offset = 0;
  clearTimeout(onFilter.timer);
  onFilter.timer = setTimeout(tick, delayMs);
}

document.addEventListener("DOMContentLoaded", () => {
  applyLanguage(initialLanguage(), false);
  $("lang").addEventListener("change", (ev) => applyLanguage(ev.target.value, true));
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    state.token = token;
    start();
  });
  $("logout").addEventListener("click", () => signOut(t("login.signedOut")));
  $("stage-form").addEventListener("submit", onStage);
  $("para14a-form").addEventListener("submit", onPara14a);
  $("schedule-form").addEventListener("submit", onSchedule);
  $("schedule-file").addEventListener("change", onScheduleFile);
  $("pause-form").addEventListener("submit", onPause);
  $("resume-send").addEventListener("click", onResume);
  $("dispatch-send").addEventListener("click", onDispatch);
  $("cmd-sites").addEventListener("input", () => {
    $("cmd-scope-chosen").checked = true;
  });
  $("cmd-group").addEventListener("change", () => {
    $("cmd-scope-group").checked = true;
  });
  for (const form of document.querySelectorAll("form.filters")) form.addEventListener("submit", (ev) => ev.preventDefault());
  $("sites-q").addEventListener("input", (ev) => onFilter("sites", "q", ev.target.value.trim(), 400));
  $("sites-status").addEventListener("change", (ev) => onFilter("sites", "status", ev.target.value));
  $("sites-group").addEventListener("change", (ev) => showGroup(ev.target.value));
  $("device-site").addEventListener("input", (ev) => onFilter("devices", "site", ev.target.value.trim(), 400));
  $("device-kind").addEventListener("change", (ev) => onFilter("devices", "kind", ev.target.value));
  $("device-problems").addEventListener("change", (ev) => onFilter("devices", "problems", ev.target.checked));
  $("alarms-active").addEventListener("change", (ev) => onFilter("alarms", "active", ev.target.checked));
  $("chart-scope").addEventListener("change", (ev) => setChartScope(ev.target.value));
  window.addEventListener("resize", () => state.data.fleet && renderChart(serverNow()));
  setInterval(updateClock, 10_000);
  if (state.token) start();
  else showLogin();
});
