"""Map decoded SunSpec models onto the telemetry shape.

An inverter on 103 + 123 and one on 701 + 704 produce the same keys. A PV inverter with model 160
adds its DC power per MPPT string (``mppt_<i>_dc_w``, from 1) and their sum ``dc_w``; a battery
that serves only the SunSpec 2 battery model 802 is read from it alone (``W`` > 0 discharging,
``SoC``, ``WHRtg``, the charge and discharge rates), and takes no setpoints (no control model).
A hybrid inverter (one unit id, a PV and a battery role) polls its inverter measurement, its PV
control (123/704), its storage control (124) and the battery bank (802, else 713): ``battery_w``
is 802's DC power (> 0 discharging), ``pv_w`` the AC output less it (AC out = PV + discharge). Which models a device
needs is fixed here: ``PollPlan`` names the models read every poll (measurements, controls in
force, storage state) and the static ones read at discovery (nameplate, settings, capacity).
Where a PV inverter serves model 122, its ``Tms`` (the device's clock, seconds since 2000-01-01 UTC)
is read every poll and passed on as ``device_time_s`` (Unix s): the poller turns it into the
device's clock offset (docs/devices.md "Device clocks").
"""

from __future__ import annotations

from dataclasses import dataclass

from sparcs.drivers.discovery import ModelLocation, SunSpecMap
from sparcs.drivers.errors import DeviceError
from sparcs.drivers.sunspec_codec import decode, decode_repeating

INVERTER_MODELS = (103, 102, 101, 113, 112, 111, 701)
METER_MODELS = (203, 204, 202, 201, 213, 214, 212, 211)
STORAGE_MODELS = (124, 713, 802)
PV_CONTROL_MODELS = (123, 704)
STATIC_MODELS = (120, 121, 702, 713, 802)
MPPT_MODEL = 160
STATUS_MODEL = 122
SUNSPEC_EPOCH_S = 946_684_800.0
"""2000-01-01T00:00:00Z, from which model 122 ``Tms`` counts seconds."""
MODULE_POINTS = ("DCW",)

# The points each model contributes; decoding only these keeps a poll cheap.
POINTS: dict[int, tuple[str, ...]] = {
    **dict.fromkeys((101, 102, 103, 111, 112, 113), ("W", "WH", "St", "Evt1")),
    701: ("W", "TotWhInj", "InvSt", "Alrm"),
    **dict.fromkeys(METER_MODELS, ("W", "TotWhImp", "TotWhExp", "Evt")),
    120: ("WRtg", "WHRtg", "MaxChaRte", "MaxDisChaRte"),
    121: ("WMax",),
    702: ("WMaxRtg", "WMax", "WChaRteMax", "WDisChaRteMax"),
    123: ("Conn", "WMaxLimPct", "WMaxLim_Ena", "WMaxLimPct_RvrtTms"),
    704: ("WMaxLimPctEna", "WMaxLimPct", "WSetEna", "WSetMod", "WSet", "WMaxLimPctRvrtRem", "WSetRvrtRem"),
    124: ("WChaMax", "StorCtl_Mod", "ChaState", "OutWRte", "InWRte", "InOutWRte_RvrtTms"),
    713: ("WHRtg", "SoC"),
    802: ("W", "SoC", "WHRtg", "WChaRteMax", "WDisChaRteMax", "State", "Evt1"),
    160: ("N",),
    122: ("Tms",),
}

# Read once at discovery: only what does not change while the device runs. A dynamic point of a
# model read statically (713 SoC beside 124) would otherwise be a stale value passed on as good.
STATIC_POINTS: dict[int, tuple[str, ...]] = {
    120: POINTS[120],
    121: POINTS[121],
    702: POINTS[702],
    713: ("WHRtg",),
    802: ("WHRtg", "WChaRteMax", "WDisChaRteMax"),
}


@dataclass(frozen=True)
class PollPlan:
    """The models of one device: read on every poll (``dynamic``) or at discovery (``static``)."""

    dynamic: tuple[ModelLocation, ...]
    static: tuple[ModelLocation, ...]


def poll_plan(kind: str, found: SunSpecMap) -> PollPlan:
    """Choose the models to poll for a device of ``kind``; raise DeviceError if a needed one is absent."""

    def need(ids: tuple[int, ...], what: str) -> ModelLocation:
        loc = found.find(*ids)
        if loc is None:
            raise DeviceError(f"no {what} model (one of {', '.join(map(str, ids))}) among models {found.ids}")
        return loc

    static = tuple(m for m in found.models if m.model_id in STATIC_MODELS)
    if kind == "meter":
        return PollPlan((need(METER_MODELS, "meter"),), ())
    if kind == "pv_inverter":
        inverter = need(INVERTER_MODELS, "inverter measurement")
        optional = (found.find(*PV_CONTROL_MODELS), found.find(MPPT_MODEL), found.find(STATUS_MODEL))
        extra = tuple(m for m in optional if m is not None)
        return PollPlan((inverter, *extra), static)
    if kind == "hybrid":
        inverter = need(INVERTER_MODELS, "inverter measurement")
        bank = need((802, 713), "battery bank")
        found_ids = (found.find(*PV_CONTROL_MODELS), found.find(124), bank, found.find(MPPT_MODEL), found.find(122))
        dynamic = (inverter, *(m for m in found_ids if m is not None))
        return PollPlan(dynamic, tuple(m for m in static if m not in dynamic))
    storage = need(STORAGE_MODELS, "storage")
    static = tuple(m for m in static if m.model_id != storage.model_id)
    if storage.model_id == 802 and found.find(*INVERTER_MODELS) is None:
        return PollPlan((storage,), static)  # a SunSpec 2 battery bank on its own: 802 has the power too
    inverter = need(INVERTER_MODELS, "inverter measurement")
    return PollPlan((inverter, storage), static)


