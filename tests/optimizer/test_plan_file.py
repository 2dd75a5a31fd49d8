"""`sparcs plan` (optimizer/plan_file.py) against references: the monolithic LP's optimum, a per-home
MILP with binary charge/discharge and import/export exclusion (HiGHS via Pyomo), and brute force on
tiny problems; its errors name the field; the JSON Schema in docs/ is the one the code validates with;
and the hierarchical planner stays within 0.005 of the monolithic optimum on mixed tariffs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pyomo.environ as pyo
import pytest
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs
from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.optimizer import fleet_arrays as fleet_arrays_module
from sparcs.optimizer.baselines import no_control_plan
from sparcs.optimizer.dispatch import plan_hierarchical, plan_monolithic
from sparcs.optimizer.fleet_arrays import FleetArrays, fleet_arrays
from sparcs.optimizer.plan_file import json_schema, parse, plan_file, problem_of
from sparcs.optimizer.pyomo_model import build_model
from sparcs.optimizer.scoring import gap_to_monolithic
from sparcs.optimizer.synthetic import synthetic_problem

DOCS = Path(__file__).resolve().parents[2] / "docs"
T0 = dt.datetime(2026, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=1)))


def home(n: int = 96, seed: int = 1, soc_end: float | None = None, cap: float | None = 3000.0) -> dict:
    """One home on a dynamic tariff: cheap night, dear evening, PV at midday (W, EUR/kWh)."""
    rng = np.random.default_rng(seed)
    h = np.arange(n) * 24.0 / n
    pv = np.clip(6000 * np.sin(np.pi * (h - 7) / 10), 0, None) * rng.uniform(0.6, 1.0)
    load = 350 + 900 * np.exp(-(((h - 19) / 2) ** 2)) + rng.uniform(0, 200, n)
    day_ahead = 0.09 + 0.08 * np.exp(-(((h - 19) / 2) ** 2)) - 0.05 * np.exp(-(((h - 13) / 2) ** 2))
    imp = (day_ahead + 0.13 + np.where(h < 6, 0.025, np.where((h >= 17) & (h < 20), 0.16, 0.095))) * 1.19
    return {
        "id": f"home-{seed}",
        "periods": [(T0 + dt.timedelta(minutes=15 * i)).isoformat() for i in range(n)],
        "pv_available_w": pv.round(1).tolist(),
        "load_w": load.round(1).tolist(),
        "import_eur_per_kwh": imp.round(4).tolist(),
        "export_eur_per_kwh": [0.079] * n,
        "export_cap_w": cap,
        "battery": {
            "capacity_wh": 8000.0,
            "charge_max_w": 3000.0,
            "discharge_max_w": 3000.0,
            "charge_efficiency": 0.95,
            "discharge_efficiency": 0.95,
            "soc_min": 0.1,
            "soc_max": 0.9,
            "soc_start": 0.3,
            **({} if soc_end is None else {"soc_end": soc_end}),
        },
    }


def cost_model(fa: FleetArrays) -> pyo.ConcreteModel:
    """The monolithic LP of ``fa`` at its costs alone, without the planner's early-storing shade
    (fleet_arrays.CHARGE_EARLY_EUR_PER_KWH_H), which breaks ties and is not part of the score."""
    with mock.patch.object(fleet_arrays_module, "CHARGE_EARLY_EUR_PER_KWH_H", 0.0):
        return build_model(fa)


def lp_optimum(fa: FleetArrays) -> float:
    """The monolithic LP's optimal objective value at its costs alone, as the solver reports it."""
    m = cost_model(fa)
    opt = Highs()
    res = opt.solve(m)
    assert res.termination_condition == TerminationCondition.optimal
    return float(pyo.value(m.obj))


def milp_optimum(fa: FleetArrays) -> float:
    """The same problem as a MILP: binaries forbid charging while discharging and importing while exporting."""
    m = cost_model(fa)
    nt = fa.shape[1]
    # A tight big-M: with the 1e9 W of "no connection limit" the integrality tolerance would let through kW.
    big = float((fa.load_w + fa.charge_max_w).max() + fa.pv_max_w.max() + fa.discharge_max_w.max())
    m.u = pyo.Var(m.B, m.T, within=pyo.Binary)
    m.v = pyo.Var(m.S, m.T, within=pyo.Binary)
    m.only_charge = pyo.Constraint(m.B, m.T, rule=lambda mm, s, t: mm.ch[s, t] <= fa.charge_max_w[s, t] * mm.u[s, t])
    m.only_discharge = pyo.Constraint(
        m.B, m.T, rule=lambda mm, s, t: mm.dis[s, t] <= fa.discharge_max_w[s] * (1 - mm.u[s, t])
    )
    m.only_import = pyo.Constraint(m.S, m.T, rule=lambda mm, s, t: mm.imp[s, t] <= big * mm.v[s, t])
    m.only_export = pyo.Constraint(m.S, m.T, rule=lambda mm, s, t: mm.exp[s, t] <= big * (1 - mm.v[s, t]))
    opt = Highs()
    opt.highs_options = {"mip_rel_gap": 1e-9}
    res = opt.solve(m)
    assert res.termination_condition == TerminationCondition.optimal, nt
    return float(pyo.value(m.obj))


