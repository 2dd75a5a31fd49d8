"""Vendor register maps for devices without SunSpec: YAML files in config/profiles/, validated here.

A profile maps telemetry keys (``pv_w``, ``energy_wh``, ``soc`` ...) and control keys
(``pv_limit_pct``, ``pv_limit_w``, ``battery_setpoint_w``, ``revert_timer_s``) onto registers:
address (0-based protocol address), type, scale, unit, access, table, byte and word order,
sign and the vendor's not-implemented values. ``value_in_unit = raw × scale × sign``; the unit
then converts to SI (kW → W, kWh → Wh, % → fraction for ``soc``).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.schema import CONFIG_DIR

PROFILE_DIR = CONFIG_DIR / "profiles"

RegType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32"]
SIZES = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4, "float32": 2}
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
}
CONTROL_KEYS = ("pv_limit_pct", "pv_limit_w", "battery_setpoint_w", "revert_timer_s")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    @property
    def size(self) -> int:
        return SIZES[self.type]


class WriteStep(_Strict):
    """A raw value written to a register, e.g. to hand control back to the device."""

    key: str = Field(description="a key of `registers`")
    value: int = Field(description="raw register value")


class Profile(_Strict):
    """A vendor register map for one device kind."""

    name: str
    vendor: str
    devices: str = Field(description="the products this map is written for")
    source: str = Field(description="the vendor document the addresses come from")
    kind: Literal["pv_inverter", "battery", "meter"]
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    max_gap: int = Field(default=0, ge=0, le=100, description="unmapped registers a read may span")
    registers: dict[str, Register]
    pv_limit_release: list[WriteStep] = Field(default_factory=list, description="writes that lift our PV limit")
    battery_release: list[WriteStep] = Field(
        default_factory=list, description="writes that hand the battery back to its own control"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        problems = []
        for key, reg in self.registers.items():
            if key not in KEY_UNITS:
                problems.append(f"registers.{key}: unknown key; use one of {', '.join(KEY_UNITS)}")
            elif reg.unit not in KEY_UNITS[key]:
                problems.append(f"registers.{key}.unit: '{reg.unit}' is not one of {list(KEY_UNITS[key])}")
            if key in CONTROL_KEYS and reg.access != "rw":
                problems.append(f"registers.{key}.access: a control register must be 'rw'")
        for field_name in ("pv_limit_release", "battery_release"):
            for i, step in enumerate(getattr(self, field_name)):
                if step.key not in self.registers:
                    problems.append(f"{field_name}[{i}].key: '{step.key}' is not in registers")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def blocks(self) -> list[tuple[str, int, int, list[str]]]:
        """Read requests (table, address, count, keys) covering every register, merged across small gaps."""
        out: list[tuple[str, int, int, list[str]]] = []
        for table in ("holding", "input"):
            regs = sorted((r.address, r.size, k) for k, r in self.registers.items() if r.table == table)
            for addr, size, key in regs:
                if out and out[-1][0] == table:
                    _, start, count, keys = out[-1]
                    end = start + count
                    if addr <= end + self.max_gap and addr + size - start <= 125:
                        out[-1] = (table, start, max(end, addr + size) - start, [*keys, key])
                        continue
                out.append((table, addr, size, [key]))
        return out

    def decode(self, key: str, regs: list[int]) -> float | None:
        """The SI value of ``key`` from its raw registers, or None for a not-implemented value."""
        r = self.registers[key]
        words = list(regs[: r.size])
        if self.word_order == "little":
            words.reverse()
        raw_bytes = b"".join(w.to_bytes(2, "big") for w in words)
        if self.byte_order == "little":
            raw_bytes = b"".join(raw_bytes[i : i + 2][::-1] for i in range(0, len(raw_bytes), 2))
        unsigned = int.from_bytes(raw_bytes, "big")
        if unsigned in r.not_implemented:
            return None
        if r.type == "float32":
            v: float = struct.unpack(">f", raw_bytes)[0]
            if v != v:  # NaN
                return None
        elif r.type.startswith("int") and unsigned >> (16 * r.size - 1):
            v = unsigned - (1 << (16 * r.size))
        else:
            v = unsigned
        si = v * r.scale * r.sign * UNIT_TO_SI[r.unit]
        return si / 100.0 if key == "soc" else si

    def encode(self, key: str, value_si: float) -> list[int]:
        """Registers that write the SI ``value_si`` into ``key`` (inverse of ``decode``)."""
        r = self.registers[key]
        raw_f = value_si / (r.scale * r.sign * UNIT_TO_SI[r.unit])
        if r.type == "float32":
            raw_bytes = struct.pack(">f", raw_f)
        else:
            raw = round(raw_f)
            bits = 16 * r.size
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if r.type.startswith("int") else (0, (1 << bits) - 1)
            if not lo <= raw <= hi:
                raise ValueError(f"{self.name}.{key}: {value_si} is out of range for {r.type}")
            raw_bytes = (raw & ((1 << bits) - 1)).to_bytes(2 * r.size, "big")
        return self._order(raw_bytes)

    def encode_raw(self, key: str, raw: int) -> list[int]:
        r = self.registers[key]
        return self._order((raw & ((1 << (16 * r.size)) - 1)).to_bytes(2 * r.size, "big"))

    def _order(self, raw_bytes: bytes) -> list[int]:
        if self.byte_order == "little":
            raw_bytes = b"".join(raw_bytes[i : i + 2][::-1] for i in range(0, len(raw_bytes), 2))
        words = [int.from_bytes(raw_bytes[i : i + 2], "big") for i in range(0, len(raw_bytes), 2)]
        return words[::-1] if self.word_order == "little" else words


def load_profile_file(path: Path) -> Profile:
    """Read and validate one profile file; raise ProfileError with one line per problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "(file)"
            msg = "unknown field; remove it or check its spelling" if err["type"] == "extra_forbidden" else err["msg"]
            lines += [f"{path}: {where}: {m}" for m in msg.removeprefix("Value error, ").split("\n")]
        raise ProfileError("\n".join(lines)) from None


def load_profile(name: str, directory: Path = PROFILE_DIR) -> Profile:
    """The profile ``name`` (a file ``<name>.yaml`` in config/profiles/)."""
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ProfileError(f"profile '{name}' not found in {directory}; known profiles: {', '.join(known) or 'none'}")
    return load_profile_file(path)
