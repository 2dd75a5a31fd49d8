"""The compact stored form of a plan: one row per dispatch, the per-site series packed into one array.

A plan is stored as a small JSON header (path, objective, parts, timings, the fleet series: periods,
export, prices, export schedule) plus the site ids and one zlib-compressed float32 array holding, per
site in that order, ``pv_w``, ``pv_limit_w``, ``battery_w``, ``grid_w``, ``soc`` (one value more than
periods), ``pv_available_w`` and ``load_w``. NaN (a released limit, no value) survives as NaN.
float32 keeps 7 significant digits: 0.1 W up to 1 MW per site, SoC to 1e-7. About 1.4 kB per site and
96-period plan against 11.8 kB as JSON (docs/storage.md "Bytes per site and day").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcs.controller.plan import Plan, PlanTimings, SitePlan, _arr, _list
from sparcs.optimizer.problem import ObjectiveParts

SITE_SERIES = ("pv_w", "pv_limit_w", "battery_w", "grid_w", "soc", "pv_available_w", "load_w")
"""The order of the series of one site in the packed array; ``soc`` has one value more than periods."""
ZLIB_LEVEL = 6


@dataclass(frozen=True)
class PackedPlan:
    """The stored form: the header (JSON-able), the site ids, the packed site series (bytes)."""

    header: dict[str, Any]
    site_ids: list[str]
    site_data: bytes


def pack_plan(plan: Plan) -> PackedPlan:
    p = plan.parts
    header = {
        "start_s": plan.start_s,
        "period_s": _list(plan.period_s),
        "path": plan.path,
        "reason": plan.reason,
        "objective_eur": plan.objective_eur,
        "parts": {
            "energy": p.energy,
            "schedule": p.schedule,
            "throughput": p.throughput,
            "curtailment": p.curtailment,
            "terminal_value": p.terminal_value,
        },
        "soc_end_kwh": plan.soc_end_kwh,
        "timings_s": {"build": plan.timings.build_s, "solve": plan.timings.solve_s, "split": plan.timings.split_s},
        "export_w": _list(plan.export_w),
        "price_eur_per_mwh": _list(plan.price_eur_per_mwh),
        "export_schedule_w": None if plan.export_schedule_w is None else _list(plan.export_schedule_w),
    }
    ids = list(plan.sites)
    parts = [np.asarray(getattr(plan.sites[sid], k), dtype=np.float32) for sid in ids for k in SITE_SERIES]
    packed = np.concatenate(parts).tobytes() if parts else b""
    return PackedPlan(header, ids, zlib.compress(packed, ZLIB_LEVEL))


def unpack_plan(packed: PackedPlan) -> Plan:
    h = packed.header
    period_s = _arr(h["period_s"])
    n = len(period_s)
    lengths = [n + 1 if k == "soc" else n for k in SITE_SERIES]
    per_site = sum(lengths)
    values = np.frombuffer(zlib.decompress(packed.site_data), dtype=np.float32).astype(float)
    if values.size != per_site * len(packed.site_ids):
        raise ValueError(
            f"stored plan holds {values.size} values, expected {per_site} for each of {len(packed.site_ids)} sites"
        )
    sites = {}
    for i, sid in enumerate(packed.site_ids):
        chunk = values[i * per_site : (i + 1) * per_site]
        series, at = {}, 0
        for key, length in zip(SITE_SERIES, lengths, strict=True):
            series[key] = chunk[at : at + length].copy()
            at += length
        sites[sid] = SitePlan(**series)
    t = h.get("timings_s") or {}
    return Plan(
        start_s=float(h["start_s"]),
        period_s=period_s,
        path=h["path"],
        reason=h.get("reason") or "",
        objective_eur=float(h["objective_eur"]),
        parts=ObjectiveParts(**h["parts"]),
        soc_end_kwh=float(h["soc_end_kwh"]),
        timings=PlanTimings(t.get("build", 0.0), t.get("solve", 0.0), t.get("split", 0.0)),
        export_w=_arr(h["export_w"]),
        price_eur_per_mwh=_arr(h["price_eur_per_mwh"]),
        export_schedule_w=None if h.get("export_schedule_w") is None else _arr(h["export_schedule_w"]),
        sites=sites,
    )
