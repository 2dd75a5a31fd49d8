"""Setpoint writer: the policy of PV limits and battery power; the devices build the register writes.

Rules (docs/definitions.md "Revert timers and safe defaults", "Reference bases"; docs/devices.md):
- every limit is clamped to the device's range: at least ``min_pv_limit_pct`` of WMax, never above
  the installer ceiling (WMax read from the device, and the site's installer limit,
  :func:`config.grid_rules.installer_ceiling_w`);
- every write sets the device's revert timer to ``revert_timeout_s`` and is read back; every
  written register is checked, and a difference is reported as a mismatch, never assumed away;
- a device turns a setpoint into a :class:`drivers.device.WritePlan`: its register writes and one
  read-back that serves both the check and the setpoint in force; a written register the
  read-back does not reach is checked by a read of its own;
- ``refresh_due`` rewrites a setpoint once 40 % of its timer has passed (before half), on our clock,
  on the device's own clock where it reports one (SunSpec 122: the time since the write as the
  device counts it, our time plus how far its clock offset moved), or where it reports what its
  timer has left (SunSpec 704); the timer is
  the device's fail-safe (docs/devices.md "Fail-safes"): ``revert_timeout_s`` for a revert timer,
  the watchdog's interval for a watchdog, whose heartbeat each setpoint write carries;
- a device whose fail-safe is ``none`` is monitor-only unless its config sets
  ``accept_no_fail_safe``: a limit written there would stay in force if the controller stopped;
- 0 W (stage K1, a 0 W cap) is a stop where the device has one (:func:`drivers.device.can_stop_pv`:
  SunSpec 123 ``Conn`` = 0); elsewhere the limit is held at the floor and the result names the
  shortfall in W (``shortfall_w``: the W the device may produce above the request);
- a command already in force (the latest poll confirms it) and not yet due is not rewritten; nor is
  a battery setpoint in force that runs the battery in the request's direction at most as hard as
  asked, and by at most ``BATTERY_DEADBAND_W`` less (:func:`battery_within_deadband`): the battery
  then never charges or discharges more than the controller asks; PV limits have no deadband;
- ``Setpoint(None)`` releases explicitly: the limit is disabled (the device returns to its
  installer configuration) unless the site's installer ceiling is below the device's WMax, in
  which case that ceiling is written instead, so a release never lifts it.
Percentages use the WMax the device reports (:meth:`drivers.device.Device.pv_base_w`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sparcs.config.grid_rules import installer_ceiling_w
from sparcs.config.schema import DeviceConfig, DispatchConfig
from sparcs.drivers.device import (
    KIND_ROLES,
    UNKNOWN,
    Device,
    SetpointKind,
    WritePlan,
    can_stop_pv,
    fail_safe_of,
    revert_left_of,
    roles_of,
)
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.poller import DeviceState, FleetPoller
from sparcs.drivers.telemetry import CLOCK_KEY

log = logging.getLogger(__name__)

REFRESH_FRACTION = 0.4  # rewrite when this share of the revert timer has passed
HEARTBEAT_DEADLINE = 0.75  # a watchdog's heartbeat is rewritten before this share of its interval
MATCH_TOLERANCE = 0.01  # read-back W may differ by 1 % of the base (register resolution)
BATTERY_DEADBAND_W = 20.0
"""A battery setpoint in force up to this many W below the request (same direction, never above it)
is not rewritten before its timer is due (:func:`battery_within_deadband`)."""

Action = Literal["limit", "release", "battery", "unchanged", "skipped", "failed"]


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
    shortfall_w: float | None = None  # W the device may produce above the request (its floor above 0 W)
    battery: WriteResult | None = None  # a hybrid's battery role; the fields above are then its PV role's


@dataclass
class _Active:
    """A setpoint in force on a device, kept for refreshes and to skip needless rewrites."""

    kind: SetpointKind
    requested_w: float | None  # what the controller asked for (None = release)
    value_w: float | None  # what was written after clamping (None = released)
    written_at: float
    revert_s: float
    shortfall_w: float | None = None
    clock_offset_s: float | None = None  # the device clock's offset at the poll before the write


def clock_offset_s(s: DeviceState) -> float | None:
    """How far the device's clock was ahead of ours at its latest poll (s), where it reports one."""
    t = s.telemetry
    r = t.values.get(CLOCK_KEY) if t is not None else None
    return r.value if r is not None and r.quality == "good" else None


