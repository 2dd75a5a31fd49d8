"""The plan in force: what the controller planned for every site and period, and the forecasts it
was planned with. One typed record shared by the cycle, the setpoints, the store and the API; it is
turned into JSON only at the API edge (:meth:`Plan.to_record` / :meth:`Plan.from_record`) and packed at
the store's (:mod:`sparcs.controller.plan_codec`).

Per site and period (docs/definitions.md "Signs", "Units"): ``pv_limit_w`` the PV limit to write
(W; NaN where the plan does not curtail: the inverters are released to their installer
configuration), ``battery_w`` (+ discharge / − charge), ``grid_w`` (+ import / − export), ``pv_w``,
``soc`` (fractions; one more value than periods: column 0 is the SoC at the start). Fleet
``export_w`` per period: net export at the meters (Σ −grid_w). Times Unix s, money EUR.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from sparcs.optimizer.problem import DispatchPlan, DispatchProblem, ObjectiveParts, PlanPath

RELEASE_TOL_W = 1.0
"""A planned PV limit this close to the installer ceiling is no limit: the inverter is released; one
this close to the PV the plan forecasts holds nothing back (controller/setpoints.py
``limit_shapes_surplus``). W."""


@dataclass(frozen=True)
class PlannedSetpoint:
    """A site's planned setpoint for one period: PV limit (W, summed over its inverters; None =
    release) and battery power (W, + discharge; None = release); the grid exchange at the meter the
    plan expects with them (W, + import) and the PV power its forecast expects the inverters could
    give without a limit (W ≥ 0); None = not known (e.g. a plan from an older central)."""

    pv_limit_w: float | None
    battery_w: float | None
    grid_w: float | None = None
    pv_available_w: float | None = None


@dataclass(frozen=True)
class SitePlan:
    """One site's plan and forecasts per period (see the module docstring); NaN = none."""

    pv_w: np.ndarray
    pv_limit_w: np.ndarray
    battery_w: np.ndarray
    grid_w: np.ndarray
    soc: np.ndarray
    pv_available_w: np.ndarray
    load_w: np.ndarray