def test_one_home_equals_the_monolithic_optimum():
    inp = parse({"sites": [home()]})
    out = plan_file(inp)
    fa = fleet_arrays(problem_of(inp))
    assert out["method"] == "monolithic"
    assert out["objective_eur"] == pytest.approx(lp_optimum(fa), abs=1e-5)
    assert out["objective_eur"] == pytest.approx(plan_monolithic(problem_of(inp)).objective_eur, abs=1e-6)
    site = out["sites"][0]
    grid, bat, pv = (np.array(site[k]) for k in ("grid_w", "battery_w", "pv_w"))
    load = np.array(inp.sites[0].load_w)
    assert np.allclose(load, grid + pv + bat, atol=1e-2)  # docs/definitions.md "Signs"
    assert (-grid <= 3000.0 + 1e-3).all()  # the export cap as given, no planning margin
    kwh = 0.25
    imp, exp = np.maximum(grid, 0), np.maximum(-grid, 0)
    bill = float(np.sum(kwh / 1000 * (imp * np.array(inp.sites[0].import_eur_per_kwh) - exp * 0.079)))
    assert site["cost_eur"] == pytest.approx(bill, abs=1e-4)


@pytest.mark.parametrize(("seed", "soc_end"), [(1, None), (2, 0.5), (3, None)])
def test_a_home_on_a_dynamic_tariff_is_planned_as_well_as_a_per_home_milp(seed, soc_end):
    inp = parse({"sites": [home(seed=seed, soc_end=soc_end)]})
    out = plan_file(inp)
    milp = milp_optimum(fleet_arrays(problem_of(inp)))
    assert out["objective_eur"] <= milp + 1e-5
    assert out["objective_eur"] == pytest.approx(milp, abs=1e-4)  # and no better than a feasible plan can be
    if soc_end is not None:
        assert out["sites"][0]["soc"][-1] == pytest.approx(soc_end, abs=1e-6)


def brute_force(fa: FleetArrays, step_w: float) -> float:
    """Least objective over every battery setpoint sequence on a grid of ``step_w`` (one site), PV
    chosen per period among the points where its piecewise-linear cost can bend."""
    n, t = fa.shape
    assert n == 1
    levels = np.arange(-fa.charge_max_w[0, 0], fa.discharge_max_w[0] + step_w / 2, step_w)
    b = np.stack(np.meshgrid(*[levels] * t, indexing="ij"), -1).reshape(-1, t)  # (K, T)
    kwh = fa.dt_h / 1000.0
    flow = np.where(b < 0, -b * fa.eta_charge[0], -b / fa.eta_discharge[0]) * fa.dt_h
    e = fa.energy_now_wh[0] + np.cumsum(flow, 1)
    ok = np.all((e >= fa.energy_min_wh[0] - 1e-9) & (e <= fa.energy_max_wh[0] + 1e-9), 1)
    load, avail, cap = fa.load_w[0], fa.pv_max_w[0], fa.export_max_w[0]
    cands = np.stack([np.zeros_like(b), np.broadcast_to(avail, b.shape), load - b, cap + load - b], -1)
    g = load[None, :, None] - cands - b[..., None]
    price = np.where(g > 0, fa.import_eur_per_kwh[0][None, :, None], fa.export_eur_per_kwh[0][None, :, None])
    cost = kwh[None, :, None] * (price * g + fa.curtailment_eur_per_kwh * (avail[None, :, None] - cands))
    valid = (cands >= 0) & (cands <= avail[None, :, None]) & (-g <= cap[None, :, None] + 1e-9)
    per_period = np.where(valid, cost, np.inf).min(-1)
    total = per_period.sum(1) + fa.throughput_eur_per_kwh * (np.maximum(-b, 0) * kwh).sum(1)
    total -= fa.terminal_eur_per_kwh[0] * e[:, -1] / 1000.0
    return float(np.where(ok, total, np.inf).min())


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_tiny_problems_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 4
    site = home(n=n, seed=seed, cap=float(rng.choice([1000.0, 2500.0])))
    site["import_eur_per_kwh"] = rng.uniform(0.1, 0.5, n).round(3).tolist()
    site["battery"].update(capacity_wh=2000.0, charge_max_w=2000.0, discharge_max_w=2000.0, soc_start=0.5)
    inp = parse({"sites": [site]})
    out = plan_file(inp)
    fa = fleet_arrays(problem_of(inp))
    brute = brute_force(fa, 200.0)
    assert out["objective_eur"] <= brute + 1e-6  # the LP is never worse than any grid point
    assert brute - out["objective_eur"] <= 0.01  # and the grid comes within its resolution


def test_the_hierarchy_stays_within_half_a_percent_of_the_optimum_on_mixed_tariffs():
    problem = synthetic_problem(100, seed=5)
    fa = fleet_arrays(problem)
    dynamic = np.ptp(fa.import_eur_per_kwh, axis=1) > 0
    assert 0.3 < dynamic.mean() < 0.7  # mixed: fixed and dynamic, with and without module 3 windows
    mono = plan_monolithic(problem)
    hier = plan_hierarchical(problem)
    gap = gap_to_monolithic(hier.objective_eur, mono.objective_eur, no_control_plan(problem).objective_eur)
    assert gap <= 0.005


