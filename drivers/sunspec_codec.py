"""SunSpec point codec built from the model definitions pysunspec2 ships.

A model's layout (point offsets, types, sizes, scale-factor references) is computed once per model
id from ``sunspec2.device.get_model_def`` and cached; decoding a register block then walks a
precompiled plan, so polling a thousand devices does not re-interpret JSON. Offsets count from the
model's ID register (ID at +0, L at +1, first data point at +2), as in the SunSpec tables.

Not-implemented sentinels decode to ``None``. Scaled values are ``raw × 10^SF`` in the unit the
model declares (W, Wh, %, s ...); turning them into the telemetry's SI shape is ``sunspec_map``'s job.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import sunspec2.device as sd

_SIZE_UNIMPL_16 = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "count": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
}
_UNIMPL_32 = {"int32": 0x80000000, "uint32": 0xFFFFFFFF, "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF}
_UNIMPL_64 = {"int64": 0x8000000000000000, "uint64": 0xFFFFFFFFFFFFFFFF}
_ACC = {"acc16": 1, "acc32": 2, "acc64": 4}


Value = float | int | str | None
"""A decoded point: a number (scaled), a string, or None (not implemented, or not reached)."""
Models = dict[int, dict[str, Value]]
"""Decoded points by model id, then by point name."""


def number(v: Value) -> float | None:
    """A decoded point as a number, None when it is not one (not implemented, or a string)."""
    return float(v) if isinstance(v, int | float) else None


class ModelUnknownError(KeyError):
    """pysunspec2 has no definition for this model id."""


@dataclass(frozen=True)
class PointDef:
    """One top-level point of a model: where it sits and how to read it."""

    name: str
    offset: int  # registers from the model's ID register
    size: int  # registers
    type: str
    sf: str | int | None  # name of the scale-factor point, a fixed exponent, or None
    units: str | None
    access: str  # "R" or "RW"
    symbols: dict[int, str]


@dataclass(frozen=True)
class ModelDef:
    """A model's fixed part: the points before any repeating group."""

    model_id: int
    name: str
    length: int  # L as defined (data registers after the 2-register header)
    points: dict[str, PointDef]

    def point(self, name: str) -> PointDef:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"model {self.model_id} has no point '{name}'") from None


@cache
def model_def(model_id: int) -> ModelDef:
    """The layout of ``model_id`` from pysunspec2's bundled JSON (cached per id)."""
    try:
        group = sd.get_model_def(model_id)["group"]
    except Exception as exc:  # pysunspec2 raises a bare Exception for an unknown id
        raise ModelUnknownError(f"no SunSpec definition for model {model_id}: {exc}") from None
    points: dict[str, PointDef] = {}
    offset = 0
    for p in group["points"]:
        symbols = {int(s["value"]): s["name"] for s in p.get("symbols", [])}
        points[p["name"]] = PointDef(
            name=p["name"],
            offset=offset,
            size=int(p["size"]),
            type=p["type"],
            sf=p.get("sf"),
            units=p.get("units"),
            access=p.get("access", "R"),
            symbols=symbols,
        )
        offset += int(p["size"])
    fixed = offset + sum(sum(int(q["size"]) for q in g["points"]) for g in group.get("groups", []) if "count" not in g)
    return ModelDef(model_id=model_id, name=group["name"], length=fixed - 2, points=points)


def raw_value(regs: Sequence[int], p: PointDef, start: int = 0) -> int | float | str | None:
    """The raw (unscaled) value of point ``p`` from ``regs`` (``regs[start]`` = the model's ID register).

    Returns None for the type's not-implemented sentinel (and for accumulators reading 0, as
    SunSpec defines). Raises IndexError when the block does not reach the point.
    """
    i = start + p.offset
    t = p.type
    if p.size == 1:
        r = regs[i]
        if t in _ACC:
            return r or None
        if t == "pad":
            return r
        if r == _SIZE_UNIMPL_16.get(t, -1):
            return None
        return r - 0x10000 if (t in ("int16", "sunssf") and r & 0x8000) else r
    if t == "float32":
        v = struct.unpack(">f", struct.pack(">HH", regs[i], regs[i + 1]))[0]
        return None if math.isnan(v) else v
    if t == "float64":
        v = struct.unpack(">d", struct.pack(">HHHH", *regs[i : i + 4]))[0]
        return None if math.isnan(v) else v
    if t == "string":
        b = struct.pack(f">{p.size}H", *regs[i : i + p.size])
        return None if b[:1] == b"\0" else b.rstrip(b"\0").decode("latin-1").strip()
    if i + p.size > len(regs):
        raise IndexError(i + p.size)
    u = 0
    for k in range(p.size):
        u = (u << 16) | regs[i + k]
    if t in _ACC:
        return u or None
    if t in ("ipaddr", "ipv6addr"):
        return u or None
    if t == "eui48":
        return None if u & 0xFFFFFFFFFFFF == 0xFFFFFFFFFFFF else u
    if u == _UNIMPL_32.get(t, _UNIMPL_64.get(t, -1)):
        return None
    if t in ("int32", "int64") and u >> (16 * p.size - 1):
        u -= 1 << (16 * p.size)
    return u


