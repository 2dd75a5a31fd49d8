"""The physics of one site on the sim clock: PV inverters, batteries and the meter between them.

Signs (docs/definitions.md "Signs"): ``pv_w ≥ 0``; ``battery_w > 0`` discharges, ``< 0`` charges;
``grid_w = load_w − pv_w − battery_w``, ``> 0`` import, ``< 0`` export. Energy in Wh, power in W,
time in Unix seconds, SoC a fraction 0..1.

Each device's *controls* hold what a client wrote (decoded to SI/percent by
:mod:`simulators.devices`); :meth:`SiteSim.advance` integrates the site in sub-steps of at most
``MAX_SUBSTEP_S``, split at revert-timer expiries so a timer fires exactly on time.

PV inverter behaviour:

- output = min(potential × share, AC rating, installer ceiling, WMax, ramped limit); the limit
  (``lim_pct`` % of WMax while ``lim_ena``) moves toward its target over ``RmpTms`` or, without
  one, at the default gradient ``DEFAULT_GRADIENT_PCT_PER_S`` % of WMax per second;
- ``Conn = 0`` disconnects (output 0); its own revert timer reconnects;
- *installer configuration*: WMax = ``pv.installer_limit_pct`` of the rating and, on sites with a
  feed-in cap, the inverter's own export limitation that holds the meter at the legal cap while no
  controller limit is enabled. A revert-timer expiry or a reboot returns to it, never to
  unlimited output.

Battery behaviour (model 124 semantics; 704 ``WSet`` for the DER variant):

- ``StorCtl_Mod = 0`` (no command): the battery runs its own self-consumption mode, as home
  batteries do — charge PV surplus, discharge to cover load, never export or import for itself;
- ``StorCtl_Mod = 1`` (CHARGE): charge at ``InWRte`` % of ``WChaMax`` (from PV or grid);
- ``StorCtl_Mod = 2`` (DISCHARGE): discharge at ``OutWRte`` % of ``MaxDisChaRte``;
- ``StorCtl_Mod = 3``: self-consumption clamped to the window [−InWRte, +OutWRte] (SunSpec's
  reading of the two rates as limits);
- ``ChaGriSet = 0`` (PV): charging is limited to the site's PV output;
- DER variant: ``WSetEna = 1`` sets battery power to ``WSet`` W (``WSetMod`` 1) or ``WSetPct`` %
  of WMax (``WSetMod`` 0), > 0 discharge;
- the revert timer (``InOutWRte_RvrtTms`` / ``WSetRvrtTms``) returns to self-consumption.
SoC integrates with ``eta_charge`` / ``eta_discharge`` and stops at ``soc_min`` / ``soc_max``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sparcs.config.grid_rules import feed_in_cap_w, installer_ceiling_w
from sparcs.config.schema import BATTERY_KINDS, PV_KINDS, BatteryConfig, SimulationConfig, SiteConfig
from sparcs.simulators.physics import BatteryCell, SiteSignals, battery_step, ramp_toward, site_signals
from sparcs.simulators.weather import stream_key, uniform_at

MAX_SUBSTEP_S = 60.0
DEFAULT_GRADIENT_PCT_PER_S = 10.0
"""Ramp of a PV limit without RmpTms, % of WMax per second (published as 121 WGra)."""


def seeded_counter_wh(seed: int, device_id: str, per_year_wh: float) -> float:
    """A non-zero starting value for an energy counter: 1–8 years of typical throughput."""
    years = 1.0 + 7.0 * float(uniform_at(stream_key(seed, "counter", device_id), [0])[0])
    return round(max(per_year_wh, 1000.0) * years)


@dataclass
class PvControls:
    """What a client set on a PV inverter (SI / percent). Defaults = the installer configuration."""

    wmax_w: float
    conn: int = 1
    conn_rvrt_s: float = 0.0
    lim_ena: int = 0
    lim_pct: float = 100.0
    lim_rvrt_s: float = 0.0
    lim_rmp_s: float = 0.0
    lim_pct_rvrt: float = 100.0
    lim_ena_rvrt: int = 0


@dataclass
class PvUnit:
    """One PV inverter: its share of the site's array, rating, controls and live state."""

    device_id: str
    share: float
    rating_w: float
    installer_w: float
    export_cap_w: float | None
    controls: PvControls
    energy_wh: float
    der: bool = False
    ceiling_w: float = 0.0
    ramp_w_per_s: float = 0.0
    lim_expires_at: float | None = None
    conn_expires_at: float | None = None
    available_w: float = 0.0
    pv_w: float = 0.0
    export_limited: bool = False
    clock_rate: float = 1.0  # device seconds per true second: its timers count on its own clock

    def target_w(self) -> float:
        """The ceiling the controls ask for (before the ramp), W."""
        c = self.controls
        if not c.conn:
            return 0.0
        ceiling = min(self.rating_w, self.installer_w, c.wmax_w)
        if c.lim_ena:
            ceiling = min(ceiling, c.lim_pct / 100.0 * c.wmax_w)
        return ceiling

    def installer_mode(self) -> bool:
        """True while no controller limit is enabled: the inverter's own export limitation applies."""
        return not self.controls.lim_ena

    def reset(self) -> None:
        """Back to the installer configuration (revert or reboot)."""
        self.controls = PvControls(wmax_w=self.installer_w)
        self.lim_expires_at = None
        self.conn_expires_at = None
        self._set_ramp(0.0)

    def written(self, changed: set[str], now: float) -> None:
        """Controls were written at ``now``: restart the timers the write concerns, set the ramp."""
        c = self.controls
        if changed & {"lim_ena", "lim_pct", "lim_rvrt_s", "lim_rmp_s", "wmax_w"}:
            self.lim_expires_at = now + c.lim_rvrt_s / self.clock_rate if c.lim_rvrt_s > 0 and c.lim_ena else None
            self._set_ramp(c.lim_rmp_s)
        if changed & {"conn", "conn_rvrt_s"}:
            rvrt_s = c.conn_rvrt_s / self.clock_rate
            self.conn_expires_at = now + rvrt_s if c.conn_rvrt_s > 0 and not c.conn else None
            self._set_ramp(0.0)

    def _set_ramp(self, ramp_s: float) -> None:
        """Reach the new target in ``ramp_s`` seconds, or at the default gradient without one."""
        delta = abs(self.target_w() - self.ceiling_w)
        if ramp_s > 0 and delta > 0:
            self.ramp_w_per_s = delta / ramp_s
        else:
            self.ramp_w_per_s = DEFAULT_GRADIENT_PCT_PER_S / 100.0 * max(self.controls.wmax_w, self.rating_w)

    def expire(self, now: float) -> None:
        c = self.controls
        if self.lim_expires_at is not None and now >= self.lim_expires_at:
            self.lim_expires_at = None
            if self.der:
                c.lim_pct, c.lim_ena = c.lim_pct_rvrt, c.lim_ena_rvrt
            else:
                c.lim_ena, c.lim_pct = 0, 100.0
            c.wmax_w = self.installer_w
            self._set_ramp(0.0)
        if self.conn_expires_at is not None and now >= self.conn_expires_at:
            self.conn_expires_at = None
            c.conn = 1
            self._set_ramp(0.0)

    def revert_s(self, now: float) -> float | None:
        return None if self.lim_expires_at is None else max(0.0, self.lim_expires_at - now)


