"""Fleet state: what the swarm does now, per site and in total, built from one poll's telemetry.

Signs (docs/definitions.md "Signs"): ``grid_w`` > 0 import, < 0 export at the meter; ``battery_w`` > 0
discharge; ``pv_w`` ≥ 0; ``export_w`` = max(0, −grid_w). Load is derived from the meter balance
``grid = load − pv − battery``, so ``load_w = grid_w + pv_w + battery_w``. SoC is a fraction 0..1.

A value whose quality is not ``good`` counts as unknown (None), never as a number reused from an
earlier poll. A site with a device that cannot take part in control (:func:`device_problem`: stale,
or a required value not good) is uncontrollable: it leaves the plan and offers no flexibility until
every device answers with usable values again.

Flexibility (W, ≥ 0), sustainable for the next hour: *up* = more export or less import at the
meters, *down* = the opposite. Up comes from discharging harder (within SoC and power limits) or
charging less; down from charging harder, discharging less, or curtailing PV. Both are bounded at
the meter by the feed-in cap (or connection limit) and the connection limit. Curtailed PV is not
counted as up-flexibility: its available power is not measured, so it cannot be promised.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sparcs.config.grid_rules import export_ceiling_series, feed_in_cap_w
from sparcs.config.schema import BATTERY_KINDS, PV_KINDS, FleetConfig, SiteConfig
from sparcs.drivers.telemetry import Telemetry

FLEX_HORIZON_S = 3600.0
REQUIRED_VALUES = {
    "pv_inverter": ("pv_w",),
    "battery": ("battery_w", "soc"),
    "meter": ("grid_w",),
    "hybrid": ("pv_w", "battery_w", "soc"),
}
"""The values without which a device cannot take part in control: the guard needs the meter and the
PV output, the plan the battery's power and state of charge."""


def device_problem(t: Telemetry | None) -> str | None:
    """Why a device cannot take part in control now (stale, not read yet, or a required value not
    good), or None when it can. A site with a device that cannot is uncontrollable."""
    if t is None:
        return "not read yet"
    if t.status != "online":
        return f"stale: {t.error or 'no data'}"
    bad = [
        f"{k} {t.values[k].quality if k in t.values else 'missing'}"
        for k in REQUIRED_VALUES.get(t.kind, ())
        if k not in t.values or t.values[k].quality != "good"
    ]
    return f"values not usable: {', '.join(bad)}" if bad else None


def good(t: Telemetry | None, key: str) -> float | None:
    """The value of ``key`` if it was read with good quality, else None."""
    if t is None or t.status != "online":
        return None
    r = t.values.get(key)
    if r is None or r.quality != "good" or r.value is None:
        return None
    return float(r.value)


@dataclass
class SiteState:
    """One site now. Powers in W (signs above); None where not known from good readings."""

    site_id: str
    pv_w: float | None
    battery_w: float | None
    grid_w: float | None
    load_w: float | None
    export_w: float | None
    soc: float | None
    capacity_wh: float
    pv_limit_w: float | None  # the limit the inverters report in force (sum), None when unlimited/unknown
    feed_in_cap_w: float | None
    connection_limit_w: float
    devices_online: int
    devices_stale: int
    devices_total: int
    controllable: bool
    flex_up_w: float
    flex_down_w: float
    # Every PV inverter / battery of the site is controlled (the fleet file's ``control``, the
    # run-time switch, controller/device_control.py, and a fail-safe the writer accepts); the
    # planner offers only what is.
    pv_controlled: bool = True
    battery_controlled: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FleetState:
    """The whole swarm at ``ts`` (Unix s): per-site states and totals over the sites where known."""

    ts: float
    sites: dict[str, SiteState]
    telemetry: dict[str, Telemetry] = field(repr=False)

    def total(self, attr: str) -> float:
        return float(sum(getattr(s, attr) or 0.0 for s in self.sites.values()))

    def summary(self) -> dict[str, Any]:
        with_soc = [s for s in self.sites.values() if s.soc is not None and s.capacity_wh > 0]
        capacity_wh = sum(s.capacity_wh for s in with_soc)
        return {
            "ts": self.ts,
            "pv_w": self.total("pv_w"),
            "battery_w": self.total("battery_w"),
            "load_w": self.total("load_w"),
            "grid_w": self.total("grid_w"),
            "export_w": self.total("export_w"),
            # capacity-weighted, over the batteries whose SoC is known
            "soc": sum((s.soc or 0.0) * s.capacity_wh for s in with_soc) / capacity_wh if capacity_wh else None,
            "flex_up_w": self.total("flex_up_w"),
            "flex_down_w": self.total("flex_down_w"),
            "online": sum(s.devices_online for s in self.sites.values()),
            "stale": sum(s.devices_stale for s in self.sites.values()),
            "total": sum(s.devices_total for s in self.sites.values()),
        }


