"""What-if overrides of a scenario: the day replayed with one thing changed (docs/twin.md "What-if").

Each override has a ``name`` (it is listed under ``overrides`` in report.json), targets ``sites``,
a ``group`` (the fleet file's or the scenario's) or, with neither, every site, and changes exactly
one thing for the whole replayed day:

- ``feed_in_cap_pct``: the sites' feed-in cap regime at the meter (60, 70 or "none": no cap);
- ``export_limit_pct``: export at each site's meter at most this % of its PV rating, as a pool
  limit (docs/interfaces.md) over the sites for the whole day;
- ``stage``: a curtailment stage (K1–K4) over the sites for the whole day;
- ``tariff``: the sites on this tariff (a name in the fleet file's or the scenario's ``tariffs``);
- ``battery``: a battery added (or the one there replaced) with this capacity and power; a battery
  device is added to a site without one; ``"none"`` removes the sites' batteries and battery devices;
- ``pv_scale``: the sites' PV kWp and inverter rating times this factor (> 0);
- ``offline``: the sites' devices (or the listed ``devices``) do not answer all day.

Commands come from the controller's command path as in production (the stage and the pool limit
are operator commands sent at the day's start); the rest changes the fleet the simulators and the
controller are built from.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparcs.config.grid_rules import Stage
from sparcs.config.schema import (
    BATTERY_KINDS,
    PV_KINDS,
    BatteryConfig,
    DeviceConfig,
    FaultSpec,
    FleetConfig,
    GroupConfig,
    error_lines,
)
from sparcs.controller.commands import PoolLimitRequest, StageRequest

KINDS = ("feed_in_cap_pct", "export_limit_pct", "stage", "tariff", "battery", "pv_scale", "offline")


class Override(BaseModel):
    """One what-if; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="named in the report")
    sites: list[str] | None = Field(default=None, min_length=1)
    group: str | None = None
    devices: list[str] | None = Field(default=None, min_length=1, description="with offline: these devices")
    feed_in_cap_pct: Literal[60, 70, "none"] | None = None
    export_limit_pct: float | None = Field(default=None, ge=0, le=100)
    stage: Stage | None = None
    tariff: str | None = None
    battery: BatteryConfig | Literal["none"] | None = None
    pv_scale: float | None = Field(default=None, gt=0, le=100)
    offline: Literal[True] | None = None

    @model_validator(mode="after")
    def _one(self) -> Override:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an override changes exactly one of {', '.join(KINDS)} (got {given or 'none'})")
        if self.sites is not None and self.group is not None:
            raise ValueError("give sites or group, not both")
        if self.devices is not None and self.offline is None:
            raise ValueError("devices goes with offline only")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)


class OverrideError(Exception):
    """Overrides that do not fit the fleet; ``errors`` name each field (``overrides[i].…``)."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def _targets(cfg: FleetConfig, o: Override, where: str) -> list[str]:
    ids = [s.id for s in cfg.sites]
    if o.group is not None:
        group = next((g for g in cfg.groups if g.id == o.group), None)
        if group is None:
            raise OverrideError([f"{where}.group: unknown group '{o.group}' in the fleet file and the scenario"])
        return list(group.sites)
    if o.sites is None:
        return ids
    unknown = [f"{where}.sites[{i}]: unknown site '{s}' in this fleet" for i, s in enumerate(o.sites) if s not in ids]
    if unknown:
        raise OverrideError(unknown)
    return list(o.sites)


def apply_overrides(
    cfg: FleetConfig, overrides: list[Override], day: tuple[float, float]
) -> tuple[FleetConfig, list[tuple[str, StageRequest | PoolLimitRequest]], list[dict[str, object]]]:
    """The fleet with the overrides applied, the commands they send at the day's start (as (override
    name, request)), and the report's ``overrides`` entries (name, kind, sites). Raises OverrideError."""
    out = cfg.model_copy(deep=True)
    start = dt.datetime.fromtimestamp(day[0], dt.UTC)
    end = dt.datetime.fromtimestamp(day[1], dt.UTC)
    sends: list[tuple[str, StageRequest | PoolLimitRequest]] = []
    report: list[dict[str, object]] = []
    used = {d.port for s in out.sites for d in s.devices}
    for i, o in enumerate(overrides):
        where = f"overrides[{i}]"
        ids = _targets(out, o, where)
        report.append({"name": o.name, "kind": o.kind, "value": _value(o), "sites": ids})
        if o.stage is not None:
            sends.append((o.name, StageRequest(stage=o.stage, sites=ids, start=start, expires_at=end)))
        elif o.export_limit_pct is not None:
            gid = f"what-if-{i}"
            out.groups = [*out.groups, GroupConfig(id=gid, name=o.name, sites=ids)]
            sends.append((o.name, PoolLimitRequest(group=gid, limit_pct=o.export_limit_pct, expires_at=end)))
        elif o.offline is not None:
            devs = o.devices or [d.id for sid in ids for d in out.site(sid).devices]
            known = {d.id for s in out.sites for d in s.devices}
            bad = [f"{where}.devices[{j}]: unknown device '{d}'" for j, d in enumerate(devs) if d not in known]
            if bad:
                raise OverrideError(bad)
            assert out.simulation is not None  # the twin's fleet has one
            out.simulation.faults = [
                *out.simulation.faults,
                *(FaultSpec(device=d, mode="offline", start=start, end=end) for d in devs),
            ]
        else:
            for sid in ids:
                _change_site(out, sid, o, used)
    try:
        return FleetConfig.model_validate(out.model_dump(mode="python", by_alias=True)), sends, report
    except ValidationError as exc:
        raise OverrideError([f"overrides: {line}" for line in error_lines(exc, out.model_dump())]) from None


def _value(o: Override) -> object:
    v = getattr(o, o.kind)
    return v.model_dump() if isinstance(v, BaseModel) else v


def _change_site(cfg: FleetConfig, sid: str, o: Override, used_ports: set[int]) -> None:
    """One site-level override on site ``sid`` (cap regime, tariff, battery, PV size); a device added
    takes a port no other device uses (the twin binds free ports in its place)."""
    site = cfg.site(sid)
    if o.feed_in_cap_pct is not None:
        cap = None if o.feed_in_cap_pct == "none" else o.feed_in_cap_pct
        site.grid = site.grid.model_copy(update={"feed_in_cap_pct": cap})
    elif o.tariff is not None:
        site.tariff = o.tariff
    elif o.pv_scale is not None:
        pv = site.pv
        inverter = None if pv.inverter_w is None else pv.inverter_w * o.pv_scale
        site.pv = pv.model_copy(update={"kwp": pv.kwp * o.pv_scale, "inverter_w": inverter})
    elif o.battery == "none":
        site.devices = [d for d in site.devices if d.kind not in BATTERY_KINDS or d.kind in PV_KINDS]
        if any(d.kind == "hybrid" for d in site.devices):
            raise OverrideError([f"overrides: site '{sid}' has a hybrid inverter; its battery cannot be removed"])
        site.battery = None
    elif isinstance(o.battery, BatteryConfig):
        site.battery = o.battery
        if not any(d.kind in BATTERY_KINDS for d in site.devices):
            port = next(p for p in range(1024, 65536) if p not in used_ports)
            used_ports.add(port)
            device = DeviceConfig(id=f"{sid}-what-if-battery", kind="battery", host=site.devices[0].host, port=port)
            site.devices = [*site.devices, device]
