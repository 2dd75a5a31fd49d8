"""Open data: what the swarm does, aggregated per district or group so that no household can be seen
(docs/open-data.md). Pure functions over the fleet file and the store's per-site quarter-hours.

- An *area* is a district (the sites' ``district``) or a configured group (``open_data.aggregate_by``).
  Every published area holds at least ``open_data.k`` sites. District mode: a district with fewer
  is merged into the city-wide ``other`` area, which is withheld when it has fewer itself. Group
  mode: a group with fewer is withheld, and so is a group whose sites differ from an area already
  published by 1 to k − 1 sites (the difference of the two sums would show those few).
- Values per area and quarter-hour (aligned to the clock, ``QUARTER_S``), published once the
  quarter-hour ended ``open_data.delay_s`` ago, and only when at least k of the area's sites have
  samples in it. Energies in Wh: a site's energy is the mean of its samples' power × 0.25 h, an
  area's the sum over its sites. Signs of docs/definitions.md "Signs"; every quantity is ≥ 0.
- Nothing published names a site or a device, or places anything finer than a district's centroid.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sparcs.config.grid_rules import QUARTER_S
from sparcs.config.schema import FleetConfig
from sparcs.config.tariffs import BERLIN
from sparcs.controller.store import SiteQuarter

QUARTER_H = QUARTER_S / 3600.0
LICENSE_URI = "http://dcat-ap.de/def/licenses/dl-by-de/2.0"
"""Datenlizenz Deutschland – Namensnennung – Version 2.0: every published item carries it."""
LICENSE_NAME = "Datenlizenz Deutschland – Namensnennung – Version 2.0"
OTHER_AREA = "other"

AreaKind = Literal["district", "group", "other"]


@dataclass(frozen=True)
class Quantity:
    """One published quantity: its key (the CSV column, the Datastream's property), name, what it
    means, and its unit (UCUM symbol, QUDT definition)."""

    key: str
    name: str
    definition: str
    unit_name: str
    unit_symbol: str
    unit_definition: str


_WH = ("watt hour", "Wh", "https://qudt.org/vocab/unit/W-HR")
_W = ("watt", "W", "https://qudt.org/vocab/unit/W")
_ONE = ("fraction", "1", "https://qudt.org/vocab/unit/FRACTION")

QUANTITIES: tuple[Quantity, ...] = (
    Quantity("pv_energy_wh", "PV produced", "AC energy the PV inverters of the area's sites produced", *_WH),
    Quantity("feed_in_energy_wh", "Fed in", "energy exported to the grid at the sites' meters (gross)", *_WH),
    Quantity(
        "curtailed_caps_wh",
        "Curtailed by caps",
        "forecast PV energy held back by a feed-in cap, a pool limit or an export cap",
        *_WH,
    ),
    Quantity(
        "curtailed_stages_wh", "Curtailed by stages", "forecast PV energy held back by a grid-operator stage", *_WH
    ),
    Quantity(
        "curtailed_negative_prices_wh",
        "Curtailed at negative prices",
        "forecast PV energy held back in quarter-hours with a negative day-ahead price",
        *_WH,
    ),
    Quantity(
        "battery_throughput_wh", "Battery throughput", "energy charged plus energy discharged by the batteries", *_WH
    ),
    Quantity(
        "self_consumption_share",
        "Self-consumption share",
        "share of the PV energy not fed in: (PV produced − fed in) / PV produced, within 0..1",
        *_ONE,
    ),
    Quantity("flex_up_w", "Flexibility up", "mean power the sites offered as more export or less import", *_W),
    Quantity("flex_down_w", "Flexibility down", "mean power the sites offered as less export or more import", *_W),
)
QUANTITY_KEYS = tuple(q.key for q in QUANTITIES)
_CURTAIL_KEYS = {
    "caps": "curtailed_caps_wh",
    "stages": "curtailed_stages_wh",
    "negative_prices": "curtailed_negative_prices_wh",
}


@dataclass(frozen=True)
class Area:
    """A published aggregate: ``id`` (``district:ID``, ``group:ID`` or ``other``), its name, kind, the
    sites it sums (never published) and its centroid (degrees; None: not published)."""

    id: str
    name: str
    kind: AreaKind
    sites: frozenset[str]
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class Areas:
    """The areas published (ordered) and the ids of those withheld for having too few sites."""

    published: tuple[Area, ...]
    withheld: tuple[str, ...]


def areas(cfg: FleetConfig) -> Areas:
    """The aggregates ``cfg`` publishes (see the module docstring): each with at least ``open_data.k`` sites."""
    od = cfg.open_data
    k = od.k
    if od.aggregate_by == "group":
        published: list[Area] = []
        withheld: list[str] = []
        for g in sorted(cfg.groups, key=lambda g: g.id):
            sites = frozenset(g.sites)
            differs_by_few = any(0 < len(sites ^ a.sites) < k for a in published)
            if len(sites) < k or differs_by_few:
                withheld.append(f"group:{g.id}")
            else:
                published.append(Area(f"group:{g.id}", g.name or g.id, "group", sites))
        return Areas(tuple(published), tuple(withheld))
    by_district: dict[str, set[str]] = defaultdict(set)
    rest: set[str] = set()
    for s in cfg.sites:
        if s.district is None:
            rest.add(s.id)
        else:
            by_district[s.district].add(s.id)
    out: list[Area] = []
    for did in sorted(by_district):
        members = by_district[did]
        if len(members) < k:
            rest |= members
            continue
        d = od.districts.get(did)
        out.append(
            Area(
                f"district:{did}",
                d.name if d else did,
                "district",
                frozenset(members),
                d.lat if d else None,
                d.lon if d else None,
            )
        )
    withheld = []
    if len(rest) >= k:
        out.append(Area(OTHER_AREA, "Other districts", "other", frozenset(rest)))
    elif rest:
        withheld.append(OTHER_AREA)
    return Areas(tuple(out), tuple(withheld))


@dataclass(frozen=True)
class AreaQuarter:
    """One area's values in the quarter-hour starting at ``start_s`` (Unix s): ``sites`` with samples
    in it (≥ k), and per quantity key its value (None: not defined, e.g. a share without PV)."""

    area_id: str
    start_s: float
    sites: int
    values: Mapping[str, float | None]

    @property
    def end_s(self) -> float:
        return self.start_s + QUARTER_S


def published_end_s(now_s: float, delay_s: float) -> float:
    """The end (Unix s) of the last quarter-hour published at ``now_s``: quarter-hours that ended at
    least ``delay_s`` ago."""
    return math.floor((now_s - delay_s) / QUARTER_S) * QUARTER_S


def area_values(quarters: Iterable[SiteQuarter]) -> dict[str, float | None]:
    """The published values of one area in one quarter-hour from its sites' quarter-hours."""
    qs = list(quarters)

    def energy(get: list[float | None]) -> float:
        return sum(v for v in get if v is not None) * QUARTER_H

    pv = energy([q.pv_w for q in qs])
    fed = energy([q.export_w for q in qs])
    values: dict[str, float | None] = {
        "pv_energy_wh": pv,
        "feed_in_energy_wh": fed,
        "battery_throughput_wh": energy([q.battery_abs_w for q in qs]),
        "self_consumption_share": min(1.0, max(0.0, 1.0 - fed / pv)) if pv > 0 else None,
        "flex_up_w": sum(q.flex_up_w or 0.0 for q in qs),
        "flex_down_w": sum(q.flex_down_w or 0.0 for q in qs),
    }
    for cause, key in _CURTAIL_KEYS.items():
        values[key] = energy([q.curtailed_w.get(cause, 0.0) for q in qs])
    return {key: values[key] for key in QUANTITY_KEYS}


def aggregate(published: Sequence[Area], quarters: Iterable[SiteQuarter], k: int) -> list[AreaQuarter]:
    """Per published area and quarter-hour with samples of at least ``k`` of its sites, its values;
    ordered by time, then by the areas' order. Quarter-hours with fewer sites are withheld."""
    by_start: dict[float, list[SiteQuarter]] = defaultdict(list)
    for q in quarters:
        by_start[q.start_s].append(q)
    out = []
    for start in sorted(by_start):
        rows = sorted(by_start[start], key=lambda q: q.site_id)  # one order: the same sums to the last bit
        for a in published:
            mine = [q for q in rows if q.site_id in a.sites]
            if len(mine) >= k:
                out.append(AreaQuarter(a.id, start, len(mine), area_values(mine)))
    return out


def berlin_day_span(day: dt.date) -> tuple[float, float]:
    """Unix s of the Europe/Berlin day ``day``: its midnight and the next (92, 96 or 100 quarter-hours)."""
    start = dt.datetime.combine(day, dt.time(), BERLIN)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), BERLIN)
    return start.timestamp(), end.timestamp()


def iso(t_s: float) -> str:
    """An instant as ISO 8601 in UTC with its offset (docs/definitions.md "Time")."""
    return dt.datetime.fromtimestamp(t_s, dt.UTC).isoformat().replace("+00:00", "Z")
