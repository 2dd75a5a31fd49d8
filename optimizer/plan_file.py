"""`sparcs plan`: a planning problem described in JSON, without devices, and its plan as JSON
(docs/plan.md; the input's JSON Schema is docs/plan-problem.schema.json, made by :func:`json_schema`).

Input ``{"sites": [...]}``; each site has ``id``, ``periods`` (quarter-hour start timestamps with
a UTC offset), per period ``pv_available_w``, ``load_w``, ``import_eur_per_kwh``,
``export_eur_per_kwh``, an ``export_cap_w`` (W ≥ 0, or null) and a ``battery`` (or null) with
``capacity_wh``, ``charge_max_w``, ``discharge_max_w``, ``charge_efficiency``,
``discharge_efficiency``, ``soc_min``, ``soc_max``, ``soc_start`` and optionally ``soc_end``
(fractions; the battery must end there). Every site plans the same periods.

The problem is the controller's (optimizer.problem) with nothing else in force: no stage, no §14a,
no schedule, no negative-price rule (the prices given are the prices), the export cap held exactly
(the controller's planning margin on a feed-in cap is for open-loop minutes in the field), and no
connection limit. Output per site and period ``grid_w``, ``battery_w``, ``pv_w`` and ``soc`` (at the
end of the period), per site ``cost_eur`` (import × price − export × price), with the signs of
docs/definitions.md "Signs". Parsing and planning are pure; the CLI reads the file.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparcs.config.grid_rules import QUARTER_S
from sparcs.config.schema import DispatchConfig, error_lines
from sparcs.optimizer.dispatch import plan as plan_fleet
from sparcs.optimizer.fleet_arrays import CAP_PLAN_SHARE, fleet_arrays
from sparcs.optimizer.problem import BatteryProblem, DispatchPlan, DispatchProblem, SiteProblem

NO_CONNECTION_LIMIT_W = 1e9
"""A planned problem has no connection limit; the model takes this many W instead."""


class PlanFileError(ValueError):
    """A problem file that cannot be planned; ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2026-06-21T12:00:00+02:00")
    return value