def decode_models(blocks: dict[int, list[int]], static: bool = False) -> dict[int, dict]:
    """Decode each block (model id → registers from its ID register) to the points the mapping uses."""
    points = STATIC_POINTS if static else POINTS
    out: dict[int, dict] = {mid: decode(mid, regs, points[mid]) for mid, regs in blocks.items() if mid in points}
    if MPPT_MODEL in out:
        out[MPPT_MODEL]["modules"] = decode_repeating(MPPT_MODEL, blocks[MPPT_MODEL], MODULE_POINTS)
    return out


def _first(*values: float | None) -> float | None:
    for v in values:
        if v is not None:
            return v
    return None


def _pct(x: float | None) -> float | None:
    return None if x is None else x / 100.0


def wmax_of(models: dict[int, dict]) -> float | None:
    """The base for PV limits in W: 121 WMax, else 702 WMax, else 120 WRtg, else 702 WMaxRtg."""
    m120, m121, m702 = models.get(120, {}), models.get(121, {}), models.get(702, {})
    return _first(m121.get("WMax"), m702.get("WMax"), m120.get("WRtg"), m702.get("WMaxRtg"))


def limit_in_force_w(models: dict[int, dict], wmax_w: float | None) -> float | None:
    """The controller limit the device applies now (W), or None when no limit is enabled (0 W while 123
    ``Conn`` = 0: the inverter is disconnected)."""
    if 123 in models:
        c = models[123]
        if c.get("Conn") == 0:
            return 0.0
        if c.get("WMaxLim_Ena") == 1 and c.get("WMaxLimPct") is not None and wmax_w is not None:
            return c["WMaxLimPct"] / 100.0 * wmax_w
        return None
    if 704 in models:
        c = models[704]
        if c.get("WSetEna") == 1 and c.get("WSetMod") == 1 and c.get("WSet") is not None:
            return float(c["WSet"])
        if c.get("WMaxLimPctEna") == 1 and c.get("WMaxLimPct") is not None and wmax_w is not None:
            return c["WMaxLimPct"] / 100.0 * wmax_w
    return None


def to_raw_si(kind: str, models: dict[int, dict], invert_sign: bool = False) -> dict[str, float | None]:
    """The telemetry values (SI, before quality) from decoded models."""
    sign = -1.0 if invert_sign else 1.0
    if kind == "meter":
        m = next((models[i] for i in METER_MODELS if i in models), {})
        w = m.get("W")
        return {
            "grid_w": None if w is None else sign * w,
            "import_wh": m.get("TotWhImp"),
            "export_wh": m.get("TotWhExp"),
            "operating_state": None,
            "alarms": m.get("Evt"),
        }
    inv = next((models[i] for i in INVERTER_MODELS if i in models), {})
    der = 701 in models
    w = inv.get("W")
    m120, m702 = models.get(120, {}), models.get(702, {})
    rating = _first(m120.get("WRtg"), m702.get("WMaxRtg"))
    wmax = wmax_of(models)
    common = {
        "rating_w": rating,
        "energy_wh": inv.get("TotWhInj") if der else inv.get("WH"),
        "operating_state": inv.get("InvSt") if der else inv.get("St"),
        "alarms": inv.get("Alrm") if der else inv.get("Evt1"),
    }
    tms = models.get(STATUS_MODEL, {}).get("Tms")
    if isinstance(tms, int | float):
        common["device_time_s"] = SUNSPEC_EPOCH_S + tms
    if kind == "pv_inverter":
        pv = {"pv_w": None if w is None else sign * w, "wmax_w": wmax, **common}
        if 123 in models or 704 in models:  # without a control model the limit in force is unknown
            pv["pv_limit_w"] = limit_in_force_w(models, wmax)
        if MPPT_MODEL in models:
            strings = [m.get("DCW") for m in models[MPPT_MODEL].get("modules", [])]
            pv |= {f"mppt_{i}_dc_w": v for i, v in enumerate(strings, start=1)}
            pv["dc_w"] = sum(v for v in strings if v is not None) if strings and None not in strings else None
        return pv
    s124, s713, s802 = models.get(124, {}), models.get(713, {}), models.get(802, {})
    if kind == "hybrid":  # the bank's DC power is the battery role; PV is the AC output less it
        bat_w = s802.get("W")
        pv_w = None if w is None or bat_w is None else sign * (w - bat_w)
        pv_part = {"pv_w": pv_w, "wmax_w": wmax}
        if 123 in models or 704 in models:  # without a control model the limit in force is unknown
            pv_part["pv_limit_w"] = limit_in_force_w(models, wmax)
        w = bat_w
    else:
        pv_part = {}
    if not inv and s802:  # an 802 bank on its own: its DC power and state
        w = s802.get("W")
        common |= {"operating_state": s802.get("State"), "alarms": s802.get("Evt1")}
    wchamax = _first(s124.get("WChaMax"), m120.get("MaxChaRte"), m702.get("WChaRteMax"), s802.get("WChaRteMax"))
    return {
        # 103/701 W is AC output: positive = generation = discharge, our battery_w sign (802 W alike).
        "battery_w": None if w is None else sign * w,
        "soc": _pct(_first(s124.get("ChaState"), s713.get("SoC"), s802.get("SoC"))),
        "capacity_wh": _first(m120.get("WHRtg"), s713.get("WHRtg"), s802.get("WHRtg")),
        "max_charge_w": wchamax,
        "max_discharge_w": _first(
            m120.get("MaxDisChaRte"), m702.get("WDisChaRteMax"), s802.get("WDisChaRteMax"), wchamax
        ),
        **common,
        **pv_part,
    }
