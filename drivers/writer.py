"""Setpoint writer: PV limits and battery power, each written with a revert timer, read back and refreshed.

Rules (DESIGN.md "Revert timers", "Control semantics"):
- every limit is clamped to the device's range: at least ``min_pv_limit_pct`` of WMax, never above
  the installer ceiling (WMax read from the device, and the site's configured installer limit);
- every write sets the device's revert timer to ``revert_timeout_s`` and is read back; a
  difference is reported as a mismatch, never assumed away;
- round trips: the control model's scale factors come from the latest poll when the device polls
  that model (read first only otherwise), and one read after the writes serves both the check of
  every written register and the read-back setpoint (SunSpec: the control model; profiles: their
  ``read_all``). A 124 battery costs 4 writes + 1 read, a 123/704 PV limit 3 writes + 1 read, a
  release 1 write + 1 read; a 704 battery one read more (batteries poll 713, not 704);
- ``refresh_due`` rewrites a setpoint once 40 % of its timer has passed (before half);
- ``Setpoint(None)`` releases explicitly: the limit is disabled (the device returns to its
  installer configuration) unless the site's configured installer limit is below the device's
  WMax, in which case that ceiling is written instead, so a release never lifts it.
Percentages use the WMax the device reports (121 WMax, else 702 WMax, else the rating).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from sparcs.config.schema import DispatchConfig
from sparcs.drivers.discovery import ModelLocation, read_model
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.link import Link
from sparcs.drivers.poller import DeviceState, FleetPoller
from sparcs.drivers.profile_device import ProfileDevice
from sparcs.drivers.sunspec_codec import decode, encode_point, model_def, raw_value
from sparcs.drivers.sunspec_device import SunSpecDevice
from sparcs.drivers.sunspec_map import wmax_of

log = logging.getLogger(__name__)

_UNKNOWN = object()
REFRESH_FRACTION = 0.4  # rewrite when this share of the revert timer has passed
MATCH_TOLERANCE = 0.01  # read-back W may differ by 1 % of the base (register resolution)

Action = Literal["limit", "release", "battery", "unchanged", "skipped", "failed"]

ReadBack = Callable[[], Awaitable[tuple[dict[int, int], float | None]]]
"""One read after the writes: (holding registers seen, by protocol address; the setpoint in force in W or None)."""


@dataclass
class Setpoint:
    """What the controller wants of one device. None releases that control to the installer configuration.

    ``pv_limit_w``: ceiling on PV output in W (≥ 0). ``battery_w``: battery power in W, > 0
    discharge, < 0 charge.
    """

    pv_limit_w: float | None = None
    battery_w: float | None = None


@dataclass
class WriteResult:
    """The outcome of one device's write. ``ok`` means written and read back as intended."""

    device_id: str
    action: Action
    ok: bool
    requested_w: float | None = None
    written_w: float | None = None  # after clamping; None for a release
    readback_w: float | None = None
    clamped: bool = False
    mismatch: bool = False
    detail: str = ""
    written_at: float | None = None


@dataclass
class _Active:
    """A setpoint in force on a device, kept for refreshes and to skip needless rewrites."""

    kind: Literal["pv", "battery"]
    requested_w: float | None  # what the controller asked for (None = release)
    value_w: float | None  # what was written after clamping (None = released)
    written_at: float
    revert_s: float


@dataclass(frozen=True)
class _Write:
    """A run of registers to write, and which of them must read back unchanged."""

    addr: int
    values: tuple[int, ...]
    check: tuple[int, ...]  # indices into values


