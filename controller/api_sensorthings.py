"""The open data as an OGC SensorThings API v1.1 read endpoint under /sta/v1.1 (docs/open-data.md
"SensorThings API"): public, without a token, while ``open_data.enabled`` is true; 404 otherwise.

Entities: a Thing and its Location (the district's centroid) per published area, one
ObservedProperty and one Sensor per quantity, a Datastream per area and quantity, and its
Observations (one per published quarter-hour). Ids are integers: Things, Locations = the area's
place in the list (1, 2, …); ObservedProperties, Sensors = the quantity's (1, 2, …); Datastreams
= Thing × 100 + quantity; Observations = Datastream × 10⁸ + the quarter-hour's number since 1970.

Query options: ``$top`` (default 100, at most 1000), ``$skip``, ``$count``, ``$orderby``
(``id``, ``name``; for Observations ``phenomenonTime``, ``resultTime``, ``result``, each ``asc`` or
``desc``), ``$filter`` on Observations' ``phenomenonTime`` (its start) or ``resultTime`` (its end)
with ``eq``, ``ne``, ``gt``, ``ge``, ``lt``, ``le`` joined by ``and``, and ``$expand`` of the
navigation properties (``Datastreams``, ``Observations``, ``Thing``, ``Locations``, ``Sensor``,
``ObservedProperty``, ``Datastream``; paths such as ``Datastreams/Observations`` and options in
parentheses, e.g. ``Datastreams($expand=Observations($top=4))``). A collection longer than a page
carries ``@iot.nextLink``. A query option that cannot be served is a 400 that names it.

The values are read by the API process from its own store connection (:class:`OpenDataReader`).
"""

# No ``from __future__ import annotations``: FastAPI resolves the dependencies from the live annotations.
import datetime as dt
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request

from sparcs.controller.api_deps import View
from sparcs.controller.open_data import LICENSE_NAME, LICENSE_URI, QUANTITIES, Area, AreaQuarter, iso
from sparcs.controller.open_data_reader import OpenDataReader
from sparcs.controller.read_model import ControllerView

router = APIRouter(prefix="/sta/v1.1", tags=["open data"])

