"""Profile devices: a site's PV inverter, battery, hybrid or meter served through a vendor register map.

A device with ``protocol: profile`` and ``profile: NAME`` answers with the map in
config/profiles/NAME.yaml (:mod:`config.register_map`): each key at its address, in its table
(holding or input), type, byte and word order, scale, unit and sign; unmapped registers between
the keys are invalid (exception 2), as on SMA devices. The encoding here is the simulators' own
(built on :mod:`simulators.registers`), not the drivers' codec, so tests over TCP catch a
bug on either side.

Physics are the site's (:mod:`simulators.site`), as for the SunSpec faces; the map's control
registers set the same controls:

- ``pv_limit_pct`` (% of ``wmax_w`` when the map has it, else of ``rating_w``) or ``pv_limit_w``
  limit the PV inverter; 100 % (or the full WMax) lifts the limit, so the inverter's own export
  limitation (installer configuration) applies again;
- ``battery_setpoint_w`` (> 0 discharge) fixes battery power; a raw value listed in the map's
  ``battery_release`` for that register hands the battery back to self-consumption;
- ``revert_timer_s`` restarts with every limit or setpoint write; at expiry the device returns to
  its installer configuration. A map without it keeps a written command until the next write;
- a ``watchdog`` fail-safe (``fail_safe.heartbeat``, ``interval_s``): every write of the heartbeat
  register restarts the watchdog; once no heartbeat came for the interval the device returns to
  its installer configuration, late as field devices do (``WATCHDOG_LATE`` of the interval after
  it: a 60 s watchdog fires at 80 s), so a writer that beats near the interval still fails;
- ``battery_mode`` (a vendor's "control via Modbus" switch): a raw value listed in
  ``battery_release`` hands the battery back, any other is accepted and kept;
- command + unsigned power: ``battery_command`` = the map's charge / discharge value sets battery
  power to the unsigned ``battery_power_w`` (or ``battery_charge_w`` / ``battery_discharge_w``) in
  that direction, stop to 0 W, a value of ``battery_release`` hands the battery back; any other
  command is refused (exception 3). A power write applies with the command in force.

A hybrid map serves both units of its device: the PV keys from the site's PV unit, the battery
keys from its battery; ``inverter_w`` is their sum, ``mppt_<i>_dc_w`` the PV split evenly over the
strings the map lists (no inverter loss). A register with ``negative_if`` publishes the magnitude
and sets its bits in the status register while the value is negative; one with ``scale_factor``
publishes its value in units of 10^sf, sf fixed per register as the smallest that holds twice the
device's power. A fail-safe write (timer, heartbeat) without a setpoint concerns both roles.

A write must cover whole ``rw`` registers (else exception 2) with values in range (else 3).
Value faults: ``sentinel`` publishes the map's not-implemented value (NaN for float32; a register
without one keeps its value), ``garbage`` the type's largest value, ``frozen`` nothing new.
``operating_state`` reads the map's ``state_codes`` (its not-implemented value without them).
"""

from __future__ import annotations

import math

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from sparcs.config.register_map import (
    BATTERY_POWER_KEYS,
    CONTROL_KEYS,
    UNIT_TO_SI,
    ProfileError,
    Register,
    RegisterMap,
)
from sparcs.config.schema import DeviceConfig
from sparcs.simulators.devices import battery_truth, hybrid_truth, meter_truth, pv_truth
from sparcs.simulators.registers import decode, encode, type_range, words_of
from sparcs.simulators.site import BatteryUnit, PvUnit, SiteSim

