"""The limit policy: from plan, stages and export guard to per-device setpoints. Pure functions.

Per site (:func:`site_command`) the PV limit in force is the lowest of: the plan's limit for the
current period (unless control is paused or the site is uncontrollable; at a 0 W cap less
``ZERO_CAP_MARGIN``), the active curtailment stage's ceiling, the export guard's limit, and for an
uncontrollable site its export cap now. ``None`` everywhere means "no command": the writer releases
the device to its installer configuration. The battery follows the plan's ``battery_w``
(+ discharge, − charge) or is released to its own self-consumption mode; while the operator's
export schedule is in force, :func:`schedule_feedback` moves the planned batteries on every poll
so that the fleet follows it between plans.

W, signs as in docs/definitions.md "Signs"; caps as in "Caps and violations".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args

from sparcs.config.grid_rules import is_curtailing
from sparcs.config.schema import BATTERY_KINDS, PV_KINDS, SiteConfig
from sparcs.controller.plan import RELEASE_TOL_W, PlannedSetpoint

GUARD_TARGET = 0.98  # the guard steers the meter to 98 % of the cap, leaving room for noise between polls
GUARD_TRIGGER = 0.99
"""The guard acts once export passes 99 % of the cap, so a load drifting down over a few polls cannot
walk the meter from just under the cap to above cap + 1 % unchecked."""
GUARD_RELEASE = 0.85  # released once export stays below 85 % of the cap while the limit does not bind
ZERO_CAP_MARGIN = 0.02
"""At a 0 W cap the guard keeps this share of the site's PV rating as import (see :func:`export_guard`),
and a plan's PV limit is lowered by as much (see :func:`site_command`)."""


@dataclass(frozen=True)
class SiteCommand:
    """What a site should do now: PV limit (W, summed over its inverters) and battery power (W)."""

    pv_limit_w: float | None
    battery_w: float | None


def export_guard(
    *,
    cap_w: float | None,
    grid_w: float | None,
    pv_w: float | None,
    guard_w: float | None,
    zero_cap_margin_w: float = 0.0,
) -> float | None:
    """The guard's PV limit for a site after this poll (W), or None when the guard does not act.

    ``grid_w`` is the meter power (+ import, − export). The guard works on the net export −grid_w,
    never clipped at 0: at a 0 W cap (negative-price rule) an importing site must not look "at
    target", or the limit could not loosen above the PV output it caught and a battery the plan
    charges from PV would charge from the grid. Above ``GUARD_TRIGGER`` × cap it tightens at once so
    that export falls to ``GUARD_TARGET`` × cap; while it acts it follows the meter (loosening as
    load rises); it lets go when export is well below the cap and the PV output sits below its limit
    (the limit no longer binds). Unknown readings keep the last limit.

    At a 0 W cap a share of the cap leaves no room for the load to dip between two polls, and the
    plan there balances PV against load and battery to the watt: the guard instead holds an import
    of ``zero_cap_margin_w`` (the controller passes ``ZERO_CAP_MARGIN`` × the PV rating), acting as
    soon as the import falls below half of it.
    """
    if cap_w is None:
        return None
    if grid_w is None or pv_w is None:
        return guard_w
    export_w = -grid_w
    if cap_w > 0:
        target, trigger = GUARD_TARGET * cap_w, GUARD_TRIGGER * cap_w
    else:
        target, trigger = -zero_cap_margin_w, -zero_cap_margin_w / 2.0
    if export_w > trigger:
        return max(0.0, pv_w - (export_w - target))
    if guard_w is None:
        return None
    if export_w < GUARD_RELEASE * cap_w and pv_w < 0.9 * guard_w:
        return None
    return max(0.0, pv_w + (target - export_w))


