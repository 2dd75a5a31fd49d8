"""From fleet state to the plan in force: forecasts + commands → DispatchProblem → bounded solve → :class:`Plan`.

W, Unix s, EUR; signs as in docs/definitions.md "Signs".
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import logging
from collections import deque
from pathlib import Path

import numpy as np

from sparcs.config.grid_rules import installer_ceiling_w
from sparcs.config.schema import FleetConfig, SiteConfig
from sparcs.controller.commands import CommandBook
from sparcs.controller.plan import Plan
from sparcs.controller.state import FleetState
from sparcs.optimizer.curves import PvGeometry
from sparcs.optimizer.forecast import learn_clearness, learn_load_level, load_forecast, price_forecast, pv_forecast
from sparcs.optimizer.problem import (
    DispatchProblem,
    SiteProblem,
    period_grid,
    site_problem,
)
from sparcs.optimizer.solver import PlanningWorker

log = logging.getLogger("sparcs.planning")

SAMPLE_EVERY_S = 60.0  # measurements kept for learning: one per site and minute
PV_LEARN_WINDOW_S = 3600.0  # clearness from the last hour
LOAD_LEARN_WINDOW_S = 86_400.0  # load level from the last day
AT_LIMIT_SHARE = 0.95
"""PV at this share of its limit or more is held by the limit: its sample tells nothing of the clearness."""


class PriceFileError(ValueError):
    pass


def read_prices_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Day-ahead prices: CSV with columns timestamp (with offset), eur_per_mwh → (Unix s, EUR/MWh)."""
    ts, vals = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                t = dt.datetime.fromisoformat(row["timestamp"])
                v = float(row["eur_per_mwh"])
            except (KeyError, TypeError, ValueError) as exc:
                raise PriceFileError(f"{path}:{n}: needs columns timestamp,eur_per_mwh ({exc})") from None
            if t.tzinfo is None:
                raise PriceFileError(f"{path}:{n}: timestamp {row['timestamp']} needs a UTC offset")
            ts.append(t.timestamp())
            vals.append(v)
    return np.array(ts), np.array(vals)


