"""From fleet state to the plan in force: forecasts + commands → DispatchProblem → bounded solve → :class:`Plan`.

W, Unix s, EUR; signs as in docs/definitions.md "Signs". Prices come from the price source
(:mod:`sparcs.controller.prices`) and each site's tariff (:mod:`sparcs.config.tariffs`); where a
configured source has no day-ahead price and a site depends on it (dynamic import, market export,
the negative-price rule), the plan ends where the prices end, and with no price for the current
quarter-hour the sites are planned by the rules (docs/tariffs.md "Missing prices").
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from sparcs.config.grid_rules import installer_ceiling_w
from sparcs.config.schema import FleetConfig, SiteConfig
from sparcs.config.tariffs import BERLIN, SiteTariff, import_price_eur_per_kwh, site_tariff
from sparcs.controller.commands import CommandBook
from sparcs.controller.plan import Plan
from sparcs.controller.prices import PriceFileError, PriceSource, read_prices_csv
from sparcs.controller.state import FleetState
from sparcs.controller.store import LoadQuarters
from sparcs.controller.weather import WeatherService
from sparcs.optimizer.baselines import self_consumption_plan
from sparcs.optimizer.curves import PvGeometry, clearsky_w_per_kwp, h0_w_per_annual_kwh
from sparcs.optimizer.forecast import (
    TYPICAL_CLEARNESS,
    learn_clearness,
    learn_load_level,
    load_forecast,
    pv_baseline_w,
    pv_forecast,
)
from sparcs.optimizer.forecast_quality import ForecastQuality, QualityRow
from sparcs.optimizer.load_profile import LoadProfile, day_type_and_slot
from sparcs.optimizer.nowcast import FADE_S, city_ratios, correction, site_ratio, xy_km
from sparcs.optimizer.problem import (
    DispatchProblem,
    SitePrices,
    SiteProblem,
    period_grid,
    site_problem,
)
from sparcs.optimizer.solver import PlanningWorker

__all__ = ["FleetPlanner", "Measurements", "PriceFileError", "read_prices_csv", "site_prices"]

log = logging.getLogger("sparcs.planning")

SAMPLE_EVERY_S = 60.0  # measurements kept for learning: one per site and minute
PV_LEARN_WINDOW_S = 3600.0  # the nowcast from the last hour
LOAD_LEARN_WINDOW_S = 86_400.0  # load level from the last day
LOAD_HISTORY_S = 14 * 86_400.0
"""After a restart the load profiles learn the store's last two weeks (older days weigh less than half
as much as they fade, and the query stays a few seconds at 1,000 sites)."""
AT_LIMIT_SHARE = 0.95
"""PV at this share of its limit or more is held by the limit: its sample tells nothing of the clearness."""
CLIMATOLOGY_FADE_S = 3 * 3600.0
"""Nowcast fade where no weather forecast covers a period: the measurement is then all there is."""
MIN_BASELINE_W_PER_KWP = 50.0
"""Below this baseline output (dawn, dusk) ratios are noise and are not learnt from."""


class SiteSamples:
    """One site's samples, oldest first: time (Unix s), PV (W, NaN unknown), load (W, NaN unknown) and
    whether the PV was held by its limit; at most ``keep`` of them (the oldest dropped first).

    Columns of arrays, so that the samples since an instant are a slice found by bisection (a plan
    reads them several times per site); samples are appended in time order (``Measurements.observe``
    takes a sample only a minute or more after the last)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._cols = np.empty((3, 2 * keep))  # room for ``keep`` more before the oldest are moved out
        self._held = np.zeros(2 * keep, dtype=bool)
        self._lo = 0
        self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def last_ts(self) -> float | None:
        return float(self._cols[0, self._hi - 1]) if self._hi > self._lo else None

    def append(self, ts: float, pv_w: float, load_w: float, held: bool) -> None:
        if self._hi == self._cols.shape[1]:  # full: keep the newest ``keep - 1`` at the front
            n = self.keep - 1
            self._cols[:, :n] = self._cols[:, self._hi - n : self._hi]
            self._held[:n] = self._held[self._hi - n : self._hi]
            self._lo, self._hi = 0, n
        self._cols[:, self._hi] = (ts, pv_w, load_w)
        self._held[self._hi] = held
        self._hi += 1
        if self._hi - self._lo > self.keep:
            self._lo += 1

    def since(self, start_s: float, end_s: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the columns (time, PV, load, held) of the samples in [start_s, end_s)."""
        ts = self._cols[0, self._lo : self._hi]
        i, j = self._lo + np.searchsorted(ts, [start_s, end_s], side="left")
        t, pv, load = self._cols[:, i:j].copy()
        return t, pv, load, self._held[i:j].copy()


class Measurements:
    """Per site, one sample a minute of PV (W, with a flag: held by its limit) and load (W), for the forecasts."""

    def __init__(self, site_ids: list[str]):
        keep = int(LOAD_LEARN_WINDOW_S / SAMPLE_EVERY_S) + 1
        self.samples: dict[str, SiteSamples] = {s: SiteSamples(keep) for s in site_ids}

    def observe(self, state: FleetState) -> None:
        for sid, s in state.sites.items():
            buf = self.samples.get(sid)
            if buf is None or ((last := buf.last_ts) is not None and state.ts - last < SAMPLE_EVERY_S):
                continue
            at_limit = s.pv_limit_w is not None and s.pv_w is not None and s.pv_w >= AT_LIMIT_SHARE * s.pv_limit_w
            pv = np.nan if s.pv_w is None else s.pv_w
            load = np.nan if s.load_w is None else s.load_w
            buf.append(state.ts, pv, load, at_limit)

    def period_mean_w(self, kind: str, site_id: str, start_s: float, end_s: float) -> float:
        """Mean measured PV or load (W) over [start, end) of the samples that have it; NaN without any,
        and for PV if one was held."""
        _, pv, load, held = self.samples[site_id].since(start_s, end_s)
        if kind == "pv" and held.any():
            return float("nan")
        w = pv if kind == "pv" else load
        known = w[~np.isnan(w)]
        return float(known.mean()) if known.size else float("nan")

    def arrays(self, site_id: str, since_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Time (Unix s), PV (W), load (W) and held-by-limit of the site's samples from ``since_s`` on."""
        return self.samples[site_id].since(since_s)


TERMINAL_WINDOW_S = 86_400.0
"""Stored energy left at a plan's end is valued at the mean import price of the 24 hours ending there."""


def site_prices(
    tariff: SiteTariff,
    starts_s: np.ndarray,
    day_ahead_eur_per_mwh: np.ndarray,
    window_starts_s: np.ndarray | None = None,
    window_day_ahead_eur_per_mwh: np.ndarray | None = None,
) -> SitePrices:
    """A site's tariff over the plan periods starting at ``starts_s`` (config/tariffs.py); the
    negative-price rule is applied by the optimizer from the problem's day-ahead prices.

    The terminal value is the mean import price over the quarter-hours ``window_starts_s`` (those
    with a known price), so that a plan late in the day values what it leaves in the battery as a
    plan in the morning does, and as the twin's score does; without a window, the plan's mean."""
    terminal = None
    if window_starts_s is not None and window_day_ahead_eur_per_mwh is not None:
        window = import_price_eur_per_kwh(tariff, window_starts_s, window_day_ahead_eur_per_mwh)
        if np.isfinite(window).any():
            terminal = float(np.nanmean(window))
    return SitePrices(
        import_price_eur_per_kwh(tariff, starts_s, day_ahead_eur_per_mwh),
        tariff.export.eur_per_kwh,
        tariff.market_export,
        terminal,
    )


def _plannable(site: SiteConfig, state: FleetState) -> bool:
    """A site the plan can steer: every device fresh, and its PV or its battery controlled."""
    s = state.sites[site.id]
    return s.controllable and (s.pv_controlled or (site.battery is not None and s.battery_controlled))


class FleetPlanner:
    """Builds the dispatch problem of the controllable sites and solves it in the bounded solver process."""

    def __init__(
        self,
        cfg: FleetConfig,
        worker: PlanningWorker | None = None,
        horizon_end_s: float | None = None,
        weather: WeatherService | None = None,
        prices: PriceSource | None = None,
        load_history: Callable[[], LoadQuarters] | None = None,
    ):
        """``horizon_end_s`` (Unix s, a quarter-hour boundary): plans end there at the latest, instead of
        ``dispatch.horizon_h`` ahead (the twin ends them with the day it scores). ``weather``: the
        weather forecast the PV forecast rests on (None: clear sky × typical clearness). ``prices``:
        the price source (shared with the controller); default one of its own. A broken price file
        raises PriceFileError here (start-up); later the prices read before stay in use.
        ``load_history``: reads the store's load per site and quarter-hour (:data:`LOAD_HISTORY_S`
        back), so that a restart does not send every site back to H0; it runs in a thread of its own
        (at 1,000 sites the query takes tens of seconds) and the profiles learn it at the first plan
        after it is done; a failed read is logged and the profiles start from H0."""
        self.cfg = cfg
        self.worker = worker or PlanningWorker()
        self.horizon_end_s = horizon_end_s
        self.weather = weather
        self.geometry = {
            s.id: PvGeometry(s.location.lat, s.location.lon, s.location.altitude_m, s.pv.tilt_deg, s.pv.azimuth_deg)
            for s in cfg.sites
        }
        x, y = xy_km(np.array([s.location.lat for s in cfg.sites]), np.array([s.location.lon for s in cfg.sites]))
        self.xy_km = {s.id: (float(x[i]), float(y[i])) for i, s in enumerate(cfg.sites)}
        self.pv_forecast_w: dict[str, np.ndarray] = {}
        self.load_forecast_w: dict[str, np.ndarray] = {}
        self.load_profiles = {s.id: LoadProfile() for s in cfg.sites}
        self._stored_load: Future[LoadQuarters] | None = None
        if load_history is not None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="load-history")
            self._stored_load = pool.submit(load_history)
            pool.shutdown(wait=False)  # the thread ends with the read
        self._mid_slots: tuple[np.ndarray, np.ndarray] | None = None  # of the plan being built
        self._mid_h0: np.ndarray | None = None
        self.quality = ForecastQuality(
            {
                "pv": {s.id: s.pv.kwp * 1000.0 for s in cfg.sites},
                "load": {s.id: s.load.annual_kwh * 1000.0 / 8760.0 for s in cfg.sites},
            }
        )
        self.measurements = Measurements([s.id for s in cfg.sites])
        self.prices = prices or PriceSource(cfg.market)
        try:
            self.prices.load_file()
        except PriceFileError as exc:
            raise PriceFileError(f"market.prices_csv: {exc}") from None
        self.tariffs = {s.id: site_tariff(cfg, s) for s in cfg.sites}
        self._site_prices: dict[str, SitePrices] = {}
        self._no_price_now = False
        self.price_note = ""  # what the last problem's prices lacked, for the plan's reason

    def observe(self, state: FleetState) -> None:
        self.measurements.observe(state)
        self.quality.evaluate(state.ts, self.measurements.period_mean_w)

    def take_stored_load(self, wait: bool = False) -> None:
        """Learn the stored load history once it has been read (``wait``: until then)."""
        future = self._stored_load
        if future is None or not (wait or future.done()):
            return
        self._stored_load = None
        try:
            stored = future.result()
        except (SQLAlchemyError, OSError) as exc:  # a failing store must not stop planning
            log.warning("load history not read from the store (%s): load profiles start from H0", exc)
            return
        if not stored.site_ids:
            return
        per_row = self.cfg.storage.telemetry_resolution_s / SAMPLE_EVERY_S
        start, mean, rows = (np.asarray(a, dtype=float) for a in (stored.start_s, stored.mean_w, stored.rows))
        # one day type/slot lookup per stored quarter-hour (the sites share them), one pass per site
        times, at = np.unique(start, return_inverse=True)
        kind, slot = day_type_and_slot(times)
        order = np.argsort(np.asarray(stored.site_ids, dtype=str), kind="stable")
        ids = np.asarray(stored.site_ids, dtype=str)[order]
        firsts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for part in np.split(order, firsts[1:]):
            sid = stored.site_ids[part[0]]
            if sid in self.load_profiles:
                # stored quarters end before the restart, so the samples kept since are learnt after them
                self.load_profiles[sid] = fresh = LoadProfile()
                fresh.learn_history(start[part], mean[part], rows[part] * per_row, (kind[at[part]], slot[at[part]]))

    def _learn_load(self, sites: list[SiteConfig], now_s: float) -> None:
        """Feed each site's load profile the samples it has not seen (one day type/slot lookup per poll time)."""
        self.take_stored_load()
        fresh = {}
        for site in sites:
            profile = self.load_profiles[site.id]
            t, _, load, _ = self.measurements.arrays(
                site.id, -np.inf if profile.last_s is None else profile.last_s + 1e-3
            )
            if t.size:
                fresh[site.id] = (t, load)
        if not fresh:
            return
        times = np.unique(np.concatenate([t for t, _ in fresh.values()]))
        kind, slot = day_type_and_slot(times)
        for sid, (t, load) in fresh.items():
            i = np.searchsorted(times, t)
            self.load_profiles[sid].learn(t, load, (kind[i], slot[i]))

    def _issue_quality(self, sites: list[SiteConfig], now_s: float, grid) -> None:
        """Keep this plan's PV and load forecasts with persistence and climatology (docs/forecasts.md)."""
        if not self.quality.due("pv", now_s):
            return
        starts, ends, mid = grid
        pv_persist, pv_clim, load_persist, load_clim = {}, {}, {}, {}
        for site in sites:
            geom = self.geometry[site.id]
            t, pv, load, held = self.measurements.arrays(site.id, now_s - PV_LEARN_WINDOW_S)
            k = learn_clearness(geom, site.pv.kwp, t, pv, held) if t.size else None
            # smart persistence: the clearness seen now, held over the whole horizon
            pv_persist[site.id] = pv_forecast(geom, site.pv.kwp, now_s, mid, k, decay_s=np.inf).values
            pv_clim[site.id] = clearsky_w_per_kwp(geom, mid) * site.pv.kwp * TYPICAL_CLEARNESS
            recent = load[np.isfinite(load)] if t.size else load
            load_clim[site.id] = load_forecast(site.load.annual_kwh, mid).values
            load_persist[site.id] = np.full(mid.shape, recent.mean()) if recent.size else load_clim[site.id]
        pv_fc = {s.id: self.pv_forecast_w[s.id] for s in sites}
        self.quality.issue("pv", now_s, starts, ends, pv_fc, pv_persist, pv_clim)
        load_fc = {s.id: self.load_forecast_w[s.id] for s in sites if s.id in self.load_forecast_w}
        if load_fc:
            self.quality.issue("load", now_s, starts, ends, load_fc, load_persist, load_clim)

    def restore(self, plan: Plan) -> None:
        """Hand a stored plan (after a restart) to the solver worker as its last good plan, so that a
        failing first solve falls back to it, shifted, rather than to the rules."""
        if plan.optimal:
            self.worker.last_good = plan.to_dispatch({s.id: installer_ceiling_w(s) for s in self.cfg.sites})

    def _baseline(self, site: SiteConfig, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The site's PV baseline (W) at ``t_s`` and the mask of times a weather forecast covers."""
        got = self.weather.at(site.location.lat, site.location.lon, t_s) if self.weather is not None else None
        weather, covered = got if got is not None else (None, np.zeros(np.shape(t_s), dtype=bool))
        return pv_baseline_w(self.geometry[site.id], site.pv.kwp, t_s, weather, covered), covered

    def pv_forecasts(self, sites: list[SiteConfig], now_s: float, mid_s: np.ndarray) -> dict[str, np.ndarray]:
        """PV forecast (W) per site at the period midpoints: baseline × the city-wide nowcast (docs/forecasts.md)."""
        ratios = np.full(len(sites), np.nan)
        samples = np.zeros(len(sites))
        for i, site in enumerate(sites):
            t, pv, _, held = self.measurements.arrays(site.id, now_s - PV_LEARN_WINDOW_S)
            if t.size:
                base, _ = self._baseline(site, t)
                usable = ~held & (base >= MIN_BASELINE_W_PER_KWP * site.pv.kwp)
                ratios[i], samples[i] = site_ratio(pv, base, usable)
        x = np.array([self.xy_km[s.id][0] for s in sites])
        y = np.array([self.xy_km[s.id][1] for s in sites])
        nowcast = city_ratios(x, y, ratios, samples, self.cfg.forecast.nowcast_radius_km)
        out = {}
        lead = mid_s - now_s
        for i, site in enumerate(sites):
            base, covered = self._baseline(site, mid_s)
            out[site.id] = base * correction(nowcast[i], lead, np.where(covered, FADE_S, CLIMATOLOGY_FADE_S))
        return out

    def _site(self, site: SiteConfig, state: FleetState, commands: CommandBook, now_s: float, grid) -> SiteProblem:
        starts, ends, mid = grid
        t, _, load, _ = self.measurements.arrays(site.id, now_s - LOAD_LEARN_WINDOW_S)
        pv_fc = self.pv_forecast_w[site.id]
        level = learn_load_level(site.load.annual_kwh, t, load)
        profile = self.load_profiles[site.id]
        load_fc = np.minimum(
            profile.forecast_w(mid, site.load.annual_kwh, level, self._mid_slots, self._mid_h0),
            site.grid.connection_limit_w,
        )
        self.load_forecast_w[site.id] = load_fc
        ceiling, dimmed = commands.period_series(site.id, starts, ends)
        if not state.sites[site.id].battery_controlled:
            site = site.model_copy(update={"battery": None})  # it runs on its own: not offered to the plan
        sp = site_problem(
            site,
            pv_fc,
            load_fc,
            soc_now=state.sites[site.id].soc,
            stage_ceiling_w=ceiling,
            para14a=dimmed,
            prices=self.site_prices(site.id),
            pv_curtailable=state.sites[site.id].pv_controlled,
        )
        # A pool limit over the horizon holds for the whole plan (never looser); a re-plan after it
        # ends releases it (config/grid_rules.py pool_share_w).
        pool_w = commands.export_limit_w(site.id, float(starts[0]), float(ends[-1]))
        if pool_w is not None:
            sp.feed_in_cap_w = pool_w if sp.feed_in_cap_w is None else min(sp.feed_in_cap_w, pool_w)
        return sp

    def site_prices(self, site_id: str) -> SitePrices:
        """The tariff of ``site_id`` over the periods of the problem being built."""
        return self._site_prices[site_id]

    def _depends_on_day_ahead(self, site: SiteConfig) -> bool:
        return self.tariffs[site.id].needs_day_ahead or site.grid.negative_price_rule

    def problem(self, state: FleetState, commands: CommandBook, now_s: float) -> DispatchProblem | None:
        """The problem of the controllable sites; None if none is.

        A site with a stale device leaves the plan. A site whose PV is not controlled (the fleet file's
        ``control``, the run-time switch, or a role the writer refuses: drivers/writer.py
        ``uncontrolled_roles``) is planned with its PV fixed at the forecast (``pv_curtailable``
        False: no PV limit is planned, its battery keeps the cap where it can; docs/definitions.md "Sites
        whose PV cannot be curtailed"); it leaves the plan only when it has no controlled battery
        either. A site whose battery is not controlled is planned without it (the battery runs on
        its own and its flexibility is not offered)."""
        start_s, period_s = period_grid(now_s, self.cfg.dispatch.horizon_h, self.horizon_end_s)
        planned = [s for s in self.cfg.sites if s.id in state.sites and _plannable(s, state)]
        if not planned:
            return None
        if self.cfg.market.prices_csv is not None:
            self.prices.refresh(now_s)  # a file: a cheap check of its modification time
        starts = start_s + np.concatenate([[0.0], np.cumsum(period_s)[:-1]])
        prices = self.prices.prices(starts + period_s / 2)
        self._no_price_now = False
        self.price_note = ""
        if any(self._depends_on_day_ahead(s) for s in planned) and np.isnan(prices).any():
            unknown = np.isnan(prices)
            if unknown[0]:
                self._no_price_now = True
                self.price_note = f"no day-ahead price for the current quarter-hour from {self.prices.source}"
            else:
                keep = int(np.argmax(unknown))
                period_s, prices, starts = period_s[:keep], prices[:keep], starts[:keep]
                until = dt.datetime.fromtimestamp(float(starts[-1] + period_s[-1]), BERLIN)
                self.price_note = f"day-ahead prices known until {until.isoformat()}: the plan ends there"
        # With no price now the rules plan; its cost is scored without the day-ahead part.
        tariff_prices = np.nan_to_num(prices, nan=0.0) if self._no_price_now else prices
        end_s = float(starts[-1] + period_s[-1])
        window = np.arange(end_s - TERMINAL_WINDOW_S, end_s, 900.0)
        window_prices = self.prices.prices(window + 450.0)
        self._site_prices = {}
        for s in planned:
            p = site_prices(self.tariffs[s.id], starts, tariff_prices, window, window_prices)
            if self._no_price_now and p.direct_marketing:
                p = SitePrices(p.import_eur_per_kwh, 0.0, False, p.terminal_eur_per_kwh)
            self._site_prices[s.id] = p
        ends = starts + period_s
        grid = (starts, ends, starts + period_s / 2)
        self.pv_forecast_w = self.pv_forecasts(planned, now_s, grid[2])
        self._learn_load(planned, now_s)
        self._mid_slots, self._mid_h0 = day_type_and_slot(grid[2]), h0_w_per_annual_kwh(grid[2])
        sites = [self._site(s, state, commands, now_s, grid) for s in planned]
        self._issue_quality(planned, now_s, grid)
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
        if self.prices.due(now_s) and self.cfg.market.prices_csv is None:
            await asyncio.to_thread(self.prices.refresh, now_s)  # a URL or ENTSO-E: network I/O
        if self.weather is not None:
            await self.weather.ensure(now_s)
        problem = self.problem(state, commands, now_s)
        if problem is None:
            return None
        if self._no_price_now:
            plan = self_consumption_plan(problem, "fallback_rules", f"{self.price_note}: planned by the rules")
        else:
            plan = await asyncio.to_thread(self.worker.plan, problem)
            if self.price_note:
                plan = dataclasses.replace(plan, reason=f"{plan.reason}; {self.price_note}".lstrip("; "))
        return Plan.from_dispatch(plan, problem)

    def forecast_quality(self) -> list[QualityRow]:
        """How the PV and load forecasts fared so far, per kind and lead band (docs/forecasts.md)."""
        return self.quality.rows()

    def start(self) -> None:
        """Start the solver process now (else the first dispatch starts it); blocks for its start-up."""
        self.worker.start()

    def close(self) -> None:
        self.worker.close()