def combine_limits(*limits: float | None) -> float | None:
    """The most restrictive of the limits given (W); None when there is none."""
    known = [v for v in limits if v is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class SiteFacts:
    """What the limit policy of one site depends on now. Powers in W.

    ``planned``: the plan's setpoint for the current period (None: the site is not in the plan in
    force, or no plan covers now); ``controllable``: every device of the site answers; ``paused``:
    the optimizer is paused; ``stage_ceiling_w``: the PV ceiling of the most restrictive stage in
    force; ``guard_w``: the export guard's PV limit; ``export_cap_w``: the export cap at the meter
    now (:func:`sparcs.config.grid_rules.export_cap_w`); ``pv_rating_w``: the site's PV rating;
    ``net_load_w``: the site's load less its PV output as last measured (W, + deficit, − surplus;
    None: unknown).
    """

    planned: PlannedSetpoint | None
    controllable: bool
    paused: bool
    stage_ceiling_w: float | None
    guard_w: float | None
    export_cap_w: float | None
    pv_rating_w: float
    net_load_w: float | None = None
    battery_may_fill: bool = False
    """The battery may reach its upper SoC before the limit is next set (:func:`battery_may_fill`)."""


def site_command(f: SiteFacts) -> SiteCommand:
    """The site's command now: the PV limit in force is the lowest of the plan's limit, the stage
    ceiling, the guard's limit, and for a site outside the plan its export cap; the battery follows
    the plan or is released.

    - The plan counts only while the site is controllable and the optimizer is not paused. Where
      the plan curtails at a 0 W cap its limit is lowered by ``ZERO_CAP_MARGIN`` × the PV rating:
      the plan balances PV against its forecast load to the watt, and the guard's limit from the
      previous period no longer binds when a new one starts.
    - A site that is not controllable (a device stale) keeps its PV at most at its export cap, at
      the inverter: its battery runs on its own and may stop absorbing PV at any moment, its meter
      may be the silent device, and the guard loosens with what the meter shows.
    - Where the battery may reach its upper SoC before the next command (``battery_may_fill``), a
      feed-in-capped site's plan limit no longer counts on the planned charge: the plan allows
      export cap + load + charge, and a battery that stops charging when full would put that
      charge on the meter over the cap until the guard sees it at the next poll.
    - The planned battery power is held to the measured net load where the plan meant no grid flow
      for it (:func:`battery_within_net_load`), unless a limit shapes the surplus
      (:func:`limit_shapes_surplus`): the measured surplus may then be the limit's, which was set
      around the planned battery power, and charging less would only make the guard curtail more
      (at a 0 W cap it ratchets the charge down with the import margin the guard holds).
    """
    plan_limit = plan_battery = None
    if f.controllable and not f.paused and f.planned is not None:
        plan_limit, plan_battery = f.planned.pv_limit_w, f.planned.battery_w
        if plan_limit is not None and f.export_cap_w is not None and f.battery_may_fill and plan_battery is not None:
            plan_limit = max(0.0, plan_limit + min(plan_battery, 0.0))
        if plan_limit is not None and f.export_cap_w == 0.0:
            plan_limit = max(0.0, plan_limit - ZERO_CAP_MARGIN * f.pv_rating_w)
    uncontrolled = None if f.controllable else f.export_cap_w
    limit = combine_limits(plan_limit, f.stage_ceiling_w, f.guard_w, uncontrolled)
    if f.planned is not None and not limit_shapes_surplus(
        f.planned, plan_limit, f.stage_ceiling_w, f.guard_w, uncontrolled
    ):
        plan_battery = battery_within_net_load(plan_battery, f.planned.grid_w, f.net_load_w)
    return SiteCommand(limit, plan_battery)


def battery_may_fill(
    *, soc: float | None, soc_max: float, capacity_wh: float, charge_w: float, eta_charge: float, within_s: float
) -> bool:
    """Whether a battery charging at ``charge_w`` (W, ≥ 0; ≤ 0: not charging) may reach ``soc_max``
    (fraction) within ``within_s`` (s) of its last SoC reading ``soc`` (fraction; None: unknown, so it may).

    ``within_s`` covers the age a reading can have under tiered polling plus the poll until the next
    command: the energy it may still store is ``(soc_max − soc) × capacity_wh`` Wh, against
    ``charge_w × eta_charge × within_s / 3600`` Wh charged."""
    if charge_w <= 0:
        return False
    if soc is None:
        return True
    return (soc_max - soc) * capacity_wh <= charge_w * eta_charge * within_s / 3600.0


def limit_shapes_surplus(planned: PlannedSetpoint, plan_limit_w: float | None, *other_limits_w: float | None) -> bool:
    """Whether a PV limit in force may be what the measured PV surplus is (W).

    A stage ceiling, the guard's limit or the cap of a site outside the plan (``other_limits_w``)
    always may. The plan's own limit (``plan_limit_w``) only where it lies below the PV its forecast
    expects (``planned.pv_available_w``), or that forecast is unknown: the plan limits every
    feed-in-capped site to its export cap + load + charge, which holds back nothing while the
    forecast PV stays below it, and treating that limit as binding left the battery charging at the
    planned power from the grid whenever a cloud or more load took the surplus. Judging by the PV
    output instead, read less often than the meter under tiered polling, was tried: on the June day
    it let rule sites export at negative prices in 38 site-quarter-hours.
    """
    if any(v is not None for v in other_limits_w):
        return True
    if plan_limit_w is None:
        return False
    available = planned.pv_available_w
    return available is None or plan_limit_w < available - RELEASE_TOL_W


PLANNED_NO_FLOW_W = 10.0
"""A period whose planned import (export) is at most this is planned without import (export), W."""


def battery_within_net_load(
    battery_w: float | None, planned_grid_w: float | None, net_load_w: float | None
) -> float | None:
    """The plan's battery power (W, + discharge), held to the site's measured net load (W, load − PV,
    + deficit) where the plan meant the battery to cause no grid flow.

    In a period planned without import (``planned_grid_w`` ≤ :data:`PLANNED_NO_FLOW_W`) the battery
    charges at most the PV surplus now: the plan stores PV there, and energy it did not price at
    this period's import price is not bought for it when a cloud or more load takes the surplus. In
    a period planned without export it discharges at most the deficit now: what the load does not
    take would be exported at the feed-in price, below the value the plan gave the stored energy.
    With a forecast that comes true the measured net load is the planned one and nothing changes;
    None (no plan grid, no measurement) leaves the plan's power as it is."""
    if battery_w is None or planned_grid_w is None or net_load_w is None:
        return battery_w
    if battery_w < 0.0 and planned_grid_w <= PLANNED_NO_FLOW_W:
        return max(battery_w, min(0.0, net_load_w))
    if battery_w > 0.0 and planned_grid_w >= -PLANNED_NO_FLOW_W:
        return min(battery_w, max(0.0, net_load_w))
    return battery_w


CurtailCause = Literal["caps", "stages", "negative_prices"]
CURTAIL_CAUSES: tuple[CurtailCause, ...] = get_args(CurtailCause)
STAGE_MATCH = 1.01
"""A stage ceiling up to this share of the limit in force (read back, rounded by the device) is that limit."""


@dataclass(frozen=True)
class SiteCurtailment:
    """Why and how much a site is curtailed now (docs/open-data.md "Curtailment"): ``cause`` of the
    limit in force; ``curtailed_w`` the forecast PV power it holds back (W ≥ 0; None: unknown)."""

    cause: CurtailCause
    curtailed_w: float | None


def site_curtailment(
    f: SiteFacts,
    limit_w: float | None,
    *,
    installer_ceiling_w: float,
    negative_price: bool,
    pv_w: float | None,
    pv_available_w: float | None,
) -> SiteCurtailment | None:
    """The curtailment of a site whose inverters report the PV limit ``limit_w`` in force (W, summed),
    or None while it does not curtail (:func:`sparcs.config.grid_rules.is_curtailing`).

    The cause is ``stages`` when a stage ceiling is the limit in force (within :data:`STAGE_MATCH`);
    else ``negative_prices`` in a quarter-hour with a negative day-ahead price (``negative_price``);
    else ``caps`` (the feed-in cap, a pool limit, or an export cap the export guard or the plan
    holds). The curtailed power is the plan's forecast of the available PV power
    (``pv_available_w``) less the PV output (``pv_w``), at least 0 W; None when either is unknown."""
    if limit_w is None or not is_curtailing(limit_w, installer_ceiling_w):
        return None
    cause: CurtailCause
    if f.stage_ceiling_w is not None and f.stage_ceiling_w <= STAGE_MATCH * limit_w:
        cause = "stages"
    elif negative_price:
        cause = "negative_prices"
    else:
        cause = "caps"
    held_w = None if pv_available_w is None or pv_w is None else max(0.0, pv_available_w - pv_w)
    return SiteCurtailment(cause, held_w)


SCHEDULE_GAIN = 0.5
"""Share of the fleet's schedule error the feedback corrects per poll: an integrator that stays stable
with the one poll of delay between a write and its measurement."""
SCHEDULE_CAP_MARGIN = 0.95
"""The feedback discharges a site's battery at most until its export reaches this share of its cap,
below the guard's trigger, so that it never makes the guard curtail PV."""
SOC_EDGE = 0.01
"""A battery within this SoC of its bound takes no feedback in that direction."""


@dataclass(frozen=True)
class BatteryRoom:
    """How far one site's battery may move from its command now (W ≥ 0 each): ``more_w`` toward
    discharge (more export), ``less_w`` toward charge (less export)."""

    more_w: float
    less_w: float


def battery_room(
    *,
    command_w: float,
    max_discharge_w: float,
    max_charge_w: float,
    soc: float | None,
    soc_min: float,
    soc_max: float,
    grid_w: float,
    battery_w: float | None,
    export_cap_w: float | None,
) -> BatteryRoom:
    """The room the schedule feedback has at one site (see :class:`BatteryRoom`).

    ``command_w``: the battery power of the site's command before feedback (+ discharge);
    ``grid_w`` and ``battery_w``: the meter and battery power measured now. The site's export
    without its battery, ``−grid_w − battery_w``, predicts the export at any battery power. More
    discharge is bounded by the battery's power, its SoC and the export cap (× ``SCHEDULE_CAP_MARGIN``);
    more charge by its power, its SoC and by that export, so that the feedback never charges from
    the grid (§14a dimming and grid fees stay untouched). Without a measured battery power: no room.
    """
    if battery_w is None or soc is None:
        return BatteryRoom(0.0, 0.0)
    without_battery_w = -grid_w - battery_w
    more = max_discharge_w - command_w
    if export_cap_w is not None:
        more = min(more, SCHEDULE_CAP_MARGIN * export_cap_w - without_battery_w - command_w)
    less = min(command_w + max_charge_w, command_w + without_battery_w)
    if soc <= soc_min + SOC_EDGE:
        more = 0.0
    if soc >= soc_max - SOC_EDGE:
        less = 0.0
    return BatteryRoom(max(0.0, more), max(0.0, less))


def schedule_feedback(error_w: float, offsets_w: dict[str, float], rooms: dict[str, BatteryRoom]) -> dict[str, float]:
    """Battery offsets per site (W, + more discharge) that follow the operator's export schedule.

    ``error_w`` = schedule − measured fleet net export (W). The fleet offset integrates it
    (last offset + ``SCHEDULE_GAIN`` × error), clipped to the fleet's room, and is split over the
    sites in proportion to their room in that direction. Sites without room get no offset.
    """
    total = sum(offsets_w.get(sid, 0.0) for sid in rooms) + SCHEDULE_GAIN * error_w
    up = sum(r.more_w for r in rooms.values())
    down = sum(r.less_w for r in rooms.values())
    total = min(max(total, -down), up)
    if total > 0:
        return {sid: total * r.more_w / up for sid, r in rooms.items() if r.more_w > 0}
    if total < 0:
        return {sid: total * r.less_w / down for sid, r in rooms.items() if r.less_w > 0}
    return {}


def split_to_devices(
    site: SiteConfig, cmd: SiteCommand, monitor_only: Collection[str] = frozenset()
) -> dict[str, tuple[float | None, float | None]]:
    """Per controlled device id: (pv_limit_w, battery_w). The site's PV limit is split by inverter count.

    Monitor-only devices (``control: false``, or in ``monitor_only``: switched at run time) get
    nothing; meters are never written. A hybrid takes its share of both: the PV limit among the PV
    roles, the battery power among the battery roles.
    """
    pvs = [d for d in site.devices if d.kind in PV_KINDS and d.control and d.id not in monitor_only]
    bats = [d for d in site.devices if d.kind in BATTERY_KINDS and d.control and d.id not in monitor_only]
    out: dict[str, tuple[float | None, float | None]] = {}
    for d in pvs:
        out[d.id] = (None if cmd.pv_limit_w is None else cmd.pv_limit_w / len(pvs), None)
    for d in bats:
        out[d.id] = (out.get(d.id, (None, None))[0], None if cmd.battery_w is None else cmd.battery_w / len(bats))
    return out
