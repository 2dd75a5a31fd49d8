// The operator dashboard: signs in with a bearer token kept in sessionStorage, polls the API, draws the fleet,
// and sends operator commands. Powers arrive in W with the signs of docs/definitions.md "Signs"; the page shows kW.
// The page applies no grid rule: ceilings, caps and "curtailed" come from the API as the controller applies them.
import { drawChart, legend } from "./chart.js";
import { ago, el, hhmm, kw, kwUnit, percent, replaceRows, when } from "./format.js";
import { exampleCsv, parseScheduleCsv, ScheduleError } from "./schedule.js";

const TOKEN_KEY = "sparcs.token";
const TRAIL_KEY = "sparcs.forecastTrail";
const FAST_MS = 5000; // fleet, sites, devices, alarms, audit, commands
const SLOW_MS = 60000; // history, plan and forecast (and at once after a new dispatch)
const HOUR_MS = 3_600_000;
const QUARTER_MS = 900_000;

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  session: null,
  data: {},
  slow: { at: 0, key: null, error: null },
  timer: null,
  generation: 0,
  failedSince: null,
  deviceSite: "",
  chartSite: "", // "" = the whole fleet (or the group in chartGroup)
  chartGroup: "", // a group's id: the chart shows the sum of its sites
  sitesGroup: "", // "" = every site in the sites table, else a group's id
  offsetMs: 0, // the controller's clock minus this browser's (a twin or demo may run on a sim clock)
  // Forecasts this tab has seen, per quarter-hour start (ms) and site: [pv_available_w, load_w]. The API keeps only
  // the plan in force, so this is how the chart compares past measurements with what was forecast for them.
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
  { id: "pv", name: "PV measured", color: "#d89a00", style: "solid" },
  { id: "pv-plan", name: "PV planned", color: "#d89a00", style: "dash" },
  { id: "pv-fc", name: "PV available (forecast)", color: "#d89a00", style: "dot", width: 1.5 },
  { id: "load", name: "Load measured", color: "#2f6fbf", style: "solid" },
  { id: "load-fc", name: "Load (forecast)", color: "#2f6fbf", style: "dash" },
  { id: "battery", name: "Battery measured (+ discharge)", color: "#2e9d5b", style: "solid" },
  { id: "battery-plan", name: "Battery planned", color: "#2e9d5b", style: "dash" },
  { id: "export", name: "Export measured", color: "#b03a8c", style: "solid" },
  { id: "export-plan", name: "Export planned", color: "#b03a8c", style: "dash" },
  { id: "schedule", name: "Operator export schedule", color: "#222", style: "solid", width: 2.5, step: true },
];

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
  return { ok: r.ok, status: r.status, body: payload };
}

async function read(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(`${path}: ${r.body?.error || r.status}`);
  return r.body;
}

// ----------------------------------------------------------------------------------- sign in / out

function showLogin(message = "") {
  stopPolling();
  state.session = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  setLive("not signed in", "muted");
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
    if (err instanceof AuthError) signOut(`Sign-in failed: ${err.message}.`);
    else showLogin(`Cannot reach the controller: ${err.message}`);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `${state.session.name} (${state.session.role})`;
  setCommandAccess();
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
      signOut(`Signed out: ${err.message}.`);
      return;
    }
    console.warn("refresh failed:", err.message);
  }
  if (state.token && gen === state.generation) state.timer = setTimeout(tick, FAST_MS);
}

// ------------------------------------------------------------------------------------------ polling

