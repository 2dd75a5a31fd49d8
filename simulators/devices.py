"""SunSpec register faces of the simulated devices: what a client reads and may write.

A :class:`SunSpecSimDevice` owns one register image (:mod:`simulators.registers`) and maps it onto
the site physics (:mod:`simulators.site`):

- on a read, :meth:`SunSpecSimDevice.render` publishes live values (scaled with the device's fixed
  scale factors) unless they are current already; value faults change what is published
  (``frozen``: nothing, ``sentinel``: not-implemented values, ``garbage``: well-formed values of
  each point's type far out of physical range, see :meth:`SunSpecSimDevice._garbage`);
- on a write, :meth:`SunSpecSimDevice.write` accepts only whole writable points whose decoded value
  lies in the point's range; otherwise it refuses the whole request and changes nothing
  (exception 2 for a register that is not a writable point, 3 for a value out of range).

Model sets per :class:`config.schema.DeviceVariant` (``10x``/``11x`` = 101/102/103 or 111/112/113
for ``phases`` 1/2/3): PV ``classic`` 1/10x/120/121/122/123, ``float`` 1/11x/120/121/122/123,
``der`` 1/701/702/704; battery ``classic`` 1/10x/120/121/124/713, ``float`` 1/11x/120/121/124/713,
``der`` 1/701/702/704/713 (power set with 704 ``WSet``); meter 1 and ``meter_model`` (201 single
phase, 202 split phase, 203 wye, 204 delta; one layout, the phases a meter lacks read as not
implemented) in every variant. ``802``: a battery serving only 1 and 802 (SunSpec 2 battery model,
no setpoints); ``mppt_strings`` N adds model 160 with N strings to a PV inverter. Per-phase
currents and powers split the total evenly over the device's phases.
"""

from __future__ import annotations

import math
import random
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TypedDict

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from sparcs.config.schema import DeviceConfig, DeviceVariant, SiteConfig
from sparcs.simulators.registers import Point, build_image, decode, model_spans, point_at_address, type_range
from sparcs.simulators.site import DEFAULT_GRADIENT_PCT_PER_S, BatteryUnit, PvUnit, SiteSim

SUNSPEC_EPOCH_S = 946_684_800.0
"""2000-01-01T00:00:00Z: model 122 ``Tms`` counts seconds from here."""
VOLTS = 230.0
HERTZ = 50.0
INVERTER_MODELS = (101, 102, 103, 111, 112, 113)
METER_PHASES = {201: 1, 202: 2, 203: 3, 204: 3}
_PHASE_NAMES = ("A", "B", "C")
_NUMBER = (int, float)
GARBAGE_SF = 10
"""The largest legal SunSpec scale factor: what the ``garbage`` fault publishes for live points."""


def model_ids(kind: str, variant: DeviceVariant) -> list[int]:
    """The SunSpec models a device of ``kind`` serves in ``variant``, in register order."""
    if kind == "meter":
        return [1, variant.meter_model]
    inverter = (110 if variant.models == "float" else 100) + variant.phases
    if kind == "pv_inverter":
        pv = [1, 701, 702, 704] if variant.models == "der" else [1, inverter, 120, 121, 122, 123]
        return [*pv, 160] if variant.mppt_strings else pv
    if kind == "hybrid":  # PV and battery behind one unit id: 123 limits the PV, 124 sets the battery
        return [1, inverter, 120, 121, 123, 124, 802, *([160] if variant.mppt_strings else [])]
    if variant.models == "802":
        return [1, 802]
    return [1, 701, 702, 704, 713] if variant.models == "der" else [1, inverter, 120, 121, 124, 713]


def pick_sf(max_abs: float, limit: int = 32767, lowest: int = 0) -> int:
    """The smallest scale factor ≥ ``lowest`` at which ``max_abs`` fits in ``limit`` raw counts."""
    sf = lowest
    while max_abs / 10.0**sf > limit:
        sf += 1
    return sf


class _Range(TypedDict, total=False):
    """The accepted range of a writable point (keyword arguments of :class:`Writable`)."""

    lo: float
    hi: float
    integer: bool


@dataclass(frozen=True)
class Writable:
    """A writable point: the controls attribute it sets and its accepted range (after scaling)."""

    field: str
    lo: float
    hi: float
    integer: bool = False


