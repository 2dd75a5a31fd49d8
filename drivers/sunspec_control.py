"""SunSpec control writes: a PV limit (123 or 704), a battery setpoint (124 or 704), their releases and read-back.

Rules (docs/definitions.md "Reference bases", "Revert timers and safe defaults"):
- a PV limit is ``WMaxLimPct`` in % of WMax (scale factor ``WMaxLimPct_SF``), written value and
  timer first, enable last, so the device never applies a stale percentage;
- 124: ``OutWRte`` is % of 120 ``MaxDisChaRte`` (else ``WChaMax``), ``InWRte`` % of ``WChaMax``
  (scale factor ``InOutWRte_SF``); ``StorCtl_Mod`` 2 discharges, 1 charges, 3 holds (both rates 0);
- 704: ``WSet`` in W (``WSet_SF``), with ``WSetMod`` 1 and ``WSetEna`` 1;
- a release writes only the enable (mode) point;
- 0 W on 123 is a stop: ``Conn_RvrtTms`` then ``Conn`` = 0 (the inverter disconnects; its timer
  reconnects it); while the latest poll shows ``Conn`` = 0, a limit or a release first writes
  ``Conn`` = 1;
- the scale factors come from the control model's registers of the latest poll when the device
  polls that model, else from one read first; one read of the control model after the writes
  checks every written register and decodes the setpoint in force.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sparcs.drivers.device import ReadBack, RegisterWrite, WritePlan
from sparcs.drivers.discovery import ModelLocation, read_model
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.sunspec_codec import Models, decode, encode_point, model_def, number, raw_value

if TYPE_CHECKING:
    from sparcs.drivers.sunspec_device import SunSpecDevice


async def pv_limit_plan(d: SunSpecDevice, target_w: float | None, wmax_w: float, revert_s: int) -> WritePlan:
    """The writes of a PV limit of ``target_w`` (None: release) on the device's 123 or 704."""
    loc = control(d, 123, 704)
    if loc.model_id == 123:
        reconnect = point_writes(loc, [("Conn", 1)]) if d.models.get(123, {}).get("Conn") == 0 else ()
        if target_w is None:
            writes = reconnect + point_writes(loc, [("WMaxLim_Ena", 0)])
        elif target_w <= 0.0:
            writes = point_writes(loc, [("Conn_RvrtTms", revert_s), ("Conn", 0)])
        else:
            pct = pct_raw(target_w, wmax_w, scale_factor(loc, await control_regs(d, loc), "WMaxLimPct_SF"))
            points = [("WMaxLimPct", pct), ("WMaxLimPct_RvrtTms", revert_s), ("WMaxLim_Ena", 1)]
            writes = reconnect + point_writes(loc, points)
    elif target_w is None:
        writes = point_writes(loc, [("WMaxLimPctEna", 0)])
    else:
        pct = pct_raw(target_w, wmax_w, scale_factor(loc, await control_regs(d, loc), "WMaxLimPct_SF"))
        writes = point_writes(loc, [("WMaxLimPct", pct), ("WMaxLimPctRvrtTms", revert_s), ("WMaxLimPctEna", 1)])

    def in_force(got: list[int]) -> float | None:
        if loc.model_id == 123:  # what the read-back saw of Conn decides the next write's reconnect
            d.models.setdefault(123, {})["Conn"] = decode(123, got, ("Conn",))["Conn"]
        return limit_from_control(loc.model_id, got, wmax_w)

    return WritePlan(writes, control_readback(d, loc, in_force))


async def battery_plan(d: SunSpecDevice, target_w: float | None, revert_s: int) -> WritePlan:
    """The writes of a battery setpoint of ``target_w`` (W, > 0 discharge; None: release) on 124 or 704."""
    loc = control(d, 124, 704)
    if loc.model_id == 124:
        if target_w is None:
            writes = point_writes(loc, [("StorCtl_Mod", 0)])
        else:
            regs = await control_regs(d, loc)
            sf = scale_factor(loc, regs, "InOutWRte_SF")
            wchamax = number(decode(124, regs, ("WChaMax",))["WChaMax"])
            wdis = discharge_base_w(d.models) or wchamax
            if not wchamax or not wdis:
                raise DeviceError("model 124 reports no WChaMax: cannot convert W to percent")
            out_raw = round(max(target_w, 0.0) / wdis * 100.0 / 10.0**sf)
            in_raw = round(max(-target_w, 0.0) / wchamax * 100.0 / 10.0**sf)
            mode = 2 if target_w > 0 else 1 if target_w < 0 else 3  # 3: both rates 0 = hold
            writes = point_writes(
                loc,
                [("OutWRte", out_raw), ("InWRte", in_raw), ("InOutWRte_RvrtTms", revert_s), ("StorCtl_Mod", mode)],
            )
    elif target_w is None:
        writes = point_writes(loc, [("WSetEna", 0)])
    else:
        wset = round(target_w / 10.0 ** scale_factor(loc, await control_regs(d, loc), "WSet_SF"))
        writes = point_writes(loc, [("WSetRvrtTms", revert_s), ("WSetMod", 1), ("WSet", wset), ("WSetEna", 1)])
    return WritePlan(writes, control_readback(d, loc, lambda got: battery_from_control(loc.model_id, got, d.models)))