async function refresh() {
  let fast;
  try {
    fast = await Promise.all([
      read("/api/v1/fleet"),
      read("/api/v1/sites"),
      read("/api/v1/devices"),
      read("/api/v1/caps"),
      read("/api/v1/commands"),
      read("/api/v1/alarms?limit=100"),
      read("/api/v1/audit?limit=50"),
      fetch("/readyz", { cache: "no-store" }).then((r) => r.json()),
      read("/api/v1/groups"),
    ]);
  } catch (err) {
    if (err instanceof AuthError) throw err;
    state.failedSince = state.failedSince || serverNow();
    renderBanners(err.message);
    setLive("connection lost", "bad");
    throw err;
  }
  state.failedSince = null;
  const [fleet, sites, devices, caps, commands, alarms, audit, ready, groups] = fast;
  state.offsetMs = Date.parse(caps.ts) - Date.now();
  Object.assign(state.data, { fleet, sites, devices, caps, commands, alarms, audit, ready, groups });
  const now = serverNow();
  if (!state.exampleShown) {
    $("schedule-example").textContent = exampleCsv(now);
    state.exampleShown = true;
  }
  const dispatch = fleet.last_dispatch;
  const slowKey = `${dispatch}|${state.chartSite}|${state.chartGroup}`;
  if (now - state.slow.at > SLOW_MS || slowKey !== state.slow.key) {
    const start = new Date(now - 12 * HOUR_MS).toISOString();
    const end = new Date(now).toISOString();
    const scope = state.chartSite ? `&site=${encodeURIComponent(state.chartSite)}` : "";
    const span = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}&resolution_s=60`;
    const historyPath = state.chartGroup
      ? `/api/v1/groups/${encodeURIComponent(state.chartGroup)}/history?${span}`
      : `/api/v1/history?${span}${scope}`;
    try {
      const [history, plan, forecast] = await Promise.all([
        read(historyPath),
        read("/api/v1/plan"),
        read("/api/v1/forecast"),
      ]);
      // /forecast answers {forecast: null} without a plan, else the forecast object itself
      Object.assign(state.data, { history, plan: plan.plan, forecast: forecast.start ? forecast : null });
      if (state.data.forecast) recordForecast(state.data.forecast, now);
      // last_dispatch is set when a dispatch starts: until its plan is stored, ask again at the next tick
      const planMs = state.data.plan ? state.data.plan.start_s * 1000 : Infinity;
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

function setLive(text, kind) {
  const pill = $("live");
  pill.textContent = text;
  pill.className = `pill pill-${kind}`;
}

// ------------------------------------------------------------------------------------------ render

function render(now) {
  const { fleet, ready } = state.data;
  renderTiles(fleet, now);
  renderBanners(null);
  setLive(ready.ready ? `live · ${hhmm(now)}` : "data stale", ready.ready ? "good" : "bad");
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
  setTile("t-devices", n.total === undefined ? "–" : `${n.online} / ${n.stale} / ${n.total}`);
  const path = fleet.paused ? "paused" : fleet.plan_path || "no plan yet";
  setTile("t-plan", path);
  $("t-plan").className = `value small ${fleet.paused || (fleet.plan_path || "").startsWith("fallback") ? "warn" : ""}`;
  $("t-plan-hint").textContent = `made ${ago(fleet.last_dispatch, now)}`;
}

const PATH_TEXT = {
  fallback_shifted: "the last good plan, shifted",
  fallback_rules: "self-consumption rules",
};

function renderBanners(fetchError) {
  const { fleet, ready, plan, commands, alarms } = state.data;
  const out = [];
  const banner = (kind, title, text) => out.push(el("div", { class: `banner ${kind}`, role: "alert" }, el("strong", { text: title }), ` ${text}`));
  if (fetchError) {
    banner("bad", "Connection lost.", `Cannot reach the controller since ${hhmm(state.failedSince)} (${fetchError}); the values below are from before.`);
  }
  if (state.slow.error) banner("warn", "Chart not updated.", `History or plan could not be read: ${state.slow.error}`);
  if (ready && !ready.ready) {
    banner("bad", "Data is stale.", `The controller reports: ${ready.problems.join("; ")}. Values below are the last known.`);
  }
  if (fleet?.plan_path?.startsWith("fallback")) {
    const why = plan?.reason ? ` — ${plan.reason}` : "";
    banner("warn", "Controller in fallback.", `The plan in force comes from ${PATH_TEXT[fleet.plan_path] || fleet.plan_path}${why}. Caps stay enforced.`);
  }
  if (fleet?.paused) {
    const p = (commands || []).find((c) => c.kind === "pause");
    const by = p ? ` by ${p.who} since ${when(p.created_at, serverNow())}${p.params.reason ? ` (${p.params.reason})` : ""}` : "";
    banner("warn", "Automatic control paused", `${by}. Stages, caps and the export guard stay enforced.`);
  }
  const stale = fleet?.now?.stale || 0;
  if (stale > 0) {
    const sites = (state.data.sites || []).filter((s) => s.now && s.now.devices_stale > 0).map((s) => s.id);
    const which = sites.length === 1 ? `Site ${sites[0]} is` : `Sites ${sites.join(", ")} are`;
    banner("warn", `${stale} device${stale > 1 ? "s" : ""} stale.`, `${which} left out of the plan until every device answers.`);
  }
  const critical = (alarms || []).filter((a) => !a.cleared_at && a.severity === "critical").length;
  if (critical) banner("bad", `${critical} critical alarm${critical > 1 ? "s" : ""}.`, "See Alarms below.");
  $("banners").replaceChildren(...out);
}

// Fleet sums of a plan's per-site arrays, one value per period.
function sumSites(sites, key, n) {
  const out = new Array(n).fill(null);
  for (const s of Object.values(sites || {})) {
    (s[key] || []).slice(0, n).forEach((v, i) => {
      if (v !== null) out[i] = (out[i] || 0) + v;
    });
  }
  return out;
}

function periodStarts(startS, periodS) {
  const out = [];
  let t = startS * 1000;
  for (const p of periodS) {
    out.push(t);
    t += p * 1000;
  }
  return out;
}

// Plan and forecast as fleet series, [ms, W] pairs at period starts (values hold for the period).
// The per-site records the chart shows: all of them, or the chosen site's (none if it is not in the plan).
function inScope(sites) {
  const ids = scopeSites();
  if (!ids) return sites || {};
  return Object.fromEntries(Object.entries(sites || {}).filter(([sid]) => ids.includes(sid)));
}

// The site ids the chart shows: one site, a group's sites, or null for the whole fleet.
function scopeSites() {
  if (state.chartSite) return [state.chartSite];
  if (state.chartGroup) return (state.data.groups || []).find((g) => g.id === state.chartGroup)?.sites || [];
  return null;
}

function planSeries() {
  const { plan, forecast } = state.data;
  const res = {};
  if (plan) {
    const starts = periodStarts(plan.start_s, plan.period_s);
    const n = starts.length;
    const zip = (vals) => starts.map((t, i) => [t, vals[i]]);
    const sites = inScope(plan.sites);
    res.pv = zip(sumSites(sites, "pv_w", n));
    res.battery = zip(sumSites(sites, "battery_w", n));
    // a site's export is its meter's export; the fleet's is the plan's (export of one site is not offset by another)
    const siteExport = sumSites(sites, "grid_w", n).map((g) => (g === null ? null : Math.max(0, -g)));
    res.export = zip(scopeSites() ? siteExport : plan.export_w);
  }
  if (forecast) {
    const starts = periodStarts(Date.parse(forecast.start) / 1000, forecast.period_s);
    const n = starts.length;
    const zip = (vals) => starts.map((t, i) => [t, vals[i]]);
    const sites = inScope(forecast.sites);
    const past = trailPoints(starts[0]);
    res.pvAvailable = [...past.map(([q, pv]) => [q, pv]), ...zip(sumSites(sites, "pv_available_w", n))];
    res.load = [...past.map(([q, , load]) => [q, load]), ...zip(sumSites(sites, "load_w", n))];
  }
  return res;
}

// Keeps each quarter-hour's forecast as it stood when the quarter-hour began (later plans update it until then).
function recordForecast(fc, now) {
  periodStarts(Date.parse(fc.start) / 1000, fc.period_s).forEach((t, i) => {
    // a second of slack: period starts summed from float seconds land a hair before the quarter-hour
    const q = Math.floor((t + 1000) / QUARTER_MS) * QUARTER_MS;
    if (q <= now && state.trail[q]) return;
    state.trail[q] = Object.fromEntries(
      Object.entries(fc.sites).map(([sid, f]) => [sid, [f.pv_available_w[i], f.load_w[i]]]),
    );
  });
  for (const q of Object.keys(state.trail)) if (Number(q) < now - 13 * HOUR_MS) delete state.trail[q];
  try {
    sessionStorage.setItem(TRAIL_KEY, JSON.stringify(state.trail));
  } catch {
    // storage full: the chart still has this tab's memory of the trail
  }
}

// Past forecasts from the trail for the chart's scope, before ``beforeMs``: [[ms, pv_w, load_w]].
function trailPoints(beforeMs) {
  return Object.entries(state.trail)
    .map(([q, sites]) => [Number(q), Object.values(inScope(sites))])
    .filter(([q, vals]) => q < beforeMs && vals.length)
    .sort((a, b) => a[0] - b[0])
    .map(([q, vals]) => [q, vals.reduce((a, v) => a + (v[0] ?? 0), 0), vals.reduce((a, v) => a + (v[1] ?? 0), 0)]);
}

// The operator's export schedule from the active schedule commands; a newer command wins per quarter-hour.
function scheduleSeries() {
  const byStart = new Map();
  const cmds = (state.data.commands || []).filter((c) => c.kind === "schedule").sort((a, b) => a.id - b.id);
  for (const c of cmds) for (const [t, w] of c.params.points_s) byStart.set(t * 1000, w);
  return [...byStart.entries()].sort((a, b) => a[0] - b[0]);
}

// The export ceiling of the sites in the chart's scope, summed (W): now from /caps (from the chart's start), then per
// planned quarter-hour from /forecast. The API applies the grid rules (docs/definitions.md "Grid rules"); the page
// only adds up what it serves, and leaves out a period it serves no value for.
function ceilingSeries(t0) {
  const ids = scopeSites();
  const caps = (state.data.caps?.sites || []).filter((s) => !ids || ids.includes(s.site));
  if (!caps.length) return null;
  const points = [[t0, caps.reduce((sum, s) => sum + s.export_ceiling_now_w, 0)]];
  const fc = state.data.forecast;
  if (fc?.export_ceiling_w) {
    const starts = periodStarts(Date.parse(fc.start) / 1000, fc.period_s);
    starts.forEach((t, i) => {
      const values = caps.map((s) => fc.export_ceiling_w[s.site]?.[i]);
      if (values.every(Number.isFinite)) points.push([t, values.reduce((a, v) => a + v, 0)]);
    });
  }
  return points.sort((a, b) => a[0] - b[0]);
}

function commandBands() {
  const bands = [];
  for (const c of state.data.commands || []) {
    const from = Date.parse(c.start);
    const to = c.expires_at ? Date.parse(c.expires_at) : Infinity;
    const n = c.params.sites?.length;
    const scope = c.params.group ? `group ${c.params.group}` : n ? `${n} site${n > 1 ? "s" : ""}` : "all sites";
    if (c.kind === "stage") bands.push({ from, to, kind: "stage", label: `${c.params.stage} · ${scope}` });
    else if (c.kind === "para14a") bands.push({ from, to, kind: "para14a", label: `§14a · ${scope}` });
    else if (c.kind === "pause") bands.push({ from, to, kind: "pause", label: "paused" });
  }
  return bands;
}

function renderChart(now) {
  $("chart").dataset.planStart = state.data.forecast?.start || "";
  const t0 = now - 12 * HOUR_MS;
  const t1 = now + 12 * HOUR_MS;
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
    schedule: scopeSites() ? [] : scheduleSeries(), // the schedule is the fleet's
  };
  const planned = new Set(["pv-plan", "pv-fc", "load-fc", "battery-plan", "export-plan"]);
  const series = SERIES.map((s) => ({ ...s, step: s.step || planned.has(s.id), points: points[s.id] }));
  const ceilingPoints = ceilingSeries(t0);
  const ceiling = ceilingPoints && {
    points: ceilingPoints,
    color: "#c0392b",
    label: `export ceiling${state.chartSite ? "" : ", sum of sites"}: ${kw(Math.max(...ceilingPoints.map(([, v]) => v)), state.chartSite ? 1 : 0)} kW`,
  };
  legend($("chart-legend"), [...SERIES, { name: "Export ceiling (caps)", color: "#c0392b", style: "dashdot", width: 1.5 }]);
  drawChart($("chart"), { t0, t1, nowMs: now, series, bands: commandBands(), ceiling });
}

function renderForecastVsActual(now) {
  const group = state.chartGroup && state.data.groups?.find((g) => g.id === state.chartGroup);
  const n = state.chartSite
    ? state.data.sites?.find((s) => s.id === state.chartSite)?.now
    : group
      ? group.now
      : state.data.fleet?.now;
  const plan = planSeries();
  const at = (pts) => {
    const hit = (pts || []).find(([t]) => t <= now && now < t + QUARTER_MS);
    return hit ? hit[1] : null;
  };
  const rows = [
    ["PV available (forecast) / produced", at(plan.pvAvailable), n?.pv_w],
    ["PV planned / produced", at(plan.pv), n?.pv_w],
    ["Load", at(plan.load), n?.load_w],
    ["Battery (+ discharge)", at(plan.battery), n?.battery_w],
    ["Export at meters", at(plan.export), n?.export_w],
  ].map(([name, fc, actual]) => {
    const dev = fc !== null && Number.isFinite(actual) ? actual - fc : null;
    return el("tr", {},
      el("td", { text: name }),
      el("td", { class: "num", text: `${kw(fc)} kW` }),
      el("td", { class: "num", text: `${kw(actual)} kW` }),
      el("td", { class: "num", text: dev === null ? "–" : `${dev >= 0 ? "+" : ""}${kw(dev)} kW` }));
  });
  $("fva").replaceChildren(...rows);
}

function siteStatus(s) {
  const chips = [];
  const now = s.now;
  if (!now) chips.push(["no data", "muted"]);
  else if (now.devices_stale > 0) chips.push([`stale (${now.devices_stale}/${now.devices_total})`, "bad"]);
  else if (now.devices_online === now.devices_total) chips.push(["online", "good"]);
  else chips.push([`${now.devices_online}/${now.devices_total} online`, "warn"]);
  // "curtailed" is the API's (docs/definitions.md "Grid rules"); the page names what limits the site
  if (s.curtailed) chips.push([s.stage ? `curtailed ${s.stage}` : s.guard_limit_w !== null ? "curtailed (guard)" : "curtailed", "warn"]);
  if (s.para14a) chips.push(["§14a", "info"]);
  return chips;
}

function chip([text, kind]) {
  return el("span", { class: `chip chip-${kind}`, text });
}

// Groups (GET /api/v1/groups): the table, and the group choices of the stage form and the sites table.
function renderGroups() {
  const groups = state.data.groups || [];
  const names = groups.map((g) => g.id).join("|");
  const sites = state.data.sites || [];
  const scopes = `${names}/${sites.map((s) => s.id).join("|")}`;
  if ($("chart-scope").dataset.scopes !== scopes) {
    $("chart-scope").replaceChildren(
      el("option", { value: "", text: "whole fleet" }),
      ...groups.map((g) => el("option", { value: `group:${g.id}`, text: `group ${g.id}` })),
      ...sites.map((s) => el("option", { value: s.id, text: `${s.id} — ${s.name}` })));
    $("chart-scope").dataset.scopes = scopes;
    $("chart-scope").value = state.chartGroup ? `group:${state.chartGroup}` : state.chartSite;
  }
  if ($("stage-group").dataset.names !== names) {
    const options = () => groups.map((g) => el("option", { value: g.id, text: `${g.id}${g.name ? ` — ${g.name}` : ""}` }));
    $("stage-group").replaceChildren(...options());
    $("stage-group").dataset.names = names;
    $("sites-group").replaceChildren(el("option", { value: "", text: "all sites" }), ...options());
    $("sites-group").value = state.sitesGroup;
  }
  $("stage-scope-group").disabled = groups.length === 0;
  $("stage-group").disabled = groups.length === 0;
  const rows = groups.map((g) => {
    const limits = [];
    const stages = [...new Set(Object.values(g.stages).filter((v) => v))];
    if (stages.length) limits.push(`stage ${stages.join("/")}`);
    if (Object.values(g.para14a).some((v) => v)) limits.push("§14a");
    if (g.pool_limit_pct !== null) limits.push(`pool ≤ ${g.pool_limit_pct} % until ${when(g.pool_limit_expires_at, serverNow())}`);
    return el("tr", { "data-group": g.id, class: "clickable", title: "show this group's sites", onclick: () => showGroup(g.id) },
      el("td", {}, el("strong", { text: g.id }), el("div", { class: "muted small", text: g.name || "" })),
      el("td", { text: g.kind }),
      el("td", { class: "num", text: String(g.sites.length) }),
      el("td", { class: "num", text: kw(g.now.export_w) }),
      el("td", { class: "num", text: kw(g.rating_w) }),
      el("td", { class: "small wrap", text: limits.join(", ") }));
  });
  replaceRows($("groups"), rows, "no groups in the fleet file", 6);
  $("groups-count").textContent = `(${groups.length})`;
  $("groups-card").hidden = groups.length === 0;
}

// Drill down from the groups table (or the sites card's group choice): the group's sites and chart.
function showGroup(groupId) {
  state.sitesGroup = groupId;
  $("sites-group").value = groupId;
  renderSites();
  setChartScope(groupId ? `group:${groupId}` : "");
}

function renderSites() {
  const group = (state.data.groups || []).find((g) => g.id === state.sitesGroup);
  const sites = (state.data.sites || []).filter((s) => !group || group.sites.includes(s.id));
  const stageSelect = $("stage-sites");
  const all = state.data.sites || [];
  if (stageSelect.options.length !== all.length) {
    stageSelect.replaceChildren(...all.map((s) => el("option", { value: s.id, text: `${s.id} — ${s.name}` })));
    $("device-site").replaceChildren(el("option", { value: "", text: "all" }), ...all.map((s) => el("option", { value: s.id, text: s.id })));
    $("device-site").value = state.deviceSite;
  }
  const rows = sites.map((s) => {
    const n = s.now || {};
    const limits = [];
    if (s.stage) limits.push(`stage ${s.stage}`);
    if (s.guard_limit_w !== null) limits.push(`guard ${kw(s.guard_limit_w)} kW`);
    if (n.pv_limit_w !== null && n.pv_limit_w !== undefined) limits.push(`PV ≤ ${kw(n.pv_limit_w)} kW`);
    return el("tr", { "data-site": s.id, class: "clickable", title: "show this site's chart and devices", onclick: () => showSite(s.id) },
      el("td", {}, el("strong", { text: s.id }), el("div", { class: "muted small", text: s.name })),
      el("td", {}, ...siteStatus(s).map(chip)),
      el("td", { class: "num", text: kw(n.pv_w) }),
      el("td", { class: "num", text: kw(n.load_w) }),
      el("td", { class: "num", text: kw(n.battery_w) }),
      el("td", { class: "num", text: kw(n.export_w) }),
      el("td", { class: "num", text: s.feed_in_cap_w === null ? "none" : kw(s.feed_in_cap_w) }),
      el("td", { class: "num", text: percent(n.soc) }),
      el("td", { class: "small wrap", text: limits.join(", ") }));
  });
  replaceRows($("sites"), rows, "no sites", 9);
  const stale = sites.filter((s) => s.now?.devices_stale > 0).length;
  const curtailed = sites.filter((s) => s.curtailed).length;
  $("sites-count").textContent = `${sites.length} sites${group ? ` of ${group.id}` : ""} · ${stale} stale · ${curtailed} curtailed`;
}

// Drill down from the sites table: the site's chart and its devices.
function showSite(siteId) {
  setChartScope(siteId);
  filterDevices(siteId);
}

// ``value``: "" (the fleet), a site id, or "group:ID".
function setChartScope(value) {
  const group = value.startsWith("group:") ? value.slice("group:".length) : "";
  state.chartGroup = group;
  state.chartSite = group ? "" : value;
  $("chart-scope").value = value;
  $("chart-title").textContent = group ? `Group ${group}` : value ? `Site ${value}` : "Fleet";
  tick();
}

function filterDevices(siteId) {
  state.deviceSite = siteId;
  $("device-site").value = siteId;
  renderDevices(serverNow());
}

function qualityChip(values) {
  const counts = { good: 0, missing: 0, bad: 0 };
  for (const v of Object.values(values || {})) counts[v.quality] = (counts[v.quality] || 0) + 1;
  if (counts.bad) return chip([`${counts.bad} bad`, "bad"]);
  if (counts.missing) return chip([`${counts.missing} missing`, "warn"]);
  if (counts.good) return chip(["good", "good"]);
  return chip(["no values", "muted"]);
}

function setVsRead(set, read) {
  if (set === undefined) return `– / ${kw(read)}`;
  return `${set === null ? "released" : kw(set)} / ${kw(read)}`;
}

// A hybrid inverter has both roles (docs/devices.md "Hybrid inverters").
const hasPv = (d) => d.kind === "pv_inverter" || d.kind === "hybrid";
const hasBattery = (d) => d.kind === "battery" || d.kind === "hybrid";

// What the device does when the controller stops writing (docs/devices.md "Fail-safes").
function failSafeText(d) {
  const fs = d.fail_safe;
  if (!fs) return "unknown";
  if (d.kind === "meter") return "–";
  if (fs.kind === "revert_timer") return "revert timer";
  if (fs.kind === "watchdog") return `watchdog ${fs.interval_s} s`;
  return d.accept_no_fail_safe ? "none (accepted)" : "none: monitor only";
}

function renderDevices(now) {
  const onlyProblems = $("device-problems").checked;
  const all = state.data.devices || [];
  const shown = all.filter((d) => {
    if (state.deviceSite && d.site !== state.deviceSite) return false;
    if (!onlyProblems) return true;
    return d.status !== "online" || Object.values(d.values || {}).some((v) => v.quality !== "good");
  });
  const rows = shown.map((d) => {
    const sp = d.setpoint;
    return el("tr", { "data-device": d.id },
      el("td", { text: d.id }),
      el("td", { text: d.site }),
      el("td", { text: d.kind.replace("_", " ") + (d.control ? "" : " (monitor)") }),
      el("td", {}, chip([d.status, d.status === "online" ? "good" : d.status === "stale" ? "bad" : "muted"])),
      el("td", { title: d.fail_safe ? d.fail_safe.note : "", text: failSafeText(d) }),
      el("td", {}, qualityChip(d.values)),
      el("td", { title: when(d.last_seen, serverNow()), text: ago(d.last_seen, now) }),
      el("td", { class: "num", text: hasPv(d) ? kw(d.actual.pv_w) : "" }),
      el("td", { class: "num", text: hasPv(d) ? setVsRead(sp ? sp.pv_limit_w : undefined, d.actual.pv_limit_w) : "" }),
      el("td", { class: "num", text: hasBattery(d) ? setVsRead(sp ? sp.battery_w : undefined, d.actual.battery_w) : "" }),
      el("td", { class: "small error-text wrap", text: d.error || "" }));
  });
  replaceRows($("devices"), rows, "no devices match", 11);
  $("devices-count").textContent = `${shown.length} of ${all.length}`;
}

function renderAlarms() {
  const alarms = [...(state.data.alarms || [])].sort((a, b) => Number(!!a.cleared_at) - Number(!!b.cleared_at));
  const rows = alarms.map((a) =>
    el("tr", { class: a.cleared_at ? "cleared" : "" },
      el("td", { text: when(a.raised_at, serverNow()) }),
      el("td", {}, chip([a.severity, a.cleared_at ? "muted" : a.severity === "critical" ? "bad" : "warn"])),
      el("td", { text: a.source }),
      el("td", { class: "wrap", text: a.message }),
      el("td", { text: a.cleared_at ? when(a.cleared_at, serverNow()) : "active" })));
  replaceRows($("alarms"), rows, "no alarms", 5);
  const active = alarms.filter((a) => !a.cleared_at).length;
  $("alarms-count").textContent = `${active} active`;
}

function shortParams(p) {
  if (!p) return "";
  if (Array.isArray(p.points_s)) return `${p.points_s.length} quarter-hours`;
  return Object.entries(p)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" ");
}

function renderAudit() {
  const rows = (state.data.audit || []).map((a) =>
    el("tr", {},
      el("td", { text: when(a.ts, serverNow()) }),
      el("td", { text: a.who }),
      el("td", { text: a.action }),
      el("td", { class: "small wrap", text: shortParams(a.params) }),
      el("td", { text: a.result })));
  replaceRows($("audit"), rows, "no commands yet", 5);
}

function renderCommands() {
  const may = state.session?.may_command;
  const rows = (state.data.commands || []).map((c) => {
    const what = c.kind === "stage" ? `stage ${c.params.stage}` : c.kind;
    const cancel = may ? el("button", { type: "button", class: "small-btn", onclick: () => cancelCommand(c.id), text: "Cancel" }) : "";
    return el("tr", {},
      el("td", { text: String(c.id) }),
      el("td", { text: what }),
      el("td", { class: "scope", text: c.params.group ? `group ${c.params.group}` : c.params.sites ? c.params.sites.join(", ") : c.kind === "schedule" || c.kind === "pause" ? "fleet" : "all" }),
      el("td", { text: when(c.start, serverNow()) }),
      el("td", { text: c.expires_at ? when(c.expires_at, serverNow()) : "until resumed" }),
      el("td", { text: c.who }),
      el("td", {}, cancel));
  });
  replaceRows($("active-commands"), rows, "none", 7);
}

// ---------------------------------------------------------------------------------------- commands

function setCommandAccess() {
  const may = state.session.may_command;
  $("cmd-fieldset").disabled = !may;
  const reason = $("cmd-reason");
  reason.hidden = may;
  reason.textContent = may
    ? ""
    : `Commands need an operator token. You are signed in as '${state.session.name}' with role ` +
      `'${state.session.role}': you can watch the fleet but not command it.`;
}

function showResult(ok, text) {
  const node = $("cmd-result");
  node.className = ok ? "ok" : "error";
  node.textContent = text;
}

async function send(path, body, describe) {
  try {
    const r = await api(path, { method: "POST", body });
    if (r.ok) showResult(true, describe(r.body));
    else showResult(false, `Refused (${r.status}): ${r.body?.error || "no reason given"}`);
  } catch (err) {
    if (err instanceof AuthError) return signOut(`Signed out: ${err.message}.`);
    showResult(false, `Not sent: ${err.message}`);
  }
  await tick();
}

function onStage(ev) {
  ev.preventDefault();
  const stage = $("stage-select").value;
  const minutes = Number($("stage-minutes").value);
  const scope = document.querySelector("input[name=stage-scope]:checked").value;
  const chosen = scope === "chosen";
  const sites = [...$("stage-sites").selectedOptions].map((o) => o.value);
  const group = $("stage-group").value;
  if (chosen && sites.length === 0) return showResult(false, "Choose at least one site, or send the stage to all sites.");
  if (scope === "group" && !group) return showResult(false, "Choose a group, or send the stage to all sites.");
  const body = { stage, expires_at: new Date(serverNow() + minutes * 60_000).toISOString() };
  if (chosen) body.sites = sites;
  if (scope === "group") body.group = group;
  const target = scope === "group" ? `group ${group}` : chosen ? sites.join(", ") : "all sites";
  send("/api/v1/commands/stage", body, (r) =>
    `Stage ${stage} accepted as command #${r.command.id} for ${target} until ${when(r.command.expires_at, serverNow())}.`);
}