class SunSpecSimDevice(ABC):
    """One simulated SunSpec device (unit id) of a site; subclasses fill in the kind's points."""

    kind = ""

    def __init__(self, dev: DeviceConfig, site: SiteSim, variant: DeviceVariant) -> None:
        self.config = dev
        self.id = dev.id
        self.unit = dev.unit
        self.site = site
        self.variant = variant
        self.models = model_ids(self.kind, variant)
        self.strings = variant.mppt_strings if 160 in self.models else 0
        self.image = build_image(self.models, variant.base_address, variant.common_len, self.strings)
        self.sf: dict[tuple[int, str], int] = {}
        self.writable: dict[tuple[int, str], Writable] = {}
        self._rendered: tuple[int, str | None] | None = None
        self._live_sfs: list[tuple[int, str]] | None = None
        self._sf_garbled = False
        self._slots: dict[tuple[int, str], tuple[Point, int, float | None, int, int] | None] = {}
        self._control_slots: dict[tuple[int, str], tuple[int, float, int, int] | None] = {}
        self._point_at = point_at_address((tuple(self.models), variant.base_address, variant.common_len, self.strings))
        self.lazy = False  # render only the models a request reaches (see render); set by the fleet host
        self._spans = model_spans(self.image)
        self._model_version: dict[int, int] = {}
        self._clock_start = site.t
        units: list[PvUnit | BatteryUnit] = [*site.pv, *site.batteries]
        for unit in units:
            if unit.device_id == dev.id:
                unit.clock_rate = variant.clock_rate
        self._setup()
        self._put_common(site.site)
        for (mid, name), value in self.sf.items():
            if (mid, name) in self.image.points:
                self.image.set(self.image.point(mid, name), value)
        self.render(None)

    def device_time(self, now: float) -> float:
        """The device's own clock at true time ``now`` (Unix s): ``clock_offset_s`` ahead, running at
        ``clock_rate`` since the simulation started."""
        v = self.variant
        return now + v.clock_offset_s + (v.clock_rate - 1.0) * (now - self._clock_start)

    # --- subclass hooks -------------------------------------------------------------------
    @abstractmethod
    def _setup(self) -> None:
        """Set scale factors, writable points and constants (nameplate)."""
        raise NotImplementedError

    @abstractmethod
    def _live(self) -> list[tuple[int, str, float | int | str | None]]:
        """Measurements ``(model, point, SI value)``; faults replace these."""
        raise NotImplementedError

    def _unit(self) -> PvUnit | BatteryUnit | None:
        """The site unit whose ``controls`` the writable points set (None: nothing is writable)."""
        return None

    def _unit_for(self, model_id: int) -> PvUnit | BatteryUnit | None:
        """The unit the writable points of ``model_id`` set: :meth:`_unit`, unless a face has two (hybrid)."""
        return self._unit()

    @abstractmethod
    def truth(self) -> dict[str, float | None]:
        """SI ground truth of this device (see FleetHost.truth)."""
        raise NotImplementedError

    # --- registers ------------------------------------------------------------------------
    def simdata(self) -> list[SimData]:
        """One block of the image's size, zeros: pymodbus converts list values one by one (slow for
        1,000 devices); :meth:`adopt` copies the image in on first access."""
        return [SimData(self.image.base, count=len(self.image.registers), datatype=DataType.REGISTERS)]

    def adopt(self, function_code: int, registers: list[int]) -> None:
        """Use pymodbus's live register list from now on (SunSpec uses holding registers only)."""
        image = self.image
        if image.registers is not registers:
            registers[: len(image.registers)] = image.registers
            image.registers = registers

    def has(self, mid: int, name: str) -> bool:
        return (mid, name) in self.image.points

    def put(self, mid: int, name: str, value: float | int | str | None) -> None:
        """Publish one point given in SI units; scaled with its SF, clamped to the type's range."""
        if (mid, name) not in self.image.points:
            return
        p = self.image.point(mid, name)
        self.image.set(p, self._raw(p, value))

    def _raw(self, p: Point, value: float | int | str | None) -> float | int | str | None:
        if value is None or isinstance(value, str) or p.type.startswith("float"):
            return value
        sf = self.sf.get((p.model_id, p.sf), 0) if p.sf else 0
        lo, hi = type_range(p.type, p.size)
        return min(max(round(value / 10.0**sf), lo), hi)

    def _garbage(self, p: Point) -> float | int | str:
        """A well-formed but implausible value of the point's own type.

        Numbers: the largest the type carries (float: 1e12), published with the largest legal scale
        factor (:meth:`_garble_sfs`), so the decoded value lies far outside any physical range
        whatever the rating; strings: random printable text (seeded by device, point and sim time),
        never a number written into a string point.
        """
        if p.type == "string":
            rng = random.Random(f"{self.id}:{p.model_id}:{p.name}:{self.site.t}")
            return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(2 * p.size))
        if p.type.startswith("float"):
            return 1e12
        return type_range(p.type, p.size)[1]

    def _garble_sfs(self, on: bool) -> None:
        """The scale factors of the live points: GARBAGE_SF under the fault, the device's own otherwise."""
        if self._live_sfs is None:
            self._live_sfs = sorted(
                {
                    (mid, p.sf)
                    for mid, name, _ in self._live()
                    if (p := self.image.points.get((mid, name))) is not None
                    and p.sf
                    and (mid, p.sf) in self.image.points
                }
            )
        for mid, name in self._live_sfs:
            self.image.set(self.image.point(mid, name), GARBAGE_SF if on else self.sf.get((mid, name), 0))
        self._sf_garbled = on

    def _put_common(self, site: SiteConfig) -> None:
        self.put(1, "Mn", "SPARCS")
        self.put(1, "Md", f"Sim {self.kind} {self.variant.models}")
        self.put(1, "Opt", "simulated")
        self.put(1, "Vr", "1.0.0")
        self.put(1, "SN", self.id)
        self.put(1, "DA", self.unit)

    def render(self, fault_mode: str | None, address: int | None = None, count: int = 0) -> None:
        """Publish live values and controls unless already current; ``frozen`` publishes nothing.

        With ``address`` (a request for ``count`` registers from there) a device whose ``lazy`` is set
        publishes only the models the request reaches that are not current. Values are a function of
        the site's state, which changes only with ``site.version``, so a model published when it is
        read holds what a whole render at that moment would have put there; ``lazy`` is for devices
        that are never served under a value fault (``frozen`` would show the models as last
        published), see :class:`simulators.fleet.FleetHost`.
        """
        if fault_mode == "frozen":
            return
        version = self.site.version
        if address is not None and self.lazy and fault_mode is None:
            end = address + count
            stale = {
                mid
                for mid, first, last in self._spans
                if first < end and address < last and self._model_version.get(mid) != version
            }
            if stale:
                self._publish(None, stale)
                for mid in stale:
                    self._model_version[mid] = version
            return
        key = (version, fault_mode)
        if key == self._rendered:
            return
        self._rendered = key
        self._publish(fault_mode, None)

    def _publish(self, fault_mode: str | None, models: set[int] | None) -> None:
        """Write the live points and the writable points' controls of ``models`` (None: every model)."""
        regs = self.image.registers
        slots = self._slots
        for mid, name, value in self._live():
            if models is not None and mid not in models:
                continue
            key = (mid, name)
            slot = slots[key] if key in slots else self._slot(mid, name)
            if slot is None:
                continue
            p, start, scale, lo, hi = slot
            if fault_mode is None and scale is not None and isinstance(value, _NUMBER):
                # Fast path for one-register integers (most points): scale, clamp, two's complement.
                raw = min(max(round(value * scale), lo), hi)
                regs[start] = raw + 0x10000 if raw < 0 else raw
            elif fault_mode == "sentinel":
                self.image.set(p, None)
            elif fault_mode == "garbage":
                self.image.set(p, self._garbage(p))
            else:
                self.image.set(p, self._raw(p, value))
        if fault_mode == "garbage" or self._sf_garbled:
            self._garble_sfs(fault_mode == "garbage")
        for (mid, name), w in self.writable.items():
            if models is not None and mid not in models:
                continue
            unit = self._unit_for(mid)
            if unit is None:
                continue
            value = getattr(unit.controls, w.field)
            fast = self._control_slot(mid, name)
            if fast is not None and isinstance(value, _NUMBER):
                # put()'s arithmetic for a one-register integer: value / 10^SF, rounded, clamped
                start, divisor, lo, hi = fast
                raw = min(max(round(value / divisor), lo), hi)
                regs[start] = raw + 0x10000 if raw < 0 else raw
            else:
                self.put(mid, name, value)

    def _control_slot(self, mid: int, name: str) -> tuple[int, float, int, int] | None:
        """``(register index, 10^SF, lo, hi)`` of a writable one-register integer point, None for any
        other point (published by :meth:`put`); cached."""
        key = (mid, name)
        if key not in self._control_slots:
            slot = self._slot(mid, name)
            if slot is None or slot[2] is None:
                self._control_slots[key] = None
            else:
                p, start, _, lo, hi = slot
                sf = self.sf.get((mid, p.sf), 0) if p.sf else 0
                self._control_slots[key] = (start, 10.0**sf, lo, hi)
        return self._control_slots[key]

    def _slot(self, mid: int, name: str) -> tuple[Point, int, float | None, int, int] | None:
        """``(point, register index, 10^-SF or None when not a one-register integer, lo, hi)``, cached."""
        key = (mid, name)
        if key not in self._slots:
            p = self.image.points.get(key)
            if p is None:
                self._slots[key] = None
            else:
                simple = p.size == 1 and p.type in ("int16", "uint16", "enum16", "bitfield16", "count", "acc16")
                sf = self.sf.get((mid, p.sf), 0) if p.sf else 0
                lo, hi = type_range(p.type, p.size)
                self._slots[key] = (p, p.address - self.image.base, 10.0**-sf if simple else None, lo, hi)
        return self._slots[key]

    def write(self, address: int, values: list[int], now: float) -> ExcCodes | None:
        """Validate and apply a write of ``values`` at ``address``; all or nothing."""
        touched: dict[Point, Writable] = {}
        # every point of one write belongs to one model, so to one unit
        for i in range(len(values)):
            p = self._point_at.get(address + i)
            w = self.writable.get((p.model_id, p.name)) if p is not None else None
            if p is None or w is None:
                return ExcCodes.ILLEGAL_ADDRESS
            touched[p] = w
        changes: dict[str, float] = {}
        for p, w in touched.items():
            first = p.address - address
            if first < 0 or first + p.size > len(values):
                return ExcCodes.ILLEGAL_ADDRESS  # a multi-register point must be written whole
            raw = decode(p.type, values[first : first + p.size])
            if raw is None or isinstance(raw, str):
                return ExcCodes.ILLEGAL_VALUE
            sf = self.sf.get((p.model_id, p.sf), 0) if p.sf else 0
            value = float(raw) * 10.0**sf
            if not (math.isfinite(value) and w.lo - 1e-9 <= value <= w.hi + 1e-9):
                return ExcCodes.ILLEGAL_VALUE
            changes[w.field] = round(value) if w.integer else value
        if now > self.site.t:
            self.site.advance(now)
        units = {id(u): u for u in (self._unit_for(p.model_id) for p in touched)}
        unit = next(iter(units.values()), None)
        if unit is None or len(units) > 1:
            return ExcCodes.ILLEGAL_ADDRESS
        for name, value in changes.items():
            setattr(unit.controls, name, value)
        unit.written(set(changes), now)
        self.site.version += 1
        return None