class SetpointWriter:
    """Writes setpoints over the poller's connections (one link per endpoint, serialised)."""

    def __init__(
        self,
        poller: FleetPoller,
        settings: DispatchConfig,
        clock: Callable[[], float],
        monitor_only: set[str] | None = None,
    ):
        """``monitor_only``: ids of devices switched to monitor-only at run time (a live set the
        controller keeps); like ``control: false`` they get no setpoint and no refresh, only
        :meth:`release`."""
        self.poller, self.settings, self.clock = poller, settings, clock
        self.monitor_only: set[str] = monitor_only if monitor_only is not None else set()
        self.active: dict[tuple[str, SetpointKind], _Active] = {}  # (device id, role) → setpoint in force
        self._sem = asyncio.Semaphore(settings.max_concurrency)

    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, WriteResult]:
        """Write each device's setpoint; returns device id → result. Never raises for device faults."""
        ids = list(setpoints)
        results = await asyncio.gather(*(self._guarded(i, setpoints[i], force=False) for i in ids))
        return dict(zip(ids, results, strict=True))

    async def refresh_due(self) -> dict[str, WriteResult]:
        """Rewrite every setpoint whose revert timer is 40 % gone (releases have no timer)."""
        now = self.clock()
        due: dict[str, tuple[Setpoint, list[SetpointKind]]] = {}
        for (i, kind), a in self.active.items():
            if a.value_w is not None and self._controlled(i) and self._due(i, kind, a, now):
                sp, roles = due.setdefault(i, (Setpoint(), []))
                setattr(sp, "pv_limit_w" if kind == "pv" else "battery_w", a.requested_w)
                roles.append(kind)
        ids = list(due)
        results = await asyncio.gather(*(self._guarded(i, due[i][0], force=True, roles=due[i][1]) for i in ids))
        return dict(zip(ids, results, strict=True))

    async def release(self, device_ids: list[str]) -> dict[str, WriteResult]:
        """Release each device to its installer configuration (PV limit disabled, or the installer
        ceiling written where it is below WMax; battery back to its own mode), also one that is
        monitor-only: the controller takes a device out of control this way before it stops writing
        to it. Never raises for device faults."""
        results = await asyncio.gather(*(self._guarded(i, Setpoint(), force=True, release=True) for i in device_ids))
        return dict(zip(device_ids, results, strict=True))

    def _controlled(self, device_id: str) -> bool:
        try:
            s = self.poller.state(device_id)
        except KeyError:
            return False
        return s.cfg.control and device_id not in self.monitor_only

    def _due(self, device_id: str, kind: SetpointKind, a: _Active, now: float) -> bool:
        """40 % of the timer gone on our clock, or on the device's own, judged from a poll after our
        write: its clock (122 ``Tms``: our time since the write plus how far its offset moved since),
        or what its timer has left (704 ``…RvrtRem``), counted down from that poll."""
        if now - a.written_at >= REFRESH_FRACTION * a.revert_s:
            return True
        s = self.poller.devices.get(device_id)
        if s is None or s.last_good_at is None or s.last_good_at <= a.written_at:
            return False  # no poll since the write: the device's figure is of an earlier setpoint
        offset, before = clock_offset_s(s), a.clock_offset_s
        if (
            offset is not None
            and before is not None
            and now - a.written_at + offset - before >= (REFRESH_FRACTION * a.revert_s)
        ):
            return True
        left = revert_left_of(s.driver, kind)
        return left is not None and left - (now - s.last_good_at) <= (1.0 - REFRESH_FRACTION) * a.revert_s

    async def _guarded(
        self,
        device_id: str,
        sp: Setpoint,
        force: bool,
        roles: list[SetpointKind] | None = None,
        release: bool = False,
    ) -> WriteResult:
        async with self._sem:
            try:
                return await self._apply_one(device_id, sp, force, roles, release)
            except (DeviceError, ValueError) as exc:  # ValueError: a value the device's registers cannot hold
                return WriteResult(device_id, "failed", False, detail=str(exc))
            except Exception as exc:  # fault barrier: one device's surprise must not abort the others' writes
                log.exception("device %s: unexpected failure while writing", device_id, extra={"device": device_id})
                return WriteResult(device_id, "failed", False, detail=f"unexpected {type(exc).__name__}: {exc}")

    async def _apply_one(
        self,
        device_id: str,
        sp: Setpoint,
        force: bool,
        roles: list[SetpointKind] | None = None,
        release: bool = False,
    ) -> WriteResult:
        """The device's write: each of its roles (``roles``: only these, for a refresh), a hybrid's merged.
        ``release``: the controller takes the device out of control; written also to a monitor-only one."""
        try:
            s = self.poller.state(device_id)
        except KeyError as exc:
            return WriteResult(device_id, "failed", False, detail=str(exc.args[0]))
        if not release and not s.cfg.control:
            return WriteResult(device_id, "skipped", True, detail="monitor only (control: false)")
        if not release and device_id in self.monitor_only:
            return WriteResult(device_id, "skipped", True, detail="monitor only (switched at run time)")
        if s.cfg.kind == "meter":
            return WriteResult(device_id, "skipped", True, detail="meters take no setpoints")
        if not release and unprotected(s.driver, s.cfg):
            return WriteResult(device_id, "skipped", True, detail=no_fail_safe_detail(device_id))
        t = s.telemetry
        if t is None or t.status == "stale" or t.last_good_at is None:
            return WriteResult(device_id, "failed", False, detail="device not read yet or stale: nothing written")
        taken = roles_of(s.driver, s.cfg.kind)
        results = [
            await self._apply_role(s, kind, sp.pv_limit_w if kind == "pv" else sp.battery_w, force)
            if kind in taken
            else WriteResult(device_id, "skipped", True, detail=f"the device takes no {kind} setpoint")
            for kind in KIND_ROLES.get(s.cfg.kind, ())
            if roles is None or kind in roles
        ]
        return results[0] if len(results) == 1 else merged(results[0], results[1])

    async def _apply_role(self, s: DeviceState, kind: SetpointKind, value: float | None, force: bool) -> WriteResult:
        """One role's write; its device error fails that role only (a hybrid's other role is still written)."""
        try:
            return await self._write_role(s, kind, value, force)
        except (DeviceError, ValueError) as exc:
            return WriteResult(s.cfg.id, "failed", False, requested_w=value, detail=str(exc))

    async def _write_role(self, s: DeviceState, kind: SetpointKind, value: float | None, force: bool) -> WriteResult:
        device_id = s.cfg.id
        if not force and self._unchanged(device_id, s, kind, value):
            a = self.active[(device_id, kind)]
            return WriteResult(
                device_id,
                "unchanged",
                True,
                requested_w=value,
                written_w=a.value_w,
                written_at=a.written_at,
                detail="in force and read back; timer not yet due"
                + (f"; {a.value_w:.0f} W within the battery deadband of the request" if a.requested_w != value else "")
                + (f"; {a.shortfall_w:.0f} W above the request (the device's floor)" if a.shortfall_w else ""),
                shortfall_w=a.shortfall_w,
            )
        if kind == "pv":
            return await self._write_pv(s, value)
        return await self._write_battery(s, value)

    def _unchanged(self, device_id: str, s: DeviceState, kind: SetpointKind, requested: float | None) -> bool:
        """True when the same command is in force (confirmed by the latest poll) and its timer is not due."""
        a = self.active.get((device_id, kind))
        if a is None or a.kind != kind:
            return False
        if a.requested_w != requested and not (kind == "battery" and self._battery_close(s, a, requested)):
            return False
        if a.value_w is not None and self._due(device_id, kind, a, self.clock()):
            return False
        vals = s.telemetry.values if s.telemetry else {}
        seen = s.driver.in_force(kind, vals)
        if seen is UNKNOWN:
            return False  # cannot confirm (device rebooted? control not polled): write again
        if a.value_w is None or seen is None:
            return a.value_w is None and seen is None
        base_key = "wmax_w" if kind == "pv" else "max_charge_w"
        base = (vals[base_key].value if base_key in vals else None) or 1.0
        return abs(seen - a.value_w) <= MATCH_TOLERANCE * base

    def _battery_close(self, s: DeviceState, a: _Active, requested: float | None) -> bool:
        """Whether the battery setpoint in force (``a``) is within the deadband of ``requested`` once clamped."""
        limits = self._battery_limits(s)
        if a.value_w is None or requested is None or limits is None:
            return False
        return battery_within_deadband(a.value_w, clamp_battery(requested, *limits), BATTERY_DEADBAND_W)

    # --- PV limits -----------------------------------------------------------------------------

    def _pv_range(self, s: DeviceState, wmax_w: float) -> tuple[float, float]:
        """(floor, ceiling) in W: the standby floor, and the installer ceiling the controller never lifts."""
        values = s.telemetry.values if s.telemetry else {}
        rating = values["rating_w"].value if "rating_w" in values else None
        ceiling = min(wmax_w, installer_ceiling_w(s.site, rating or None))
        floor = min(self.settings.min_pv_limit_pct / 100.0 * wmax_w, ceiling)
        return floor, ceiling

    async def _write_pv(self, s: DeviceState, limit_w: float | None) -> WriteResult:
        wmax = s.driver.pv_base_w(s.telemetry.values if s.telemetry else {})
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
        if limit_w is not None and limit_w <= 0.0 and can_stop_pv(s.driver):
            floor = 0.0  # a stop: exactly 0 W
        target = None if release else min(max(limit_w if limit_w is not None else ceiling, floor), ceiling)
        clamped = target is not None and limit_w is not None and abs(target - limit_w) > 1e-6
        shortfall = target - max(limit_w, 0.0) if target is not None and limit_w is not None else 0.0
        plan = await s.driver.pv_limit_writes(target, wmax, self.settings.revert_timeout_s)
        result = await self._execute(s, "pv", plan, limit_w, target, clamped)
        if shortfall > 1e-6:
            result.shortfall_w = self.active[(s.cfg.id, "pv")].shortfall_w = shortfall
            result.detail = (
                f"{result.detail}; the device cannot go below {target:.0f} W: {shortfall:.0f} W above the "
                f"{max(limit_w or 0.0, 0.0):.0f} W asked for"
            )
        return result

    # --- battery -------------------------------------------------------------------------------

    def _battery_limits(self, s: DeviceState) -> tuple[float, float] | None:
        """(max charge, max discharge) in W ≥ 0: what the device reports, at most the site's battery
        section; None when neither tells."""
        vals = s.telemetry.values if s.telemetry else {}
        cfg = s.site.battery
        max_cha = vals["max_charge_w"].value if "max_charge_w" in vals else None
        max_dis = vals["max_discharge_w"].value if "max_discharge_w" in vals else None
        max_cha = min(max_cha or cfg.max_charge_w, cfg.max_charge_w) if cfg else max_cha
        max_dis = min(max_dis or cfg.max_discharge_w, cfg.max_discharge_w) if cfg else max_dis
        return None if max_cha is None or max_dis is None else (max_cha, max_dis)

    async def _write_battery(self, s: DeviceState, power_w: float | None) -> WriteResult:
        limits = self._battery_limits(s)
        if limits is None:
            return WriteResult(
                s.cfg.id,
                "failed",
                False,
                requested_w=power_w,
                detail="no charge/discharge limits known: set the site's battery section",
            )
        target = None if power_w is None else clamp_battery(power_w, *limits)
        clamped = target is not None and power_w is not None and abs(target - power_w) > 1e-6
        plan = await s.driver.battery_writes(target, self.settings.revert_timeout_s)
        return await self._execute(s, "battery", plan, power_w, target, clamped)

    # --- common --------------------------------------------------------------------------------

    def _timer_s(self, s: DeviceState) -> float:
        """The fail-safe timer a setpoint on ``s`` runs against: the watchdog's interval, else the revert timer."""
        fs = fail_safe_of(s.driver)
        if fs.kind == "watchdog" and fs.interval_s is not None:
            return fs.interval_s
        return float(self.settings.revert_timeout_s)

    async def _execute(
        self,
        s: DeviceState,
        kind: SetpointKind,
        plan: WritePlan,
        requested: float | None,
        target: float | None,
        clamped: bool,
    ) -> WriteResult:
        d = s.driver
        for w in plan.writes:
            await d.write(w.addr, list(w.values))
        self.poller.read_next(s.cfg.id)  # the next poll confirms it, whatever the device's tier
        now = self.clock()
        seen_regs, seen = await plan.read_back()
        mismatches = []
        for w in plan.writes:
            span = range(w.addr, w.addr + len(w.values))
            if all(a in seen_regs for a in span):
                got = [seen_regs[a] for a in span]
            else:  # a register the read-back does not reach is still checked, by a read of its own
                got = await d.read(w.addr, len(w.values))
            bad = [i for i in w.check if got[i] != w.values[i]]
            if bad:
                mismatches.append(
                    f"registers {', '.join(str(w.addr + i) for i in bad)} read back "
                    f"{[got[i] for i in bad]} instead of {[w.values[i] for i in bad]}"
                )
        action: Action = "release" if target is None else ("limit" if kind == "pv" else "battery")
        self.active[(s.cfg.id, kind)] = _Active(kind, requested, target, now, self._timer_s(s), None, clock_offset_s(s))
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


