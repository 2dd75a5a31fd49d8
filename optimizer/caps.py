"""Regulatory and physical caps applied last, as hard clamps on every site's setpoints.

Whatever produced the setpoints (LP, split-back, fallback, baseline), :func:`apply_caps` makes
them respect, per site and period, with the forecast load:

- the installer ceiling and an active curtailment stage (K1..K4) on PV output;
- battery power limits and SoC bounds (a sequential pass over the periods, vectorised over sites);
- §14a: grid charging (charge not covered by PV surplus over the load) ≤ the limit while active;
- the export ceiling AT THE METER, not at the inverter (docs/definitions.md "Caps and
  violations"): export = pv + discharge − load − charge ≤ ``FleetArrays.export_max_w``, so the PV
  limit is that ceiling + load + charge − discharge (self-consumption lets the inverter exceed the
  cap). The ceiling is grid_rules' (the feed-in cap, 0 in a negative-price quarter-hour for sites
  under that rule, never above the connection limit) with the planning margin on the feed-in cap;
- the connection limit on import.

A site whose PV is not curtailable (``FleetArrays.pv_curtailable``) keeps PV at its forecast and
gets no limit (its ``pv_limit_w`` is the ceiling, never written); where its battery and load cannot
take the PV over the cap, its export goes over the cap (docs/definitions.md "Sites whose PV cannot be
curtailed"), and :func:`violations` does not count that as a broken bound.

Clamps only ever reduce |battery| and curtailable PV output, in an order where a later clamp cannot
undo an earlier one. Signs (docs/definitions.md "Signs"): ``battery_w`` + discharge / − charge,
``grid_w`` + import / − export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparcs.optimizer.fleet_arrays import FleetArrays

CURTAILING_TOL_W = 1.0
"""PV output this far below its maximum counts as curtailment: the inverter gets a limit."""


@dataclass
class Setpoints:
    """Final per-site setpoints ``(N, T)`` and their consequences; ``energy_wh`` is ``(N, T+1)``."""

    pv_w: np.ndarray
    pv_limit_w: np.ndarray
    battery_w: np.ndarray
    grid_w: np.ndarray
    energy_wh: np.ndarray


def meter_pv_limit_w(fa: FleetArrays, battery_w: np.ndarray) -> np.ndarray:
    """Highest PV output that keeps export at the meter within its cap: cap + load − battery_w (≥ 0)."""
    return np.maximum(fa.export_max_w + fa.load_w - battery_w, 0.0)


def _soc_pass(fa: FleetArrays, battery_w: np.ndarray) -> np.ndarray:
    """Shrink battery setpoints period by period so that stored energy stays within its bounds."""
    out = battery_w.copy()
    energy = fa.energy_now_wh.copy()
    eta_c = fa.eta_charge
    eta_d = fa.eta_discharge
    for t in range(out.shape[1]):
        dt = fa.dt_h[t]
        lo = -np.maximum(fa.energy_max_wh[:, t] - energy, 0.0) / (eta_c * dt)
        hi = np.maximum(energy - fa.energy_min_wh[:, t], 0.0) * eta_d / dt
        b = np.clip(out[:, t], np.minimum(lo, 0.0), np.maximum(hi, 0.0))
        out[:, t] = b
        energy = energy + dt * np.where(b < 0, -b * eta_c, -b / eta_d)
    return out


def apply_caps(fa: FleetArrays, pv_w: np.ndarray, battery_w: np.ndarray) -> Setpoints:
    """Clamp planned PV output and battery setpoints to every hard bound; derive limits and meter power."""
    fixed = ~fa.pv_curtailable[:, None]
    pv = np.where(fixed, fa.pv_max_w, np.clip(np.nan_to_num(pv_w), 0.0, fa.pv_max_w))
    bat = np.where(fa.has_battery[:, None], np.nan_to_num(battery_w), 0.0)
    bat = np.clip(bat, -fa.charge_max_w, fa.discharge_max_w[:, None])
    bat = np.maximum(bat, -fa.para14a_charge_max_w(pv))
    # Discharging never pushes export over the meter cap (0 under the negative-price rule) …
    bat = np.minimum(bat, np.maximum(fa.export_max_w + fa.load_w - pv, 0.0))
    # … and charging never pulls import over the connection limit.
    bat = np.maximum(bat, np.minimum(fa.load_w - pv - fa.import_max_w[:, None], 0.0))
    bat = _soc_pass(fa, bat)
    # Last: PV limited at the meter. Only reduces export, so §14a and the import limit still hold.
    meter_max = meter_pv_limit_w(fa, bat)
    pv = np.where(fixed, pv, np.minimum(pv, meter_max))
    curtailing = pv < fa.pv_max_w - CURTAILING_TOL_W
    limit = np.where(fixed, fa.pv_ceiling_w, np.minimum(np.where(curtailing, pv, fa.pv_ceiling_w), meter_max))
    return Setpoints(
        pv_w=pv,
        pv_limit_w=limit,
        battery_w=bat,
        grid_w=fa.load_w - pv - bat,
        energy_wh=fa.soc_from_battery(bat),
    )


def violations(fa: FleetArrays, sp: Setpoints, tol_w: float = 1e-6) -> list[str]:
    """Every hard bound the setpoints break, one line each naming the bound (empty when none)."""
    problems: list[str] = []

    def check(name: str, bad: np.ndarray) -> None:
        if np.any(bad):
            s, t = np.argwhere(bad)[0]
            problems.append(f"{name}: {int(bad.sum())} site-periods, first site {s} period {t}")

    ch = np.maximum(-sp.battery_w, 0.0)
    curtailable = fa.pv_curtailable[:, None]
    check("pv below 0 or above available/ceiling/stage", (sp.pv_w < -tol_w) | (sp.pv_w > fa.pv_max_w + tol_w))
    check("pv above its limit", sp.pv_w > sp.pv_limit_w + tol_w)
    check("pv limit above installer ceiling or stage", sp.pv_limit_w > fa.pv_ceiling_w + tol_w)
    check("charge above max", ch > fa.charge_max_w + tol_w)
    check("discharge above max", sp.battery_w > fa.discharge_max_w[:, None] + tol_w)
    check("battery power without a battery", (~fa.has_battery[:, None]) & (np.abs(sp.battery_w) > tol_w))
    check("§14a grid charging above the limit", ch > fa.para14a_charge_max_w(sp.pv_w) + tol_w)
    check("export above the cap at the meter", curtailable & (-sp.grid_w > fa.export_max_w + tol_w))
    check("pv not curtailable below its forecast", ~curtailable & (sp.pv_w < fa.pv_max_w - tol_w))
    check("import above the connection limit", sp.grid_w > fa.import_max_w[:, None] + tol_w)
    check(
        "meter limit on the inverter not kept",
        curtailable & (sp.pv_limit_w > meter_pv_limit_w(fa, sp.battery_w) + tol_w),
    )
    # A SoC measured outside its bounds may stay there, but only ever moves back toward them.
    e, before = sp.energy_wh[:, 1:], sp.energy_wh[:, :-1]
    tol_wh = 1e-6 * np.maximum(fa.capacity_wh[:, None], 1.0)
    check("SoC below its minimum", (e < fa.energy_min_wh - tol_wh) & (e < before - tol_wh))
    check("SoC above its maximum", (e > fa.energy_max_wh + tol_wh) & (e > before + tol_wh))
    balance = sp.pv_w + sp.battery_w + sp.grid_w - fa.load_w
    check("power balance at the meter", np.abs(balance) > 1e-3)
    return problems