def _phase_amps(power_w: float, phases: int) -> float:
    return abs(power_w) / (phases * VOLTS)


class InverterFace(SunSpecSimDevice, ABC):
    """The measurement points shared by PV and battery inverters (103/113 or 701)."""

    def _inverter_sfs(self, max_w: float) -> None:
        w_sf = pick_sf(max_w)
        for mid in (*INVERTER_MODELS, 701):
            self.sf.update(
                {
                    (mid, "A_SF"): -2,
                    (mid, "V_SF"): -1,
                    (mid, "Hz_SF"): -2,
                    (mid, "W_SF"): w_sf,
                    (mid, "VA_SF"): w_sf,
                    (mid, "VAr_SF"): w_sf,
                    (mid, "Var_SF"): w_sf,
                    (mid, "WH_SF"): 0,
                    (mid, "TotWh_SF"): 0,
                    (mid, "Tmp_SF"): -1,
                    (mid, "DCA_SF"): -2,
                    (mid, "DCV_SF"): -1,
                    (mid, "DCW_SF"): w_sf,
                }
            )
        self.sf.update(
            {
                (120, "WRtg_SF"): pick_sf(max_w, 65534),
                (120, "VARtg_SF"): pick_sf(max_w, 65534),
                (120, "VArRtg_SF"): w_sf,
                (120, "ARtg_SF"): -2,
                (120, "PFRtg_SF"): -3,
                (121, "WMax_SF"): pick_sf(max_w, 65534),
                (121, "VRef_SF"): -1,
                (121, "VRefOfs_SF"): -1,
                (121, "WGra_SF"): 0,
            }
        )
        self.sf.update(
            {
                (702, "W_SF"): pick_sf(max_w),
                (702, "VA_SF"): pick_sf(max_w),
                (702, "Var_SF"): w_sf,
                (702, "V_SF"): -1,
                (702, "A_SF"): -2,
                (702, "PF_SF"): -3,
            }
        )

    @property
    def phases(self) -> int:
        return 3 if self.variant.models == "der" else self.variant.phases

    def _nameplate(self, der_typ: int, rating_w: float) -> None:
        amps = _phase_amps(rating_w, self.phases)
        self.put(120, "DERTyp", der_typ)
        self.put(120, "WRtg", rating_w)
        self.put(120, "VARtg", rating_w)
        for q, sign in (("Q1", 1), ("Q2", 1), ("Q3", -1), ("Q4", -1)):
            self.put(120, f"VArRtg{q}", sign * 0.44 * rating_w)
            self.put(120, f"PFRtg{q}", sign * 0.9)
        self.put(120, "ARtg", amps)
        self.put(121, "VRef", VOLTS)
        self.put(121, "VRefOfs", 0)
        self.put(121, "WGra", DEFAULT_GRADIENT_PCT_PER_S)
        self.put(702, "WMaxRtg", rating_w)
        self.put(702, "VAMaxRtg", rating_w)
        self.put(702, "VarMaxInjRtg", 0.44 * rating_w)
        self.put(702, "VarMaxAbsRtg", 0.44 * rating_w)
        self.put(702, "VNomRtg", VOLTS)
        self.put(702, "AMaxRtg", amps)
        self.put(702, "VAMax", rating_w)
        self.put(702, "VNom", VOLTS)
        self.put(701, "ACType", 2)

    def _ac(
        self, power_w: float, energy_out_wh: float, energy_in_wh: float, state: int, der_state: int, on: bool
    ) -> list[tuple[int, str, float | int | str | None]]:
        phases = self.phases
        amps = _phase_amps(power_w, phases)
        out: list[tuple[int, str, float | int | str | None]] = []
        for mid in INVERTER_MODELS:
            if not self.has(mid, "W"):
                continue
            for ph in _PHASE_NAMES[:phases]:
                out += [(mid, f"Aph{ph}", amps), (mid, f"PhVph{ph}", VOLTS)]
            if phases == 3:
                out += [(mid, f"PPVph{pair}", VOLTS * 3**0.5) for pair in ("AB", "BC", "CA")]
            elif phases == 2:
                out += [(mid, "PPVphAB", 2 * VOLTS)]  # split phase: A and B are in opposition
            out += [
                (mid, "A", amps * phases),
                (mid, "W", power_w),
                (mid, "Hz", HERTZ),
                (mid, "VA", abs(power_w)),
                (mid, "VAr", 0),
                (mid, "WH", energy_out_wh),
                (mid, "TmpCab", 30.0 + 15.0 * abs(power_w) / max(1.0, self._rating())),
                (mid, "St", state),
                (mid, "Evt1", 0),
                (mid, "Evt2", 0),
            ]
        out += [
            (701, "St", 1 if on else 0),
            (701, "InvSt", der_state),
            (701, "ConnSt", 1 if on else 0),
            (701, "Alrm", 0),
            (701, "W", power_w),
            (701, "VA", abs(power_w)),
            (701, "Var", 0),
            (701, "A", amps * phases),
            (701, "LLV", VOLTS * 3**0.5),
            (701, "LNV", VOLTS),
            (701, "Hz", HERTZ),
            (701, "TotWhInj", energy_out_wh),
            (701, "TotWhAbs", energy_in_wh),
            (701, "TmpCab", 30.0 + 15.0 * abs(power_w) / max(1.0, self._rating())),
        ]
        return out

    @abstractmethod
    def _rating(self) -> float:
        raise NotImplementedError