@dataclass(frozen=True)
class _Step:
    name: str
    point: PointDef
    sf: PointDef | int | None


@cache
def _plan(model_id: int, names: tuple[str, ...] | None) -> tuple[_Step, ...]:
    md = model_def(model_id)
    chosen = md.points.values() if names is None else [md.point(n) for n in names]
    steps = []
    for p in chosen:
        if p.type in ("sunssf", "pad") or p.name in ("ID", "L"):
            continue
        sf: PointDef | int | None
        if isinstance(p.sf, str):
            sf = md.point(p.sf)
        elif p.sf is not None:
            sf = int(p.sf)
        else:
            sf = None
        steps.append(_Step(p.name, p, sf))
    return tuple(steps)


def decode(
    model_id: int, regs: Sequence[int], names: Iterable[str] | None = None, start: int = 0
) -> dict[str, float | int | str | None]:
    """Decode the model block ``regs[start:]`` into ``{point: value × 10^SF}``.

    ``names`` selects points (default: every top-level point except IDs and scale factors).
    Points the block does not reach, sentinels, and values whose scale factor is not implemented
    decode to None.
    """
    plan = _plan(model_id, None if names is None else tuple(names))
    out: dict[str, float | int | str | None] = {}
    n = len(regs)
    for step in plan:
        p = step.point
        if start + p.offset + p.size > n:
            out[step.name] = None
            continue
        v = raw_value(regs, p, start)
        sf = step.sf
        if v is None or sf is None or isinstance(v, str):
            out[step.name] = v
            continue
        e: int | float | str | None
        if isinstance(sf, PointDef):
            if start + sf.offset >= n:
                out[step.name] = None
                continue
            e = raw_value(regs, sf, start)
        else:
            e = sf
        if not isinstance(e, int) or not -10 <= e <= 10:  # a scale factor not implemented (or absurd)
            out[step.name] = None
            continue
        out[step.name] = v * 10.0**e if e else v
    return out


@cache
def repeating_group(model_id: int) -> tuple[int, ModelDef] | None:
    """A model's repeating group (160's ``module``: one per MPPT string) as (offset of the first
    instance from the ID register, the layout of one instance); None for a model without one."""
    group = sd.get_model_def(model_id)["group"]
    fixed = sum(int(p["size"]) for p in group["points"])
    for sub in group.get("groups", []):
        if "count" not in sub:
            continue
        points: dict[str, PointDef] = {}
        offset = 0
        for p in sub["points"]:
            points[p["name"]] = PointDef(
                p["name"], offset, int(p["size"]), p["type"], p.get("sf"), p.get("units"), p.get("access", "R"), {}
            )
            offset += int(p["size"])
        return fixed, ModelDef(model_id, sub["name"], offset, points)
    return None


def decode_repeating(model_id: int, regs: Sequence[int], names: Iterable[str]) -> list[dict[str, Value]]:
    """The instances of the model's repeating group in ``regs`` (from the ID register; as many as the
    block holds whole), each ``{point: value × 10^SF}``; scale factors are the model's fixed points."""
    found = repeating_group(model_id)
    if found is None:
        return []
    start, inst = found
    sfs = model_def(model_id).points
    out: list[dict[str, Value]] = []
    at = start
    while at + inst.length <= len(regs):
        entry: dict[str, Value] = {}
        for name in names:
            p = inst.point(name)
            v = raw_value(regs, p, at)
            if isinstance(p.sf, str) and isinstance(v, int | float):
                e = raw_value(regs, sfs[p.sf]) if p.sf in sfs else None
                v = v * 10.0**e if isinstance(e, int) and -10 <= e <= 10 else None
            entry[name] = v
        out.append(entry)
        at += inst.length
    return out


def encode_point(p: PointDef, raw: int) -> list[int]:
    """Registers for writing the raw integer ``raw`` into point ``p`` (big-endian, MSW first)."""
    if p.type in ("float32", "float64", "string"):
        raise ValueError(f"point {p.name}: encoding {p.type} is not supported for writes")
    bits = 16 * p.size
    lo = -(1 << (bits - 1)) if p.type in ("int16", "int32", "int64", "sunssf") else 0
    hi = (1 << (bits - 1)) - 1 if lo else (1 << bits) - 1
    if not lo <= raw <= hi:
        raise ValueError(f"point {p.name}: {raw} does not fit {p.type}")
    u = raw & ((1 << bits) - 1)
    return [(u >> (16 * (p.size - 1 - k))) & 0xFFFF for k in range(p.size)]
