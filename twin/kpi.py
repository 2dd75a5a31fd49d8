"""KPIs of a replayed day, from the simulators' ground truth only (pure functions of a Trace).

Definitions (docs/definitions.md "Caps and violations", "Economics", "Twin goals"):

- energies per site and quarter-hour are differences of the simulators' own energy counters
  (meter import/export, PV yield, battery AC charge/discharge), integrated in the physics;
- ``cost_eur`` = import at each site's tariff in each quarter-hour (config/tariffs.py: fixed or
  dynamic, §14a module 3 windows) − export at its remuneration (the day-ahead price for directly
  marketed sites; nothing in negative-price quarter-hours under the post-Feb-2025 rule) − the change
  in value of the energy stored in the batteries (at the site's mean import price of the day ×
  η_discharge, as the optimizer values it), so that emptying batteries cannot look cheap;
- ``cap_violations``: site-quarter-hours with a sample of meter export above the feed-in
  cap + 1 %, or meter power above the connection limit + 1 %; ``negative_price_violations``
  counts apart the site-quarter-hours in which a site under the negative-price rule exported more
  than 1 % of its PV rating in a negative-price quarter-hour (its cap is 0 there);
- ``captured(s) = (cost_none − cost_s) / (cost_none − cost_perfect_foresight)``.

The trace holds one sample per poll (:attr:`twin.replay.Trace.step_s` apart, a divisor of the
quarter-hour); energies from powers (load, available PV) integrate each sample over the poll
interval that ends with it.

kWh and EUR at the edges; W, Wh, Unix s inside.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparcs.config.grid_rules import QUARTER_S, feed_in_cap_w
from sparcs.config.schema import FleetConfig
from sparcs.config.tariffs import export_price_eur_per_kwh as tariff_export_price
from sparcs.config.tariffs import import_price_eur_per_kwh, site_tariff
from sparcs.controller.prices import read_prices_csv
from sparcs.optimizer.forecast import price_forecast
from sparcs.twin.replay import StrategyRun, Trace

VIOLATION_TOL = 0.01
"""A meter sample above cap × (1 + this) is a violation (docs/definitions.md "Caps and violations")."""
BALANCE_TOL = 0.005


def quarter_starts(day: tuple[float, float]) -> np.ndarray:
    """Unix s of the day's quarter-hour starts (92, 96 or 100)."""
    return day[0] + QUARTER_S * np.arange(round((day[1] - day[0]) / QUARTER_S))


def day_prices(cfg: FleetConfig, quarters_s: np.ndarray) -> np.ndarray:
    """Day-ahead price per quarter-hour (EUR/MWh): the market's series, flat where it has none."""
    series = read_prices_csv(cfg.market.prices_csv) if cfg.market.prices_csv else (None, None)
    return price_forecast(quarters_s + QUARTER_S / 2, series[0], series[1], cfg.market.flat_price_eur_per_mwh).values


def per_quarter(counter_wh: np.ndarray, samples_per_quarter: int) -> np.ndarray:
    """Energy per quarter-hour (Wh, ``(sites, quarters)``) from cumulative counters at every sample."""
    return np.diff(counter_wh[:, ::samples_per_quarter], axis=1)


def import_prices_eur_per_kwh(
    cfg: FleetConfig, site_ids: list[str], quarters_s: np.ndarray, prices_eur_per_mwh: np.ndarray
) -> np.ndarray:
    """What a kWh imported costs, ``(sites, quarters)``: each site's tariff in each quarter-hour."""
    return np.stack(
        [import_price_eur_per_kwh(site_tariff(cfg, cfg.site(s)), quarters_s, prices_eur_per_mwh) for s in site_ids]
    )


def site_arrays(cfg: FleetConfig, site_ids: list[str]) -> dict[str, np.ndarray]:
    """Per-site constants the KPIs need (arrays in ``site_ids`` order): tariffs, caps, ratings, battery."""
    sites = [cfg.site(s) for s in site_ids]
    cap = [feed_in_cap_w(s) for s in sites]
    tariffs = [site_tariff(cfg, s) for s in sites]
    return {
        "export_eur_per_kwh": np.array([t.export.eur_per_kwh for t in tariffs]),
        "direct": np.array([t.market_export for t in tariffs]),
        "rule": np.array([s.grid.negative_price_rule for s in sites]),
        "cap_w": np.array([np.inf if c is None else c for c in cap]),
        "conn_w": np.array([s.grid.connection_limit_w for s in sites]),
        "rating_w": np.array([s.pv.rating_w for s in sites]),
        "eta_c": np.array([s.battery.eta_charge if s.battery else 1.0 for s in sites]),
        "eta_d": np.array([s.battery.eta_discharge if s.battery else 1.0 for s in sites]),
        "capacity_wh": np.array([s.battery.capacity_kwh * 1000.0 if s.battery else 0.0 for s in sites]),
    }