class PvInverterDevice(InverterFace):
    """A PV inverter: 123 WMaxLimPct (classic/float) or 704 WMaxLimPct (der) limits, 121/702 WMax."""

    kind = "pv_inverter"

    def __init__(self, dev: DeviceConfig, site: SiteSim, variant: DeviceVariant) -> None:
        self.pv: PvUnit = next(u for u in site.pv if u.device_id == dev.id)
        super().__init__(dev, site, variant)

    def _rating(self) -> float:
        return self.pv.rating_w

    def _setup(self) -> None:
        rating = self.pv.rating_w
        self._inverter_sfs(rating)
        self.sf.update(
            {
                (122, "WAval_SF"): pick_sf(rating, 65534),
                (160, "DCA_SF"): -2,
                (160, "DCV_SF"): -1,
                (160, "DCW_SF"): pick_sf(rating, 65534),
                (160, "DCWH_SF"): 0,
                (123, "WMaxLimPct_SF"): -1,
                (123, "OutPFSet_SF"): -3,
                (704, "WMaxLimPct_SF"): -1,
            }
        )
        pct = _Range(lo=0.0, hi=100.0)
        tms16 = _Range(lo=0.0, hi=65534.0, integer=True)
        flag = _Range(lo=0.0, hi=1.0, integer=True)
        if self.variant.models == "der":
            self.writable = {
                (702, "WMax"): Writable("wmax_w", 0.0, rating),
                (704, "WMaxLimPctEna"): Writable("lim_ena", **flag),
                (704, "WMaxLimPct"): Writable("lim_pct", **pct),
                (704, "WMaxLimPctRvrt"): Writable("lim_pct_rvrt", **pct),
                (704, "WMaxLimPctEnaRvrt"): Writable("lim_ena_rvrt", **flag),
                (704, "WMaxLimPctRvrtTms"): Writable("lim_rvrt_s", lo=0.0, hi=4294967294.0, integer=True),
            }
        else:
            self.writable = {
                (121, "WMax"): Writable("wmax_w", 0.0, rating),
                (123, "Conn_RvrtTms"): Writable("conn_rvrt_s", **tms16),
                (123, "Conn"): Writable("conn", **flag),
                (123, "WMaxLimPct"): Writable("lim_pct", **pct),
                (123, "WMaxLimPct_RvrtTms"): Writable("lim_rvrt_s", **tms16),
                (123, "WMaxLimPct_RmpTms"): Writable("lim_rmp_s", **tms16),
                (123, "WMaxLim_Ena"): Writable("lim_ena", **flag),
            }
        self._nameplate(4, rating)
        self.put(160, "N", self.strings)
        self.put(160, "Evt", 0)
        for i in range(1, self.strings + 1):
            self.put(160, f"module.{i}.ID", i)
            self.put(160, f"module.{i}.IDStr", f"string {i}")
        self.put(123, "OutPFSet", 1.0)
        self.put(123, "OutPFSet_Ena", 0)
        self.put(123, "VArPct_Ena", 0)

    def _unit(self) -> PvUnit:
        return self.pv

    def _live(self) -> list[tuple[int, str, float | int | str | None]]:
        u = self.pv
        on = bool(u.controls.conn)
        throttled = u.pv_w < u.available_w - 1.0
        if not on:
            state, der_state = 8, 7
        elif u.available_w < 1.0:
            state, der_state = 2, 1
        else:
            state, der_state = (5, 4) if throttled else (4, 3)
        out = self._ac(u.pv_w, u.energy_wh, 0.0, state, der_state, on)
        for mid in INVERTER_MODELS:
            out += [(mid, "DCW", u.pv_w / 0.97), (mid, "DCV", 600.0), (mid, "DCA", u.pv_w / 0.97 / 600.0)]
        bits = 0b111 if on and u.available_w >= 1.0 else (0b011 if on else 0b010)
        now = self.site.t
        out += [
            (122, "PVConn", bits),
            (122, "StorConn", 0),
            (122, "ECPConn", 1 if on else 0),
            (122, "ActWh", u.energy_wh),
            (122, "WAval", u.available_w),
            (122, "StSetLimMsk", 0),
            (122, "StActCtl", 1 if u.controls.lim_ena else 0),
            (122, "Tms", self.device_time(now) - SUNSPEC_EPOCH_S),
            (122, "TmSrc", "RTC"),
        ]
        for i in range(1, self.strings + 1):  # model 160: the DC side split evenly over the strings
            dc_w = u.pv_w / 0.97 / self.strings
            out += [
                (160, f"module.{i}.DCW", dc_w),
                (160, f"module.{i}.DCV", 600.0),
                (160, f"module.{i}.DCA", dc_w / 600.0),
                (160, f"module.{i}.DCWH", u.energy_wh / 0.97 / self.strings),
                (160, f"module.{i}.Tms", self.device_time(now) - SUNSPEC_EPOCH_S),
                (160, f"module.{i}.DCSt", 4 if on and u.available_w >= 1.0 else 2),
            ]
        throt = 0.0 if u.available_w < 1.0 else 100.0 * (1.0 - u.pv_w / u.available_w)
        remaining = u.revert_s(now)
        out += [
            (701, "ThrotPct", throt),
            (701, "ThrotSrc", 1 if throttled else 0),
            (704, "WMaxLimPctRvrtRem", 0 if remaining is None else math.ceil(remaining)),
        ]
        return out

    def truth(self) -> dict[str, float | None]:
        return pv_truth(self.pv, self.site.t)