class Measurements:
    """Per site, one sample a minute of PV (W, with a flag: held by its limit) and load (W), for the forecasts."""

    def __init__(self, site_ids: list[str]):
        maxlen = int(LOAD_LEARN_WINDOW_S / SAMPLE_EVERY_S) + 1
        self.samples: dict[str, deque[tuple[float, float, float, bool]]] = {s: deque(maxlen=maxlen) for s in site_ids}

    def observe(self, state: FleetState) -> None:
        for sid, s in state.sites.items():
            buf = self.samples.get(sid)
            if buf is None or (buf and state.ts - buf[-1][0] < SAMPLE_EVERY_S):
                continue
            at_limit = s.pv_limit_w is not None and s.pv_w is not None and s.pv_w >= AT_LIMIT_SHARE * s.pv_limit_w
            pv = np.nan if s.pv_w is None else s.pv_w
            load = np.nan if s.load_w is None else s.load_w
            buf.append((state.ts, pv, load, at_limit))

    def arrays(self, site_id: str, since_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = [r for r in self.samples[site_id] if r[0] >= since_s]
        if not rows:
            empty = np.zeros(0)
            return empty, empty, empty, np.zeros(0, dtype=bool)
        a = np.array([r[:3] for r in rows], dtype=float)
        return a[:, 0], a[:, 1], a[:, 2], np.array([r[3] for r in rows], dtype=bool)


class FleetPlanner:
    """Builds the dispatch problem of the controllable sites and solves it in the bounded solver process."""

    def __init__(self, cfg: FleetConfig, worker: PlanningWorker | None = None, horizon_end_s: float | None = None):
        """``horizon_end_s`` (Unix s, a quarter-hour boundary): plans end there at the latest, instead of
        ``dispatch.horizon_h`` ahead (the twin ends them with the day it scores)."""
        self.cfg = cfg
        self.worker = worker or PlanningWorker()
        self.horizon_end_s = horizon_end_s
        self.measurements = Measurements([s.id for s in cfg.sites])
        self.prices: tuple[np.ndarray, np.ndarray] | None = None
        self._prices_mtime: float | None = None
        self.refresh_prices(strict=True)

    def refresh_prices(self, *, strict: bool = False) -> None:
        """(Re)read ``market.prices_csv`` when it changed, so a daily price file is picked up while running.

        ``strict``: a broken file raises PriceFileError (start-up); later it is logged and the prices
        read before stay in use.
        """
        path = self.cfg.market.prices_csv
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
            if mtime == self._prices_mtime:
                return
            self.prices, self._prices_mtime = read_prices_csv(path), mtime
        except (OSError, PriceFileError) as exc:
            if strict:
                raise PriceFileError(f"market.prices_csv: {exc}") from None
            log.warning("market.prices_csv not reloaded, the prices read before stay in use: %s", exc)

    def observe(self, state: FleetState) -> None:
        self.measurements.observe(state)

    def restore(self, plan: Plan) -> None:
        """Hand a stored plan (after a restart) to the solver worker as its last good plan, so that a
        failing first solve falls back to it, shifted, rather than to the rules."""
        if plan.optimal:
            self.worker.last_good = plan.to_dispatch({s.id: installer_ceiling_w(s) for s in self.cfg.sites})

    def _site(self, site: SiteConfig, state: FleetState, commands: CommandBook, now_s: float, grid) -> SiteProblem:
        starts, ends, mid = grid
        t, pv, load, curtailed = self.measurements.arrays(site.id, now_s - LOAD_LEARN_WINDOW_S)
        recent = t >= now_s - PV_LEARN_WINDOW_S
        geom = PvGeometry(
            site.location.lat, site.location.lon, site.location.altitude_m, site.pv.tilt_deg, site.pv.azimuth_deg
        )
        k = learn_clearness(geom, site.pv.kwp, t[recent], pv[recent], curtailed[recent]) if recent.any() else None
        pv_fc = pv_forecast(geom, site.pv.kwp, now_s, mid, k).values
        level = learn_load_level(site.load.annual_kwh, t, load)
        load_fc = load_forecast(site.load.annual_kwh, mid, level, site.grid.connection_limit_w).values
        ceiling, dimmed = commands.period_series(site.id, starts, ends)
        if not state.sites[site.id].battery_controlled:
            site = site.model_copy(update={"battery": None})  # it runs on its own: not offered to the plan
        return site_problem(
            site, pv_fc, load_fc, soc_now=state.sites[site.id].soc, stage_ceiling_w=ceiling, para14a=dimmed
        )

    def problem(self, state: FleetState, commands: CommandBook, now_s: float) -> DispatchProblem | None:
        """The problem of the controllable sites; None if none is.

        A site with a stale device leaves the plan, and so does a site whose PV is not controlled (the
        fleet file's ``control`` or the run-time switch): a plan of it would count on curtailing PV the
        writer may not limit. A site whose battery is not controlled is planned without it (the
        battery runs on its own and its flexibility is not offered)."""
        start_s, period_s = period_grid(now_s, self.cfg.dispatch.horizon_h, self.horizon_end_s)
        starts = start_s + np.concatenate([[0.0], np.cumsum(period_s)[:-1]])
        ends = starts + period_s
        grid = (starts, ends, starts + period_s / 2)
        sites = [
            self._site(s, state, commands, now_s, grid)
            for s in self.cfg.sites
            if s.id in state.sites and state.sites[s.id].controllable and state.sites[s.id].pv_controlled
        ]
        if not sites:
            return None
        self.refresh_prices()
        series = self.prices or (None, None)
        prices = price_forecast(grid[2], series[0], series[1], self.cfg.market.flat_price_eur_per_mwh).values
        schedule = commands.schedule_series(starts)
        return DispatchProblem(
            start_s=start_s,
            period_s=period_s,
            price_eur_per_mwh=prices,
            sites=sites,
            export_schedule_w=None if np.isnan(schedule).all() else schedule,
            weights=self.cfg.dispatch,
            para14a_limit_w=self.cfg.grid.para14a_limit_w,
        )

    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> Plan | None:
        """Plan in the solver process (bounded; it falls back by itself) without blocking the event loop."""
        problem = self.problem(state, commands, now_s)
        if problem is None:
            return None
        plan = await asyncio.to_thread(self.worker.plan, problem)
        return Plan.from_dispatch(plan, problem)

    def start(self) -> None:
        """Start the solver process now (else the first dispatch starts it); blocks for its start-up."""
        self.worker.start()

    def close(self) -> None:
        self.worker.close()