function onSchedule(ev) {
  ev.preventDefault();
  let body;
  try {
    body = parseScheduleCsv($("schedule-csv").value);
  } catch (err) {
    if (err instanceof ScheduleError) return showResult(false, `Schedule not sent: ${err.message}.`);
    throw err;
  }
  send("/api/v1/commands/schedule", body, (r) => `Schedule of ${body.points.length} quarter-hours accepted as command #${r.command.id}.`);
}

async function onScheduleFile() {
  const file = $("schedule-file").files[0];
  if (file) $("schedule-csv").value = await file.text();
}

function onPause(ev) {
  ev.preventDefault();
  const reason = $("pause-reason").value.trim();
  send("/api/v1/commands/pause", { reason: reason || null }, (r) => `Paused (command #${r.command.id}). Caps and stages stay enforced.`);
}

function onResume() {
  send("/api/v1/commands/resume", undefined, (r) => (r.resumed ? "Automatic control resumed." : "Control was not paused."));
}

async function cancelCommand(id) {
  try {
    const r = await api(`/api/v1/commands/${id}`, { method: "DELETE" });
    showResult(r.ok, r.ok ? `Command #${id} cancelled.` : `Refused (${r.status}): ${r.body?.error}`);
  } catch (err) {
    if (err instanceof AuthError) return signOut(`Signed out: ${err.message}.`);
    showResult(false, `Not sent: ${err.message}`);
  }
  await tick();
}