class BatteryDevice(InverterFace):
    """A battery inverter: 124 storage controls (classic/float) or 704 WSet (der); SoC in 124/713."""

    kind = "battery"

    def __init__(self, dev: DeviceConfig, site: SiteSim, variant: DeviceVariant) -> None:
        self.bat: BatteryUnit = next(b for b in site.batteries if b.device_id == dev.id)
        super().__init__(dev, site, variant)

    def _rating(self) -> float:
        return max(self.bat.max_charge_w, self.bat.max_discharge_w)

    def _setup(self) -> None:
        b = self.bat
        rating = self._rating()
        cap_wh = b.cell.capacity_wh
        self._inverter_sfs(rating)
        self.sf.update(
            {
                (120, "WHRtg_SF"): pick_sf(cap_wh, 65534),
                (120, "MaxChaRte_SF"): pick_sf(rating, 65534),
                (120, "MaxDisChaRte_SF"): pick_sf(rating, 65534),
                (124, "WChaMax_SF"): pick_sf(rating, 65534),
                (124, "WChaDisChaGra_SF"): 0,
                (124, "MinRsvPct_SF"): -1,
                (124, "ChaState_SF"): -1,
                (124, "InOutWRte_SF"): -1,
                (713, "WH_SF"): pick_sf(cap_wh, 65534),
                (713, "Pct_SF"): -1,
                (704, "WSet_SF"): 0,
                (704, "WSetPct_SF"): -1,
                (802, "AHRtg_SF"): pick_sf(cap_wh / 400.0, 65534),
                (802, "WHRtg_SF"): pick_sf(cap_wh, 65534),
                (802, "WChaDisChaMax_SF"): pick_sf(rating, 65534),
                (802, "SoC_SF"): -1,
                (802, "SoH_SF"): -1,
                (802, "V_SF"): -1,
                (802, "CellV_SF"): -3,
                (802, "A_SF"): -1,
                (802, "AMax_SF"): -1,
                (802, "W_SF"): pick_sf(rating),
            }
        )
        flag = _Range(lo=0.0, hi=1.0, integer=True)
        if self.variant.models == "der":
            self.writable = {
                (704, "WSetEna"): Writable("wset_ena", **flag),
                (704, "WSetMod"): Writable("wset_mod", **flag),
                (704, "WSet"): Writable("wset_w", -b.max_charge_w, b.max_discharge_w),
                (704, "WSetPct"): Writable("wset_pct", -100.0, 100.0),
                (704, "WSetEnaRvrt"): Writable("wset_ena_rvrt", **flag),
                (704, "WSetRvrtTms"): Writable("wset_rvrt_s", lo=0.0, hi=4294967294.0, integer=True),
            }
        else:
            self.writable = {
                (124, "WChaMax"): Writable("wcha_max_w", 0.0, b.max_charge_w),
                (124, "StorCtl_Mod"): Writable("stor_ctl_mod", 0.0, 3.0, integer=True),
                (124, "OutWRte"): Writable("out_pct", -100.0, 100.0),
                (124, "InWRte"): Writable("in_pct", -100.0, 100.0),
                (124, "InOutWRte_RvrtTms"): Writable("rvrt_s", 0.0, 65534.0, integer=True),
                (124, "ChaGriSet"): Writable("cha_gri_set", **flag),
            }
        self._nameplate(82, rating)
        self.put(120, "WHRtg", cap_wh)
        self.put(120, "MaxChaRte", b.max_charge_w)
        self.put(120, "MaxDisChaRte", b.max_discharge_w)
        self.put(121, "WMax", b.max_discharge_w)
        self.put(124, "WChaGra", 100)
        self.put(124, "WDisChaGra", 100)
        self.put(124, "MinRsvPct", b.cell.soc_min * 100.0)
        self.put(702, "WMax", b.max_discharge_w)
        self.put(702, "WChaRteMaxRtg", b.max_charge_w)
        self.put(702, "WDisChaRteMaxRtg", b.max_discharge_w)
        self.put(702, "WChaRteMax", b.max_charge_w)
        self.put(702, "WDisChaRteMax", b.max_discharge_w)
        self.put(713, "WHRtg", cap_wh)
        self.put(713, "SoH", 100.0)
        self.put(802, "AHRtg", cap_wh / 400.0)  # a 400 V bank
        self.put(802, "WHRtg", cap_wh)
        self.put(802, "WChaRteMax", b.max_charge_w)
        self.put(802, "WDisChaRteMax", b.max_discharge_w)
        self.put(802, "SoCMax", b.cell.soc_max * 100.0)
        self.put(802, "SoCMin", b.cell.soc_min * 100.0)
        self.put(802, "SoH", 100.0)
        self.put(802, "LocRemCtl", 1)  # LOCAL: the bank runs its own control
        self.put(802, "Typ", 4)  # LI_ION
        self.put(802, "AlmRst", 0)
        self.put(802, "SetOp", 1)
        self.put(802, "SetInvState", 3)

    def _unit(self) -> BatteryUnit:
        return self.bat

    def _charge_state(self) -> int:
        b = self.bat
        if b.battery_w < -1.0:
            return 4
        if b.battery_w > 1.0:
            return 3
        if b.soc >= b.cell.soc_max - 1e-6:
            return 5
        if b.soc <= b.cell.soc_min + 1e-6:
            return 2
        return 6

    def _live(self) -> list[tuple[int, str, float | int | str | None]]:
        b = self.bat
        active = abs(b.battery_w) > 1.0
        out = self._ac(b.battery_w, b.discharged_wh, b.charged_wh, 4 if active else 8, 3 if active else 7, True)
        soc_pct = b.soc * 100.0
        avail_wh = max(0.0, b.soc - b.cell.soc_min) * b.cell.capacity_wh
        remaining = b.revert_s(self.site.t)
        out += [
            (124, "ChaState", soc_pct),
            (124, "ChaSt", self._charge_state()),
            (713, "SoC", soc_pct),
            (713, "WHAvail", avail_wh),
            (713, "Sta", 0),
            (704, "WSetRvrtRem", 0 if remaining is None else math.ceil(remaining)),
            # 802: DC side of the bank, W > 0 discharging (the telemetry's sign)
            (802, "W", b.battery_w),
            (802, "V", 400.0),
            (802, "A", b.battery_w / 400.0),
            (802, "SoC", soc_pct),
            (802, "ChaSt", self._charge_state()),
            (802, "State", 3),  # CONNECTED
            (802, "Evt1", 0),
            (802, "Evt2", 0),
            (802, "EvtVnd1", 0),
            (802, "EvtVnd2", 0),
        ]
        return out

    def truth(self) -> dict[str, float | None]:
        return battery_truth(self.bat, self.site.t)