def clamp_battery(power_w: float, max_charge_w: float, max_discharge_w: float) -> float:
    """``power_w`` (W, > 0 discharge, < 0 charge) held to the charge and discharge limits (W ≥ 0)."""
    return min(max(power_w, -max_charge_w), max_discharge_w)


def battery_within_deadband(in_force_w: float, target_w: float, deadband_w: float) -> bool:
    """Whether a battery setpoint in force (W, > 0 discharge) may stand for ``target_w``: the same
    direction (or a hold, 0 W), at most as much power as the target and less by at most ``deadband_w``.
    The battery then never charges (§14a, grid charging) nor discharges (export) more than asked."""
    if in_force_w * target_w < 0.0:
        return False
    return 0.0 <= abs(target_w) - abs(in_force_w) <= deadband_w


def unprotected(driver: Device, cfg: DeviceConfig) -> bool:
    """True for a device the writer refuses for lack of a fail-safe: it declares none and its config
    does not accept that (``accept_no_fail_safe``); it is monitor-only (docs/devices.md "Fail-safes")."""
    return fail_safe_of(driver).kind == "none" and not cfg.accept_no_fail_safe


def uncontrolled_roles(driver: Device, cfg: DeviceConfig) -> tuple[SetpointKind, ...]:
    """The roles of a device (of its config's kind) the writer will not write: every one for a device
    without a fail-safe (:func:`unprotected`), else those the device takes no setpoint for."""
    every = KIND_ROLES.get(cfg.kind, ())
    if unprotected(driver, cfg):
        return every
    taken = roles_of(driver, cfg.kind)
    return tuple(r for r in every if r not in taken)