// ------------------------------------------------------------------------------------------- wiring

function updateClock() {
  $("clock").textContent = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Europe/Berlin", weekday: "short", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit",
  }).format(new Date(serverNow()));
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    state.token = token;
    start();
  });
  $("logout").addEventListener("click", () => signOut("Signed out."));
  $("stage-form").addEventListener("submit", onStage);
  $("schedule-form").addEventListener("submit", onSchedule);
  $("schedule-file").addEventListener("change", onScheduleFile);
  $("pause-form").addEventListener("submit", onPause);
  $("resume-send").addEventListener("click", onResume);
  $("stage-sites").addEventListener("change", () => {
    document.querySelector("input[name=stage-scope][value=chosen]").checked = true;
  });
  $("device-site").addEventListener("change", (ev) => filterDevices(ev.target.value));
  $("stage-group").addEventListener("change", () => {
    $("stage-scope-group").checked = true;
  });
  $("sites-group").addEventListener("change", (ev) => showGroup(ev.target.value));
  $("chart-scope").addEventListener("change", (ev) => setChartScope(ev.target.value));
  $("device-problems").addEventListener("change", () => renderDevices(serverNow()));
  window.addEventListener("resize", () => state.data.fleet && renderChart(serverNow()));
  updateClock();
  setInterval(updateClock, 10_000);
  if (state.token) start();
  else showLogin();
});