class MeterDevice(SunSpecSimDevice):
    """The site meter at the grid connection point (model 201–204): W > 0 import, < 0 export."""

    kind = "meter"

    def _setup(self) -> None:
        limit = self.site.site.grid.connection_limit_w
        w_sf = pick_sf(limit)
        m = self.variant.meter_model
        self.sf.update(
            {
                (m, "A_SF"): -2 if limit < 50_000 else -1,
                (m, "V_SF"): -1,
                (m, "Hz_SF"): -2,
                (m, "W_SF"): w_sf,
                (m, "VA_SF"): w_sf,
                (m, "VAR_SF"): w_sf,
                (m, "PF_SF"): -2,
                (m, "TotWh_SF"): 0,
            }
        )

    def _live(self) -> list[tuple[int, str, float | int | str | None]]:
        s = self.site
        m = self.variant.meter_model
        phases = METER_PHASES[m]
        w = s.grid_w
        amps = _phase_amps(w, phases)
        line_v = {1: VOLTS, 2: 2 * VOLTS, 3: VOLTS * 3**0.5}[phases]
        out: list[tuple[int, str, float | int | str | None]] = [
            (m, "A", amps * phases),
            (m, "PhV", VOLTS),
            (m, "PPV", line_v),
            (m, "Hz", HERTZ),
            (m, "W", w),
            (m, "VA", abs(w)),
            (m, "VAR", 0),
            (m, "PF", 100.0 if w >= 0 else -100.0),
            (m, "TotWhExp", s.export_wh),
            (m, "TotWhImp", s.import_wh),
            (m, "Evt", 0),
        ]
        for ph in _PHASE_NAMES[:phases]:
            out += [
                (m, f"Aph{ph}", amps),
                (m, f"PhVph{ph}", VOLTS),
                (m, f"Wph{ph}", w / phases),
                (m, f"VAph{ph}", abs(w) / phases),
                (m, f"VARph{ph}", 0),
            ]
        # 201 names its line voltages PPVph.., 202–204 PhVph..; only one spelling exists per model.
        if phases == 3:
            for pair in ("AB", "BC", "CA"):
                out += [(m, f"PhVph{pair}", line_v), (m, f"PPVph{pair}", line_v)]
        elif phases == 2:
            out += [(m, "PhVphAB", line_v)]
        return out

    def truth(self) -> dict[str, float | None]:
        return meter_truth(self.site)


