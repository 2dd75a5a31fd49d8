"""The one telemetry shape every device maps onto, and the quality rules that judge its values.

Signs and units follow docs/definitions.md "Signs" and "Units": SI (W, Wh, s), SoC a fraction
0..1, ``grid_w`` > 0 import / < 0 export at the meter, ``battery_w`` > 0 discharge / < 0 charge,
``pv_w`` ≥ 0. Every value carries its quality (docs/definitions.md "Quality"): ``good``;
``missing`` (not read, or a not-implemented sentinel: never the last reading reused); ``bad``
(outside physical bounds, or energy counters flat while power flows, i.e. frozen).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

Quality = Literal["good", "missing", "bad"]
"""Per value (docs/definitions.md "Quality"); ``stale`` is a device status, never a value's quality."""
Status = Literal["online", "stale"]

PV_KEYS = ("pv_w", "pv_limit_w", "wmax_w", "rating_w", "energy_wh", "operating_state", "alarms")
STRING_KEY = re.compile(r"^(dc_w|mppt_[0-9]+_dc_w)$")
"""DC power of one MPPT string and their sum (SunSpec 160), W ≥ 0: judged beside the fixed keys,
present only for devices that report them."""
BATTERY_KEYS = (
    "battery_w",
    "soc",
    "capacity_wh",
    "max_charge_w",
    "max_discharge_w",
    "rating_w",
    "energy_wh",
    "operating_state",
    "alarms",
)
METER_KEYS = ("grid_w", "import_wh", "export_wh", "operating_state", "alarms")
CLOCK_KEY = "clock_offset_s"
"""How far the device's own clock (SunSpec 122 ``Tms``) is ahead of ours at the poll, s (< 0: behind);
present only for devices that report a clock."""
HYBRID_KEYS = (*PV_KEYS[:3], *BATTERY_KEYS)
"""A hybrid inverter: its PV role (``pv_w``, ``pv_limit_w``, ``wmax_w``) and its battery role."""
KEYS_BY_KIND = {"pv_inverter": PV_KEYS, "battery": BATTERY_KEYS, "meter": METER_KEYS, "hybrid": HYBRID_KEYS}

# Values that describe a measurement at the read time; a frozen device makes them all bad.
MEASURED_KEYS = frozenset({"pv_w", "battery_w", "grid_w", "soc", "energy_wh", "import_wh", "export_wh"})
# (counter, power, sign): the counter must grow while sign × power > 0.
COUNTER_RULES = {
    "pv_inverter": (("energy_wh", "pv_w", 1),),
    "battery": (("energy_wh", "battery_w", 1),),  # 103/701 count AC energy out: grows while discharging
    "meter": (("import_wh", "grid_w", 1), ("export_wh", "grid_w", -1)),
    "hybrid": (),  # its AC counter grows with PV and discharge together: no one power to check it by
}
POWER_MARGIN = 1.5  # |power| beyond 1.5 × the rating is not physical
FROZEN_MIN_WH = 10.0  # a counter must have been expected to grow by this much before "flat" means frozen


@dataclass(frozen=True)
class Reading:
    """One value in SI with its quality. ``value`` is None when missing."""

    value: float | None
    quality: Quality


MISSING = Reading(None, "missing")
NO_LIMIT = Reading(None, "good")
"""``pv_limit_w`` when the device was read and no controller limit is in force (it runs at WMax)."""


@dataclass
class Telemetry:
    """The latest poll of one device.

    ``values["pv_limit_w"]`` is the controller limit in force: a good None means none (the device
    runs at its installer configuration), a missing one that it could not be read.
    ``read_at`` is the Unix time (s, from the injected clock) of the poll that produced
    ``values``; ``last_good_at`` the last successful read (None before the first); ``error``
    the reason the last poll failed, if it did.
    """

    device_id: str
    site_id: str
    kind: str
    read_at: float
    status: Status
    values: dict[str, Reading]
    last_good_at: float | None = None
    error: str | None = None
    models: list[int] = field(default_factory=list)

    def value(self, key: str) -> float | None:
        """The value of ``key`` if its quality is good, else None."""
        r = self.values.get(key)
        return r.value if r is not None and r.quality == "good" else None