Timestamp = Annotated[dt.datetime, AfterValidator(_aware)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatteryInput(_Strict):
    """A battery: energy in Wh, powers in W (AC side), efficiencies and SoC as fractions."""

    capacity_wh: float = Field(gt=0)
    charge_max_w: float = Field(ge=0)
    discharge_max_w: float = Field(ge=0)
    charge_efficiency: float = Field(gt=0, le=1)
    discharge_efficiency: float = Field(gt=0, le=1)
    soc_min: float = Field(ge=0, le=1)
    soc_max: float = Field(ge=0, le=1)
    soc_start: float = Field(ge=0, le=1)
    soc_end: float | None = Field(default=None, ge=0, le=1, description="the battery must end here")

    @model_validator(mode="after")
    def _order(self) -> BatteryInput:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min ({self.soc_min}) must be below soc_max ({self.soc_max})")
        for name in ("soc_start", "soc_end"):
            v = getattr(self, name)
            if v is not None and not self.soc_min <= v <= self.soc_max:
                raise ValueError(f"{name} ({v}) must lie within soc_min..soc_max ({self.soc_min}..{self.soc_max})")
        return self


class SiteInput(_Strict):
    """One site: per-period arrays, one value per entry of ``periods``."""

    id: str = Field(min_length=1, max_length=64)
    periods: list[Timestamp] = Field(min_length=1, max_length=672, description="quarter-hour starts with offset")
    pv_available_w: list[Annotated[float, Field(ge=0)]]
    load_w: list[Annotated[float, Field(ge=0)]]
    import_eur_per_kwh: list[Annotated[float, Field(ge=-10, le=10)]]
    export_eur_per_kwh: list[Annotated[float, Field(ge=-10, le=10)]]
    export_cap_w: float | None = Field(ge=0, description="most export at the meter, W; null = none")
    battery: BatteryInput | None
    pv_curtailable: bool = Field(
        default=True,
        description="false: PV runs at pv_available_w, unlimited; the export it puts over the cap is penalised",
    )

    @model_validator(mode="after")
    def _lengths(self) -> SiteInput:
        n = len(self.periods)
        bad = [
            f"{k} has {len(getattr(self, k))} values, periods has {n}"
            for k in ("pv_available_w", "load_w", "import_eur_per_kwh", "export_eur_per_kwh")
            if len(getattr(self, k)) != n
        ]
        if bad:
            raise ValueError("; ".join(bad))
        t = [p.timestamp() for p in self.periods]
        for i, (a, b) in enumerate(itertools.pairwise(t)):
            if b - a != QUARTER_S:
                raise ValueError(f"periods[{i + 1}] is not one quarter-hour after periods[{i}]")
        if t[0] % QUARTER_S:
            raise ValueError("periods[0] must start on a quarter-hour")
        return self


class PlanInput(_Strict):
    """The file: the sites to plan (ids unique, all on the same periods)."""

    sites: list[SiteInput] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _same_periods(self) -> PlanInput:
        seen: set[str] = set()
        first = [p.timestamp() for p in self.sites[0].periods]
        for i, s in enumerate(self.sites):
            if s.id in seen:
                raise ValueError(f"sites[{i}].id: '{s.id}' is used twice")
            seen.add(s.id)
            if [p.timestamp() for p in s.periods] != first:
                raise ValueError(f"sites[{i}].periods: every site must plan the periods of sites[0]")
        return self


def json_schema() -> dict[str, Any]:
    """The input's JSON Schema (docs/plan-problem.schema.json is this, written out)."""
    schema = PlanInput.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "SPARCS plan problem"
    return schema


def parse(data: Any) -> PlanInput:
    """Validate a parsed JSON document; raise PlanFileError with one line per problem, each naming its path."""
    if not isinstance(data, dict):
        raise PlanFileError([f"(file): expected an object with a 'sites' array, got {type(data).__name__}"])
    try:
        return PlanInput.model_validate(data)
    except ValidationError as exc:
        raise PlanFileError(error_lines(exc, data)) from None


def _site(s: SiteInput) -> SiteProblem:
    pv = np.array(s.pv_available_w, dtype=float)
    b = s.battery
    battery = None
    if b is not None:
        battery = BatteryProblem(
            capacity_wh=b.capacity_wh,
            max_charge_w=b.charge_max_w,
            max_discharge_w=b.discharge_max_w,
            eta_charge=b.charge_efficiency,
            eta_discharge=b.discharge_efficiency,
            soc_min=b.soc_min,
            soc_max=b.soc_max,
            soc_now=b.soc_start,
            soc_end=b.soc_end,
        )
    peak = max(float(pv.max()), 1.0)
    return SiteProblem(
        site_id=s.id,
        pv_available_w=pv,
        load_w=np.array(s.load_w, dtype=float),
        pv_rating_w=peak,
        pv_ceiling_w=peak,
        kwp=peak / 1000.0,
        battery=battery,
        import_eur_per_kwh=np.array(s.import_eur_per_kwh, dtype=float),
        export_eur_per_kwh=np.array(s.export_eur_per_kwh, dtype=float),
        # The controller plans CAP_PLAN_SHARE of a feed-in cap; here the cap given is the bound.
        feed_in_cap_w=None if s.export_cap_w is None else s.export_cap_w / CAP_PLAN_SHARE,
        connection_limit_w=NO_CONNECTION_LIMIT_W,
        pv_curtailable=s.pv_curtailable,
    )


def problem_of(inp: PlanInput, weights: DispatchConfig | None = None) -> DispatchProblem:
    """The dispatch problem of the file (prices as given; no day-ahead price is needed)."""
    n = len(inp.sites[0].periods)
    problem = DispatchProblem(
        start_s=inp.sites[0].periods[0].timestamp(),
        period_s=np.full(n, float(QUARTER_S)),
        price_eur_per_mwh=np.full(n, np.nan),
        sites=[_site(s) for s in inp.sites],
        weights=weights or DispatchConfig(),
    )
    fa = fleet_arrays(problem)
    errors = []
    for i, s in enumerate(inp.sites):
        if s.battery is not None and s.battery.soc_end is not None:
            reach = fa.energy_max_wh[i, -1] / s.battery.capacity_wh
            if abs(reach - s.battery.soc_end) > 1e-9:
                errors.append(
                    f"sites[{i}:{s.id}].battery.soc_end: {s.battery.soc_end} cannot be reached from soc_start "
                    f"{s.battery.soc_start} within the periods and power limits (closest: {reach:.4f})"
                )
    if errors:
        raise PlanFileError(errors)
    return problem


def site_costs_eur(problem: DispatchProblem, result: DispatchPlan) -> np.ndarray:
    """Per site: import × its price − export × its price over the plan, EUR (the energy bill)."""
    fa = fleet_arrays(problem)
    kwh = fa.dt_h[None, :] / 1000.0
    imp = np.maximum(result.grid_w, 0.0)
    exp = np.maximum(-result.grid_w, 0.0)
    return np.sum(kwh * (fa.import_eur_per_kwh * imp - fa.export_eur_per_kwh * exp), axis=1)


def plan_file(inp: PlanInput, weights: DispatchConfig | None = None) -> dict[str, Any]:
    """Plan the file's sites (optimizer.dispatch.plan: monolithic up to 20 sites) → the JSON output."""
    problem = problem_of(inp, weights)
    result = plan_fleet(problem)
    costs = site_costs_eur(problem, result)
    p = result.parts
    sites = []
    for i, s in enumerate(inp.sites):
        soc = result.soc[i, 1:]
        sites.append(
            {
                "id": s.id,
                "cost_eur": round(float(costs[i]), 6),
                "periods": [t.isoformat() for t in s.periods],
                "grid_w": [round(float(x), 3) for x in result.grid_w[i]],
                "battery_w": [round(float(x), 3) for x in result.battery_w[i]],
                "pv_w": [round(float(x), 3) for x in result.pv_w[i]],
                "soc": None if s.battery is None else [round(float(x), 6) for x in soc],
            }
        )
    return {
        "cost_eur": round(float(costs.sum()), 6),
        "objective_eur": round(result.objective_eur, 6),
        "objective_parts_eur": {
            "energy": round(p.energy, 6),
            "throughput": round(p.throughput, 6),
            "curtailment": round(p.curtailment, 6),
            "terminal_value": round(p.terminal_value, 6),
        },
        "soc_end_kwh": round(result.soc_end_kwh, 6),
        "method": result.reason,
        "sites": sites,
    }