@dataclass
class BatteryControls:
    """What a client set on a battery (SI / percent). Defaults: self-consumption, no timer."""

    wcha_max_w: float
    stor_ctl_mod: int = 0
    in_pct: float = 100.0
    out_pct: float = 100.0
    rvrt_s: float = 0.0
    cha_gri_set: int = 1
    wset_ena: int = 0
    wset_mod: int = 1
    wset_w: float = 0.0
    wset_pct: float = 0.0
    wset_rvrt_s: float = 0.0
    wset_ena_rvrt: int = 0


@dataclass
class BatteryUnit:
    """One battery inverter with its cells."""

    device_id: str
    cell: BatteryCell
    max_charge_w: float
    max_discharge_w: float
    controls: BatteryControls
    soc: float
    charged_wh: float
    discharged_wh: float
    expires_at: float | None = None
    battery_w: float = 0.0
    clock_rate: float = 1.0  # device seconds per true second: its timers count on its own clock

    def reset(self) -> None:
        self.controls = BatteryControls(wcha_max_w=self.max_charge_w)
        self.expires_at = None

    def written(self, changed: set[str], now: float) -> None:
        c = self.controls
        if changed & {"stor_ctl_mod", "in_pct", "out_pct", "rvrt_s"}:
            self.expires_at = now + c.rvrt_s / self.clock_rate if c.rvrt_s > 0 and c.stor_ctl_mod else None
        if changed & {"wset_ena", "wset_mod", "wset_w", "wset_pct", "wset_rvrt_s"}:
            rvrt_s = c.wset_rvrt_s / self.clock_rate
            self.expires_at = now + rvrt_s if c.wset_rvrt_s > 0 and c.wset_ena else None

    def expire(self, now: float) -> None:
        if self.expires_at is not None and now >= self.expires_at:
            self.expires_at = None
            c = self.controls
            c.stor_ctl_mod, c.in_pct, c.out_pct = 0, 100.0, 100.0
            c.wset_ena = c.wset_ena_rvrt

    def commanded_w(self) -> float | None:
        """Battery power the controls fix (> 0 discharge), or None for self-consumption."""
        c = self.controls
        if c.wset_ena:
            return c.wset_w if c.wset_mod == 1 else c.wset_pct / 100.0 * self.max_discharge_w
        if c.stor_ctl_mod == 1:
            return -c.in_pct / 100.0 * c.wcha_max_w
        if c.stor_ctl_mod == 2:
            return c.out_pct / 100.0 * self.max_discharge_w
        return None

    def window(self, wish_w: float) -> float:
        """Clamp a self-consumption wish to the 124 window (StorCtl_Mod 3) and the power ratings."""
        c = self.controls
        lo, hi = -c.wcha_max_w, self.max_discharge_w
        if c.stor_ctl_mod == 3 and not c.wset_ena:
            lo = max(lo, -c.in_pct / 100.0 * c.wcha_max_w)
            hi = min(hi, c.out_pct / 100.0 * self.max_discharge_w)
        return min(max(wish_w, lo), max(hi, lo))

    def revert_s(self, now: float) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - now)