def pv_truth(u: PvUnit, now: float) -> dict[str, float | None]:
    """Ground truth of a PV inverter (W, Wh, s); ``limit_w`` None while nothing limits below the rating."""
    ceiling = min(u.ceiling_w, u.rating_w)
    return {
        "pv_w": u.pv_w,
        "available_w": u.available_w,
        "limit_w": ceiling if ceiling < u.rating_w - 1e-6 else None,
        "wmax_w": u.controls.wmax_w,
        "rating_w": u.rating_w,
        "installer_w": u.installer_w,
        "export_limit_w": u.export_cap_w if u.installer_mode() else None,
        "energy_wh": u.energy_wh,
        "revert_s": u.revert_s(now),
    }


def battery_truth(b: BatteryUnit, now: float) -> dict[str, float | None]:
    """Ground truth of a battery: ``battery_w`` > 0 discharge, ``soc`` 0..1, ``commanded_w`` None = own mode."""
    return {
        "battery_w": b.battery_w,
        "soc": b.soc,
        "capacity_wh": b.cell.capacity_wh,
        "max_charge_w": b.max_charge_w,
        "max_discharge_w": b.max_discharge_w,
        "energy_charged_wh": b.charged_wh,
        "energy_discharged_wh": b.discharged_wh,
        "commanded_w": b.commanded_w(),
        "revert_s": b.revert_s(now),
    }


