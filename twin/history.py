"""A recorded day from the controller's own store, as the truth the twin's simulators serve (docs/twin.md).

`sparcs twin --history DATA_DIR` (or ``--store URL``) reads, for the fleet file's sites and the
Europe/Berlin day, what the controller stored (:mod:`controller.store`) and turns it into:

- each site's **load** from the meter balance at every stored sample:
  ``load_w = grid_w + pv_w + battery_w`` (docs/definitions.md "Signs": ``grid_w`` > 0 import,
  ``battery_w`` > 0 discharge);
- each site's **available PV** as a clearness, the multiplier of the site's clear-sky PV
  (:func:`optimizer.curves.clearsky_w_per_kwp` × kWp) that the simulators use in place of their
  seeded weather: the measured PV where it was not curtailed; where it may have been — PV at the
  limit in force (the devices' ``pv_limit_w``, or their ``wmax_w`` below the rating: the installer
  ceiling) or the meter's export at the feed-in cap while the inverter's own export limitation
  held it — the neighbours' clearness at that time (median of the sites not curtailed then) times
  the site's own ratio to them (median over its uncurtailed samples), never below what was
  measured; without uncurtailed neighbours, the site's own clearness between its uncurtailed
  samples;
- each battery's **start SoC** (the first stored ``soc``);
- the **prices** in force: per quarter-hour the day-ahead price of the latest stored plan made
  before it began (else the first plan that covered it);
- the **operator commands** (stages, §14a, pool limits, export schedules) as scenario actions at the
  time they were made, ending when they expired or were cancelled; relay states and pauses are
  named in the notes, not replayed;
- **faults**: a device whose stored poll has no good value was not answering; each such run of
  samples becomes an ``offline`` fault of the simulated device until its next good sample.

The replayed span is the day cut to the whole quarter-hours the history covers (a recording may be
shorter than a day). Units: W, Wh, Unix s; clearness a multiplier ≥ 0.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from sparcs.config.grid_rules import QUARTER_S, feed_in_cap_w
from sparcs.config.schema import PV_KINDS, FaultSpec, FleetConfig, SiteConfig
from sparcs.controller.commands import Para14aRequest, PoolLimitRequest, SchedulePoint, ScheduleRequest, StageRequest
from sparcs.controller.plan_codec import PackedPlan, unpack_plan
from sparcs.controller.store import Store, commands, plans, site_history, telemetry
from sparcs.optimizer.curves import PvGeometry, clearsky_w_per_kwp
from sparcs.simulators.weather import RECORDED_COLUMNS, recorded_file
from sparcs.twin.replay import Trace
from sparcs.twin.scenario import Action, Scenario

LIMIT_TOL = 0.01
"""PV within this share of the site's rating (and at least :data:`LIMIT_TOL_W`) of a limit sat at it."""
LIMIT_TOL_W = 20.0
NIGHT_W = 1.0
"""Below this clear-sky PV (W for the site's kWp) the clearness is not defined: taken as 0."""


class HistoryError(Exception):
    """A history that cannot be replayed; ``lines`` name the site, table or option and what to do."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class SiteDay:
    """One site's recorded samples (arrays of equal length, W; ``soc`` a fraction, NaN where not stored)."""

    t_s: np.ndarray
    pv_w: np.ndarray
    battery_w: np.ndarray
    grid_w: np.ndarray
    load_w: np.ndarray
    soc: np.ndarray
    limited: np.ndarray  # bool: PV may have been curtailed (see the module docstring)
    clear_w: np.ndarray  # clear-sky PV of the site's kWp, W
    clearness: np.ndarray  # available PV / clear_w (estimated where limited), ≥ 0

    @property
    def available_w(self) -> np.ndarray:
        return self.clear_w * self.clearness