class SetpointWriter:
    """Writes setpoints over the poller's connections (one link per endpoint, serialised)."""

    def __init__(self, poller: FleetPoller, settings: DispatchConfig, clock: Callable[[], float]):
        self.poller, self.settings, self.clock = poller, settings, clock
        self.active: dict[str, _Active] = {}
        self._sem = asyncio.Semaphore(settings.max_concurrency)

    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, WriteResult]:
        """Write each device's setpoint; returns device id → result. Never raises for device faults."""
        ids = list(setpoints)
        results = await asyncio.gather(*(self._guarded(i, setpoints[i], force=False) for i in ids))
        return dict(zip(ids, results, strict=True))

    async def refresh_due(self) -> dict[str, WriteResult]:
        """Rewrite every setpoint whose revert timer is 40 % gone (releases have no timer)."""
        now = self.clock()
        due = {
            i: Setpoint(pv_limit_w=a.requested_w) if a.kind == "pv" else Setpoint(battery_w=a.requested_w)
            for i, a in self.active.items()
            if a.value_w is not None and now - a.written_at >= REFRESH_FRACTION * a.revert_s
        }
        ids = list(due)
        results = await asyncio.gather(*(self._guarded(i, due[i], force=True) for i in ids))
        return dict(zip(ids, results, strict=True))

    async def _guarded(self, device_id: str, sp: Setpoint, force: bool) -> WriteResult:
        async with self._sem:
            try:
                return await self._apply_one(device_id, sp, force)
            except (DeviceError, ValueError) as exc:  # ValueError: a value the device's registers cannot hold
                return WriteResult(device_id, "failed", False, detail=str(exc))
            except Exception as exc:  # fault barrier: one device's surprise must not abort the others' writes
                log.exception("device %s: unexpected failure while writing", device_id)
                return WriteResult(device_id, "failed", False, detail=f"unexpected {type(exc).__name__}: {exc}")

    async def _apply_one(self, device_id: str, sp: Setpoint, force: bool) -> WriteResult:
        try:
            s = self.poller.state(device_id)
        except KeyError as exc:
            return WriteResult(device_id, "failed", False, detail=str(exc.args[0]))
        if not s.cfg.control:
            return WriteResult(device_id, "skipped", True, detail="monitor only (control: false)")
        if s.cfg.kind == "meter":
            return WriteResult(device_id, "skipped", True, detail="meters take no setpoints")
        t = s.telemetry
        if t is None or t.status == "stale" or t.last_good_at is None:
            return WriteResult(device_id, "failed", False, detail="device not read yet or stale: nothing written")
        kind: Literal["pv", "battery"] = "pv" if s.cfg.kind == "pv_inverter" else "battery"
        value = sp.pv_limit_w if kind == "pv" else sp.battery_w
        if not force and self._unchanged(device_id, s, kind, value):
            a = self.active[device_id]
            return WriteResult(
                device_id,
                "unchanged",
                True,
                requested_w=value,
                written_w=a.value_w,
                written_at=a.written_at,
                detail="in force and read back; timer not yet due",
            )
        if kind == "pv":
            return await self._write_pv(s, value)
        return await self._write_battery(s, value)

    def _unchanged(self, device_id: str, s: DeviceState, kind: str, requested: float | None) -> bool:
        """True when the same command is in force (confirmed by the latest poll) and its timer is not due."""
        a = self.active.get(device_id)
        if a is None or a.kind != kind or a.requested_w != requested:
            return False
        if a.value_w is not None and self.clock() - a.written_at >= REFRESH_FRACTION * a.revert_s:
            return False
        seen = self._in_force(s, kind)
        if seen is _UNKNOWN:
            return False  # cannot confirm (device rebooted? model not polled): write again
        if a.value_w is None or seen is None:
            return a.value_w is None and seen is None
        vals = s.telemetry.values if s.telemetry else {}
        base_key = "wmax_w" if kind == "pv" else "max_charge_w"
        base = vals[base_key].value if base_key in vals and vals[base_key].value else 1.0
        return abs(seen - a.value_w) <= MATCH_TOLERANCE * base  # type: ignore[operator]

    @staticmethod
    def _in_force(s: DeviceState, kind: str) -> float | object | None:
        """The setpoint the latest poll shows in force (None = released), or _UNKNOWN."""
        if kind == "pv":
            r = s.telemetry.values.get("pv_limit_w") if s.telemetry else None
            return r.value if r is not None and r.quality == "good" else _UNKNOWN
        d = s.driver
        if isinstance(d, SunSpecDevice) and 124 in d.blocks:
            return _battery_from_control(124, d.blocks[124], d.models)
        return _UNKNOWN

    # --- PV limits -----------------------------------------------------------------------------

    def _pv_range(self, s: DeviceState, wmax_w: float) -> tuple[float, float]:
        """(floor, ceiling) in W: the standby floor, and the installer ceiling the controller never lifts."""
        values = s.telemetry.values if s.telemetry else {}
        rating = values["rating_w"].value if "rating_w" in values else None
        rating = rating or s.site.pv.rating_w
        ceiling = min(wmax_w, s.site.pv.installer_limit_pct / 100.0 * rating)
        floor = min(self.settings.min_pv_limit_pct / 100.0 * wmax_w, ceiling)
        return floor, ceiling

    async def _write_pv(self, s: DeviceState, limit_w: float | None) -> WriteResult:
        d = s.driver
        wmax = self._wmax(s)
        if wmax is None or wmax <= 0:
            return WriteResult(
                s.cfg.id,
                "failed",
                False,
                requested_w=limit_w,
                detail="device reports no WMax or rating: cannot convert W to percent",
            )
        floor, ceiling = self._pv_range(s, wmax)
        release = limit_w is None and ceiling >= wmax * (1 - 1e-6)
        target = None if release else min(max(limit_w if limit_w is not None else ceiling, floor), ceiling)
        clamped = target is not None and limit_w is not None and abs(target - limit_w) > 1e-6
        if isinstance(d, ProfileDevice):
            writes, readback = self._profile_pv_writes(d, target, wmax)
        else:
            writes, readback = await self._sunspec_pv_writes(d, target, wmax)
        return await self._execute(s, "pv", writes, readback, limit_w, target, clamped)

    def _wmax(self, s: DeviceState) -> float | None:
        d = s.driver
        if isinstance(d, SunSpecDevice):
            return wmax_of(d.models)
        vals = s.telemetry.values if s.telemetry else {}
        return vals["wmax_w"].value if "wmax_w" in vals else None

    async def _sunspec_pv_writes(self, d: SunSpecDevice, target: float | None, wmax: float):
        loc = self._control(d, 123, 704)
        timer = self.settings.revert_timeout_s
        if loc.model_id == 123:
            if target is None:
                writes = _point_writes(loc, [("WMaxLim_Ena", 0)])
            else:
                pct = _pct_raw(target, wmax, _sf(loc, await _control_regs(d, loc), "WMaxLimPct_SF"))
                # Value and timer first, enable last: the device never applies a stale percentage.
                writes = _point_writes(loc, [("WMaxLimPct", pct), ("WMaxLimPct_RvrtTms", timer), ("WMaxLim_Ena", 1)])
        elif target is None:
            writes = _point_writes(loc, [("WMaxLimPctEna", 0)])
        else:
            pct = _pct_raw(target, wmax, _sf(loc, await _control_regs(d, loc), "WMaxLimPct_SF"))
            writes = _point_writes(loc, [("WMaxLimPct", pct), ("WMaxLimPctRvrtTms", timer), ("WMaxLimPctEna", 1)])
        return writes, _control_readback(d, loc, lambda got: _limit_from_control(loc.model_id, got, wmax))

    def _profile_pv_writes(self, d: ProfileDevice, target: float | None, wmax: float):
        p = d.profile
        writes: list[_Write] = []
        if target is None:
            writes += [_profile_raw_write(d, step.key, step.value) for step in p.pv_limit_release]
        else:
            if "revert_timer_s" in p.registers:
                writes.append(_profile_write(d, "revert_timer_s", float(self.settings.revert_timeout_s)))
            if "pv_limit_w" in p.registers:
                writes.append(_profile_write(d, "pv_limit_w", target))
            elif "pv_limit_pct" in p.registers:
                writes.append(_profile_write(d, "pv_limit_pct", target / wmax * 100.0))
            else:
                raise DeviceError(f"profile '{p.name}' has no pv_limit_w or pv_limit_pct register")

        async def readback() -> tuple[dict[int, int], float | None]:
            seen, values = await _profile_read_all(d)
            return seen, d.limit_in_force_w({"wmax_w": wmax} | values)

        return writes, readback

    # --- battery -------------------------------------------------------------------------------

    async def _write_battery(self, s: DeviceState, power_w: float | None) -> WriteResult:
        d = s.driver
        vals = s.telemetry.values if s.telemetry else {}
        cfg = s.site.battery
        max_cha = vals["max_charge_w"].value if "max_charge_w" in vals else None
        max_dis = vals["max_discharge_w"].value if "max_discharge_w" in vals else None
        max_cha = min(max_cha or cfg.max_charge_w, cfg.max_charge_w) if cfg else max_cha
        max_dis = min(max_dis or cfg.max_discharge_w, cfg.max_discharge_w) if cfg else max_dis
        if max_cha is None or max_dis is None:
            return WriteResult(
                s.cfg.id,
                "failed",
                False,
                requested_w=power_w,
                detail="no charge/discharge limits known: set the site's battery section",
            )
        target = None if power_w is None else min(max(power_w, -max_cha), max_dis)
        clamped = target is not None and power_w is not None and abs(target - power_w) > 1e-6
        if isinstance(d, ProfileDevice):
            writes, readback = self._profile_battery_writes(d, target)
        else:
            writes, readback = await self._sunspec_battery_writes(d, target)
        return await self._execute(s, "battery", writes, readback, power_w, target, clamped)

    async def _sunspec_battery_writes(self, d: SunSpecDevice, target: float | None):
        loc = self._control(d, 124, 704)
        timer = self.settings.revert_timeout_s
        if loc.model_id == 124:
            if target is None:
                writes = _point_writes(loc, [("StorCtl_Mod", 0)])
            else:
                regs = await _control_regs(d, loc)
                sf = _sf(loc, regs, "InOutWRte_SF")
                wchamax = decode(124, regs, ("WChaMax",))["WChaMax"]
                wdis = wmax_of_discharge(d.models) or wchamax
                if not wchamax or not wdis:
                    raise DeviceError("model 124 reports no WChaMax: cannot convert W to percent")
                out_raw = round(max(target, 0.0) / wdis * 100.0 / 10.0**sf)
                in_raw = round(max(-target, 0.0) / wchamax * 100.0 / 10.0**sf)
                mode = 2 if target > 0 else 1 if target < 0 else 3  # 3: both rates 0 = hold
                writes = _point_writes(
                    loc,
                    [("OutWRte", out_raw), ("InWRte", in_raw), ("InOutWRte_RvrtTms", timer), ("StorCtl_Mod", mode)],
                )
        elif target is None:
            writes = _point_writes(loc, [("WSetEna", 0)])
        else:
            wset = round(target / 10.0 ** _sf(loc, await _control_regs(d, loc), "WSet_SF"))
            writes = _point_writes(loc, [("WSetRvrtTms", timer), ("WSetMod", 1), ("WSet", wset), ("WSetEna", 1)])
        return writes, _control_readback(d, loc, lambda got: _battery_from_control(loc.model_id, got, d.models))

    def _profile_battery_writes(self, d: ProfileDevice, target: float | None):
        p = d.profile
        writes: list[_Write] = []
        if target is None:
            writes += [_profile_raw_write(d, step.key, step.value) for step in p.battery_release]
        else:
            if "battery_setpoint_w" not in p.registers:
                raise DeviceError(f"profile '{p.name}' has no battery_setpoint_w register")
            if "revert_timer_s" in p.registers:
                writes.append(_profile_write(d, "revert_timer_s", float(self.settings.revert_timeout_s)))
            writes.append(_profile_write(d, "battery_setpoint_w", target))

        async def readback() -> tuple[dict[int, int], float | None]:
            seen, values = await _profile_read_all(d)
            return seen, values.get("battery_setpoint_w")

        return writes, readback

    # --- common --------------------------------------------------------------------------------

    @staticmethod
    def _control(d: SunSpecDevice, *ids: int) -> ModelLocation:
        loc = d.map.find(*ids) if d.map is not None else None
        if loc is None:
            models = d.map.ids if d.map else []
            raise DeviceError(f"no control model ({' or '.join(map(str, ids))}) among models {models}")
        return loc

    async def _execute(
        self,
        s: DeviceState,
        kind: Literal["pv", "battery"],
        writes: list[_Write],
        readback: ReadBack,
        requested: float | None,
        target: float | None,
        clamped: bool,
    ) -> WriteResult:
        d = s.driver
        for w in writes:
            await d.link.write(d.unit, w.addr, list(w.values))
        now = self.clock()
        seen_regs, seen = await readback()
        mismatches = []
        for w in writes:
            span = range(w.addr, w.addr + len(w.values))
            if all(a in seen_regs for a in span):
                got = [seen_regs[a] for a in span]
            else:  # a register the read-back does not reach is still checked, by a read of its own
                got = await d.link.read_holding(d.unit, w.addr, len(w.values))
            bad = [i for i in w.check if got[i] != w.values[i]]
            if bad:
                mismatches.append(
                    f"registers {', '.join(str(w.addr + i) for i in bad)} read back "
                    f"{[got[i] for i in bad]} instead of {[w.values[i] for i in bad]}"
                )
        action: Action = "release" if target is None else ("limit" if kind == "pv" else "battery")
        self.active[s.cfg.id] = _Active(kind, requested, target, now, float(self.settings.revert_timeout_s))
        detail = "; ".join(mismatches) or ("clamped to the device's range" if clamped else "written and read back")
        return WriteResult(
            s.cfg.id,
            action,
            ok=not mismatches,
            requested_w=requested,
            written_w=target,
            readback_w=seen,
            clamped=clamped,
            mismatch=bool(mismatches),
            detail=detail,
            written_at=now,
        )