def export_price_eur_per_kwh(site: dict[str, np.ndarray], prices_eur_per_mwh: np.ndarray) -> np.ndarray:
    """What a kWh exported earns, ``(sites, quarters)``: remuneration or day-ahead; 0 under the rule at < 0."""
    return tariff_export_price(site["direct"], site["export_eur_per_kwh"], site["rule"], prices_eur_per_mwh)


def site_quarters_with(mask: np.ndarray, samples_per_quarter: int) -> int:
    """How many (site, quarter-hour) cells hold a True sample; ``mask`` is ``(sites, samples)`` incl. sample 0."""
    body = mask[:, 1:]
    n, s = body.shape
    return int(body.reshape(n, s // samples_per_quarter, samples_per_quarter).any(axis=2).sum())


def violation_samples(trace: Trace, mask: np.ndarray, cap_w: np.ndarray, limit: int = 50) -> list[dict[str, Any]]:
    """The first ``limit`` meter samples above a cap: site, Unix time, export and cap in kW (for the engineer)."""
    grid = trace.power("grid_w")
    rows, cols = np.nonzero(mask)
    order = np.lexsort((rows, cols))[:limit]
    return [
        {
            "site": trace.site_ids[rows[k]],
            "t_s": float(trace.times[cols[k]]),
            "export_kw": float(-grid[rows[k], cols[k]] / 1000.0),
            "cap_kw": None if not np.isfinite(cap_w[rows[k]]) else float(cap_w[rows[k]] / 1000.0),
        }
        for k in order
    ]


def energy_balance(trace: Trace, cfg: FleetConfig) -> list[dict[str, Any]]:
    """Per site over the day (kWh): PV + import + discharge = load + export + charge + losses.

    ``charge``/``discharge`` are the energy into/out of the cells (AC counters × η_c, ÷ η_d),
    ``losses`` the conversion losses; ``residual`` is the balance's error as a share of the inflow.
    ``storage_residual`` checks the cells: charge − discharge against the change of the stored
    energy the simulators report (SoC × capacity). Each term comes from its own source.
    """
    site = site_arrays(cfg, trace.site_ids)
    d = {k: trace.counter(k)[:, -1] - trace.counter(k)[:, 0] for k in ("pv_wh", "import_wh", "export_wh")}
    ch_ac = trace.counter("charged_wh")[:, -1] - trace.counter("charged_wh")[:, 0]
    dis_ac = trace.counter("discharged_wh")[:, -1] - trace.counter("discharged_wh")[:, 0]
    stored = trace.counter("stored_wh")
    load = trace.power("load_w")[:, 1:].sum(axis=1) * trace.step_s / 3600.0
    charge = ch_ac * site["eta_c"]
    discharge = dis_ac / site["eta_d"]
    losses = (ch_ac - charge) + (discharge - dis_ac)
    inflow = d["pv_wh"] + d["import_wh"] + discharge
    residual = inflow - (load + d["export_wh"] + charge + losses)
    storage_residual = (charge - discharge) - (stored[:, -1] - stored[:, 0])
    out = []
    for i, sid in enumerate(trace.site_ids):
        scale = max(inflow[i], 1e-9)
        out.append(
            {
                "site": sid,
                "pv_kwh": d["pv_wh"][i] / 1000.0,
                "import_kwh": d["import_wh"][i] / 1000.0,
                "discharge_kwh": discharge[i] / 1000.0,
                "load_kwh": load[i] / 1000.0,
                "export_kwh": d["export_wh"][i] / 1000.0,
                "charge_kwh": charge[i] / 1000.0,
                "losses_kwh": losses[i] / 1000.0,
                "residual": float(residual[i] / scale),
                "storage_residual": float(storage_residual[i] / scale),
            }
        )
    return out


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def strategy_kpis(run: StrategyRun, cfg: FleetConfig, prices_eur_per_mwh: np.ndarray) -> dict[str, Any]:
    """The report's KPIs of one strategy (see the module docstring for the definitions)."""
    trace = run.trace
    spq = trace.samples_per_quarter()
    site = site_arrays(cfg, trace.site_ids)
    imp = per_quarter(trace.counter("import_wh"), spq) / 1000.0
    exp = per_quarter(trace.counter("export_wh"), spq) / 1000.0
    pv_kwh = float((trace.counter("pv_wh")[:, -1] - trace.counter("pv_wh")[:, 0]).sum() / 1000.0)
    load_kwh = float(trace.power("load_w")[:, 1:].sum() * trace.step_s / 3.6e6)
    available_kwh = float(trace.power("available_w")[:, 1:].sum() * trace.step_s / 3.6e6)
    stored = trace.counter("stored_wh")
    quarters = trace.times[0] + QUARTER_S * np.arange(imp.shape[1])
    import_price = import_prices_eur_per_kwh(cfg, trace.site_ids, quarters, prices_eur_per_mwh)
    import_cost = float((imp * import_price).sum())
    revenue = float((exp * export_price_eur_per_kwh(site, prices_eur_per_mwh)).sum())
    value_per_kwh = import_price.mean(axis=1) * site["eta_d"]
    storage_value = float(((stored[:, -1] - stored[:, 0]) / 1000.0 * value_per_kwh).sum())
    import_kwh, export_kwh = float(imp.sum()), float(exp.sum())

    grid = trace.power("grid_w")
    over_cap = -grid > site["cap_w"][:, None] * (1 + VIOLATION_TOL)
    over_conn = np.abs(grid) > site["conn_w"][:, None] * (1 + VIOLATION_TOL)
    stage = run.stage_ceiling_w
    over_stage = np.nan_to_num(trace.power("pv_w") - stage * (1 + VIOLATION_TOL), nan=-np.inf) > (
        VIOLATION_TOL * site["rating_w"][:, None]
    )
    negative = np.outer(site["rule"], prices_eur_per_mwh < 0)
    negative_samples = np.zeros_like(grid, dtype=bool)
    negative_samples[:, 1:] = np.repeat(negative, spq, axis=1)
    exporting = -grid > VIOLATION_TOL * site["rating_w"][:, None]

    fleet_export_kw = (exp - imp).sum(axis=0) * (3600.0 / QUARTER_S)
    scheduled = np.isfinite(run.schedule_w)
    mae = None
    if scheduled.any():
        mae = float(np.abs(fleet_export_kw[scheduled] - run.schedule_w[scheduled] / 1000.0).mean())

    solve = [d.wall_s for d in run.dispatches]
    return {
        "strategy": run.strategy,
        "cost_eur": import_cost - revenue - storage_value,
        "import_cost_eur": import_cost,
        "revenue_eur": revenue,
        "storage_value_change_eur": storage_value,
        "import_kwh": import_kwh,
        "export_kwh": export_kwh,
        "pv_kwh": pv_kwh,
        "load_kwh": load_kwh,
        "self_consumption": (pv_kwh - export_kwh) / pv_kwh if pv_kwh > 0 else None,
        "self_sufficiency": (load_kwh - import_kwh) / load_kwh if load_kwh > 0 else None,
        "curtailed_kwh": max(0.0, available_kwh - pv_kwh),
        "tracking_mae_kw": mae,
        "cap_violations": site_quarters_with(over_cap | over_conn, spq),
        "cap_violation_samples": violation_samples(trace, over_cap | over_conn, site["cap_w"]),
        "stage_violations": site_quarters_with(over_stage, spq),
        "negative_price_violations": site_quarters_with(negative_samples & exporting, spq),
        "negative_price_export_kwh": float(exp[negative].sum()),
        "fallbacks": sum(1 for d in run.dispatches if d.path is not None and d.path.startswith("fallback")),
        "dispatches": len(run.dispatches),
        "solve_s_p50": _percentile(solve, 50),
        "solve_s_p99": _percentile(solve, 99),
        "soc_start_kwh": float(stored[:, 0].sum() / 1000.0),
        "soc_end_kwh": float(stored[:, -1].sum() / 1000.0),
        "replay_wall_s": run.wall_s,
        "replay_cpu_s": run.cpu_s,
        "startup_wall_s": run.startup_s,
        "forecast_quality": [q.as_dict() for q in run.forecast_quality],
    }


def captured(costs: dict[str, float]) -> dict[str, float | None] | None:
    """Share of the achievable improvement each strategy captures; None without none and perfect-foresight."""
    if "none" not in costs or "perfect-foresight" not in costs:
        return None
    achievable = costs["none"] - costs["perfect-foresight"]
    if achievable <= 1e-9:
        return {s: None for s in costs}
    return {s: (costs["none"] - c) / achievable for s, c in costs.items()}