@dataclass
class RecordedDay:
    """What `sparcs twin --history` replays: the span, each site's truth, commands, faults, prices."""

    source: str
    bounds: tuple[float, float]
    sites: dict[str, SiteDay]
    actions: list[Action] = field(default_factory=list)
    faults: list[FaultSpec] = field(default_factory=list)
    prices: list[tuple[float, float]] = field(default_factory=list)  # (quarter-hour start, EUR/MWh)
    notes: list[str] = field(default_factory=list)

    def estimated_share(self) -> float:
        """Share of the day's available PV energy that was estimated (limited samples) rather than measured."""
        total = sum(float(s.available_w.sum()) for s in self.sites.values())
        est = sum(float(s.available_w[s.limited].sum()) for s in self.sites.values())
        return est / total if total > 0 else 0.0

    def as_report(self) -> dict[str, object]:
        """The report's ``history`` entry (report.json)."""
        return {
            "source": self.source,
            "start": _iso(self.bounds[0]),
            "end": _iso(self.bounds[1]),
            "sites": len(self.sites),
            "samples": int(sum(s.t_s.size for s in self.sites.values())),
            "available_pv_estimated_share": self.estimated_share(),
            "commands": len(self.actions),
            "faults": len(self.faults),
            "prices_from_plans": len(self.prices),
        }


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def open_history(data_dir: Path | None, url: str | None) -> Store:
    """The recorded store, read as it is (never migrated): ``--store URL`` or ``--history DATA_DIR``."""
    if url is None and (data_dir is None or not (Path(data_dir) / "sparcs.db").is_file()):
        raise HistoryError([f"--history: no store in {data_dir} (sparcs.db); give the controller's --data-dir"])
    try:
        return Store(url, data_dir=data_dir, migrate_schema=False)
    except Exception as exc:  # a store that cannot be opened is the user's option, named with its reason
        raise HistoryError([f"--history/--store: cannot open the store: {type(exc).__name__}: {exc}"]) from None


def read_history(store: Store, cfg: FleetConfig, day: tuple[float, float]) -> RecordedDay:
    """The recorded day of ``cfg``'s sites within ``day`` (Unix s), cut to the quarter-hours it covers."""
    rows = _site_rows(store, day)
    missing = [s.id for s in cfg.sites if s.id not in rows]
    if missing:
        listed = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise HistoryError(
            [
                f"sites {listed}: no site history between {_iso(day[0])} and {_iso(day[1])}; replay a day they "
                "were recorded, or a fleet file without them"
            ]
        )
    first = min(r[0][0] for r in rows.values())
    last = max(r[-1][0] for r in rows.values())
    steps = [np.median(np.diff([x[0] for x in r])) for r in rows.values() if len(r) > 1]
    step = float(min(steps)) if steps else QUARTER_S
    start = day[0] + QUARTER_S * math.floor((first - day[0]) / QUARTER_S + 1e-6)
    end = min(day[1], day[0] + QUARTER_S * math.ceil((last + step - day[0]) / QUARTER_S - 1e-6))
    if end - start < QUARTER_S:
        raise HistoryError([f"the history covers less than a quarter-hour of {_iso(day[0])}; record longer"])
    bounds = (start, end)
    polls = _polls(store, cfg, bounds, {sid: np.array([x[0] for x in r]) for sid, r in rows.items()})
    sites = {
        s.id: _site_day(s, rows[s.id], polls.ceilings.get(s.id, {}), polls.unanswered.get(s.id, set()))
        for s in cfg.sites
    }
    sites = estimate_clearness(sites)
    out = RecordedDay(store.display_url, bounds, sites)
    out.faults = polls.faults
    out.actions, out.notes = _actions(store, bounds)
    out.prices = _prices(store, bounds)
    return out


def _site_rows(store: Store, day: tuple[float, float]) -> dict[str, list[tuple[float, ...]]]:
    h = site_history.c
    q = select(h.site_id, h.ts, h.pv_w, h.battery_w, h.grid_w, h.soc).where(h.ts >= day[0], h.ts < day[1])
    out: dict[str, list[tuple[float, ...]]] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(q.order_by(h.ts)):
            out.setdefault(r.site_id, []).append((r.ts, _f(r.pv_w), _f(r.battery_w), _f(r.grid_w), _f(r.soc)))
    return out


def _f(v: float | None) -> float:
    return np.nan if v is None else float(v)


def _good(values: dict, key: str) -> float | None:
    r = values.get(key)
    return float(r[0]) if r is not None and r[1] == "good" and r[0] is not None else None


@dataclass
class _Polls:
    """What the stored telemetry says per site and sample (index into the site's stored samples): each
    PV device's ceiling in force (W; inf = none known), and the samples a device did not answer at."""

    ceilings: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    unanswered: dict[str, set[int]] = field(default_factory=dict)
    faults: list[FaultSpec] = field(default_factory=list)


def _nearest(times: np.ndarray, ts: float) -> int | None:
    """The index of the stored sample a device's poll at ``ts`` belongs to (read within half a sample
    spacing, at most 30 s, of it), or None."""
    i = int(np.searchsorted(times, ts))
    best = min((j for j in (i - 1, i) if 0 <= j < times.size), key=lambda j: abs(times[j] - ts), default=None)
    step = float(np.median(np.diff(times))) if times.size > 1 else 60.0
    if best is None or abs(times[best] - ts) > min(30.0, step / 2):
        return None
    return best