def meter_truth(s: SiteSim) -> dict[str, float | None]:
    """Ground truth at the grid connection point: ``grid_w`` > 0 import."""
    t = s.truth()
    return {
        "grid_w": s.grid_w,
        "load_w": s.load_w,
        "pv_w": t["pv_w"],
        "battery_w": t["battery_w"],
        "import_wh": s.import_wh,
        "export_wh": s.export_wh,
    }


class HybridDevice(BatteryDevice, PvInverterDevice):
    """A hybrid inverter: a PV inverter's 121/123 (and 160) and a battery's 120/124/802 behind one unit
    id; 103 ``W`` is their AC sum (PV + discharge), 802 ``W`` the battery's DC power (> 0 discharging).
    Both faces' ``__init__`` run (each finds its unit of the site by the device id)."""

    kind = "hybrid"

    def _rating(self) -> float:
        return self.pv.rating_w

    def _setup(self) -> None:
        BatteryDevice._setup(self)
        battery_points = self.writable
        PvInverterDevice._setup(self)  # the AC nameplate is the PV inverter's; 121 WMax its WMax
        self.writable = {**battery_points, **self.writable}

    def _unit(self) -> BatteryUnit:  # type: ignore[override]  # both faces' units: see _unit_for
        return self.bat

    def _unit_for(self, model_id: int) -> PvUnit | BatteryUnit:
        return self.pv if model_id in (121, 122, 123, 160) else self.bat

    def _live(self) -> list[tuple[int, str, float | int | str | None]]:
        u, b = self.pv, self.bat
        ac_models = (*INVERTER_MODELS, 701)
        out = [x for x in PvInverterDevice._live(self) if x[0] not in ac_models]
        out += [x for x in BatteryDevice._live(self) if x[0] not in ac_models]
        on = bool(u.controls.conn)
        state = (4, 3) if on and abs(u.pv_w + b.battery_w) > 1.0 else (8, 7)
        out += self._ac(u.pv_w + b.battery_w, u.energy_wh + b.discharged_wh, b.charged_wh, *state, on)
        return out

    def truth(self) -> dict[str, float | None]:
        return hybrid_truth(self.pv, self.bat, self.site.t)


def hybrid_truth(u: PvUnit, b: BatteryUnit, now: float) -> dict[str, float | None]:
    """Ground truth of a hybrid: its PV unit's and its battery's (the battery's timer as ``battery_revert_s``)."""
    bat = battery_truth(b, now)
    bat["battery_revert_s"] = bat.pop("revert_s")
    return pv_truth(u, now) | bat


DEVICE_CLASSES: dict[str, type[SunSpecSimDevice]] = {
    "pv_inverter": PvInverterDevice,
    "battery": BatteryDevice,
    "meter": MeterDevice,
    "hybrid": HybridDevice,
}


def make_device(dev: DeviceConfig, site: SiteSim, variant: DeviceVariant) -> SunSpecSimDevice:
    """The register face of ``dev`` on ``site`` as ``variant`` describes it."""
    return DEVICE_CLASSES[dev.kind](dev, site, variant)