def control(d: SunSpecDevice, *ids: int) -> ModelLocation:
    """The first of the control models ``ids`` the device serves; DeviceError when it serves none."""
    loc = d.map.find(*ids) if d.map is not None else None
    if loc is None:
        models = d.map.ids if d.map else []
        raise DeviceError(f"no control model ({' or '.join(map(str, ids))}) among models {models}")
    return loc


def point_writes(loc: ModelLocation, points: list[tuple[str, int]]) -> tuple[RegisterWrite, ...]:
    """The points' writes in the order given, one request for each run of points that are next to
    each other in that order and in address (124 ``OutWRte``, ``InWRte``: one FC 16); only the
    points named are touched."""
    md = model_def(loc.model_id)
    out: list[RegisterWrite] = []
    for name, raw in points:
        p = md.point(name)
        addr, regs = loc.addr + p.offset, tuple(encode_point(p, raw))
        if out and out[-1].addr + len(out[-1].values) == addr:
            addr, regs = out[-1].addr, out.pop().values + regs
        out.append(RegisterWrite(addr, regs, tuple(range(len(regs)))))
    return tuple(out)


async def control_regs(d: SunSpecDevice, loc: ModelLocation) -> list[int]:
    """The control model's registers to build writes on: the latest poll's when it read the model, else read now."""
    polled = d.blocks.get(loc.model_id)
    return polled if polled is not None else await read_model(d.link.reader(d.unit), loc)


def control_readback(
    d: SunSpecDevice, loc: ModelLocation, setpoint_of: Callable[[list[int]], float | None]
) -> ReadBack:
    """One read of the control model after the writes: every written register and the setpoint in force."""

    async def readback() -> tuple[dict[int, int], float | None]:
        got = await read_model(d.link.reader(d.unit), loc)
        return dict(enumerate(got, start=loc.addr)), setpoint_of(got)

    return readback


def scale_factor(loc: ModelLocation, regs: list[int], name: str) -> int:
    """A scale factor of the control model in ``regs`` (0 when not implemented)."""
    v = raw_value(regs, model_def(loc.model_id).point(name))
    return int(v) if isinstance(v, int) else 0


def pct_raw(target_w: float, wmax_w: float, sf: int) -> int:
    """``target_w`` as the raw ``WMaxLimPct`` of a device whose 100 % is ``wmax_w``."""
    return max(0, round(target_w / wmax_w * 100.0 / 10.0**sf))


def discharge_base_w(models: Models) -> float | None:
    """The base of 124 ``OutWRte``: 120 ``MaxDisChaRte`` (else the caller uses ``WChaMax``)."""
    return number(models.get(120, {}).get("MaxDisChaRte"))


def limit_from_control(model_id: int, regs: list[int], wmax_w: float) -> float | None:
    """The PV limit in force (W) in a 123 or 704 block (0 W while 123 ``Conn`` = 0), or None when released."""
    if model_id == 123:
        c = decode(123, regs, ("Conn", "WMaxLimPct", "WMaxLim_Ena"))
        if c["Conn"] == 0:
            return 0.0
        pct = number(c["WMaxLimPct"])
        return pct / 100.0 * wmax_w if c["WMaxLim_Ena"] == 1 and pct is not None else None
    c = decode(704, regs, ("WMaxLimPctEna", "WMaxLimPct"))
    pct = number(c["WMaxLimPct"])
    return pct / 100.0 * wmax_w if c["WMaxLimPctEna"] == 1 and pct is not None else None


def battery_from_control(model_id: int, regs: list[int], models: Models) -> float | None:
    """The battery setpoint in force (W, + discharge) in a 124 or 704 block, or None when released."""
    if model_id == 704:
        c = decode(704, regs, ("WSetEna", "WSet"))
        wset = number(c["WSet"])
        return wset if c["WSetEna"] == 1 and wset is not None else None
    c = decode(124, regs, ("StorCtl_Mod", "OutWRte", "InWRte", "WChaMax"))
    mod, wcha = c["StorCtl_Mod"], number(c["WChaMax"])
    if not mod or wcha is None:
        return None
    wdis = discharge_base_w(models) or wcha
    out_pct, in_pct = number(c["OutWRte"]), number(c["InWRte"])
    if mod == 2 and out_pct is not None:
        return out_pct / 100.0 * wdis
    if mod == 1 and in_pct is not None:
        return -in_pct / 100.0 * wcha
    return 0.0