def _polls(store: Store, cfg: FleetConfig, bounds: tuple[float, float], times: dict[str, np.ndarray]) -> _Polls:
    """One pass over the stored telemetry of ``bounds`` (``times``: each site's stored sample times): PV
    ceilings, unanswered polls, and an ``offline`` fault for each run of polls of a device without a good
    value (until its next good poll)."""
    site_of = {d.id: s.id for s in cfg.sites for d in s.devices}
    share = {s.id: max(1, sum(d.kind in PV_KINDS for d in s.devices)) for s in cfg.sites}
    pv_rating = {d.id: s.pv.rating_w / share[s.id] for s in cfg.sites for d in s.devices if d.kind in PV_KINDS}
    t = telemetry.c
    q = select(t.device_id, t.ts, t["values"]).where(t.ts >= bounds[0], t.ts < bounds[1]).order_by(t.ts)
    out = _Polls()
    down: dict[str, float] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(q):
            sid = site_of.get(r.device_id)
            if sid is None:
                continue
            answered = any(v[1] == "good" for v in r.values.values())
            if not answered:
                down.setdefault(r.device_id, r.ts)
            elif r.device_id in down:
                out.faults.append(_fault(r.device_id, down.pop(r.device_id), r.ts))
            k = _nearest(times[sid], r.ts)
            if k is None:
                continue
            if not answered:
                out.unanswered.setdefault(sid, set()).add(k)
            if r.device_id in pv_rating:
                limit, wmax = _good(r.values, "pv_limit_w"), _good(r.values, "wmax_w")
                ceiling = math.inf if limit is None else limit
                if wmax is not None and wmax < pv_rating[r.device_id] * (1 - LIMIT_TOL):
                    ceiling = min(ceiling, wmax)  # the installer's ceiling below the rating
                out.ceilings.setdefault(sid, {}).setdefault(k, {})[r.device_id] = ceiling
    out.faults += [_fault(dev, start, None) for dev, start in down.items()]
    return out


def _site_day(
    site: SiteConfig, rows: list[tuple[float, ...]], limits: dict[int, dict[str, float]], unanswered: set[int]
) -> SiteDay:
    """The site's samples; a power not stored, and the load where a device did not answer (the meter
    balance is incomplete there), linear between the samples around."""
    a = np.asarray(rows, dtype=float)
    t = a[:, 0]
    gap = np.isin(np.arange(t.size), sorted(unanswered))
    pv_w, battery_w, grid_w = (_fill(t, a[:, i]) for i in (1, 2, 3))
    soc = a[:, 4]
    balance = a[:, 3] + np.nan_to_num(a[:, 1]) + np.nan_to_num(a[:, 2])  # NaN where the meter was not read
    load_w = np.maximum(_fill(t, np.where(gap, np.nan, balance)), 0.0)
    ceiling = np.array([sum(limits[k].values()) if k in limits else math.inf for k in range(t.size)])
    tol = max(LIMIT_TOL_W, LIMIT_TOL * site.pv.rating_w)
    limited = pv_w >= ceiling - tol
    cap = feed_in_cap_w(site)
    if cap is not None:  # the inverter's own export limitation holds the meter at the cap
        limited |= (-grid_w >= cap - max(LIMIT_TOL_W, LIMIT_TOL * cap)) & ~np.isfinite(ceiling)
    loc, pvc = site.location, site.pv
    geom = PvGeometry(loc.lat, loc.lon, loc.altitude_m, pvc.tilt_deg, pvc.azimuth_deg)
    clear_w = clearsky_w_per_kwp(geom, t) * pvc.kwp
    day_time = clear_w >= NIGHT_W
    clearness = np.where(day_time, pv_w / np.where(day_time, clear_w, 1.0), 0.0)
    limited &= day_time
    return SiteDay(t, pv_w, battery_w, grid_w, load_w, soc, limited, clear_w, clearness)