def _cell(b: BatteryConfig, share: float) -> BatteryCell:
    return BatteryCell(b.capacity_kwh * 1000.0 * share, b.eta_charge, b.eta_discharge, b.soc_min, b.soc_max)


@dataclass
class SiteSim:
    """A site's devices and their physics, advanced on the sim clock."""

    site: SiteConfig
    signals: SiteSignals
    t: float
    pv: list[PvUnit] = field(default_factory=list)
    batteries: list[BatteryUnit] = field(default_factory=list)
    load_w: float = 0.0
    grid_w: float = 0.0
    import_wh: float = 0.0
    export_wh: float = 0.0
    version: int = 0

    @classmethod
    def create(cls, site: SiteConfig, sim: SimulationConfig, t0: float, der_ids: set[str]) -> SiteSim:
        """Build the site at ``t0``; PV and battery capacity split equally among their devices."""
        self = cls(site, site_signals(site, sim), t0)
        pv_ids = [d.id for d in site.devices if d.kind in PV_KINDS]  # a hybrid has a PV and a battery unit
        bat_ids = [d.id for d in site.devices if d.kind in BATTERY_KINDS]
        cap = feed_in_cap_w(site)
        for dev_id in pv_ids:
            share = 1.0 / len(pv_ids)
            rating = site.pv.rating_w * share
            installer = installer_ceiling_w(site, rating)
            unit = PvUnit(
                dev_id,
                share,
                rating,
                installer,
                cap,
                PvControls(wmax_w=installer),
                seeded_counter_wh(sim.seed, dev_id, site.pv.kwp * share * 950_000.0),
                der=dev_id in der_ids,
            )
            unit.reset()
            unit.ceiling_w = unit.target_w()
            self.pv.append(unit)
        if site.battery is not None:
            b = site.battery
            for dev_id in bat_ids:
                share = 1.0 / len(bat_ids)
                cycles_wh = b.capacity_kwh * share * 250_000.0
                battery = BatteryUnit(
                    dev_id,
                    _cell(b, share),
                    b.max_charge_w * share,
                    b.max_discharge_w * share,
                    BatteryControls(wcha_max_w=b.max_charge_w * share),
                    b.soc_initial,
                    seeded_counter_wh(sim.seed, dev_id + "/in", cycles_wh),
                    seeded_counter_wh(sim.seed, dev_id + "/out", cycles_wh * 0.9),
                )
                self.batteries.append(battery)
        annual_wh = site.load.annual_kwh * 1000.0
        self.import_wh = seeded_counter_wh(sim.seed, site.id + "/import", annual_wh * 0.6)
        self.export_wh = seeded_counter_wh(sim.seed, site.id + "/export", site.pv.kwp * 500_000.0)
        self._solve(t0, 0.0)
        return self

    def _next_expiry(self) -> float:
        times = [u.lim_expires_at for u in self.pv] + [u.conn_expires_at for u in self.pv]
        times += [b.expires_at for b in self.batteries]
        return min((x for x in times if x is not None), default=math.inf)

    def advance(self, t_new: float) -> None:
        """Integrate from the last time to ``t_new`` in sub-steps (≤ MAX_SUBSTEP_S, split at timer expiries)."""
        while self.t < t_new:
            t1 = min(t_new, self.t + MAX_SUBSTEP_S, max(self._next_expiry(), self.t))
            if t1 <= self.t:  # a timer due exactly now
                t1 = self.t
            self._solve(t1, t1 - self.t)
            self.t = t1
            for u in self.pv:
                u.expire(t1)
            for b in self.batteries:
                b.expire(t1)
            if t1 == t_new:
                break
        self.version += 1

    def _solve(self, t1: float, dt: float) -> None:
        """Powers at ``t1`` and energy over the ``dt`` seconds that end there."""
        pot_w, load_w = self.signals.at(t1)
        for u in self.pv:
            u.available_w = min(pot_w * u.share, u.rating_w)
            u.ceiling_w = ramp_toward(u.ceiling_w, u.target_w(), u.ramp_w_per_s, dt)
            u.pv_w = min(u.available_w, u.ceiling_w)
            u.export_limited = False
        pv_w = sum(u.pv_w for u in self.pv)
        fixed = {id(b): b.commanded_w() for b in self.batteries}
        free = [b for b in self.batteries if fixed[id(b)] is None]
        residual = load_w - pv_w - sum(w for w in fixed.values() if w is not None)
        for b in self.batteries:
            wish = fixed[id(b)]
            wish = b.window(residual / len(free) if wish is None else wish)
            if b.controls.cha_gri_set == 0 and wish < 0:
                wish = max(wish, -pv_w / len(self.batteries))
            if dt > 0:
                b.battery_w, b.soc = battery_step(b.cell, b.soc, wish, dt)
            else:
                b.battery_w = battery_step(b.cell, b.soc, wish, 1.0)[0]
        battery_w = sum(b.battery_w for b in self.batteries)
        self._limit_export(load_w, battery_w)
        pv_w = sum(u.pv_w for u in self.pv)
        self.load_w = load_w
        self.grid_w = load_w - pv_w - battery_w
        if dt > 0:
            dt_h = dt / 3600.0
            for u in self.pv:
                u.energy_wh += u.pv_w * dt_h
            for b in self.batteries:
                b.charged_wh += max(0.0, -b.battery_w) * dt_h
                b.discharged_wh += max(0.0, b.battery_w) * dt_h
            self.import_wh += max(0.0, self.grid_w) * dt_h
            self.export_wh += max(0.0, -self.grid_w) * dt_h

    def _limit_export(self, load_w: float, battery_w: float) -> None:
        """Installer-configured inverters hold export at the site's legal cap (docs/definitions.md "Revert timers
        and safe defaults")."""
        limited = [u for u in self.pv if u.installer_mode() and u.export_cap_w is not None]
        if not limited:
            return
        cap_w = min(u.export_cap_w for u in limited if u.export_cap_w is not None)  # the site's cap, on each
        pv_w = sum(u.pv_w for u in self.pv)
        excess = pv_w + battery_w - load_w - cap_w
        own = sum(u.pv_w for u in limited)
        if excess <= 0 or own <= 0:
            return
        cut = min(1.0, excess / own)
        for u in limited:
            u.pv_w *= 1.0 - cut
            u.export_limited = True

    def reboot(self, device_id: str) -> None:
        """A device restarts: its controls return to the installer configuration."""
        for u in self.pv:
            if u.device_id == device_id:
                u.ceiling_w = 0.0  # soft start after the restart
                u.reset()
        for b in self.batteries:
            if b.device_id == device_id:
                b.reset()
        self.version += 1

    def truth(self) -> dict[str, float | None]:
        """Site totals: pv_w, battery_w, load_w, grid_w (W) and soc (capacity-weighted, or None)."""
        cap = sum(b.cell.capacity_wh for b in self.batteries)
        soc = sum(b.soc * b.cell.capacity_wh for b in self.batteries) / cap if cap else None
        return {
            "t": self.t,
            "pv_w": sum(u.pv_w for u in self.pv),
            "battery_w": sum(b.battery_w for b in self.batteries),
            "load_w": self.load_w,
            "grid_w": self.grid_w,
            "soc": soc,
        }
