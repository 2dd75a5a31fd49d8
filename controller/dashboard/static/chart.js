// A small SVG time-series chart (texts in the page's language come with the spec): lines (solid = measured, dashed = plan, dotted = forecast), step lines for
// quarter-hour values, shaded bands for commands in force, a ceiling (the export ceiling the API serves) and a "now"
// marker.
// A ceiling far above the data would flatten every line, so then it is named at the top instead of drawn.
import { berlinOffsetMs, el, hhmm, kw } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const HEIGHT = 380;
const PAD = { left: 52, right: 12, top: 14, bottom: 26 };
const DASH = { solid: null, dash: "6 4", dot: "2 3", dashdot: "8 3 2 3" };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Round numbers for the axis: steps of 1, 2 or 5 × 10^n kW.
function niceStep(span, count) {
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
}

// Path for [ms, W] points; a null value breaks the line. ``step``: each value holds until the next point, for at
// most ``stepMs`` (Infinity: always until the next point; the last one then holds for a quarter-hour).
function pathOf(points, x, y, step, stepMs) {
  let d = "";
  let pen = false;
  points.forEach(([t, v], i) => {
    if (v === null || v === undefined || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const px = x(t).toFixed(1);
    const py = y(v).toFixed(1);
    d += `${pen ? "L" : "M"}${px},${py}`;
    if (step) {
      const next = i + 1 < points.length ? points[i + 1][0] : t + Math.min(stepMs, 900_000);
      d += `L${x(Math.min(next, t + stepMs)).toFixed(1)},${py}`;
    }
    pen = !step || (i + 1 < points.length && points[i + 1][0] <= t + stepMs);
  });
  return d;
}

export function legend(container, series) {
  container.replaceChildren(
    ...series.map((s) => {
      const swatch = svg("svg", { width: 22, height: 10, "aria-hidden": "true" });
      swatch.append(
        svg("line", {
          x1: 1, y1: 5, x2: 21, y2: 5, stroke: s.color, "stroke-width": s.width || 2, "stroke-dasharray": DASH[s.style],
        }),
      );
      return el("span", { class: "legend-item" }, swatch, s.name);
    }),
  );
}

export function drawChart(container, spec) {
  const width = Math.max(320, container.clientWidth || 800);
  const { t0, t1, nowMs, series, bands, ceiling, nowLabel, aboveScale } = spec;
  const inWindow = (points) => points.filter(([t, v]) => Number.isFinite(v) && t >= t0 - 900_000 && t <= t1).map(([, v]) => v);
  const values = [0];
  for (const s of series) values.push(...inWindow(s.points));
  const ceilingMax = ceiling ? Math.max(...inWindow(ceiling.points), -Infinity) : -Infinity;
  const ceilingOnScale = Number.isFinite(ceilingMax) && ceilingMax <= 2 * Math.max(...values.map(Math.abs), 1000);
  if (ceilingOnScale) values.push(ceilingMax);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1000) hi = lo + 1000;
  const step = niceStep(hi - lo, 6);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (width - PAD.left - PAD.right);
  const y = (v) => PAD.top + ((hi - v) / (hi - lo)) * (HEIGHT - PAD.top - PAD.bottom);

  // the container is the image (role="img", its label); the chart's table alternative gives the values
  const root = svg("svg", { width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, class: "chart-svg", "aria-hidden": "true" });
  const clip = svg("clipPath", { id: "plot-area" });
  clip.append(svg("rect", { x: PAD.left, y: PAD.top, width: width - PAD.left - PAD.right, height: HEIGHT - PAD.top - PAD.bottom }));
  root.append(clip);

  for (const b of bands) {
    const a = Math.max(t0, b.from);
    const z = Math.min(t1, b.to);
    if (z <= a) continue;
    root.append(svg("rect", { x: x(a), y: PAD.top, width: x(z) - x(a), height: HEIGHT - PAD.top - PAD.bottom, class: `band ${b.kind}` }));
    root.append(svg("text", { x: x(a) + 4, y: PAD.top + 12, class: "band-label" }, b.label));
  }
  for (let v = lo; v <= hi + step / 2; v += step) {
    root.append(svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v), class: v === 0 ? "axis zero" : "grid" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, kw(v, step < 1000 ? 1 : 0)));
  }
  root.append(svg("text", { x: 4, y: PAD.top - 3, class: "tick" }, "kW"));
  const hour = 3_600_000;
  const off = berlinOffsetMs(t0); // ticks on Berlin's 00:00, 03:00, ... (a DST switch shifts them by an hour)
  for (let t = Math.ceil((t0 + off) / (3 * hour)) * 3 * hour - off; t <= t1; t += 3 * hour) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: PAD.top, y2: HEIGHT - PAD.bottom, class: "grid" }));
    if (x(t) < width - PAD.right - 16) root.append(svg("text", { x: x(t), y: HEIGHT - 8, class: "tick", "text-anchor": "middle" }, hhmm(t)));
  }
  const plot = svg("g", { "clip-path": "url(#plot-area)" });
  if (ceilingOnScale) {
    const d = pathOf(ceiling.points, x, y, true, Infinity);
    plot.append(svg("path", { d, fill: "none", stroke: ceiling.color, "stroke-width": 1.5, "stroke-dasharray": DASH.dashdot, "data-series": "ceiling" }));
    const last = ceiling.points.filter(([t, v]) => Number.isFinite(v) && t <= t1).at(-1);
    plot.append(svg("text", { x: width - PAD.right - 4, y: y(last[1]) - 4, class: "cap-label", "text-anchor": "end", fill: ceiling.color }, ceiling.label));
  } else if (Number.isFinite(ceilingMax)) {
    root.append(svg("text", { x: width - PAD.right - 4, y: PAD.top - 3, class: "cap-label", "text-anchor": "end", fill: ceiling.color }, aboveScale(ceiling.label)));
  }
  for (const s of series) {
    const d = pathOf(s.points, x, y, s.step, s.stepMs || 900_000);
    if (!d) continue;
    plot.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2, "stroke-dasharray": DASH[s.style], "data-series": s.id }));
  }
  root.append(plot);
  if (nowMs >= t0 && nowMs <= t1) {
    root.append(svg("line", { x1: x(nowMs), x2: x(nowMs), y1: PAD.top - 4, y2: HEIGHT - PAD.bottom, class: "now" }));
    root.append(svg("text", { x: x(nowMs) + 4, y: HEIGHT - PAD.bottom - 4, class: "now-label" }, nowLabel));
  }
  const cursor = svg("line", { y1: PAD.top, y2: HEIGHT - PAD.bottom, class: "cursor", visibility: "hidden" });
  root.append(cursor);
  const tip = el("div", { class: "tip", hidden: true });
  root.addEventListener("mousemove", (ev) => {
    const box = root.getBoundingClientRect();
    const px = ev.clientX - box.left;
    const t = t0 + ((px - PAD.left) / (width - PAD.left - PAD.right)) * (t1 - t0);
    if (t < t0 || t > t1) return;
    cursor.setAttribute("x1", px);
    cursor.setAttribute("x2", px);
    cursor.setAttribute("visibility", "visible");
    const rows = series
      .map((s) => [s, valueAt(s, t)])
      .filter(([, v]) => v !== null)
      .map(([s, v]) => el("div", {}, el("span", { class: "tip-name", text: s.name }), ` ${kw(v)} kW`));
    tip.replaceChildren(el("div", { class: "tip-time", text: hhmm(t) }), ...rows);
    tip.hidden = rows.length === 0;
    tip.classList.toggle("left", px > width / 2);
  });
  root.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    tip.hidden = true;
  });
  container.replaceChildren(root, tip);
}

// The value a series shows at time t: the point whose span covers t (step) or the nearest within 15 min.
function valueAt(s, t) {
  let best = null;
  let bestDist = Infinity;
  for (const [pt, v] of s.points) {
    if (!Number.isFinite(v)) continue;
    const dist = s.step ? (t >= pt && t < pt + (s.stepMs || 900_000) ? 0 : Infinity) : Math.abs(pt - t);
    if (dist < bestDist) {
      best = v;
      bestDist = dist;
    }
  }
  return bestDist <= 900_000 ? best : null;
}
