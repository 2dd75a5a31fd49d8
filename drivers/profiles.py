"""The client side of vendor register maps: decoding and encoding a device's registers.

The map schema, its loader and ProfileError live in :mod:`config.register_map` (the simulators
serve the same maps); this module adds the codec and read planning the drivers use.
``value_in_unit = raw × scale × 10^sf × sign`` (``sf`` from the register's ``scale_factor``
register, else 0), negated while its ``negative_if`` bits are set; the unit then converts to SI
(kW → W, kWh → Wh, % → fraction for ``soc``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from sparcs.config.register_map import (
    KEY_UNITS,
    PROFILE_DIR,
    UNIT_TO_SI,
    ProfileError,
    RegisterMap,
    load_register_map,
    load_register_map_file,
)

__all__ = ["KEY_UNITS", "PROFILE_DIR", "Profile", "ProfileError", "load_profile", "load_profile_file"]


class Profile(RegisterMap):
    """A vendor register map with the drivers' codec and read planning."""

    def blocks(self) -> list[tuple[str, int, int, list[str]]]:
        """Read requests (table, address, count, keys) covering every register and the scale factors
        they name, merged across small gaps."""
        out: list[tuple[str, int, int, list[str]]] = []
        for table in ("holding", "input"):
            spans = {(r.address, r.size, k) for k, r in self.registers.items() if r.table == table}
            spans |= {(r.scale_factor, 1, "") for r in self.registers.values() if r.table == table and r.scale_factor}
            for addr, size, key in sorted(spans):
                named = [key] if key else []
                if out and out[-1][0] == table:
                    _, start, count, keys = out[-1]
                    end = start + count
                    if addr <= end + self.max_gap and addr + size - start <= 125:
                        out[-1] = (table, start, max(end, addr + size) - start, [*keys, *named])
                        continue
                out.append((table, addr, size, named))
        return out

    def values_from(self, seen: Mapping[str, Mapping[int, int]]) -> dict[str, float | None]:
        """Every key's SI value from the raw registers read (table → address → register), with its
        scale factor and direction bits applied; None where not implemented."""
        out: dict[str, float | None] = {}
        for key, r in self.registers.items():
            regs = seen[r.table]
            sf = 0
            if r.scale_factor is not None:
                raw_sf = regs[r.scale_factor]
                sf = raw_sf - 0x10000 if raw_sf & 0x8000 else raw_sf
                if raw_sf == 0x8000:  # SunSpec's not-implemented scale factor
                    out[key] = None
                    continue
            out[key] = self.decode(key, [regs[r.address + i] for i in range(r.size)], sf)
        for key, r in self.registers.items():
            bits, v = r.negative_if, out[key]
            if bits is not None and v is not None:
                status = out[bits.key]
                out[key] = None if status is None else -v if int(status) & bits.mask else v
        return out

    def decode(self, key: str, regs: list[int], sf: int = 0) -> float | None:
        """The SI value of ``key`` from its raw registers (times 10^``sf``), or None for a not-implemented value."""
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
        si = v * r.scale * 10.0**sf * r.sign * UNIT_TO_SI[r.unit]
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
    return load_register_map_file(path, Profile)


def load_profile(name: str, directory: Path = PROFILE_DIR, first: Sequence[Path] = ()) -> Profile:
    """The profile ``name`` (a file ``<name>.yaml`` in the folders ``first``, else in config/profiles/)."""
    return load_register_map(name, directory, Profile, first)