def missing_values(kind: str) -> dict[str, Reading]:
    """Every key of ``kind`` as missing: what a failed poll reports."""
    return dict.fromkeys(KEYS_BY_KIND[kind], MISSING)


@dataclass(frozen=True)
class Bounds:
    """Physical references for plausibility, from the device's nameplate or else the site config (W)."""

    pv_rating_w: float
    battery_power_w: float
    grid_limit_w: float


def judge(kind: str, raw: dict[str, float | None], bounds: Bounds) -> dict[str, Reading]:
    """Attach a quality to each raw SI value of ``kind``: missing, bad (out of bounds) or good."""
    out: dict[str, Reading] = {}
    rating = raw.get("rating_w") or bounds.pv_rating_w
    for key in KEYS_BY_KIND[kind]:
        v = raw.get(key)
        if v is None and key == "pv_limit_w" and key in raw:
            out[key] = NO_LIMIT
            continue
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[key] = MISSING
            continue
        out[key] = Reading(float(v), "good" if _plausible(key, float(v), rating, bounds) else "bad")
    offset = raw.get(CLOCK_KEY)
    if offset is not None:
        out[CLOCK_KEY] = Reading(float(offset), "good")
    for key in sorted(k for k in raw if STRING_KEY.match(k)):
        v = raw[key]
        out[key] = (
            MISSING if v is None else Reading(float(v), "good" if _plausible("dc_w", v, rating, bounds) else "bad")
        )
    return out


def _plausible(key: str, v: float, rating_w: float, b: Bounds) -> bool:
    if key == "pv_w":
        # Inverters draw a little at night; far below zero or beyond the rating is not physical.
        return -0.1 * rating_w <= v <= POWER_MARGIN * rating_w
    if key == "dc_w":  # DC input (SunSpec 160 strings): never negative, at most the margin over the rating
        return 0 <= v <= POWER_MARGIN * rating_w
    if key in ("pv_limit_w", "wmax_w", "rating_w"):
        return 0 <= v <= POWER_MARGIN * max(rating_w, b.pv_rating_w, b.battery_power_w)
    if key == "battery_w":
        return abs(v) <= POWER_MARGIN * b.battery_power_w
    if key in ("max_charge_w", "max_discharge_w"):
        return 0 <= v <= POWER_MARGIN * b.battery_power_w
    if key == "soc":
        return 0.0 <= v <= 1.0
    if key == "grid_w":
        return abs(v) <= POWER_MARGIN * b.grid_limit_w
    if key in ("energy_wh", "import_wh", "export_wh", "capacity_wh"):
        return v >= 0
    return True


@dataclass
class CounterWatch:
    """Tracks one energy counter to detect a frozen device (counter flat while power flows)."""

    last: float | None = None
    flat_polls: int = 0
    expected_wh: float = 0.0  # energy the power readings imply since the counter last moved
    last_t: float | None = None

    def update(self, counter: float | None, power_w: float | None, t: float) -> None:
        dt = 0.0 if self.last_t is None else max(0.0, t - self.last_t)
        self.last_t = t
        if counter is None or power_w is None:
            self.flat_polls, self.expected_wh = 0, 0.0
            self.last = counter
            return
        if self.last is not None and counter == self.last and power_w > 0:
            self.flat_polls += 1
            self.expected_wh += power_w * dt / 3600.0
        else:
            self.flat_polls, self.expected_wh = 0, 0.0
        self.last = counter

    def frozen(self, polls: int) -> bool:
        return self.flat_polls >= polls and self.expected_wh >= FROZEN_MIN_WH


def mark_frozen(
    kind: str, values: dict[str, Reading], watches: dict[str, CounterWatch], t: float, polls: int
) -> dict[str, Reading]:
    """Update the counter watches with this poll; if any counter is frozen, the measured values are bad."""
    frozen = False
    for counter, power, sign in COUNTER_RULES[kind]:
        c, p = values.get(counter, MISSING), values.get(power, MISSING)
        w = watches.setdefault(counter, CounterWatch())
        good = c.quality == "good" and p.quality == "good"
        w.update(c.value if good else None, sign * p.value if good and p.value is not None else None, t)
        frozen = frozen or w.frozen(polls)
    if not frozen:
        return values
    return {k: Reading(r.value, "bad") if k in MEASURED_KEYS and r.quality == "good" else r for k, r in values.items()}
