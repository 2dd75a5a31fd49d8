// The operator's export schedule as CSV: "timestamp,export_kw", one quarter-hour per line, timestamps with offset.
const OFFSET = /(Z|[+-]\d{2}:?\d{2})$/i;
const QUARTER_MS = 15 * 60 * 1000;

export class ScheduleError extends Error {}

// Returns the API body {points: [{start, export_w}]}; throws ScheduleError naming the line of the first problem.
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
        throw new ScheduleError(`line ${n}: the header must be "timestamp,export_kw"`);
      }
      return;
    }
    if (cells.length !== 2) throw new ScheduleError(`line ${n}: needs two values, timestamp and export_kw`);
    const [stamp, value] = cells;
    if (!OFFSET.test(stamp)) {
      throw new ScheduleError(`line ${n}: timestamp "${stamp}" needs its UTC offset, e.g. 2026-06-21T12:00:00+02:00`);
    }
    const ms = Date.parse(stamp);
    if (!Number.isFinite(ms)) throw new ScheduleError(`line ${n}: "${stamp}" is not an ISO 8601 timestamp`);
    if (ms % QUARTER_MS !== 0) throw new ScheduleError(`line ${n}: ${stamp} is not the start of a quarter-hour`);
    const kw = Number(value);
    if (value === "" || !Number.isFinite(kw) || kw < 0) {
      throw new ScheduleError(`line ${n}: export_kw "${value}" must be a number ≥ 0 (kW)`);
    }
    if (points.length && ms <= Date.parse(points[points.length - 1].start)) {
      throw new ScheduleError(`line ${n}: ${stamp} must be later than the line before`);
    }
    points.push({ start: stamp, export_w: kw * 1000 });
  });
  if (points.length === 0) throw new ScheduleError("the schedule has no quarter-hours; paste or choose a CSV file");
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
