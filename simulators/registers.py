"""SunSpec register images built from pysunspec2's model definitions (no hand-typed offsets).

:func:`build_image` lays out ``'SunS'`` at a base address, then each model as
``[ID, L, L data registers]`` (initial contents from ``sunspec2.device.Model(model_id).get_mb()``:
every point at its not-implemented value), then the end model ``0xFFFF, 0``. Point offsets come
from ``sunspec2.device.get_model_def`` (sum of the sizes of the points before a point).

:func:`encode` / :func:`decode` convert one point between Python numbers and big-endian uint16
registers for the SunSpec types the simulated devices use.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import cache, lru_cache

import sunspec2.device as sd

SUNS = (0x5375, 0x6E53)
END_MODEL = (0xFFFF, 0x0000)

# "Not implemented" values per SunSpec type (pysunspec2 sunspec2/mb.py).
_SENTINEL = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "pad": 0x8000,
    "uint16": 0xFFFF,
    "count": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "acc16": 0,
    "acc32": 0,
    "acc64": 0,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
    "ipaddr": 0,
}
_SIGNED = {"int16": 16, "sunssf": 16, "int32": 32, "int64": 64}
_FLOAT = {"float32": (">f", 2, 0x7FC00000), "float64": (">d", 4, 0x7FF8000000000000)}


@dataclass(frozen=True)
class Point:
    """One SunSpec point of a laid-out device: absolute address, size in registers, type, SF point."""

    model_id: int
    name: str
    address: int
    size: int
    type: str
    sf: str | None
    access: str


@cache
def model_points(model_id: int) -> tuple[tuple[str, int, int, str, str | None, str], ...]:
    """``(name, offset, size, type, sf, access)`` of a model's points; offset 0 is the ID register.

    Points of single-instance groups are named ``Group.Point`` (e.g. 704's ``PFWInj.PF``).
    """
    group = sd.get_model_def(model_id)["group"]
    out: list[tuple[str, int, int, str, str | None, str]] = []
    offset = 0

    def add(points: list[dict], prefix: str) -> None:
        nonlocal offset
        for p in points:
            sf = p.get("sf")
            out.append(
                (
                    prefix + p["name"],
                    offset,
                    int(p["size"]),
                    p["type"],
                    sf if isinstance(sf, str) else None,
                    p.get("access", "R"),
                )
            )
            offset += int(p["size"])

    add(group["points"], "")
    for sub in group.get("groups", []):
        if "count" not in sub:  # a single instance; repeating groups are laid out by repeated_points
            add(sub["points"], sub["name"] + ".")
    return tuple(out)


@cache
def repeated_group(model_id: int) -> tuple[str, tuple[tuple[str, int, int, str, str | None, str], ...]] | None:
    """A model's repeating group (160's ``module``): its name and ``(name, offset, size, type, sf, access)``
    of one instance, offsets from the instance's first register; None without one."""
    group = sd.get_model_def(model_id)["group"]
    for sub in group.get("groups", []):
        if "count" in sub:
            out, offset = [], 0
            for p in sub["points"]:
                sf = p.get("sf")
                out.append((p["name"], offset, int(p["size"]), p["type"], sf if isinstance(sf, str) else None, "R"))
                offset += int(p["size"])
            return sub["name"], tuple(out)
    return None


@cache
def _model_registers(model_id: int) -> tuple[int, ...]:
    raw = sd.Model(model_id=model_id).get_mb()
    return struct.unpack(f">{len(raw) // 2}H", raw)


@dataclass
class DeviceImage:
    """A device's registers from ``base`` ('SunS') to the end model, and where each point lives."""

    base: int
    registers: list[int]
    points: dict[tuple[int, str], Point]
    model_addresses: dict[int, int]

    def point(self, model_id: int, name: str) -> Point:
        return self.points[(model_id, name)]

    def set(self, point: Point, value: float | int | str | None) -> None:
        """Write ``value`` (raw, already scaled; None = not implemented) into the registers."""
        start = point.address - self.base
        self.registers[start : start + point.size] = encode(point.type, point.size, value)

    def get(self, point: Point) -> float | int | str | None:
        start = point.address - self.base
        return decode(point.type, self.registers[start : start + point.size])


def model_spans(image: DeviceImage) -> tuple[tuple[int, int, int], ...]:
    """``(model id, first address, end address)`` of each model of ``image``: its ID and L registers and
    the L data registers after them (end exclusive)."""
    return tuple(
        (mid, addr, addr + 2 + image.registers[addr - image.base + 1]) for mid, addr in image.model_addresses.items()
    )


