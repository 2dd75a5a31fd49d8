"""The edge's planner: it does not solve, it follows the per-site plans the central sent.

Each site's plan (:class:`~sparcs.edge.messages.SitePlanMsg`) ends at its ``valid_until``; after it
:meth:`Plan.setpoint` finds no period and the site's inverters and battery are released to their
installer configuration, while the export guard, stages and §14a keep holding on the edge. The
sites' plans are joined into one :class:`~sparcs.controller.plan.Plan` on the grid of the newest.
Powers in W (signs of docs/definitions.md "Signs"), times Unix s.
"""

from __future__ import annotations

import math

import numpy as np

from sparcs.controller.commands import CommandBook
from sparcs.controller.plan import Plan, PlanTimings, SitePlan
from sparcs.controller.state import FleetState
from sparcs.edge.messages import SitePlanMsg
from sparcs.optimizer.forecast_quality import QualityRow
from sparcs.optimizer.problem import ObjectiveParts

FOLLOWED_REASON = "followed: the central's plan received over the broker"


def _arr(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _optional(values: list[float | None] | None, n: int) -> np.ndarray:
    return _arr(values) if values is not None else np.full(n, np.nan)


def _resample(msg: SitePlanMsg, mids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The site's PV limit, battery power, planned grid exchange and forecast available PV at the
    time points ``mids`` (NaN outside its plan, and for the optional ones where the message has none)."""
    ends = msg.start_s + np.cumsum(msg.period_s)
    end = min(float(ends[-1]) if len(ends) else msg.start_s, msg.valid_until)
    idx = np.searchsorted(ends, mids, side="right")
    inside = (mids >= msg.start_s) & (mids < end) & (idx < len(msg.period_s))
    i = np.where(inside, idx, 0)
    n = len(msg.period_s)
    per_period = (_arr(msg.pv_limit_w), _arr(msg.battery_w), _optional(msg.grid_w, n), _optional(msg.pv_available_w, n))
    limit, battery, grid, available = (np.where(inside, v[i], np.nan) for v in per_period)
    return limit, battery, grid, available


def plan_from_sites(plans: dict[str, SitePlanMsg]) -> Plan | None:
    """One plan of every site in ``plans`` on the grid of the newest, cut at its ``valid_until``;
    None without plans. The other sites' values are looked up at each period's middle."""
    if not plans:
        return None
    newest = max(plans.values(), key=lambda m: (m.plan_id, m.start_s))
    period = np.array(newest.period_s, dtype=float)
    starts = newest.start_s + np.concatenate([[0.0], np.cumsum(period)[:-1]])
    keep = starts < newest.valid_until
    period = np.minimum(period[keep], newest.valid_until - starts[keep])
    starts = starts[keep]
    mids = starts + period / 2
    n = len(period)
    zeros = np.zeros(n)
    nan = np.full(n, np.nan)
    sites = {}
    for sid, msg in plans.items():
        limit, battery, grid, available = _resample(msg, mids)
        sites[sid] = SitePlan(nan, limit, battery, grid, np.full(n + 1, np.nan), available, nan)
    price = _arr(newest.price_eur_per_mwh)[: len(keep)][keep]
    return Plan(
        start_s=newest.start_s,
        period_s=period,
        path=newest.path,  # type: ignore[arg-type]
        reason=FOLLOWED_REASON,
        objective_eur=0.0,
        parts=ObjectiveParts(0.0, 0.0, 0.0, 0.0, 0.0),
        soc_end_kwh=0.0,
        timings=PlanTimings(),
        export_w=zeros,
        price_eur_per_mwh=price,
        export_schedule_w=None,
        sites=sites,
    )


class FollowPlanner:
    """The :class:`~sparcs.controller.cycle.Planner` of an edge: its plan is the central's, received."""

    def __init__(self) -> None:
        self.sites: dict[str, SitePlanMsg] = {}
        self.pending = False  # a plan arrived that the controller has not taken yet

    def receive(self, msg: SitePlanMsg) -> bool:
        """Take a site's plan; False (ignored) when it is not newer than the one held."""
        held = self.sites.get(msg.site)
        if held is not None and (held.plan_id, held.start_s) >= (msg.plan_id, msg.start_s):
            return False
        self.sites[msg.site] = msg
        self.pending = True
        return True

    def plan_id(self, site_id: str) -> float | None:
        held = self.sites.get(site_id)
        return None if held is None else held.plan_id

    def observe(self, state: FleetState) -> None:
        """The edge learns nothing for forecasts: the central plans."""

    def restore(self, plan: Plan) -> None:
        """A plan the edge stored before a restart: followed until it ends, until a newer one arrives."""
        for sid, s in plan.sites.items():
            self.sites.setdefault(
                sid,
                SitePlanMsg(
                    sid,
                    -math.inf,  # any plan the central sends is newer
                    plan.path,
                    plan.start_s,
                    [float(p) for p in plan.period_s],
                    plan.end_s,
                    [None if math.isnan(v) else float(v) for v in s.pv_limit_w],
                    [None if math.isnan(v) else float(v) for v in s.battery_w],
                    [None if math.isnan(v) else float(v) for v in plan.price_eur_per_mwh],
                ),
            )

    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> Plan | None:
        """The plan of the sites' received plans when one arrived since the last call, else None (the
        plan in force stays)."""
        if not self.pending:
            return None
        self.pending = False
        return plan_from_sites(self.sites)

    def start(self) -> None:
        """Nothing to start: no solver runs on the edge."""

    def close(self) -> None:
        """Nothing to stop."""

    def forecast_quality(self) -> list[QualityRow]:
        """None: the edge makes no forecasts (the central's planner scores its own)."""
        return []
