"""A device read and written through a vendor register map (config/profiles/) instead of SunSpec.

Writes (docs/definitions.md "Revert timers and safe defaults", docs/devices.md "Fail-safes"): a
limit writes the profile's fail-safe first (``revert_timer_s`` for a revert timer; the next value of
a counter into a watchdog's ``heartbeat`` register), then ``pv_limit_w`` (else ``pv_limit_pct`` of
WMax) or the battery's power: ``battery_setpoint_w`` (> 0 discharge), or command + unsigned power
(the magnitude into ``battery_power_w``, or ``battery_discharge_w`` / ``battery_charge_w``, then
``battery_command`` = the profile's charge, discharge or stop value: the command last, so the
device never acts on a stale power); a release writes the profile's release steps. The read-back
is the profile's own ``read_all``: its requests cover every register it declares, so they check
every written one and report the setpoint in force.

A ``hybrid`` profile is one device in both roles: PV keys and battery keys from one unit id. Its PV
is ``pv_w`` where mapped, else ``inverter_w − battery_w`` (the inverter's output carries both),
else the sum of its strings' ``mppt_<i>_dc_w``. A role without a control register in the profile
(a hybrid whose vendor documents no PV limit) is not taken (:attr:`ProfileDevice.roles`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sparcs.config.register_map import MAX_STRINGS, FailSafe
from sparcs.config.schema import BATTERY_KINDS, PV_KINDS, DeviceConfig
from sparcs.drivers.device import UNKNOWN, InForce, LinkFor, RegisterWrite, SetpointKind, WritePlan
from sparcs.drivers.device import pv_limit_in_telemetry as _pv_limit_in_telemetry
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.link import Link
from sparcs.drivers.profiles import Profile, ProfileError, load_profile
from sparcs.drivers.telemetry import KEYS_BY_KIND, Reading


class ProfileDevice:
    """Reads the registers a profile declares (telemetry and control registers alike, so the limit
    in force is reported), in as few requests as the profile's gaps allow.
    """

    protocol = "profile"

    def __init__(
        self,
        link: Link,
        unit: int,
        kind: str,
        profile: Profile,
        invert_sign: bool = False,
        watchdog_s: float | None = None,
    ):
        if profile.kind != kind:
            raise ProfileError(
                f"profile '{profile.name}' describes a {profile.kind}, not a {kind}; "
                f"name a {kind} profile, or correct the device's kind"
            )
        self.link, self.unit, self.kind, self.profile, self.invert_sign = link, unit, kind, profile, invert_sign
        self.blocks = profile.blocks()
        self._beats = 0
        fs = profile.fail_safe
        self._fail_safe = (
            fs.model_copy(update={"interval_s": watchdog_s}) if watchdog_s and fs.kind == "watchdog" else fs
        )

    @classmethod
    def from_name(
        cls,
        link: Link,
        unit: int,
        kind: str,
        name: str,
        invert_sign: bool = False,
        first: Sequence[Path] = (),
        watchdog_s: float | None = None,
    ) -> ProfileDevice:
        return cls(link, unit, kind, load_profile(name, first=first), invert_sign, watchdog_s)

    @classmethod
    def from_config(cls, cfg: DeviceConfig, link_for: LinkFor) -> ProfileDevice:
        """The registry's factory (protocol ``profile``); ProfileError when the profile cannot be used."""
        assert cfg.profile is not None  # the schema requires it
        return cls.from_name(
            link_for(), cfg.unit, cfg.kind, cfg.profile, cfg.invert_sign, cfg.profile_dirs, cfg.watchdog_s
        )

    @property
    def fail_safe(self) -> FailSafe:
        """The fail-safe the profile declares (a watchdog's interval as the device's config sets it)."""
        return self._fail_safe

    def _fail_safe_writes(self, revert_s: int) -> list[RegisterWrite]:
        """Before a setpoint: the revert timer, or the watchdog's heartbeat (a counter, so every beat
        is a new value); nothing when the heartbeat is the setpoint register itself, or there is none."""
        fs = self._fail_safe
        if fs.kind == "revert_timer":
            return [self._write("revert_timer_s", float(revert_s))]
        if fs.kind == "watchdog" and fs.heartbeat == "heartbeat":
            self._beats = self._beats % 0xFFFF + 1
            return [self._raw_write("heartbeat", self._beats)]
        return []

    async def read_all(self) -> dict[str, float | None]:
        """Every register of the profile in SI, by key."""
        values, _ = await self._read_all()
        return values

    async def _read_all(self) -> tuple[dict[str, float | None], dict[int, int]]:
        """Every register of the profile in SI, by key, and the raw holding registers read, by address."""
        seen: dict[str, dict[int, int]] = {"holding": {}, "input": {}}
        for table, addr, count, _keys in self.blocks:
            read = self.link.read_holding if table == "holding" else self.link.read_input
            seen[table].update(enumerate(await read(self.unit, addr, count), start=addr))
        return self.profile.values_from(seen), seen["holding"]

    @property
    def roles(self) -> tuple[SetpointKind, ...]:
        """The setpoints this device takes: a PV limit where the profile maps one, battery power where it
        maps a setpoint or a command."""
        regs = self.profile.registers
        pv = self.kind in PV_KINDS and ("pv_limit_w" in regs or "pv_limit_pct" in regs)
        battery = self.kind in BATTERY_KINDS and ("battery_setpoint_w" in regs or "battery_command" in regs)
        return (*(("pv",) if pv else ()), *(("battery",) if battery else ()))

    async def poll(self) -> dict[str, float | None]:
        """The raw SI telemetry values (before quality)."""
        values = await self.read_all()
        strings = {k: v for k, v in values.items() if k.startswith("mppt_")}
        if self.kind in PV_KINDS and "pv_w" not in values:
            values["pv_w"] = self._pv_w(values, list(strings.values()))
        raw = {k: values.get(k) for k in KEYS_BY_KIND[self.kind]}
        if strings:
            raw |= strings
            raw["dc_w"] = None if None in strings.values() else sum(v for v in strings.values() if v is not None)
        if self.invert_sign:
            for k in ("battery_w", "grid_w", "pv_w"):
                v = raw.get(k)
                if v is not None:
                    raw[k] = -v
        if self.kind in PV_KINDS:
            if raw.get("wmax_w") is None:
                raw["wmax_w"] = raw.get("rating_w")
            if "pv_limit_w" in values or "pv_limit_pct" in values:
                raw["pv_limit_w"] = self.limit_in_force_w(values | {"wmax_w": raw["wmax_w"]})
        return raw

    @staticmethod
    def _pv_w(values: Mapping[str, float | None], strings: list[float | None]) -> float | None:
        """PV output where the profile maps no ``pv_w``: the inverter's output less the battery's, else
        the strings' sum (None when a part is unknown)."""
        if "inverter_w" in values:
            inv, bat = values["inverter_w"], values.get("battery_w")
            return None if inv is None or bat is None else inv - bat
        if strings and None not in strings and len(strings) <= MAX_STRINGS:
            return sum(v for v in strings if v is not None)
        return None

    @staticmethod
    def limit_in_force_w(values: Mapping[str, float | None]) -> float | None:
        """The PV limit in force in W from the profile's values (None when released or unknown)."""
        base = values.get("wmax_w") or values.get("rating_w")
        w = values.get("pv_limit_w")
        if w is not None:
            return None if base is not None and w >= base else w
        pct = values.get("pv_limit_pct")
        if pct is None or base is None or pct >= 100.0:
            return None
        return pct / 100.0 * base

    # --- the Device interface beyond polling ----------------------------------------------------

    def forget(self) -> None:
        """Nothing to forget: the register map is fixed by the profile."""

    def model_ids(self) -> list[int]:
        return []

    def pv_base_w(self, latest: Mapping[str, Reading]) -> float | None:
        """WMax as polled (the profile's ``wmax_w``, else its rating)."""
        r = latest.get("wmax_w")
        return r.value if r is not None else None

    def in_force(self, kind: SetpointKind, latest: Mapping[str, Reading]) -> InForce:
        """PV: the polled limit in the telemetry; a battery setpoint is not part of the telemetry."""
        return _pv_limit_in_telemetry(latest) if kind == "pv" else UNKNOWN

    async def pv_limit_writes(self, target_w: float | None, wmax_w: float, revert_s: int) -> WritePlan:
        p = self.profile
        writes: list[RegisterWrite] = []
        if target_w is None:
            writes += [self._raw_write(step.key, step.value) for step in p.pv_limit_release]
        else:
            writes += self._fail_safe_writes(revert_s)
            if "pv_limit_w" in p.registers:
                writes.append(self._write("pv_limit_w", target_w))
            elif "pv_limit_pct" in p.registers:
                writes.append(self._write("pv_limit_pct", target_w / wmax_w * 100.0))
            else:
                raise DeviceError(f"profile '{p.name}' has no pv_limit_w or pv_limit_pct register")

        async def readback() -> tuple[dict[int, int], float | None]:
            values, seen = await self._read_all()
            base: dict[str, float | None] = {"wmax_w": wmax_w}
            return seen, self.limit_in_force_w(base | values)

        return WritePlan(tuple(writes), readback)

    async def battery_writes(self, target_w: float | None, revert_s: int) -> WritePlan:
        p = self.profile
        writes: list[RegisterWrite] = []
        if target_w is None:
            writes += [self._raw_write(step.key, step.value) for step in p.battery_release]
        elif "battery" not in self.roles:
            raise DeviceError(f"profile '{p.name}' has no battery_setpoint_w or battery_command register")
        else:
            writes += self._fail_safe_writes(revert_s)
            writes += [self._raw_write(step.key, step.value) for step in p.battery_enable]
            writes += (
                self._command_writes(target_w) if p.battery_commands else [self._write("battery_setpoint_w", target_w)]
            )

        async def readback() -> tuple[dict[int, int], float | None]:
            values, seen = await self._read_all()
            return seen, self.battery_in_force_w(values)

        return WritePlan(tuple(writes), readback)

    def _command_writes(self, target_w: float) -> list[RegisterWrite]:
        """Command + unsigned power: the magnitude into the power register(s) of its direction (the
        other direction's to 0), then the command."""
        cmds = self.profile.battery_commands
        assert cmds is not None
        regs = self.profile.registers
        power = abs(target_w)
        if "battery_power_w" in regs:
            writes = [self._write("battery_power_w", power)]
        else:
            writes = [
                self._write("battery_charge_w", power if target_w < 0 else 0.0),
                self._write("battery_discharge_w", power if target_w > 0 else 0.0),
            ]
        command = cmds.discharge if target_w > 0 else cmds.charge if target_w < 0 else cmds.stop
        return [*writes, self._raw_write("battery_command", command)]

    def battery_in_force_w(self, values: Mapping[str, float | None]) -> float | None:
        """The battery power in force as the profile's control registers read (W, > 0 discharge), or None
        when released: an enable step not in place, or a command that is none of charge, discharge, stop."""
        p = self.profile
        for step in p.battery_enable:
            if values.get(step.key) != p.decode(step.key, p.encode_raw(step.key, step.value)):
                return None
        cmds = p.battery_commands
        if cmds is None:
            return values.get("battery_setpoint_w")
        command = values.get("battery_command")
        if command == cmds.stop:
            return 0.0
        if command not in (cmds.charge, cmds.discharge):
            return None
        charge = command == cmds.charge
        magnitude = values.get("battery_power_w", values.get("battery_charge_w" if charge else "battery_discharge_w"))
        return None if magnitude is None else -magnitude if charge else magnitude

    async def write(self, addr: int, values: list[int]) -> None:
        await self.link.write(self.unit, addr, values)

    async def read(self, addr: int, count: int) -> list[int]:
        return await self.link.read_holding(self.unit, addr, count)

    def _write(self, key: str, value_si: float) -> RegisterWrite:
        enc = tuple(self.profile.encode(key, value_si))
        return RegisterWrite(self.profile.registers[key].address, enc, tuple(range(len(enc))))

    def _raw_write(self, key: str, raw: int) -> RegisterWrite:
        enc = tuple(self.profile.encode_raw(key, raw))
        return RegisterWrite(self.profile.registers[key].address, enc, tuple(range(len(enc))))