def _sum_known(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known and len(known) == len(values) else None


def site_flexibility(
    site: SiteConfig,
    *,
    pv_w: float | None,
    battery_w: float | None,
    grid_w: float | None,
    soc: float | None,
    battery_controllable: bool,
    pv_controllable: bool,
    dimmed_charge_w: float | None = None,
    pool_limit_w: float | None = None,
) -> tuple[float, float]:
    """(up, down) flexibility in W for the next hour; see the module docstring. ``pool_limit_w``: the
    site's share of a pool limit in force (W ≥ 0), below the export ceiling. Pure."""
    up = down = 0.0
    bat = site.battery
    if bat is not None and battery_controllable and soc is not None and battery_w is not None:
        cap_wh = bat.capacity_kwh * 1000.0
        hours = FLEX_HORIZON_S / 3600.0
        dis_sust = min(bat.max_discharge_w, max(0.0, soc - bat.soc_min) * cap_wh * bat.eta_discharge / hours)
        ch_sust = min(bat.max_charge_w, max(0.0, bat.soc_max - soc) * cap_wh / bat.eta_charge / hours)
        if dimmed_charge_w is not None:
            ch_sust = min(ch_sust, dimmed_charge_w)
        up += max(0.0, dis_sust - battery_w)
        down += max(0.0, ch_sust + battery_w)
    if pv_controllable and pv_w is not None:
        down += max(0.0, pv_w)
    if grid_w is not None:
        conn = site.grid.connection_limit_w
        ceiling = _ceiling_without_price_w(feed_in_cap_w(site), conn, site.grid.negative_price_rule)
        if pool_limit_w is not None:
            ceiling = min(ceiling, pool_limit_w)
        up = min(up, max(0.0, grid_w + ceiling))
        down = min(down, max(0.0, conn - grid_w))
    return up, down


@lru_cache(maxsize=4096)
def _ceiling_without_price_w(cap_w: float | None, connection_limit_w: float, negative_price_rule: bool) -> float:
    """The export ceiling at the meter (W ≥ 0) of :func:`~sparcs.config.grid_rules.export_ceiling_w` with
    no price known, from the values it depends on (feed-in cap W, None = none; connection limit W; the
    site's negative-price flag): the same number for every poll until one of them changes. Kept per
    value, not per site object, so a reload that sets a site's cap or limit in place is never missed."""
    cap = math.inf if cap_w is None else cap_w
    return float(export_ceiling_series(cap, connection_limit_w, negative_price_rule, math.nan)[0, 0])


def build_state(
    cfg: FleetConfig,
    telemetry: Mapping[str, Telemetry],
    ts: float,
    *,
    para14a_limit_w: dict[str, float] | None = None,
    pool_limit_w: dict[str, float] | None = None,
    monitor_only: Collection[str] = frozenset(),
    uncontrolled: Mapping[str, Collection[str]] | None = None,
) -> FleetState:
    """FleetState from the latest telemetry per device id. ``para14a_limit_w``: sites dimmed now → limit W;
    ``pool_limit_w``: sites under a pool limit now → their export limit W (``grid_rules.pool_share_w``);
    ``monitor_only``: devices switched to monitor-only at run time (not controlled, like ``control: false``);
    ``uncontrolled``: device id → the roles (``pv``, ``battery``) the writer refuses it
    (:func:`drivers.writer.uncontrolled_roles`: no fail-safe, or no control register for the role):
    not controlled in those roles either."""
    sites: dict[str, SiteState] = {}
    for site in cfg.sites:
        tel = {d.id: telemetry.get(d.id) for d in site.devices}
        kinds = {d.id: d.kind for d in site.devices}
        online = sum(1 for t in tel.values() if t is not None and t.status == "online")
        stale = sum(1 for t in tel.values() if t is not None and t.status == "stale")
        pv_ids = [d for d, k in kinds.items() if k in PV_KINDS]  # a hybrid counts in both roles
        bat_ids = [d for d, k in kinds.items() if k in BATTERY_KINDS]
        meter_ids = [d for d, k in kinds.items() if k == "meter"]
        pv_w = _sum_known([good(tel[d], "pv_w") for d in pv_ids]) if pv_ids else 0.0
        battery_w = _sum_known([good(tel[d], "battery_w") for d in bat_ids]) if bat_ids else 0.0
        grid_w = good(tel[meter_ids[0]], "grid_w") if meter_ids else None
        soc = good(tel[bat_ids[0]], "soc") if bat_ids else None
        limits = [good(tel[d], "pv_limit_w") for d in pv_ids]
        pv_limit_w = sum(v for v in limits if v is not None) if any(v is not None for v in limits) else None
        load_w = None
        if grid_w is not None and pv_w is not None and battery_w is not None:
            load_w = grid_w + pv_w + battery_w
        controllable = all(device_problem(t) is None for t in tel.values())
        ctl = {d.id: d.control and d.id not in monitor_only for d in site.devices}
        refused = uncontrolled or {}
        pv_ctl = all(ctl[d] and "pv" not in refused.get(d, ()) for d in pv_ids)
        bat_ctl = all(ctl[d] and "battery" not in refused.get(d, ()) for d in bat_ids)
        up, down = (0.0, 0.0)
        if controllable:
            up, down = site_flexibility(
                site,
                pv_w=pv_w,
                battery_w=battery_w,
                grid_w=grid_w,
                soc=soc,
                battery_controllable=bool(bat_ids) and bat_ctl,
                pv_controllable=bool(pv_ids) and pv_ctl,
                dimmed_charge_w=(para14a_limit_w or {}).get(site.id),
                pool_limit_w=(pool_limit_w or {}).get(site.id),
            )
        sites[site.id] = SiteState(
            site_id=site.id,
            pv_w=pv_w,
            battery_w=battery_w,
            grid_w=grid_w,
            load_w=load_w,
            export_w=None if grid_w is None else max(0.0, -grid_w),
            soc=soc,
            capacity_wh=site.battery.capacity_kwh * 1000.0 if site.battery else 0.0,
            pv_limit_w=pv_limit_w,
            feed_in_cap_w=feed_in_cap_w(site),
            connection_limit_w=site.grid.connection_limit_w,
            devices_online=online,
            devices_stale=stale,
            devices_total=len(site.devices),
            controllable=controllable,
            flex_up_w=up,
            flex_down_w=down,
            pv_controlled=pv_ctl,
            battery_controlled=bat_ctl,
        )
    return FleetState(ts=ts, sites=sites, telemetry=dict(telemetry))