def _point_writes(loc: ModelLocation, points: list[tuple[str, int]]) -> list[_Write]:
    """One write per point, in the order given; only the points named are touched."""
    md = model_def(loc.model_id)
    out = []
    for name, raw in points:
        p = md.point(name)
        regs = tuple(encode_point(p, raw))
        out.append(_Write(loc.addr + p.offset, regs, tuple(range(len(regs)))))
    return out


async def _control_regs(d: SunSpecDevice, loc: ModelLocation) -> list[int]:
    """The control model's registers to build writes on: the latest poll's when it read the model, else read now."""
    polled = d.blocks.get(loc.model_id)
    return polled if polled is not None else await read_model(d.link.reader(d.unit), loc)


def _control_readback(
    d: SunSpecDevice, loc: ModelLocation, setpoint_of: Callable[[list[int]], float | None]
) -> ReadBack:
    """One read of the control model after the writes: every written register and the setpoint in force."""

    async def readback() -> tuple[dict[int, int], float | None]:
        got = await read_model(d.link.reader(d.unit), loc)
        return dict(enumerate(got, start=loc.addr)), setpoint_of(got)

    return readback


class _HoldingRecorder:
    """Passes a profile device's reads on to its link and keeps the holding registers they returned."""

    def __init__(self, link: Link):
        self.link = link
        self.seen: dict[int, int] = {}  # protocol address → register

    async def read_holding(self, unit: int, addr: int, count: int) -> list[int]:
        regs = await self.link.read_holding(unit, addr, count)
        self.seen.update(enumerate(regs, start=addr))
        return regs

    async def read_input(self, unit: int, addr: int, count: int) -> list[int]:
        return await self.link.read_input(unit, addr, count)


