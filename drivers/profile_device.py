"""A device read through a vendor register map (config/profiles/) instead of SunSpec."""

from __future__ import annotations

from sparcs.drivers.link import Link
from sparcs.drivers.profiles import Profile, ProfileError, load_profile
from sparcs.drivers.telemetry import KEYS_BY_KIND


class ProfileDevice:
    """Reads the registers a profile declares (telemetry and control registers alike, so the limit
    in force is reported), in as few requests as the profile's gaps allow.
    """

    protocol = "profile"

    def __init__(self, link: Link, unit: int, kind: str, profile: Profile, invert_sign: bool = False):
        if profile.kind != kind:
            raise ProfileError(f"profile '{profile.name}' describes a {profile.kind}, not a {kind}")
        self.link, self.unit, self.kind, self.profile, self.invert_sign = link, unit, kind, profile, invert_sign
        self.blocks = profile.blocks()

    @classmethod
    def from_name(cls, link: Link, unit: int, kind: str, name: str, invert_sign: bool = False) -> ProfileDevice:
        return cls(link, unit, kind, load_profile(name), invert_sign)

    async def read_all(self) -> dict[str, float | None]:
        """Every register of the profile in SI, by key."""
        out: dict[str, float | None] = {}
        for table, addr, count, keys in self.blocks:
            if table == "holding":
                regs = await self.link.read_holding(self.unit, addr, count)
            else:
                regs = await self.link.read_input(self.unit, addr, count)
            for key in keys:
                off = self.profile.registers[key].address - addr
                out[key] = self.profile.decode(key, regs[off:])
        return out

    async def poll(self) -> dict[str, float | None]:
        """The raw SI telemetry values (before quality)."""
        values = await self.read_all()
        raw = {k: values.get(k) for k in KEYS_BY_KIND[self.kind]}
        if self.invert_sign:
            for k in ("battery_w", "grid_w", "pv_w"):
                if raw.get(k) is not None:
                    raw[k] = -raw[k]  # type: ignore[operator]
        if self.kind == "pv_inverter":
            if raw.get("wmax_w") is None:
                raw["wmax_w"] = raw.get("rating_w")
            if "pv_limit_w" in values or "pv_limit_pct" in values:
                raw["pv_limit_w"] = self.limit_in_force_w(values | {"wmax_w": raw["wmax_w"]})
        return raw

    @staticmethod
    def limit_in_force_w(values: dict[str, float | None]) -> float | None:
        """The PV limit in force in W from the profile's values (None when released or unknown)."""
        base = values.get("wmax_w") or values.get("rating_w")
        w = values.get("pv_limit_w")
        if w is not None:
            return None if base is not None and w >= base else w
        pct = values.get("pv_limit_pct")
        if pct is None or base is None or pct >= 100.0:
            return None
        return pct / 100.0 * base