MEASURED = frozenset(
    {"pv_w", "battery_w", "grid_w", "soc", "energy_wh", "import_wh", "export_wh", "operating_state", "alarms"}
    | {"inverter_w", "battery_status"}
)
WRITTEN_RAW = ("heartbeat", "battery_mode", "battery_command", *BATTERY_POWER_KEYS)
"""Control registers that read back what was last written."""
PV_CONTROL = frozenset({"pv_limit_pct", "pv_limit_w"})
BATTERY_CONTROL = frozenset({"battery_setpoint_w", "battery_mode", "battery_command", *BATTERY_POWER_KEYS})
INPUT_FC = 4
MAX_TIMER_S = 4294967294
WATCHDOG_LATE = 1.0 / 3.0
"""A missed heartbeat takes effect this share of the interval late (field reports: 60 s watchdogs at ~80 s)."""


def order_words(words: list[int], byte_order: str, word_order: str) -> list[int]:
    """Big-endian words ↔ the map's byte and word order (both swaps are their own inverse)."""
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words[::-1] if word_order == "little" else list(words)


def raw_of(reg: Register, key: str, value_si: float, sf: int = 0) -> float:
    """The raw number a register holds for ``value_si`` (SoC: a fraction 0..1) at scale factor ``sf``."""
    value = value_si * 100.0 if key == "soc" else value_si
    return value / (reg.scale * 10.0**sf * reg.sign * UNIT_TO_SI[reg.unit])


def si_of(reg: Register, key: str, raw: float) -> float:
    value = raw * reg.scale * reg.sign * UNIT_TO_SI[reg.unit]
    return value / 100.0 if key == "soc" else value


def _fitting_sf(reg: Register, power_w: float) -> int:
    """The smallest SunSpec scale factor at which ``reg`` holds ``power_w``."""
    hi = type_range(reg.type, reg.size)[1]
    return next((sf for sf in range(-3, 10) if abs(raw_of(reg, "", power_w, sf)) <= hi), 10)