async def _profile_read_all(d: ProfileDevice) -> tuple[dict[int, int], dict[str, float | None]]:
    """The profile's own ``read_all`` (values by key), and the raw holding registers it read, by address."""
    recorder = _HoldingRecorder(d.link)
    # The same device read through the recorder: the profile's read plan and decoding stay its own.
    values = await ProfileDevice(recorder, d.unit, d.kind, d.profile, d.invert_sign).read_all()  # type: ignore[arg-type]
    return recorder.seen, values


def _sf(loc: ModelLocation, regs: list[int], name: str) -> int:
    """A scale factor of the control model in ``regs`` (0 when not implemented)."""
    v = raw_value(regs, model_def(loc.model_id).point(name))
    return int(v) if isinstance(v, int) else 0


def _pct_raw(target_w: float, wmax_w: float, sf: int) -> int:
    return max(0, round(target_w / wmax_w * 100.0 / 10.0**sf))


def _profile_write(d: ProfileDevice, key: str, value_si: float) -> _Write:
    enc = tuple(d.profile.encode(key, value_si))
    return _Write(d.profile.registers[key].address, enc, tuple(range(len(enc))))


def _profile_raw_write(d: ProfileDevice, key: str, raw: int) -> _Write:
    enc = tuple(d.profile.encode_raw(key, raw))
    return _Write(d.profile.registers[key].address, enc, tuple(range(len(enc))))


