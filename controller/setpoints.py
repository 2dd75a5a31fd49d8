"""From plan, stages and export guard to per-device setpoints: pure functions, W with DESIGN.md signs.

Per site the PV limit in force is the lowest of: the plan's limit for the current period (unless
control is paused or the site is uncontrollable; at a 0 W cap less ``ZERO_CAP_MARGIN``), the active
curtailment stage's ceiling, the export guard's limit, and for an uncontrollable site its export cap
now. ``None`` everywhere means "no command": the writer releases the device to its
installer configuration. The battery follows the plan's ``battery_w`` (+ discharge, − charge) or is
released to its own self-consumption mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparcs.config.schema import SiteConfig

GUARD_TARGET = 0.98  # the guard steers the meter to 98 % of the cap, leaving room for noise between polls
GUARD_TRIGGER = 0.99
"""The guard acts once export passes 99 % of the cap: a load drifting down for a few polls no longer
walks the meter from just under the cap to above cap + 1 % unchecked (June twin: 2 site-quarter-hours)."""
GUARD_RELEASE = 0.85  # released once export stays below 85 % of the cap while the limit does not bind
ZERO_CAP_MARGIN = 0.02
"""At a 0 W cap the guard keeps this share of the site's PV rating as import (see :func:`export_guard`),
and a plan's PV limit is lowered by as much: when a new plan period starts, the guard's limit from the
last one no longer binds, and the plan's own limit, met to the watt with the forecast load, exported
for a minute whenever the load came in lower (June twin, 54 sites: 5 site-quarter-hours)."""


@dataclass(frozen=True)
class SiteCommand:
    """What a site should do now: PV limit (W, summed over its inverters) and battery power (W)."""

    pv_limit_w: float | None
    battery_w: float | None


def plan_period(plan: dict[str, Any], t: float) -> int | None:
    """Index of the plan period containing ``t`` (Unix s), or None outside the plan."""
    start = plan["start_s"]
    if t < start:
        return None
    acc = start
    for i, length in enumerate(plan["period_s"]):
        acc += length
        if t < acc:
            return i
    return None


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
    never clipped at 0: at a 0 W cap (negative-price rule) an importing site would otherwise look
    "at target", and the limit could not loosen above the PV output it had caught, so a battery the
    plan charges from PV charged from the grid instead (measured in the June twin: 170 kWh imported).
    Above ``GUARD_TRIGGER`` × cap it tightens at once so that export falls to ``GUARD_TARGET`` × cap; while it acts
    it follows the meter (loosening as load rises); it lets go when export is well below the cap
    and the PV output sits below its limit (the limit no longer binds). Unknown readings keep the
    last limit.

    At a 0 W cap a share of the cap leaves no room for the load to dip between two polls, and the
    plan there balances PV against load and battery to the watt: the guard instead holds an import
    of ``zero_cap_margin_w`` (the controller passes ``ZERO_CAP_MARGIN`` × the PV rating), acting as
    soon as the import falls below half of it (measured in the June twin before: 1-2 minutes of
    60-120 W export at some sites in most negative-price hours).
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


def site_command(
    plan: dict[str, Any] | None,
    site_id: str,
    t: float,
    *,
    use_plan: bool,
    stage_ceiling_w: float | None,
    guard_w: float | None,
    uncontrolled_ceiling_w: float | None = None,
    plan_margin_w: float = 0.0,
) -> SiteCommand:
    """The site's command at ``t``. ``uncontrolled_ceiling_w``: a further PV ceiling (W) the caller
    sets for a site outside the plan (see :meth:`controller.cycle.Controller.desired_setpoints`).
    ``plan_margin_w``: taken off the plan's PV limit where the plan curtails (at a 0 W cap the plan
    balances PV against its forecast load to the watt; see ``ZERO_CAP_MARGIN``)."""
    plan_limit = plan_battery = None
    if use_plan and plan is not None and site_id in plan["sites"]:
        i = plan_period(plan, t)
        if i is not None:
            row = plan["sites"][site_id]
            plan_limit, plan_battery = row["pv_limit_w"][i], row["battery_w"][i]
            if plan_limit is not None:
                plan_limit = max(0.0, plan_limit - plan_margin_w)
    return SiteCommand(combine_limits(plan_limit, stage_ceiling_w, guard_w, uncontrolled_ceiling_w), plan_battery)


def split_to_devices(site: SiteConfig, cmd: SiteCommand) -> dict[str, tuple[float | None, float | None]]:
    """Per controlled device id: (pv_limit_w, battery_w). The site's PV limit is split by inverter count.

    Monitor-only devices (``control: false``) get nothing; meters are never written.
    """
    pvs = [d for d in site.devices if d.kind == "pv_inverter" and d.control]
    bats = [d for d in site.devices if d.kind == "battery" and d.control]
    out: dict[str, tuple[float | None, float | None]] = {}
    for d in pvs:
        out[d.id] = (None if cmd.pv_limit_w is None else cmd.pv_limit_w / len(pvs), None)
    for d in bats:
        out[d.id] = (None, None if cmd.battery_w is None else cmd.battery_w / len(bats))
    return out