class ProfileSimDevice:
    """One simulated device (unit id) answering with a vendor register map."""

    def __init__(self, dev: DeviceConfig, site: SiteSim, regmap: RegisterMap) -> None:
        if regmap.kind != dev.kind:
            raise ProfileError(
                f"device '{dev.id}': profile '{regmap.name}' describes a {regmap.kind}, not a {dev.kind}; "
                "pick a profile of the device's kind"
            )
        self.config = dev
        self.id = dev.id
        self.unit = dev.unit
        self.kind = dev.kind
        self.site = site
        self.map = regmap
        self.pv: PvUnit | None = next((u for u in site.pv if u.device_id == dev.id), None)
        self.bat: BatteryUnit | None = next((b for b in site.batteries if b.device_id == dev.id), None)
        # Per table: first address and registers up to the last mapped one (gaps stay invalid).
        self.base: dict[str, int] = {}
        self.tables: dict[str, list[int]] = {}
        for table in ("holding", "input"):
            regs = [r for r in regmap.registers.values() if r.table == table]
            spans = [(r.address, r.address + r.size) for r in regs]
            spans += [(r.scale_factor, r.scale_factor + 1) for r in regs if r.scale_factor is not None]
            if spans:
                self.base[table] = min(a for a, _ in spans)
                self.tables[table] = [0] * (max(b for _, b in spans) - self.base[table])
        self._owner = {
            r.address + i: key
            for key, r in regmap.registers.items()
            if key in CONTROL_KEYS and r.table == "holding"
            for i in range(r.size)
        }
        self._rendered: tuple[int, str | None] | None = None
        self._written_raw: dict[str, float] = {}  # WRITTEN_RAW keys: what was last written (raw)
        self.strings = sorted(k for k in regmap.registers if k.startswith("mppt_"))
        power = 2.0 * max(self.pv.rating_w if self.pv else 0.0, self.bat.max_discharge_w if self.bat else 0.0, 1.0)
        self.sf = {key: _fitting_sf(r, power) for key, r in regmap.registers.items() if r.scale_factor is not None}
        self.render(None)

    # --- pymodbus ---------------------------------------------------------------------------
    def simdata(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        """Separate holding and input tables, each a block per run of mapped registers."""
        out: dict[str, list[SimData]] = {}
        for table in ("holding", "input"):
            addresses = sorted(
                {r.address + i for r in self.map.registers.values() if r.table == table for i in range(r.size)}
                | {r.scale_factor for r in self.map.registers.values() if r.table == table and r.scale_factor}
            )
            blocks: list[SimData] = []
            start = prev = None
            for a in addresses:
                if prev is not None and a == prev + 1:
                    prev = a
                    continue
                if start is not None and prev is not None:
                    blocks.append(SimData(start, count=prev - start + 1, datatype=DataType.REGISTERS))
                start = prev = a
            if start is not None and prev is not None:
                blocks.append(SimData(start, count=prev - start + 1, datatype=DataType.REGISTERS))
            # pymodbus needs a block per table; an invalid one answers exception 2 like a missing table.
            out[table] = blocks or [SimData(0, count=1, datatype=DataType.INVALID)]
        bits = [SimData(0, count=1, datatype=DataType.BITS)]
        return (bits, list(bits), out["holding"], out["input"])

    def adopt(self, function_code: int, registers: list[int]) -> None:
        """Use pymodbus's live list of the table ``function_code`` addresses from now on."""
        table = "input" if function_code == INPUT_FC else "holding"
        mine = self.tables.get(table)
        if mine is not None and mine is not registers:
            registers[: len(mine)] = mine
            self.tables[table] = registers

    # --- values -----------------------------------------------------------------------------
    def _state(self) -> str:
        if self.pv is not None:
            u = self.pv
            if not u.controls.conn:
                return "off"
            if u.available_w < 1.0:
                return "standby"
            return "limited" if u.pv_w < u.available_w - 1.0 else "producing"
        if self.bat is not None:
            return "producing" if abs(self.bat.battery_w) > 1.0 else "standby"
        return "producing"

    def _pct_base_w(self) -> float:
        """What the vendor's percentage refers to: WMax when the map publishes it, else the rating."""
        assert self.pv is not None
        return self.pv.controls.wmax_w if "wmax_w" in self.map.registers else self.pv.rating_w

    def values(self) -> dict[str, float | None]:
        """SI values by key now; a key the device kind has no value for is absent (not implemented)."""
        code = self.map.state_codes.get(self._state())  # type: ignore[call-overload]
        common: dict[str, float | None] = {
            "operating_state": None if code is None else float(code),
            "alarms": 0.0,
        }
        written = {k: si_of(self.map.registers[k], k, v) for k, v in self._written_raw.items()}
        values = common | self._kind_values() | written
        if self.pv is not None and self.bat is not None:
            values["inverter_w"] = self.pv.pv_w + self.bat.battery_w
        values |= {k: (self.pv.pv_w if self.pv else 0.0) / len(self.strings) for k in self.strings}
        status = 0
        for key, reg in self.map.registers.items():
            bits, v = reg.negative_if, values.get(key)
            if bits is not None and v is not None and v < 0:
                status |= bits.mask
                values[key] = -v
        return values | ({"battery_status": float(status)} if "battery_status" in self.map.registers else {})

    def _fail_safe_s(self, decoded: dict[str, tuple[float, int]]) -> float | None:
        """The timer a write restarts on a watchdog device (the interval, fired late), else None."""
        fs = self.map.fail_safe
        interval = self.config.watchdog_s or fs.interval_s  # the interval set on this device, else the map's
        if fs.kind == "watchdog" and fs.heartbeat in decoded and interval is not None:
            return interval * (1.0 + WATCHDOG_LATE)
        return None

    def _kind_values(self) -> dict[str, float | None]:
        """The PV unit's values, the battery's (a hybrid: both, the battery's timer), else the meter's."""
        if self.pv is None and self.bat is None:
            s = self.site
            return {"grid_w": s.grid_w, "import_wh": s.import_wh, "export_wh": s.export_wh}
        out = self._battery_values() | self._pv_values()
        if self.bat is not None and self.map.registers.keys() & BATTERY_CONTROL:  # a hybrid's timer is its battery's
            out["revert_timer_s"] = self.bat.controls.wset_rvrt_s
        return out

    def _pv_values(self) -> dict[str, float | None]:
        if self.pv is not None:
            u = self.pv
            c = u.controls
            pct_in_force = c.lim_pct * c.wmax_w / self._pct_base_w() if c.lim_ena else 100.0
            return {
                "pv_w": u.pv_w,
                "energy_wh": u.energy_wh,
                "rating_w": u.rating_w,
                "wmax_w": c.wmax_w,
                "pv_limit_pct": pct_in_force,
                "pv_limit_w": c.lim_pct / 100.0 * c.wmax_w if c.lim_ena else c.wmax_w,
                "revert_timer_s": c.lim_rvrt_s,
            }
        return {}

    def _battery_values(self) -> dict[str, float | None]:
        if self.bat is not None:
            b = self.bat
            bc = b.controls
            setpoint: float | None = bc.wset_w if bc.wset_ena else self._released_si("battery_setpoint_w")
            return {
                "battery_w": b.battery_w,
                "soc": b.soc,
                "capacity_wh": b.cell.capacity_wh,
                "max_charge_w": b.max_charge_w,
                "max_discharge_w": b.max_discharge_w,
                "energy_wh": b.discharged_wh,  # AC energy out, as SunSpec's WH counts it
                "battery_setpoint_w": setpoint,
                "revert_timer_s": bc.wset_rvrt_s,
            }
        return {}

    def _released_si(self, key: str) -> float:
        """What a control register reads while released: the map's release value, else 0 (also for a
        map without the register: nothing publishes it then)."""
        reg = self.map.registers.get(key)
        if reg is None:
            return 0.0
        for step in self.map.battery_release:
            if step.key == key:
                raw = decode(reg.type, words_of(step.value, reg.size))
                return si_of(reg, key, float(raw) if isinstance(raw, int | float) else 0.0)
        return 0.0

    def registers_for(self, key: str, value_si: float | None, fault_mode: str | None = None) -> list[int] | None:
        """The wire registers of ``key`` for ``value_si`` (None: not implemented); None = leave as is."""
        reg = self.map.registers[key]
        if fault_mode == "garbage" and key in MEASURED:
            big = 1e12 if reg.type == "float32" else type_range(reg.type, reg.size)[1]
            words = encode(reg.type, reg.size, big)
        elif value_si is None or (fault_mode == "sentinel" and key in MEASURED):
            if reg.not_implemented:
                words = words_of(reg.not_implemented[0], reg.size)
            elif reg.type == "float32":
                words = encode("float32", 2, None)
            else:
                return None
        elif reg.type == "float32":
            words = encode("float32", 2, raw_of(reg, key, value_si, self.sf.get(key, 0)))
        else:
            lo, hi = type_range(reg.type, reg.size)
            raw = min(max(round(raw_of(reg, key, value_si, self.sf.get(key, 0))), lo), hi)
            words = encode(reg.type, reg.size, raw)
        return order_words(words, self.map.byte_order, self.map.word_order)

    def render(self, fault_mode: str | None, address: int | None = None, count: int = 0) -> None:
        """Publish every key unless already current; ``frozen`` publishes nothing. ``address`` and
        ``count`` (the request's registers) do not narrow it: a profile device publishes every key."""
        if fault_mode == "frozen":
            return
        key = (self.site.version, fault_mode)
        if key == self._rendered:
            return
        self._rendered = key
        values = self.values()
        for name, reg in self.map.registers.items():
            words = self.registers_for(name, values.get(name), fault_mode)
            if words is not None:
                start = reg.address - self.base[reg.table]
                self.tables[reg.table][start : start + reg.size] = words
            if reg.scale_factor is not None:
                self.tables[reg.table][reg.scale_factor - self.base[reg.table]] = self.sf[name] & 0xFFFF

    # --- writes -----------------------------------------------------------------------------
    def write(self, address: int, values: list[int], now: float) -> ExcCodes | None:
        """Validate and apply a write of holding registers; all or nothing."""
        keys: list[str] = []
        for i in range(len(values)):
            key = self._owner.get(address + i)
            if key is None:
                return ExcCodes.ILLEGAL_ADDRESS
            if key not in keys:
                keys.append(key)
        decoded: dict[str, tuple[float, int]] = {}
        for key in keys:
            reg = self.map.registers[key]
            first = reg.address - address
            if first < 0 or first + reg.size > len(values):
                return ExcCodes.ILLEGAL_ADDRESS  # a multi-register value must be written whole
            words = order_words(values[first : first + reg.size], self.map.byte_order, self.map.word_order)
            unsigned = int.from_bytes(b"".join(w.to_bytes(2, "big") for w in words), "big")
            raw = decode(reg.type, words)
            if unsigned in reg.not_implemented or raw is None or isinstance(raw, str):
                return ExcCodes.ILLEGAL_VALUE
            value = si_of(reg, key, float(raw))
            if not math.isfinite(value):
                return ExcCodes.ILLEGAL_VALUE
            decoded[key] = (value, unsigned)
        if now > self.site.t:
            self.site.advance(now)
        result = self._check_command(decoded)
        if result is not None:
            return result
        for key in WRITTEN_RAW:
            if key in decoded:
                raw = decode(self.map.registers[key].type, words_of(decoded[key][1], self.map.registers[key].size))
                self._written_raw[key] = float(raw) if isinstance(raw, int | float) else 0.0
        pv_keys, bat_keys = decoded.keys() & PV_CONTROL, decoded.keys() & BATTERY_CONTROL
        if self.pv is not None and (pv_keys or not bat_keys or self.bat is None):
            only_pv = decoded if self.bat is None else {k: decoded[k] for k in decoded.keys() - bat_keys}
            result = self._write_pv(only_pv, now)
        if result is None and self.bat is not None and (bat_keys or not pv_keys or self.pv is None):
            keep = decoded.keys() - pv_keys
            result = self._write_battery(decoded if self.pv is None else {k: decoded[k] for k in keep}, now)
        if self.pv is None and self.bat is None:
            result = ExcCodes.ILLEGAL_ADDRESS
        if result is None:
            self.site.version += 1
        return result

    def _check_command(self, decoded: dict[str, tuple[float, int]]) -> ExcCodes | None:
        """A command must be one of the map's charge / discharge / stop values or a release step's."""
        cmds = self.map.battery_commands
        if "battery_command" not in decoded or cmds is None:
            return None
        value = decoded["battery_command"][1]
        released = any(s.key == "battery_command" and s.value == value for s in self.map.battery_release)
        return None if released or value in (cmds.charge, cmds.discharge, cmds.stop) else ExcCodes.ILLEGAL_VALUE

    def _commanded_w(self) -> float | None:
        """Command + unsigned power: the battery power the written command and power registers ask for
        (> 0 discharge), or None when the command is a release (or none was written)."""
        cmds = self.map.battery_commands
        assert cmds is not None
        regs = self.map.registers
        command = self._written_raw.get("battery_command")
        if command not in (cmds.charge, cmds.discharge, cmds.stop):
            return None
        if any(s.key == "battery_mode" and self._written_raw.get(s.key) != s.value for s in self.map.battery_enable):
            return None  # the vendor's "control via Modbus" is off: the command does not apply
        if command == cmds.stop:
            return 0.0
        charge = command == cmds.charge
        key = "battery_charge_w" if charge else "battery_discharge_w"
        key = "battery_power_w" if "battery_power_w" in regs else key
        power = si_of(regs[key], key, self._written_raw.get(key, 0.0))
        return -power if charge else power

    def _write_pv(self, decoded: dict[str, tuple[float, int]], now: float) -> ExcCodes | None:
        assert self.pv is not None
        u = self.pv
        c = u.controls
        if "battery_setpoint_w" in decoded:
            return ExcCodes.ILLEGAL_ADDRESS
        fraction: float | None = None  # of WMax
        if "pv_limit_pct" in decoded:
            pct = decoded["pv_limit_pct"][0]
            if not 0.0 <= pct <= 100.0 + 1e-9:
                return ExcCodes.ILLEGAL_VALUE
            fraction = pct / 100.0 * self._pct_base_w() / c.wmax_w
        if "pv_limit_w" in decoded:
            watts = decoded["pv_limit_w"][0]
            if not 0.0 <= watts <= c.wmax_w + 1e-6:
                return ExcCodes.ILLEGAL_VALUE
            fraction = watts / c.wmax_w
        changed: set[str] = set()
        if "revert_timer_s" in decoded:
            timer = decoded["revert_timer_s"][0]
            if not 0 <= timer <= MAX_TIMER_S:
                return ExcCodes.ILLEGAL_VALUE
            c.lim_rvrt_s = float(round(timer))
            changed.add("lim_rvrt_s")
        watchdog_s = self._fail_safe_s(decoded)
        if watchdog_s is not None:
            c.lim_rvrt_s = watchdog_s
            changed.add("lim_rvrt_s")
        if fraction is not None:
            limited = fraction < 1.0 - 1e-9
            c.lim_ena, c.lim_pct = (1, fraction * 100.0) if limited else (0, 100.0)
            changed |= {"lim_pct", "lim_ena"}
        u.written(changed, now)
        return None

    def _write_battery(self, decoded: dict[str, tuple[float, int]], now: float) -> ExcCodes | None:
        assert self.bat is not None
        b = self.bat
        c = b.controls
        if "pv_limit_pct" in decoded or "pv_limit_w" in decoded:
            return ExcCodes.ILLEGAL_ADDRESS
        changed: set[str] = set()
        if "revert_timer_s" in decoded:
            timer = decoded["revert_timer_s"][0]
            if not 0 <= timer <= MAX_TIMER_S:
                return ExcCodes.ILLEGAL_VALUE
            c.wset_rvrt_s = float(round(timer))
            changed.add("wset_rvrt_s")
        watchdog_s = self._fail_safe_s(decoded)
        if watchdog_s is not None:
            c.wset_rvrt_s = watchdog_s
            changed.add("wset_rvrt_s")
        mode = decoded.get("battery_mode")
        if mode is not None and any(s.key == "battery_mode" and s.value == mode[1] for s in self.map.battery_release):
            c.wset_ena = 0
            changed.add("wset_ena")
        asked: list[float | None] = []  # the battery power the write asks for; None: handed back
        if self.map.battery_commands is not None and decoded.keys() & {"battery_command", *BATTERY_POWER_KEYS}:
            asked.append(self._commanded_w())
        if "battery_setpoint_w" in decoded:
            watts, unsigned = decoded["battery_setpoint_w"]
            released = any(s.key == "battery_setpoint_w" and s.value == unsigned for s in self.map.battery_release)
            asked.append(None if released else watts)
        for power_w in asked:
            if power_w is None:
                c.wset_ena = 0
            elif -b.max_charge_w - 1e-6 <= power_w <= b.max_discharge_w + 1e-6:
                c.wset_ena, c.wset_mod, c.wset_w = 1, 1, power_w
            else:
                return ExcCodes.ILLEGAL_VALUE
            changed |= {"wset_ena", "wset_w"}
        b.written(changed, now)
        return None

    def truth(self) -> dict[str, float | None]:
        """SI ground truth of this device, with the same keys as the SunSpec faces of its kind."""
        if self.pv is not None and self.bat is not None:
            return hybrid_truth(self.pv, self.bat, self.site.t)
        if self.pv is not None:
            return pv_truth(self.pv, self.site.t)
        if self.bat is not None:
            return battery_truth(self.bat, self.site.t)
        return meter_truth(self.site)