def wmax_of_discharge(models: dict[int, dict]) -> float | None:
    """The base of 124 OutWRte: 120 MaxDisChaRte (else the caller uses WChaMax)."""
    return models.get(120, {}).get("MaxDisChaRte")


def _limit_from_control(model_id: int, regs: list[int], wmax: float) -> float | None:
    if model_id == 123:
        c = decode(123, regs, ("WMaxLimPct", "WMaxLim_Ena"))
        return c["WMaxLimPct"] / 100.0 * wmax if c["WMaxLim_Ena"] == 1 and c["WMaxLimPct"] is not None else None
    c = decode(704, regs, ("WMaxLimPctEna", "WMaxLimPct"))
    return c["WMaxLimPct"] / 100.0 * wmax if c["WMaxLimPctEna"] == 1 and c["WMaxLimPct"] is not None else None


def _battery_from_control(model_id: int, regs: list[int], models: dict[int, dict]) -> float | None:
    """The battery setpoint in force (W, + discharge), or None when released."""
    if model_id == 704:
        c = decode(704, regs, ("WSetEna", "WSet"))
        return float(c["WSet"]) if c["WSetEna"] == 1 and c["WSet"] is not None else None
    c = decode(124, regs, ("StorCtl_Mod", "OutWRte", "InWRte", "WChaMax"))
    mod, wcha = c["StorCtl_Mod"], c["WChaMax"]
    if not mod or wcha is None:
        return None
    wdis = wmax_of_discharge(models) or wcha
    if mod == 2 and c["OutWRte"] is not None:
        return c["OutWRte"] / 100.0 * wdis
    if mod == 1 and c["InWRte"] is not None:
        return -c["InWRte"] / 100.0 * wcha
    return 0.0
