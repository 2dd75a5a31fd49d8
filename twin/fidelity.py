"""The twin's calibration figure: does a replay from history reproduce what was recorded? (docs/twin.md)

Both sides are scored the same way, at the recorded samples ``t_0 … t_m`` (the replay's trace is
read at the same times): each sample's power holds over the interval that ends with it, so a
figure is ``Σ_k P(t_k) × (t_k − t_(k−1))``. Per site, in kWh:

- ``import_kwh`` = Σ max(grid_w, 0), ``export_kwh`` = Σ max(−grid_w, 0) (docs/definitions.md "Signs");
- ``curtailed_kwh`` = Σ max(available_w − pv_w, 0);
- ``battery_throughput_kwh`` = Σ |battery_w| (charge and discharge at the AC side);

and for the fleet ``cost_eur`` as the twin's KPIs count it (:mod:`twin.kpi`: import at each site's
tariff, export at its remuneration, minus the change in stored-energy value), each interval in the
quarter-hour it starts in.

The error of a figure is the sum over the sites of |replayed − recorded| divided by the recorded
fleet total, or by 1 % of the recorded fleet PV energy where that is larger (a figure near zero,
such as the curtailment of a morning, is judged against the day's energy rather than itself); the
cost's error is |replayed − recorded| over |recorded cost|, or 1 % of the recorded gross bill
(import cost + export revenue) where that is larger. The bound is 2 % per figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcs.config.grid_rules import QUARTER_S
from sparcs.config.schema import FleetConfig
from sparcs.twin.kpi import export_price_eur_per_kwh, import_prices_eur_per_kwh, site_arrays
from sparcs.twin.replay import Trace

FIDELITY_BOUND = 0.02
FLOOR_SHARE = 0.01
ENERGY_FIGURES = ("import_kwh", "export_kwh", "curtailed_kwh", "battery_throughput_kwh")


@dataclass(frozen=True)
class Figures:
    """One side's figures: per-site kWh arrays (``site_ids`` order), fleet PV kWh, cost and gross bill (EUR)."""

    site_ids: list[str]
    sites: dict[str, np.ndarray]
    pv_kwh: float
    cost_eur: float
    gross_eur: float


def figures(
    trace: Trace, times_s: np.ndarray, cfg: FleetConfig, bounds: tuple[float, float], prices_eur_per_mwh: np.ndarray
) -> Figures:
    """The figures of ``trace`` read at ``times_s`` (see the module docstring); ``prices`` per quarter of ``bounds``."""
    at = np.clip(np.searchsorted(trace.times, times_s - 1e-3), 0, trace.times.size - 1)
    p = {k: trace.power(k)[:, at] for k in ("grid_w", "pv_w", "available_w", "battery_w")}
    dt_h = np.diff(times_s) / 3600.0
    body = {k: v[:, 1:] for k, v in p.items()}
    imp = np.maximum(body["grid_w"], 0.0) * dt_h / 1000.0
    exp = np.maximum(-body["grid_w"], 0.0) * dt_h / 1000.0
    sites = {
        "import_kwh": imp.sum(axis=1),
        "export_kwh": exp.sum(axis=1),
        "curtailed_kwh": (np.maximum(body["available_w"] - body["pv_w"], 0.0) * dt_h / 1000.0).sum(axis=1),
        "battery_throughput_kwh": (np.abs(body["battery_w"]) * dt_h / 1000.0).sum(axis=1),
    }
    n_q = round((bounds[1] - bounds[0]) / QUARTER_S)
    quarters = bounds[0] + QUARTER_S * np.arange(n_q)
    q = np.clip(((times_s[:-1] - bounds[0]) // QUARTER_S).astype(int), 0, n_q - 1)
    import_price = import_prices_eur_per_kwh(cfg, trace.site_ids, quarters, prices_eur_per_mwh)
    arrays = site_arrays(cfg, trace.site_ids)
    export_price = export_price_eur_per_kwh(arrays, prices_eur_per_mwh)
    import_cost = float((imp * import_price[:, q]).sum())
    revenue = float((exp * export_price[:, q]).sum())
    stored = trace.counter("stored_wh")[:, at]
    value = float(((stored[:, -1] - stored[:, 0]) / 1000.0 * import_price.mean(axis=1) * arrays["eta_d"]).sum())
    pv_kwh = float((body["pv_w"] * dt_h).sum() / 1000.0)
    return Figures(list(trace.site_ids), sites, pv_kwh, import_cost - revenue - value, import_cost + revenue)


def fidelity(recorded: Figures, replayed: Figures, strategy: str, calibration: bool) -> dict[str, Any]:
    """The report's ``fidelity`` entry: each figure recorded and replayed, its error, and whether all meet 2 %.

    ``calibration``: the replay changed nothing of the recorded day (no what-if), so the figure is the
    twin's calibration; with what-ifs it measures their effect instead.
    """
    floor = FLOOR_SHARE * recorded.pv_kwh
    out: dict[str, Any] = {}
    for k in ENERGY_FIGURES:
        rec, rep = recorded.sites[k], replayed.sites[k]
        total = float(rec.sum())
        out[k] = {
            "recorded": total,
            "replayed": float(rep.sum()),
            "error": float(np.abs(rep - rec).sum() / max(total, floor, 1e-9)),
        }
    scale = max(abs(recorded.cost_eur), FLOOR_SHARE * recorded.gross_eur, 1e-9)
    out["cost_eur"] = {
        "recorded": recorded.cost_eur,
        "replayed": replayed.cost_eur,
        "error": abs(replayed.cost_eur - recorded.cost_eur) / scale,
    }
    worst = max(v["error"] for v in out.values())
    return {
        "strategy": strategy,
        "calibration": calibration,
        "bound": FIDELITY_BOUND,
        "figures": out,
        "worst_error": worst,
        "met": worst <= FIDELITY_BOUND,
        "sites": [
            {"site": sid, **{k: [float(recorded.sites[k][i]), float(replayed.sites[k][i])] for k in ENERGY_FIGURES}}
            for i, sid in enumerate(recorded.site_ids)
        ],
    }