def no_fail_safe_detail(device_id: str) -> str:
    """Why a device without a fail-safe gets no setpoints, and what to write to control it anyway."""
    return (
        f"monitor only: device {device_id} has no revert timer or watchdog, so a limit would stay in force "
        f"if the controller stopped; to control it anyway set 'accept_no_fail_safe: true' on device {device_id}"
    )


def max_poll_interval_s(watchdog_s: float) -> float:
    """The longest poll interval (s) at which the writer refreshes a watchdog of ``watchdog_s`` in time.

    A heartbeat is rewritten at the first cycle after ``REFRESH_FRACTION`` of the interval; that cycle
    must come before ``HEARTBEAT_DEADLINE`` of it, since devices act on a missed heartbeat at any
    moment after the interval (and report it late)."""
    return (HEARTBEAT_DEADLINE - REFRESH_FRACTION) * watchdog_s


def merged(pv: WriteResult, battery: WriteResult) -> WriteResult:
    """One result for a hybrid's two roles: the PV role's figures, the battery role's result beside
    them; ``ok`` only if both are, ``action`` the first that did something (a failure first)."""
    acts = [pv.action, battery.action]
    action: Action = next(
        (a for a in ("failed", "limit", "release", "battery") if a in acts),
        "unchanged" if "unchanged" in acts else "skipped",
    )
    out = WriteResult(**{**pv.__dict__, "action": action, "battery": battery})
    out.ok = pv.ok and battery.ok
    out.mismatch = pv.mismatch or battery.mismatch
    out.detail = f"pv: {pv.detail}; battery: {battery.detail}"
    return out
