// The operator's export schedule as CSV: "timestamp,export_kw", one quarter-hour per line, timestamps with offset.
import { t } from "./i18n.js";

const OFFSET = /(Z|[+-]\d{2}:?\d{2})$/i;
const QUARTER_MS = 15 * 60 * 1000;

export class ScheduleError extends Error {}

// Returns the API body {points: [{start, export_w}]}; throws ScheduleError naming the line of the first problem
// (in the page's language).
export function parseScheduleCsv(text) {
  const points = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    const n = i + 1;
    if (line === "" || line.startsWith("#")) return;
    const cells = line.split(/[,;]/).map((c) => c.trim());
    if (points.length === 0 && /^timestamp$/i.test(cells[0])) {
      if (!/^export_kw$/i.test(cells[1] || "")) {
        throw new ScheduleError(t("csv.header", { n }));
      }
      return;
    }
    if (cells.length !== 2) throw new ScheduleError(t("csv.two", { n }));
    const [stamp, value] = cells;
    if (!OFFSET.test(stamp)) {
      throw new ScheduleError(t("csv.offset", { n, stamp }));
    }
    const ms = Date.parse(stamp);
    if (!Number.isFinite(ms)) throw new ScheduleError(t("csv.iso", { n, stamp }));
    if (ms % QUARTER_MS !== 0) throw new ScheduleError(t("csv.quarter", { n, stamp }));
    const kw = Number(value);
    if (value === "" || !Number.isFinite(kw) || kw < 0) {
      throw new ScheduleError(t("csv.kw", { n, value }));
    }
    if (points.length && ms <= Date.parse(points[points.length - 1].start)) {
      throw new ScheduleError(t("csv.order", { n, stamp }));
    }
    points.push({ start: stamp, export_w: kw * 1000 });
  });
  if (points.length === 0) throw new ScheduleError(t("csv.empty"));
  return { points };
}

// An example for the page: the next four quarter-hours, in Berlin time (schedules are Berlin days).
export function exampleCsv(nowMs) {
  const first = Math.ceil(nowMs / QUARTER_MS) * QUARTER_MS;
  const rows = ["timestamp,export_kw"];
  for (let i = 0; i < 4; i++) rows.push(`${isoWithOffset(first + i * QUARTER_MS)},${[50, 50, 40, 40][i]}`);
  return rows.join("\n");
}

const berlinParts = new Intl.DateTimeFormat("en-CA", {
  timeZone: "Europe/Berlin", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  hourCycle: "h23", timeZoneName: "longOffset",
});

// ISO 8601 in Europe/Berlin local time with its offset, e.g. 2026-06-21T12:15:00+02:00.
export function isoWithOffset(ms) {
  const p = Object.fromEntries(berlinParts.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  const offset = p.timeZoneName === "GMT" ? "+00:00" : p.timeZoneName.replace("GMT", "");
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:00${offset}`;
}