def write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_the_cli_prints_the_plan_as_json(tmp_path):
    res = CliRunner().invoke(app, ["plan", "--problem", write(tmp_path, {"sites": [home()]}), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["sites"][0]) == {"id", "cost_eur", "periods", "grid_w", "battery_w", "pv_w", "soc"}
    assert len(out["sites"][0]["soc"]) == 96


@pytest.mark.parametrize(
    ("mutate", "line"),
    [
        (
            lambda s: s.update(load_w=s["load_w"][:5]),
            "sites[0:home-1]: Value error, load_w has 5 values, periods has 96",
        ),
        (lambda s: s["battery"].pop("soc_start"), "sites[0:home-1].battery.soc_start: Field required"),
        (
            lambda s: s["periods"].__setitem__(0, "2026-01-14T00:00:00"),
            "sites[0:home-1].periods[0]: timestamp needs a UTC offset",
        ),
        (
            lambda s: s["battery"].update(soc_min=0.95),
            "sites[0:home-1].battery: soc_min (0.95) must be below soc_max (0.9)",
        ),
        (
            lambda s: s["battery"].update(soc_end=0.9, capacity_wh=1e6),
            "sites[0:home-1].battery.soc_end: 0.9 cannot be reached",
        ),
        (lambda s: s.update(colour="red"), "sites[0:home-1].colour: unknown field"),
    ],
)
def test_bad_input_names_the_field_and_exits_without_a_traceback(tmp_path, mutate, line):
    site = home()
    mutate(site)
    res = CliRunner().invoke(app, ["plan", "--problem", write(tmp_path, {"sites": [site]})])
    assert res.exit_code != 0
    assert line.replace("Value error, ", "") in res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_a_file_that_is_not_json_is_named(tmp_path):
    res = CliRunner().invoke(app, ["plan", "--problem", write(tmp_path, "{not json")])
    assert res.exit_code != 0 and "(file): not valid JSON" in res.output


def test_the_json_schema_in_docs_is_the_one_the_input_is_validated_with():
    assert json.loads((DOCS / "plan-problem.schema.json").read_text()) == json_schema()


def test_a_home_whose_pv_cannot_be_curtailed_runs_pv_in_full_and_charges_against_the_cap():
    data = home(cap=500.0) | {"pv_curtailable": False}
    out = plan_file(parse({"sites": [data]}))
    site = out["sites"][0]
    grid, pv = (np.array(site[k]) for k in ("grid_w", "pv_w"))
    assert pv == pytest.approx(np.array(data["pv_available_w"]), abs=1e-6)
    over_kwh = float(np.maximum(-grid - 500.0, 0.0).sum()) * 0.25 / 1000.0
    assert over_kwh > 1.0  # a 500 W cap on 6 kW of PV: more than the 8 kWh battery can take
    # The battery is filled (it takes at least its room from the start): only the rest goes over.
    load = np.array(data["load_w"])
    excess_kwh = float(np.maximum(pv - load - 500.0, 0.0).sum()) * 0.25 / 1000.0
    assert np.array(site["soc"]).max() == pytest.approx(0.9, abs=1e-6)
    assert over_kwh <= excess_kwh - (0.9 - 0.3) * 8.0 / 0.95 + 1e-6
    curtailed = plan_file(parse({"sites": [home(cap=500.0)]}))["sites"][0]
    assert np.all(-np.array(curtailed["grid_w"]) <= 500.0 + 1e-3)  # the default: curtailed to the cap


def test_on_a_flat_tariff_pv_is_stored_from_the_first_surplus_at_no_cost():
    """Exporting PV now and storing PV later cost the same here; the plan stores first
    (fleet_arrays.CHARGE_EARLY_EUR_PER_KWH_H): a forecast is surest for the coming hours."""
    data = home(cap=None) | {"import_eur_per_kwh": [0.30] * 96}
    out = plan_file(parse({"sites": [data]}))
    site = out["sites"][0]
    surplus = np.maximum(np.array(data["pv_available_w"]) - np.array(data["load_w"]), 0.0)
    charge = np.maximum(-np.array(site["battery_w"]), 0.0)
    first = int(np.argmax(surplus > 0))
    room_wh = (0.9 - min([*site["soc"][:first], 0.3])) * 8000.0 / 0.95
    greedy_wh = np.cumsum(np.minimum(surplus, 3000.0)[first:]) * 0.25
    full = first + int(np.argmax(greedy_wh >= room_wh - 1e-6))
    assert charge[first] == pytest.approx(surplus[first], abs=1e-3)
    assert max(site["soc"][: full + 2]) == pytest.approx(0.9, abs=1e-6)
    with mock.patch.object(fleet_arrays_module, "CHARGE_EARLY_EUR_PER_KWH_H", 0.0):
        late = plan_file(parse({"sites": [data]}))
    assert site["cost_eur"] == pytest.approx(late["sites"][0]["cost_eur"], abs=1e-6)