def _fill(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Missing samples (NaN) linear between the stored ones; 0 without any."""
    ok = np.isfinite(v)
    if not ok.any():
        return np.zeros_like(v)
    return np.where(ok, v, np.interp(t, t[ok], v[ok]))


def estimate_clearness(sites: dict[str, SiteDay]) -> dict[str, SiteDay]:
    """Each site's clearness where it was limited, from its neighbours' (see the module docstring). Pure."""
    free: dict[float, list[float]] = {}  # time → clearness of sites not limited then
    for s in sites.values():
        for x, k, lim, c in zip(s.t_s, s.clearness, s.limited, s.clear_w, strict=True):
            if not lim and c >= NIGHT_W:
                free.setdefault(round(float(x), 3), []).append(float(k))
    median = {x: float(np.median(v)) for x, v in free.items()}
    out = {}
    for sid, s in sites.items():
        neigh = np.array([median.get(round(float(x), 3), np.nan) for x in s.t_s])
        own = ~s.limited & (s.clear_w >= NIGHT_W)
        ratios = s.clearness[own & (neigh > 0)] / neigh[own & (neigh > 0)]
        ratio = float(np.median(ratios)) if ratios.size else 1.0
        guess = neigh * ratio
        if own.any():
            between = np.interp(s.t_s, s.t_s[own], s.clearness[own])
            guess = np.where(np.isfinite(guess), guess, between)
        guess = np.where(np.isfinite(guess), guess, s.clearness)
        k = np.where(s.limited, np.maximum(s.clearness, guess), s.clearness)
        out[sid] = SiteDay(s.t_s, s.pv_w, s.battery_w, s.grid_w, s.load_w, s.soc, s.limited, s.clear_w, k)
    return out


def _fault(device: str, start: float, end: float | None) -> FaultSpec:
    return FaultSpec(
        device=device,
        mode="offline",
        start=dt.datetime.fromtimestamp(start, dt.UTC),
        end=None if end is None else dt.datetime.fromtimestamp(end, dt.UTC),
    )


def _actions(store: Store, bounds: tuple[float, float]) -> tuple[list[Action], list[str]]:
    """The stored operator commands in force within ``bounds`` as scenario actions, and notes on the rest."""
    c = commands.c
    q = (
        select(commands)
        .where(c.created_at < bounds[1], (c.expires_s.is_(None)) | (c.expires_s > bounds[0]))
        .order_by(c.created_at, c.id)
    )
    actions, notes = [], []
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        if r["cancelled_at"] is not None and r["cancelled_at"] <= bounds[0]:
            continue
        at = max(r["created_at"], bounds[0])
        end = min(x for x in (r["expires_s"], r["cancelled_at"], bounds[1]) if x is not None)
        action = _action(r, at, end)
        if action is None:
            notes.append(f"history: command {r['id']} ({r['kind']}, made {_iso(r['created_at'])}) is not replayed")
        elif end > at:
            actions.append(action)
    return actions, notes


def _action(r: dict, at: float, end: float) -> Action | None:
    p, when = r["params"], dt.datetime.fromtimestamp(at, dt.UTC)
    start = dt.datetime.fromtimestamp(max(r["start_s"], at), dt.UTC)
    expires = dt.datetime.fromtimestamp(end, dt.UTC)
    if r["kind"] == "stage":
        return Action(at=when, stage=StageRequest(stage=p["stage"], sites=p["sites"], start=start, expires_at=expires))
    if r["kind"] == "para14a":
        return Action(at=when, para14a=Para14aRequest(sites=p["sites"], start=start, expires_at=expires))
    if r["kind"] == "pool_limit":
        return Action(
            at=when, pool_limit=PoolLimitRequest(group=p.get("group"), limit_pct=p["limit_pct"], expires_at=expires)
        )
    if r["kind"] == "schedule":
        points = [
            SchedulePoint(start=dt.datetime.fromtimestamp(t, dt.UTC), export_w=w)
            for t, w in p["points_s"]
            if t < end and t + QUARTER_S > at
        ]
        return Action(at=when, schedule=ScheduleRequest(points=points)) if points else None
    return None


def _prices(store: Store, bounds: tuple[float, float]) -> list[tuple[float, float]]:
    """Per quarter-hour of ``bounds``: the price of the latest plan made before it began, else the first covering it."""
    p = plans.c
    q = select(p.created_at, p.header, p.site_ids, p.site_data).where(p.created_at < bounds[1]).order_by(p.created_at)
    with store.engine.connect() as conn:
        stored = [(r.created_at, unpack_plan(PackedPlan(r.header, r.site_ids, r.site_data))) for r in conn.execute(q)]
    out = []
    for t in bounds[0] + QUARTER_S * np.arange(round((bounds[1] - bounds[0]) / QUARTER_S)):
        mid = float(t) + QUARTER_S / 2
        before = [plan.price_at(mid) for made, plan in stored if made <= t]
        after = [plan.price_at(mid) for made, plan in stored if made > t]
        price = next((x for x in reversed(before) if x is not None), None)
        if price is None:
            price = next((x for x in after if x is not None), None)
        if price is not None:
            out.append((float(t), price))
    return out


def write_recorded(day: RecordedDay, folder: Path) -> None:
    """Each site's clearness and load as ``simulation.recorded_dir`` CSVs, and prices.csv (if any)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sid, s in day.sites.items():
        lines = [f"timestamp,{','.join(RECORDED_COLUMNS)}"]
        rows = zip(s.t_s, s.clearness, s.load_w, strict=True)
        lines += [f"{_iso(float(t))},{float(k)!r},{float(w)!r}" for t, k, w in rows]
        recorded_file(folder, sid).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if day.prices:
        lines = ["timestamp,eur_per_mwh"] + [f"{_iso(t)},{float(p)!r}" for t, p in day.prices]
        (folder / "prices.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def history_config(cfg: FleetConfig, day: RecordedDay, folder: Path) -> FleetConfig:
    """The fleet file as it ran that day: the recorded truth (written by :func:`write_recorded` into
    ``folder``), each battery's start SoC, the prices of the stored plans and the recorded faults."""
    out = cfg.model_copy(deep=True)
    sim = out.simulation
    if sim is None:
        raise HistoryError(["the fleet file has no 'simulation' section; the twin needs one (seed, variants)"])
    sim.recorded_dir = folder
    sim.faults = [*sim.faults, *day.faults]
    if day.prices:
        out.market.prices_csv = folder / "prices.csv"
    for site in out.sites:
        soc = day.sites[site.id].soc
        first = soc[np.isfinite(soc)]
        if site.battery is not None and first.size:
            b = site.battery
            site.battery = b.model_copy(update={"soc_initial": float(np.clip(first[0], b.soc_min, b.soc_max))})
    return out


def history_scenario(scenario: Scenario | None, day: RecordedDay, date: dt.date) -> Scenario:
    """The scenario of a replay from history: the recorded commands first, then the scenario file's actions."""
    base = scenario if scenario is not None else Scenario(date=date)
    recorded = day.actions if base.recorded_commands else []
    return base.model_copy(update={"actions": [*recorded, *base.actions]})


def recorded_trace(day: RecordedDay, cfg: FleetConfig) -> Trace:
    """The recorded day as a :class:`twin.replay.Trace` at the samples of the fleet's first site (powers;
    ``stored_wh`` from SoC × capacity; the other counters 0): what :mod:`twin.fidelity` compares the
    replay with."""
    ids = [s.id for s in cfg.sites]
    columns = {}
    for sid in ids:
        s, site = day.sites[sid], cfg.site(sid)
        cap_wh = site.battery.capacity_kwh * 1000.0 if site.battery else 0.0
        columns[sid] = {
            "t": s.t_s,
            "pv_w": s.pv_w,
            "battery_w": s.battery_w,
            "load_w": s.load_w,
            "grid_w": s.grid_w,
            "available_w": np.minimum(s.available_w, site.pv.rating_w),
            "stored_wh": _fill(s.t_s, s.soc) * cap_wh,
        }
    trace = Trace(ids)
    zero = dict.fromkeys(("pv_wh", "import_wh", "export_wh", "charged_wh", "discharged_wh"), 0.0)
    for t in columns[ids[0]]["t"]:
        sites = {}
        for sid, col in columns.items():
            i = min(int(np.searchsorted(col["t"], t - 1e-3)), col["t"].size - 1)
            sites[sid] = {k: float(v[i]) for k, v in col.items() if k != "t"} | zero
        trace.add({"t": float(t), "sites": sites})
    return trace


@dataclass(frozen=True)
class HistorySource:
    """Where `sparcs twin --history` reads: a data directory (``--history``) or a store URL (``--store``),
    and the strategy that ran that day (``--recorded-strategy``), whose replay the fidelity figure scores."""

    data_dir: Path | None = None
    url: str | None = None
    strategy: str = "optimizer"


def load_recorded(source: HistorySource, cfg: FleetConfig, day: tuple[float, float], folder: Path) -> RecordedDay:
    """Read the recorded day and write its truth into ``folder`` (:func:`write_recorded`). Raises
    HistoryError when ``folder`` lies inside the recorded data directory (a replay empties its own history)."""
    if source.data_dir is not None and Path(folder).resolve().is_relative_to(Path(source.data_dir).resolve()):
        raise HistoryError([f"--out: {folder} lies inside the recorded --history {source.data_dir}; write elsewhere"])
    store = open_history(source.data_dir, source.url)
    try:
        recorded = read_history(store, cfg, day)
    finally:
        store.close()
    write_recorded(recorded, folder)
    return recorded