def build_image(model_ids: list[int], base: int = 40000, common_len: int = 66, repeats: int = 0) -> DeviceImage:
    """Lay out ``model_ids`` (model 1 first) at ``base``. ``common_len`` 65 drops model 1's Pad;
    ``repeats``: instances of a model's repeating group (160's strings), named ``module.<i>.<point>``
    from 1, each at its not-implemented values (L counts them).

    Devices of one layout share the (immutable) point table; each gets its own registers.
    """
    registers, points, model_addresses = _layout(tuple(model_ids), base, common_len, repeats)
    return DeviceImage(base, list(registers), points, model_addresses)


@lru_cache(maxsize=64)
def _layout(
    model_ids: tuple[int, ...], base: int, common_len: int, repeats: int = 0
) -> tuple[tuple[int, ...], dict[tuple[int, str], Point], dict[int, int]]:
    regs: list[int] = list(SUNS)
    points: dict[tuple[int, str], Point] = {}
    model_addresses: dict[int, int] = {}
    for mid in model_ids:
        addr = base + len(regs)
        model_regs = list(_model_registers(mid))
        if mid == 1 and common_len == 65:
            model_regs = [model_regs[0], 65, *model_regs[2:67]]
        model_addresses[mid] = addr
        for name, offset, size, typ, sf, access in model_points(mid):
            if offset + size <= len(model_regs):
                points[(mid, name)] = Point(mid, name, addr + offset, size, typ, sf, access)
        group = repeated_group(mid)
        if group is not None and repeats:
            gname, gpoints = group
            for i in range(1, repeats + 1):
                start = len(model_regs)
                for name, offset, size, typ, sf, access in gpoints:
                    full = f"{gname}.{i}.{name}"
                    points[(mid, full)] = Point(mid, full, addr + start + offset, size, typ, sf, access)
                    model_regs.extend(encode(typ, size, None))
            model_regs[1] = len(model_regs) - 2
        regs.extend(model_regs)
    regs.extend(END_MODEL)
    return tuple(regs), points, model_addresses


@lru_cache(maxsize=64)
def point_at_address(
    image_key: tuple[tuple[int, ...], int, int] | tuple[tuple[int, ...], int, int, int],
) -> dict[int, Point]:
    """Every data register address of a layout → the point it belongs to (ID and L excluded)."""
    _, points, _ = _layout(*image_key)
    return {p.address + i: p for p in points.values() for i in range(p.size) if p.name not in ("ID", "L")}


def words_of(value: int, n: int) -> list[int]:
    return [(value >> (16 * (n - 1 - i))) & 0xFFFF for i in range(n)]


def encode(typ: str, size: int, value: float | int | str | None) -> list[int]:
    """Registers for one point; ``None`` gives the type's not-implemented value."""
    if typ == "string":
        data = str(value or "").encode("ascii", "replace")[: 2 * size].ljust(2 * size, b"\0")
        return list(struct.unpack(f">{size}H", data))
    if typ in _FLOAT:
        fmt, n, nan = _FLOAT[typ]
        if value is None:
            return words_of(nan, n)
        packed = struct.pack(fmt, float(value))
        return list(struct.unpack(f">{n}H", packed))
    if value is None:
        return words_of(_SENTINEL.get(typ, 0), size)
    v = int(value)
    if typ in _SIGNED and v < 0:
        v += 1 << _SIGNED[typ]
    return words_of(v & ((1 << (16 * size)) - 1), size)


def decode(typ: str, regs: list[int]) -> float | int | str | None:
    """The number a point's registers hold; ``None`` for the not-implemented value."""
    n = len(regs)
    if typ == "string":
        raw = struct.pack(f">{n}H", *regs)
        return None if raw[:1] == b"\0" else raw.rstrip(b"\0").decode("ascii", "replace")
    if typ in _FLOAT:
        fmt, _, _ = _FLOAT[typ]
        v = struct.unpack(fmt, struct.pack(f">{n}H", *regs))[0]
        return None if math.isnan(v) else v
    v = 0
    for r in regs:
        v = (v << 16) | (r & 0xFFFF)
    if typ in _SENTINEL and v == _SENTINEL[typ] and typ != "pad":
        return None
    if typ in _SIGNED and v >= 1 << (_SIGNED[typ] - 1):
        v -= 1 << _SIGNED[typ]
    return v


@cache
def type_range(typ: str, size: int) -> tuple[int, int]:
    """The implemented raw values of an integer type, sentinel excluded."""
    if typ in _SIGNED:
        bits = _SIGNED[typ]
        return -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1
    top = (1 << (16 * size)) - 1
    return (1, top) if typ.startswith("acc") else (0, top - 1)
