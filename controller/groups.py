"""Groups of sites (grid area, feeder, transformer station, a direct marketer's portfolio) and the
totals of a pool: the whole fleet or one group seen as one plant. Pure functions over the config
and the fleet state.

A site may belong to several groups. A pool's rating is the sum of its sites' PV ratings
(``pv.rating_w``, the base of stages and pool limits: docs/definitions.md "Reference bases"); its
export is the sum of its sites' ``export_w`` (gross, W ≥ 0) and its net export the sum of ``−grid_w``
(docs/definitions.md "Signs").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sparcs.config.schema import FleetConfig
from sparcs.controller.state import FleetState


@dataclass(frozen=True)
class Group:
    """A named group of sites; ``rating_w``: the sum of its sites' PV ratings (W)."""

    id: str
    name: str | None
    kind: str
    sites: tuple[str, ...]
    rating_w: float
    pool_unit: int | None


class Groups:
    """The groups of one fleet config, and which groups a site belongs to."""

    def __init__(self, cfg: FleetConfig):
        rating = {s.id: s.pv.rating_w for s in cfg.sites}
        self.fleet_sites = tuple(s.id for s in cfg.sites)
        self.fleet_rating_w = float(sum(rating.values()))
        self._groups = {
            g.id: Group(g.id, g.name, g.kind, tuple(g.sites), float(sum(rating[s] for s in g.sites)), g.pool_unit)
            for g in cfg.groups
        }

    def all(self) -> list[Group]:
        return list(self._groups.values())

    def get(self, group_id: str) -> Group | None:
        return self._groups.get(group_id)

    def sites(self, group_id: str | None) -> tuple[str, ...]:
        """The sites of a group, or of the whole fleet for None; KeyError for an unknown group."""
        if group_id is None:
            return self.fleet_sites
        return self._groups[group_id].sites

    def rating_w(self, group_id: str | None) -> float:
        return self.fleet_rating_w if group_id is None else self._groups[group_id].rating_w

    def of_site(self, site_id: str) -> list[str]:
        return [g.id for g in self._groups.values() if site_id in g.sites]


@dataclass(frozen=True)
class PoolTotals:
    """A pool's state now, summed over its sites where known. W with the signs of docs/definitions.md
    "Signs"; energies in Wh; ``soc`` capacity-weighted 0..1 over the batteries whose SoC is known.

    ``net_export_w``: Σ −grid_w (negative while the pool imports); ``export_w``: Σ max(0, −grid_w);
    ``load_w``: Σ of the sites' loads (meter balance);
    ``stored_wh``: energy in the batteries; ``available_wh``: stored energy above the batteries'
    ``soc_min``; ``room_wh``: energy the batteries can still take up to ``soc_max``;
    ``charge_w`` / ``discharge_w``: the batteries' rated charge / discharge power; ``sites_known``:
    sites whose meter was read (the others add nothing to the powers).
    """

    sites: int
    sites_known: int
    rating_w: float
    net_export_w: float
    export_w: float
    pv_w: float
    battery_w: float
    load_w: float
    capacity_wh: float
    stored_wh: float
    available_wh: float
    room_wh: float
    charge_w: float
    discharge_w: float
    soc: float | None
    flex_up_w: float
    flex_down_w: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pool_totals(cfg: FleetConfig, state: FleetState | None, site_ids: Iterable[str]) -> PoolTotals:
    """The totals of the pool of ``site_ids`` in ``state`` (None: nothing read yet: zeros)."""
    ids = list(site_ids)
    cfg_sites = {s.id: s for s in cfg.sites}
    known = 0
    net = gross = pv = bat = load = cap = stored = avail = room = flex_up = flex_down = 0.0
    charge = discharge = 0.0
    for sid in ids:
        site = cfg_sites[sid]
        if site.battery is not None:
            charge += site.battery.max_charge_w
            discharge += site.battery.max_discharge_w
        s = state.sites.get(sid) if state is not None else None
        if s is None:
            continue
        if s.grid_w is not None:
            known += 1
            net += -s.grid_w
            gross += max(0.0, -s.grid_w)
        pv += s.pv_w or 0.0
        bat += s.battery_w or 0.0
        load += s.load_w or 0.0
        flex_up += s.flex_up_w
        flex_down += s.flex_down_w
        if s.soc is not None and s.capacity_wh > 0 and site.battery is not None:
            cap += s.capacity_wh
            stored += s.soc * s.capacity_wh
            avail += max(0.0, s.soc - site.battery.soc_min) * s.capacity_wh
            room += max(0.0, site.battery.soc_max - s.soc) * s.capacity_wh
    rating = float(sum(cfg_sites[s].pv.rating_w for s in ids))
    return PoolTotals(
        sites=len(ids),
        sites_known=known,
        rating_w=rating,
        net_export_w=net,
        export_w=gross,
        pv_w=pv,
        battery_w=bat,
        load_w=load,
        capacity_wh=cap,
        stored_wh=stored,
        available_wh=avail,
        room_wh=room,
        charge_w=charge,
        discharge_w=discharge,
        soc=stored / cap if cap else None,
        flex_up_w=flex_up,
        flex_down_w=flex_down,
    )
