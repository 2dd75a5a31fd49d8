"""Vendor register maps for devices without SunSpec: the schema of the YAML files in config/profiles/.

A register map ("profile") maps telemetry keys (``pv_w``, ``energy_wh``, ``soc`` ...) and control
keys (``pv_limit_pct``, ``pv_limit_w``, ``battery_setpoint_w``, ``revert_timer_s``) onto registers:
address (0-based protocol address), type, scale, unit, access, table, byte and word order, sign
and the vendor's not-implemented values. ``value_in_unit = raw × scale × 10^sf × sign`` (``sf``
from the register's ``scale_factor`` register, a SunSpec-style power of ten; 0 without one), negated
while the bits ``negative_if`` names are set; the unit then converts to SI (kW → W, kWh → Wh,
% → fraction for ``soc``).

A map describes one device kind; ``hybrid`` is one device (one unit id) with a PV and a battery
role, so its map has keys of both. Battery power is set either as a signed setpoint
(``battery_setpoint_w``) or as "command + unsigned power": a ``battery_command`` register taking
the raw values ``battery_commands`` names for charge, discharge and stop, beside the unsigned
``battery_power_w`` (both directions) or ``battery_charge_w`` / ``battery_discharge_w`` (one each).

Both sides of the wire read this schema: the drivers (drivers/profiles.py adds the codec a client
uses) and the simulators (which serve a map from their own register encoding, so a codec bug on
one side cannot hide behind the same bug on the other).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparcs.config.schema import CONFIG_DIR

PROFILE_DIR = CONFIG_DIR / "profiles"

RegType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32"]
SIZES = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4, "float32": 2}
MAX_STRINGS = 8
UNIT_TO_SI = {"W": 1.0, "kW": 1000.0, "Wh": 1.0, "kWh": 1000.0, "%": 1.0, "s": 1.0, "": 1.0}

# Which units each key accepts; the value the drivers pass on is in the key's SI unit.
KEY_UNITS: dict[str, tuple[str, ...]] = {
    "pv_w": ("W", "kW"),
    "battery_w": ("W", "kW"),
    "grid_w": ("W", "kW"),
    "rating_w": ("W", "kW"),
    "wmax_w": ("W", "kW"),
    "max_charge_w": ("W", "kW"),
    "max_discharge_w": ("W", "kW"),
    "energy_wh": ("Wh", "kWh"),
    "import_wh": ("Wh", "kWh"),
    "export_wh": ("Wh", "kWh"),
    "capacity_wh": ("Wh", "kWh"),
    "soc": ("%",),
    "operating_state": ("",),
    "alarms": ("",),
    "pv_limit_pct": ("%",),
    "pv_limit_w": ("W", "kW"),
    "battery_setpoint_w": ("W", "kW"),
    "revert_timer_s": ("s",),
    "heartbeat": ("",),
    "battery_mode": ("",),
    "inverter_w": ("W", "kW"),
    "battery_status": ("",),
    "battery_command": ("",),
    "battery_power_w": ("W", "kW"),
    "battery_charge_w": ("W", "kW"),
    "battery_discharge_w": ("W", "kW"),
    **{f"mppt_{i}_dc_w": ("W", "kW") for i in range(1, MAX_STRINGS + 1)},
}
"""``inverter_w``: a hybrid's PV and battery power together (its AC output, or its DC input): without
a ``pv_w`` register its PV is ``inverter_w − battery_w``; ``mppt_<i>_dc_w``: one string's DC power
(without ``pv_w`` and ``inverter_w`` the PV is their sum); ``battery_status``: raw status bits, read
for ``negative_if`` only."""
CONTROL_KEYS = (
    "pv_limit_pct",
    "pv_limit_w",
    "battery_setpoint_w",
    "revert_timer_s",
    "heartbeat",
    "battery_mode",
    "battery_command",
    "battery_power_w",
    "battery_charge_w",
    "battery_discharge_w",
)
BATTERY_POWER_KEYS = ("battery_power_w", "battery_charge_w", "battery_discharge_w")
"""The unsigned power registers of "command + unsigned power" (docs/devices.md "Vendor profiles")."""
StateName = Literal["producing", "limited", "standby", "off"]


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignBits(_Strict):
    """The value is negative while ``raw(key) & mask`` is not 0 (a vendor's direction bits beside an
    unsigned power, e.g. Sungrow's battery running state)."""

    key: str = Field(description="a key of `registers` holding the bits")
    mask: int = Field(gt=0, le=0xFFFFFFFF)


class Register(_Strict):
    """One value in the vendor's register map."""

    address: int = Field(ge=0, le=65535, description="0-based protocol address (a manual's 40001 is 40000)")
    type: RegType
    scale: float = Field(default=1.0, description="raw × scale = value in `unit`")
    unit: str = ""
    access: Literal["r", "rw"] = "r"
    table: Literal["holding", "input"] = "holding"
    sign: Literal[1, -1] = Field(default=1, description="-1 when the vendor's sign is opposite to ours")
    not_implemented: list[int] = Field(default_factory=list, description="raw values meaning 'no value' (NaN)")
    scale_factor: int | None = Field(
        default=None, ge=0, le=65535, description="address of an int16 power of ten in the same table (SunSpec `_SF`)"
    )
    negative_if: SignBits | None = None

    @property
    def size(self) -> int:
        return SIZES[self.type]


class BatteryCommands(_Strict):
    """The raw values of ``battery_command`` that charge, discharge and stop the battery."""

    charge: int
    discharge: int
    stop: int


class WriteStep(_Strict):
    """A raw value written to a register, e.g. to hand control back to the device."""

    key: str = Field(description="a key of `registers`")
    value: int = Field(description="raw register value")


FailSafeKind = Literal["revert_timer", "watchdog", "none"]


class FailSafe(_Strict):
    """What the device does on its own when the controller stops writing (docs/devices.md "Fail-safes").

    - ``revert_timer``: the map's ``revert_timer_s`` register is written before every setpoint; the
      device drops the setpoint when that many seconds have passed without a new write;
    - ``watchdog``: the device drops the setpoint when its ``heartbeat`` register has not been written
      for ``interval_s`` (devices report and act on a missed heartbeat late: a 60 s watchdog may fire
      at ~80 s, so the writer refreshes well within the interval, never near it);
    - ``none``: a setpoint stays in force until the next write, also if the controller dies; such a
      device is monitor-only unless its fleet entry sets ``accept_no_fail_safe``.
    """

    kind: FailSafeKind
    interval_s: float | None = Field(
        default=None, gt=0, le=86_400, description="watchdog: seconds without a heartbeat before the device falls back"
    )
    heartbeat: str | None = Field(default=None, description="watchdog: the key of the heartbeat register")
    note: str = Field(default="", description="what the vendor's documentation says the device does")


class RegisterMap(_Strict):
    """A vendor register map for one device kind."""

    name: str
    vendor: str
    devices: str = Field(description="the products this map is written for")
    source: str = Field(description="the vendor document the addresses come from")
    kind: Literal["pv_inverter", "battery", "meter", "hybrid"]
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    max_gap: int = Field(default=0, ge=0, le=100, description="unmapped registers a read may span")
    registers: dict[str, Register]
    state_codes: dict[StateName, int] = Field(
        default_factory=dict, description="the raw `operating_state` the vendor reports in each state"
    )
    pv_limit_release: list[WriteStep] = Field(default_factory=list, description="writes that lift our PV limit")
    battery_release: list[WriteStep] = Field(
        default_factory=list, description="writes that hand the battery back to its own control"
    )
    battery_enable: list[WriteStep] = Field(
        default_factory=list, description="writes before every battery setpoint that put the device under our control"
    )
    battery_commands: BatteryCommands | None = Field(
        default=None, description="the raw `battery_command` values of command + unsigned power"
    )
    fail_safe: FailSafe = Field(description="what the device does when the controller stops writing")

    @model_validator(mode="after")
    def _consistent(self) -> RegisterMap:
        problems = []
        for key, reg in self.registers.items():
            if key not in KEY_UNITS:
                problems.append(f"registers.{key}: unknown key; use one of {', '.join(KEY_UNITS)}")
            elif reg.unit not in KEY_UNITS[key]:
                problems.append(f"registers.{key}.unit: '{reg.unit}' is not one of {list(KEY_UNITS[key])}")
            if key in CONTROL_KEYS and reg.access != "rw":
                problems.append(f"registers.{key}.access: a control register must be 'rw'")
            if key in CONTROL_KEYS and reg.table != "holding":
                problems.append(f"registers.{key}.table: a control register must be a holding register")
        for field_name in ("pv_limit_release", "battery_release", "battery_enable"):
            for i, step in enumerate(getattr(self, field_name)):
                if step.key not in self.registers:
                    problems.append(f"{field_name}[{i}].key: '{step.key}' is not in registers")
        if self.state_codes and "operating_state" not in self.registers:
            problems.append("state_codes: the map has no operating_state register")
        problems += self._register_problems() + self._command_problems() + self._fail_safe_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _register_problems(self) -> list[str]:
        out = []
        for key, reg in self.registers.items():
            if (reg.scale_factor is not None or reg.negative_if is not None) and reg.access != "r":
                out.append(f"registers.{key}: scale_factor and negative_if are for read-only registers")
            bits = reg.negative_if
            if bits is not None and bits.key not in self.registers:
                out.append(f"registers.{key}.negative_if.key: '{bits.key}' is not in registers")
        return out

    def _command_problems(self) -> list[str]:
        """Command + unsigned power: the command register, its values and a power register go together."""
        keys = self.registers
        powers = [k for k in BATTERY_POWER_KEYS if k in keys]
        out = []
        if ("battery_command" in keys) != (self.battery_commands is not None):
            out.append("battery_commands: give the battery_command register and its values together")
        if "battery_command" in keys:
            if "battery_setpoint_w" in keys:
                out.append("registers.battery_setpoint_w: a map sets battery power by setpoint or by command, not both")
            if powers not in (["battery_power_w"], ["battery_charge_w", "battery_discharge_w"]):
                out.append(
                    "registers: command + unsigned power needs battery_power_w, or battery_charge_w and "
                    "battery_discharge_w"
                )
        elif powers:
            out.append(f"registers.{powers[0]}: an unsigned power register needs a battery_command register")
        return out

    def _fail_safe_problems(self) -> list[str]:
        fs = self.fail_safe
        out = []
        if fs.kind == "revert_timer" and "revert_timer_s" not in self.registers:
            out.append("fail_safe.kind: 'revert_timer' needs a revert_timer_s register")
        if fs.kind != "revert_timer" and "revert_timer_s" in self.registers:
            out.append(
                f"fail_safe.kind: the map has a revert_timer_s register; declare 'revert_timer', not '{fs.kind}'"
            )
        if fs.kind == "watchdog":
            if fs.interval_s is None:
                out.append("fail_safe.interval_s: a watchdog needs its interval in seconds")
            if fs.heartbeat is None or fs.heartbeat not in self.registers:
                out.append("fail_safe.heartbeat: a watchdog needs the key of its heartbeat register in registers")
        elif fs.interval_s is not None or fs.heartbeat is not None:
            out.append("fail_safe: interval_s and heartbeat belong to kind 'watchdog' only")
        if "heartbeat" in self.registers and fs.heartbeat != "heartbeat":
            out.append("registers.heartbeat: name it as fail_safe.heartbeat (kind 'watchdog')")
        return out


MapT = TypeVar("MapT", bound=RegisterMap)


def load_register_map_file(path: Path, cls: type[MapT] = RegisterMap) -> MapT:  # type: ignore[assignment]
    """Read and validate one map file as ``cls``; raise ProfileError with one line per problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "(file)"
            msg = "unknown field; remove it or check its spelling" if err["type"] == "extra_forbidden" else err["msg"]
            lines += [f"{path}: {where}: {m}" for m in msg.removeprefix("Value error, ").split("\n")]
        raise ProfileError("\n".join(lines)) from None


def load_register_map(
    name: str,
    directory: Path = PROFILE_DIR,
    cls: type[MapT] = RegisterMap,  # type: ignore[assignment]
    first: Sequence[Path] = (),
) -> MapT:
    """The map ``name`` (a file ``<name>.yaml``) as ``cls``: from the folders ``first`` (a fleet's
    ``profiles_dir``) in order, else from ``directory`` (default config/profiles/)."""
    folders = [*first, directory]
    for folder in folders:
        path = folder / f"{name}.yaml"
        if path.is_file():
            return load_register_map_file(path, cls)
    known = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
    where = " or ".join(str(f) for f in folders)
    raise ProfileError(f"profile '{name}' not found in {where}; known profiles: {', '.join(known) or 'none'}")