@dataclass(frozen=True)
class PlanTimings:
    """Wall-clock seconds of the plan's phases."""

    build_s: float = 0.0
    solve_s: float = 0.0
    split_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    """The capped plan of the controllable sites and the forecasts it was made with."""

    start_s: float
    period_s: np.ndarray
    path: PlanPath
    reason: str
    objective_eur: float
    parts: ObjectiveParts
    soc_end_kwh: float
    timings: PlanTimings
    export_w: np.ndarray
    price_eur_per_mwh: np.ndarray
    export_schedule_w: np.ndarray | None
    sites: dict[str, SitePlan]

    @property
    def optimal(self) -> bool:
        return self.path == "optimal"

    @property
    def end_s(self) -> float:
        return self.start_s + float(self.period_s.sum())

    @cached_property
    def _period_ends_s(self) -> list[float]:
        """Where each period ends (Unix s): the plan is asked for its period once per site and poll."""
        return (self.start_s + np.cumsum(self.period_s)).tolist()

    def period_at(self, t: float) -> int | None:
        """Index of the period containing ``t`` (Unix s), or None outside the plan."""
        if t < self.start_s:
            return None
        i = bisect.bisect_right(self._period_ends_s, t)
        return i if i < len(self.period_s) else None

    def setpoint(self, site_id: str, t: float) -> PlannedSetpoint | None:
        """The site's planned setpoint at ``t``; None when the site is not in the plan or ``t`` outside it."""
        site = self.sites.get(site_id)
        i = self.period_at(t)
        if site is None or i is None:
            return None
        return PlannedSetpoint(
            _opt(site.pv_limit_w[i]), _opt(site.battery_w[i]), _opt(site.grid_w[i]), _opt(site.pv_available_w[i])
        )

    def pv_available_at(self, site_id: str, t: float) -> float | None:
        """The PV power (W ≥ 0) the plan's forecast expects the site's inverters could give
        without a limit in the period containing ``t``; None when the site is not in the plan or
        ``t`` outside it."""
        site = self.sites.get(site_id)
        i = self.period_at(t)
        return None if site is None or i is None else _opt(site.pv_available_w[i])

    def price_at(self, t: float) -> float | None:
        """The day-ahead price (EUR/MWh) the plan assumed for the period containing ``t``, or None."""
        i = self.period_at(t)
        return None if i is None else _opt(self.price_eur_per_mwh[i])

    # -- from and to the optimizer -----------------------------------------------------------------

    @classmethod
    def from_dispatch(cls, plan: DispatchPlan, problem: DispatchProblem) -> Plan:
        """The plan in force from a capped :class:`DispatchPlan` and the problem it solved; limits within
        :data:`RELEASE_TOL_W` of a site's installer ceiling become releases (NaN)."""
        by_id = {s.site_id: s for s in problem.sites}
        sites = {}
        for i, sid in enumerate(plan.site_ids):
            sp = by_id[sid]
            limit = np.asarray(plan.pv_limit_w[i], dtype=float)
            sites[sid] = SitePlan(
                pv_w=_arr(plan.pv_w[i]),
                pv_limit_w=np.where(limit >= sp.pv_ceiling_w - RELEASE_TOL_W, np.nan, limit),
                battery_w=_arr(plan.battery_w[i]),
                grid_w=_arr(plan.grid_w[i]),
                soc=_arr(plan.soc[i]),
                pv_available_w=_arr(sp.pv_available_w),
                load_w=_arr(sp.load_w),
            )
        return cls(
            start_s=float(plan.start_s),
            period_s=_arr(plan.period_s),
            path=plan.path,
            reason=plan.reason,
            objective_eur=float(plan.objective_eur),
            parts=plan.parts,
            soc_end_kwh=float(plan.soc_end_kwh),
            timings=PlanTimings(plan.build_s, plan.solve_s, plan.split_s),
            export_w=_arr(plan.export_w),
            price_eur_per_mwh=_arr(problem.price_eur_per_mwh),
            export_schedule_w=None if problem.export_schedule_w is None else _arr(problem.export_schedule_w),
            sites=sites,
        )

    def to_dispatch(self, ceiling_w: dict[str, float]) -> DispatchPlan:
        """The :class:`DispatchPlan` of the sites in ``ceiling_w`` (site id → installer ceiling W): released
        limits become that ceiling again (the solver worker shifts it as its last good plan)."""
        ids = [sid for sid in self.sites if sid in ceiling_w]

        def rows(key: str) -> np.ndarray:
            return np.array([getattr(self.sites[sid], key) for sid in ids], dtype=float)

        limit = np.array([np.nan_to_num(self.sites[sid].pv_limit_w, nan=ceiling_w[sid]) for sid in ids], dtype=float)
        return DispatchPlan(
            site_ids=ids,
            start_s=self.start_s,
            period_s=self.period_s.copy(),
            pv_w=rows("pv_w"),
            pv_limit_w=limit,
            battery_w=rows("battery_w"),
            grid_w=rows("grid_w"),
            soc=rows("soc"),
            export_w=self.export_w.copy(),
            objective_eur=self.objective_eur,
            parts=self.parts,
            soc_end_kwh=self.soc_end_kwh,
            path=self.path,
            reason=self.reason,
        )

    # -- the JSON form (store and API) -----------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The JSON-able record: numbers, null where NaN (the form served at /api/v1/plan; the 0.1.0 store's)."""
        p = self.parts
        return {
            "start_s": self.start_s,
            "period_s": _list(self.period_s),
            "path": self.path,
            "reason": self.reason,
            "objective_eur": self.objective_eur,
            "parts": {
                "energy": p.energy,
                "schedule": p.schedule,
                "throughput": p.throughput,
                "curtailment": p.curtailment,
                "terminal_value": p.terminal_value,
            },
            "soc_end_kwh": self.soc_end_kwh,
            "timings_s": {"build": self.timings.build_s, "solve": self.timings.solve_s, "split": self.timings.split_s},
            "export_w": _list(self.export_w),
            "sites": {
                sid: {k: _list(getattr(s, k)) for k in ("pv_w", "pv_limit_w", "battery_w", "grid_w", "soc")}
                for sid, s in self.sites.items()
            },
            "forecast": {
                "price_eur_per_mwh": _list(self.price_eur_per_mwh),
                "export_schedule_w": None if self.export_schedule_w is None else _list(self.export_schedule_w),
                "sites": {
                    sid: {"pv_available_w": _list(s.pv_available_w), "load_w": _list(s.load_w)}
                    for sid, s in self.sites.items()
                },
            },
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Plan:
        """The plan a record of :meth:`to_record` holds (a stored plan after a restart)."""
        fc = record["forecast"]
        timings = record.get("timings_s") or {}
        sites = {
            sid: SitePlan(
                **{k: _arr(row[k]) for k in ("pv_w", "pv_limit_w", "battery_w", "grid_w", "soc")},
                pv_available_w=_arr(fc["sites"][sid]["pv_available_w"]),
                load_w=_arr(fc["sites"][sid]["load_w"]),
            )
            for sid, row in record["sites"].items()
        }
        return cls(
            start_s=float(record["start_s"]),
            period_s=_arr(record["period_s"]),
            path=record["path"],
            reason=record.get("reason") or "",
            objective_eur=float(record["objective_eur"]),
            parts=ObjectiveParts(**record["parts"]),
            soc_end_kwh=float(record["soc_end_kwh"]),
            timings=PlanTimings(timings.get("build", 0.0), timings.get("solve", 0.0), timings.get("split", 0.0)),
            export_w=_arr(record["export_w"]),
            price_eur_per_mwh=_arr(fc["price_eur_per_mwh"]),
            export_schedule_w=None if fc.get("export_schedule_w") is None else _arr(fc["export_schedule_w"]),
            sites=sites,
        )


def _arr(values: Any) -> np.ndarray:
    """Floats with NaN for null."""
    if isinstance(values, np.ndarray):
        return values.astype(float)
    return np.array([np.nan if v is None else v for v in np.asarray(values, dtype=object).ravel()], dtype=float)


def _list(a: np.ndarray) -> list[float | None]:
    """JSON numbers with null for NaN and infinities."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=float).tolist()]


def _opt(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)