PREFIX = "/sta/v1.1"
DEFAULT_TOP = 100
MAX_TOP = 1000
OBS_FACTOR = 10**8
DS_FACTOR = 100
OPTIONS = ("$top", "$skip", "$count", "$orderby", "$filter", "$expand")
SETS = ("Things", "Locations", "Datastreams", "Sensors", "ObservedProperties", "Observations")
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
DOCS = "docs/open-data.md"
CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
]
# navigation property → (target set, singular?)
NAVIGATION: dict[str, dict[str, tuple[str, bool]]] = {
    "Things": {"Datastreams": ("Datastreams", False), "Locations": ("Locations", False)},
    "Locations": {"Things": ("Things", False)},
    "Datastreams": {
        "Thing": ("Things", True),
        "Sensor": ("Sensors", True),
        "ObservedProperty": ("ObservedProperties", True),
        "Observations": ("Observations", False),
    },
    "Sensors": {"Datastreams": ("Datastreams", False)},
    "ObservedProperties": {"Datastreams": ("Datastreams", False)},
    "Observations": {"Datastream": ("Datastreams", True)},
}
ORDER_KEYS = {"id", "name", "phenomenonTime", "resultTime", "result"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def bad(option: str, message: str) -> HTTPException:
    """A 400 naming the query option (or path) that cannot be served."""
    return HTTPException(400, f"{option}: {message}")


# -- query options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """``field op t``: ``field`` phenomenonTime (compared by its start) or resultTime (its end), ``t`` Unix s."""

    field: str
    op: str
    t: float


@dataclass
class Options:
    top: int = DEFAULT_TOP
    skip: int = 0
    count: bool = False
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (key, descending)
    filter: list[Condition] = field(default_factory=list)
    expand: dict[str, "Options"] = field(default_factory=dict)


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _int_option(name: str, raw: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d{1,12}", raw.strip()):
        raise bad(name, f"'{raw}' is not a whole number ≥ {low}")
    value = int(raw)
    if not low <= value <= high:
        raise bad(name, f"must lie between {low} and {high}")
    return value


def _instant(option: str, raw: str) -> float:
    text = raw.strip().strip("'")
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise bad(option, f"'{text}' is not an ISO 8601 time, e.g. 2026-06-21T12:00:00Z") from None
    if t.utcoffset() is None:
        raise bad(option, f"'{text}' needs a UTC offset, e.g. 2026-06-21T12:00:00+02:00")
    return t.timestamp()


_CONDITION = re.compile(r"^\s*\(?\s*(phenomenonTime|resultTime)\s+(eq|ne|gt|ge|lt|le)\s+(\S+?)\s*\)?\s*$")


def _filter(raw: str) -> list[Condition]:
    parts = re.split(r"\s+and\s+", raw.strip())
    out = []
    for part in parts:
        m = _CONDITION.match(part)
        if m is None:
            raise bad(
                "$filter",
                f"cannot serve '{part.strip()}': use phenomenonTime or resultTime with eq, ne, gt, ge, lt or le "
                "and an ISO 8601 time, joined by 'and'",
            )
        out.append(Condition(m.group(1), m.group(2), _instant("$filter", m.group(3))))
    return out


def _orderby(raw: str) -> list[tuple[str, bool]]:
    out = []
    for item in raw.split(","):
        words = item.split()
        direction_ok = len(words) == 1 or (len(words) == 2 and words[1] in ("asc", "desc"))
        if not words or not direction_ok or words[0] not in ORDER_KEYS:
            keys = ", ".join(sorted(ORDER_KEYS))
            raise bad("$orderby", f"cannot order by '{item.strip()}': use {keys} with asc or desc")
        out.append((words[0], len(words) == 2 and words[1] == "desc"))
    return out


def _expand(raw: str) -> dict[str, Options]:
    out: dict[str, Options] = {}
    for item in _split_top(raw, ","):
        item = item.strip()
        if not item:
            raise bad("$expand", "an empty item; list navigation properties separated by commas")
        path = _split_top(item, "/")
        target = out
        for k, seg in enumerate(path):
            m = re.fullmatch(r"(\w+)(?:\((.*)\))?", seg.strip(), re.S)
            if m is None:
                raise bad("$expand", f"cannot read '{seg}'")
            name, inner = m.group(1), m.group(2)
            if inner is not None and k < len(path) - 1:
                raise bad("$expand", f"options only on the last part of '{item}'")
            opts = target.setdefault(name, Options())
            if inner is not None:
                nested = parse_options(dict(_inner_pairs(inner)))
                target[name] = nested
                opts = nested
            target = opts.expand
    return out


def _inner_pairs(inner: str) -> list[tuple[str, str]]:
    pairs = []
    for part in _split_top(inner, ";"):
        if "=" not in part:
            raise bad("$expand", f"cannot read the option '{part}' (write $top=10)")
        key, value = part.split("=", 1)
        pairs.append((key.strip(), value.strip()))
    return pairs


def parse_options(params: Mapping[str, str]) -> Options:
    """The query options of a request (keys without ``$`` are not options and are ignored); a 400 for
    one it cannot serve."""
    opts = Options()
    for key, raw in params.items():
        if not key.startswith("$"):
            continue
        if key not in OPTIONS:
            raise bad(key, f"not supported here; use {', '.join(OPTIONS)}")
        if key == "$top":
            opts.top = _int_option(key, raw, 0, MAX_TOP)
        elif key == "$skip":
            opts.skip = _int_option(key, raw, 0, 10**12)
        elif key == "$count":
            if raw not in ("true", "false"):
                raise bad(key, f"'{raw}' is neither true nor false")
            opts.count = raw == "true"
        elif key == "$orderby":
            opts.orderby = _orderby(raw)
        elif key == "$filter":
            opts.filter = _filter(raw)
        else:
            opts.expand = _expand(raw)
    return opts


# -- the entities -----------------------------------------------------------------------------------


@dataclass
class Context:
    """One request: what it reads, where its links point, and the values it has read."""

    reader: OpenDataReader
    base: str  # http://host:port/sta/v1.1
    _quarters: dict[tuple[float | None, float | None], list[AreaQuarter]] = field(default_factory=dict)
    _index: dict[tuple[str, float], AreaQuarter] = field(default_factory=dict)

    @property
    def areas(self) -> tuple[Area, ...]:
        return self.reader.areas.published

    def area(self, thing_id: int) -> Area | None:
        return self.areas[thing_id - 1] if 1 <= thing_id <= len(self.areas) else None

    def quarters(self, start_s: float | None, end_s: float | None) -> list[AreaQuarter]:
        key = (start_s, end_s)
        if key not in self._quarters:
            self._quarters[key] = self.reader.quarters(start_s, end_s)
            self._index.update(((aq.area_id, aq.start_s), aq) for aq in self._quarters[key])
        return self._quarters[key]

    def quarter(self, area_id: str, start_s: float) -> AreaQuarter | None:
        """The area's values in the quarter-hour starting at ``start_s``, from what was read if it was."""
        if (area_id, start_s) not in self._index:
            self.quarters(start_s, start_s + 900.0)
        return self._index.get((area_id, start_s))

    def link(self, entity_set: str, eid: int) -> str:
        return f"{self.base}/{entity_set}({eid})"


def _datastream_parts(ds_id: int) -> tuple[int, int]:
    return ds_id // DS_FACTOR, ds_id % DS_FACTOR


def exists(ctx: Context, entity_set: str, eid: int) -> bool:
    if entity_set in ("Things",):
        return ctx.area(eid) is not None
    if entity_set == "Locations":
        a = ctx.area(eid)
        return a is not None and a.lat is not None
    if entity_set in ("Sensors", "ObservedProperties"):
        return 1 <= eid <= len(QUANTITIES)
    if entity_set == "Datastreams":
        thing, q = _datastream_parts(eid)
        return ctx.area(thing) is not None and 1 <= q <= len(QUANTITIES)
    return _observation(ctx, eid) is not None


def _observation(ctx: Context, obs_id: int) -> AreaQuarter | None:
    ds, quarter = divmod(obs_id, OBS_FACTOR)
    thing, q = _datastream_parts(ds)
    area = ctx.area(thing)
    if area is None or not 1 <= q <= len(QUANTITIES):
        return None
    aq = ctx.quarter(area.id, quarter * 900.0)
    return aq if aq is not None and aq.values.get(QUANTITIES[q - 1].key) is not None else None


def collection_ids(ctx: Context, entity_set: str, opts: Options, parent: tuple[str, int] | None) -> list[int]:
    """The ids of ``entity_set`` (under ``parent``'s navigation, if given), filtered as ``opts`` says."""
    if opts.filter and entity_set != "Observations":
        raise bad("$filter", f"only Observations can be filtered here, not {entity_set}")
    things = range(1, len(ctx.areas) + 1)
    quantities = range(1, len(QUANTITIES) + 1)
    if entity_set == "Things":
        ids = list(things)
        if parent is not None:  # Locations(i)/Things
            ids = [parent[1]]
    elif entity_set == "Locations":
        ids = [t for t in things if ctx.areas[t - 1].lat is not None]
        if parent is not None:  # Things(i)/Locations
            ids = [t for t in ids if t == parent[1]]
    elif entity_set in ("Sensors", "ObservedProperties"):
        ids = list(quantities)
    elif entity_set == "Datastreams":
        ids = [t * DS_FACTOR + q for t in things for q in quantities]
        if parent is not None and parent[0] == "Things":
            ids = [d for d in ids if d // DS_FACTOR == parent[1]]
        elif parent is not None:  # Sensors(q) or ObservedProperties(q)
            ids = [d for d in ids if d % DS_FACTOR == parent[1]]
    else:
        ids = _observation_ids(ctx, opts, None if parent is None else parent[1])
    return ids


def _bounds(conditions: list[Condition]) -> tuple[float | None, float | None]:
    """The span of quarter-hour starts the conditions leave (to read no more than needed)."""
    low: float | None = None
    high: float | None = None
    for c in conditions:
        start_t = c.t if c.field == "phenomenonTime" else c.t - 900.0  # resultTime is the end
        if c.op in ("ge", "gt", "eq"):
            low = start_t if low is None else max(low, start_t)
        if c.op in ("le", "lt", "eq"):
            hi = start_t + 1e-6 if c.op in ("le", "eq") else start_t
            high = hi if high is None else min(high, hi)
    return low, high


def _observation_ids(ctx: Context, opts: Options, ds_id: int | None) -> list[int]:
    low, high = _bounds(opts.filter)
    wanted: dict[str, list[tuple[int, str]]] = {}
    for t, area in enumerate(ctx.areas, start=1):
        for q, quantity in enumerate(QUANTITIES, start=1):
            ds = t * DS_FACTOR + q
            if ds_id is None or ds == ds_id:
                wanted.setdefault(area.id, []).append((ds, quantity.key))
    ids = []
    for aq in ctx.quarters(low, high):
        for ds, key in wanted.get(aq.area_id, ()):
            if aq.values.get(key) is None:
                continue
            if all(_OPS[c.op](aq.start_s if c.field == "phenomenonTime" else aq.end_s, c.t) for c in opts.filter):
                ids.append(ds * OBS_FACTOR + int(aq.start_s // 900))
    return ids


def _sort_key(ctx: Context, entity_set: str, key: str) -> Callable[[int], Any]:
    if key == "id":
        return lambda i: i
    if entity_set == "Observations":
        if key in ("phenomenonTime", "resultTime"):
            return lambda i: i % OBS_FACTOR
        if key == "result":
            return lambda i: _result(ctx, i)
    if key == "name" and entity_set != "Observations":
        return lambda i: str(entity(ctx, entity_set, i).get("name", ""))
    raise bad("$orderby", f"{entity_set} cannot be ordered by {key}")


def _result(ctx: Context, obs_id: int) -> float:
    aq = _observation(ctx, obs_id)
    ds = obs_id // OBS_FACTOR
    value = None if aq is None else aq.values.get(QUANTITIES[ds % DS_FACTOR - 1].key)
    return float("nan") if value is None else value


def entity(ctx: Context, entity_set: str, eid: int) -> dict[str, Any]:
    """The JSON of one entity with its self and navigation links (no expansion)."""
    out: dict[str, Any] = {"@iot.id": eid, "@iot.selfLink": ctx.link(entity_set, eid)}
    if entity_set == "Things":
        a = ctx.areas[eid - 1]
        out |= {
            "name": a.name,
            "description": f"the SPARCS swarm's sites in {a.name}, summed ({a.kind}; docs/open-data.md)",
            "properties": {"kind": a.kind, "area": a.id, "sites": len(a.sites), "license": _license()},
        }
    elif entity_set == "Locations":
        a = ctx.areas[eid - 1]
        out |= {
            "name": f"{a.name} (centroid)",
            "description": f"the centroid of {a.name}; no site's place is published",
            "encodingType": "application/geo+json",
            "location": {"type": "Point", "coordinates": [a.lon, a.lat]},
        }
    elif entity_set in ("Sensors", "ObservedProperties"):
        qn = QUANTITIES[eid - 1]
        if entity_set == "Sensors":
            out |= {
                "name": f"SPARCS aggregate: {qn.name}",
                "description": "sums over at least k sites of the values their meters, inverters and "
                "batteries reported, per quarter-hour",
                "encodingType": "text/html",
                "metadata": DOCS,
            }
        else:
            out |= {"name": qn.name, "definition": f"{DOCS}#{qn.key}", "description": qn.definition}
    elif entity_set == "Datastreams":
        thing, q = _datastream_parts(eid)
        a, qn = ctx.areas[thing - 1], QUANTITIES[q - 1]
        out |= {
            "name": f"{qn.name}, {a.name}",
            "description": f"{qn.definition}; per quarter-hour, over the sites of {a.name}",
            "observationType": MEASUREMENT,
            "unitOfMeasurement": {"name": qn.unit_name, "symbol": qn.unit_symbol, "definition": qn.unit_definition},
            "properties": {"quantity": qn.key, "resolution": "PT15M", "license": _license()},
        }
    else:
        aq = _observation(ctx, eid)
        assert aq is not None
        ds = eid // OBS_FACTOR
        out |= {
            "phenomenonTime": f"{iso(aq.start_s)}/{iso(aq.end_s)}",
            "resultTime": iso(aq.end_s),
            "result": aq.values[QUANTITIES[ds % DS_FACTOR - 1].key],
            "parameters": {"sites": aq.sites},
        }
    for nav in NAVIGATION[entity_set]:
        out[f"{nav}@iot.navigationLink"] = f"{ctx.link(entity_set, eid)}/{nav}"
    return out


def _license() -> dict[str, str]:
    return {"name": LICENSE_NAME, "uri": LICENSE_URI}


def navigate(ctx: Context, entity_set: str, eid: int, nav: str) -> tuple[str, bool, list[int]]:
    """(target set, singular?, ids) of ``nav`` from one entity."""
    target, singular = NAVIGATION[entity_set][nav]
    if singular:
        if entity_set == "Datastreams":
            thing, q = _datastream_parts(eid)
            return target, True, [thing if target == "Things" else q]
        return target, True, [eid // OBS_FACTOR]  # Observations(o)/Datastream
    return target, False, []


def expanded(ctx: Context, entity_set: str, eid: int, expand: Mapping[str, Options]) -> dict[str, Any]:
    out = entity(ctx, entity_set, eid)
    for nav, opts in expand.items():
        if nav not in NAVIGATION[entity_set]:
            navs = ", ".join(NAVIGATION[entity_set])
            raise bad("$expand", f"{entity_set} has no navigation property {nav}; it has {navs}")
        target, singular, ids = navigate(ctx, entity_set, eid, nav)
        if singular:
            out[nav] = expanded(ctx, target, ids[0], opts.expand)
        else:
            page = collection(ctx, target, opts, (entity_set, eid), f"{ctx.link(entity_set, eid)}/{nav}", {})
            out[nav] = page["value"]
            for k in ("@iot.count", "@iot.nextLink"):
                if k in page:
                    out[f"{nav}{k}"] = page[k]
    return out


def collection(
    ctx: Context,
    entity_set: str,
    opts: Options,
    parent: tuple[str, int] | None,
    url: str,
    params: Mapping[str, str],
) -> dict[str, Any]:
    """One page of a collection: ``value``, ``@iot.count`` when asked, ``@iot.nextLink`` when more follow."""
    ids = collection_ids(ctx, entity_set, opts, parent)
    for key, desc in reversed(opts.orderby):
        ids.sort(key=_sort_key(ctx, entity_set, key), reverse=desc)
    page = ids[opts.skip : opts.skip + opts.top]
    out: dict[str, Any] = {}
    if opts.count:
        out["@iot.count"] = len(ids)
    if opts.top > 0 and opts.skip + opts.top < len(ids):  # $top=0 asks for the count only: no next page
        nxt = dict(params) | {"$top": str(opts.top), "$skip": str(opts.skip + opts.top)}
        out["@iot.nextLink"] = f"{url}?{urlencode(nxt)}"
    out["value"] = [expanded(ctx, entity_set, i, opts.expand) for i in page]
    return out


# -- the routes -------------------------------------------------------------------------------------

_lock = threading.Lock()


def reader_of(request: Request, view: ControllerView) -> OpenDataReader:
    """The app's reader over the view's store, made again after a reload changed the configuration."""
    r: OpenDataReader | None = getattr(request.app.state, "open_data_reader", None)
    if r is None or r.cfg is not view.cfg:
        r = OpenDataReader(view.cfg, view.store, view.now)
        request.app.state.open_data_reader = r
    return r


def _context(request: Request, view: ControllerView) -> Context:
    if not view.cfg.open_data.enabled:
        raise HTTPException(404, "open data is not published here: set open_data.enabled: true in the fleet file")
    base = str(request.base_url).rstrip("/") + PREFIX
    return Context(reader_of(request, view), base)


_SEGMENT = re.compile(r"^([A-Za-z]+)(?:\((\d{1,18})\))?$")


@router.get("")
def root(request: Request, view: View) -> dict[str, Any]:
    """The service root: the entity sets and the conformance classes served."""
    ctx = _context(request, view)
    return {
        "serverSettings": {"conformance": CONFORMANCE},
        "value": [{"name": s, "url": f"{ctx.base}/{s}"} for s in SETS],
    }


@router.get("/{path:path}")
def resource(path: str, request: Request, view: View) -> dict[str, Any]:
    """An entity set, an entity, or a navigation property of an entity (see the module docstring)."""
    ctx = _context(request, view)
    params = dict(request.query_params)
    opts = parse_options(params)
    segments = [s for s in path.split("/") if s]
    parsed = []
    for seg in segments:
        m = _SEGMENT.match(seg)
        if m is None:
            raise HTTPException(404, f"no resource '{seg}'; ids are integers, e.g. Things(1)")
        parsed.append((m.group(1), None if m.group(2) is None else int(m.group(2))))
    if not parsed or parsed[0][0] not in SETS:
        raise HTTPException(404, f"no entity set '{segments[0] if segments else ''}'; the sets are {', '.join(SETS)}")
    with _lock:  # the reader's day cache is shared by the routes' threads
        entity_set, eid = parsed[0]
        url = f"{ctx.base}/{path}"
        if eid is None:
            if len(parsed) > 1:
                raise HTTPException(404, f"{entity_set} needs an id before /{parsed[1][0]}, e.g. {entity_set}(1)")
            return collection(ctx, entity_set, opts, None, url, params)
        if not exists(ctx, entity_set, eid):
            raise HTTPException(404, f"no {entity_set}({eid}); GET {PREFIX}/{entity_set} lists them")
        rest = parsed[1:]
        for k, (nav, nav_id) in enumerate(rest):
            if nav not in NAVIGATION[entity_set]:
                raise HTTPException(
                    404, f"{entity_set} has no navigation property {nav}; it has {', '.join(NAVIGATION[entity_set])}"
                )
            if nav_id is not None:
                raise HTTPException(404, f"address one entity by its own set, e.g. {PREFIX}/{nav}({nav_id})")
            target, singular, ids = navigate(ctx, entity_set, eid, nav)
            if not singular:
                if k != len(rest) - 1:
                    raise HTTPException(404, f"{nav} is a collection: it ends the path")
                return collection(ctx, target, opts, (entity_set, eid), url, params)
            entity_set, eid = target, ids[0]
        return expanded(ctx, entity_set, eid, opts.expand)
