"""Twin scenarios: the YAML that says what a replayed day looks like (weather, prices, commands, faults).

A scenario file names its Europe/Berlin ``date`` and changes the fleet file's ``simulation`` and
``market`` sections for that day; ``groups`` adds groups of sites to the fleet file's, for actions
addressed to a group (``group`` in a stage, §14a or pool-limit action); operator ``actions`` are
sent to the controller at their ``at`` time (as the API would); ``faults`` start on the simulated
devices at ``at`` and end at ``until``.
``overrides`` are what-ifs, each named in the report (:mod:`twin.overrides`); ``recorded_commands``
says whether a replay from history (:mod:`twin.history`) sends the operator commands it recorded.
Every timestamp carries a UTC offset and must lie within the replayed day. Relative CSV paths
resolve against the scenario file's folder. Unknown keys are errors naming their path.

Cadence (docs/definitions.md "Dispatch cadence"): the twin polls every ``dispatch.poll_interval_s``
and dispatches every ``dispatch.dispatch_interval_s`` of the fleet file, as production does, unless
the scenario sets ``poll_interval_s`` or ``dispatch_interval_s`` (:func:`cadence`). The poll
interval must divide the quarter-hour (900 s), so that the ground truth, sampled at every poll,
tiles the quarter-hours the KPIs are scored in; the dispatch interval must be a whole multiple of
the poll interval, so that its clock-aligned ticks fall on polls (it need not divide 900 s: an
hourly dispatch fires on the hour, as in production).

CSV formats: prices ``timestamp,eur_per_mwh`` (quarter-hourly day-ahead, EUR/MWh); clearness
``timestamp,clearness`` (0..1.2, multiplier of clear-sky PV); export schedule
``timestamp,export_kw`` (fleet export at the meters, kW ≥ 0, per quarter-hour start).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparcs.config.grid_rules import QUARTER_S
from sparcs.config.schema import (
    AwareDatetime,
    FaultMode,
    FaultSpec,
    FleetConfig,
    GridOperatorFees,
    GroupConfig,
    SimulationConfig,
    TariffConfig,
    error_lines,
    external_problems,
)
from sparcs.controller.commands import (
    Para14aRequest,
    PoolLimitRequest,
    SchedulePoint,
    ScheduleRequest,
    StageRequest,
)
from sparcs.optimizer.curves import BERLIN
from sparcs.simulators.weather import stream_key
from sparcs.twin.overrides import Override, OverrideError, apply_overrides


class ScenarioError(Exception):
    """A scenario that cannot be replayed; ``errors`` holds one line per problem, each naming its field."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Weather(_Strict):
    """The day's weather: a seeded cloud process (``cloudiness``) or a measured clearness series."""

    cloudiness: float | None = Field(default=None, ge=0, le=1, description="0 = clear sky, 1 = overcast")
    clearness_csv: Path | None = Field(default=None, description="CSV timestamp,clearness")
    load_noise: float | None = Field(default=None, ge=0, le=1, description="relative std-dev of load noise")

    @model_validator(mode="after")
    def _one_source(self) -> Weather:
        if self.cloudiness is not None and self.clearness_csv is not None:
            raise ValueError("give either cloudiness or clearness_csv, not both")
        return self


class BrokerOutage(_Strict):
    """The broker between the edges and the central stopped for ``duration_s`` of sim time (docs/edges.md)."""

    duration_s: float = Field(gt=0, le=86_400)


ACTION_KINDS = ("stage", "para14a", "pool_limit", "schedule", "schedule_csv", "broker_outage")


class Action(_Strict):
    """One action at ``at``: exactly one of stage, para14a, pool_limit, schedule, schedule_csv (operator
    commands) or broker_outage (a fleet behind edges only)."""

    at: AwareDatetime
    stage: StageRequest | None = None
    para14a: Para14aRequest | None = None
    pool_limit: PoolLimitRequest | None = None
    schedule: ScheduleRequest | None = None
    schedule_csv: Path | None = Field(default=None, description="CSV timestamp,export_kw")
    broker_outage: BrokerOutage | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        given = [k for k in ACTION_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an action needs exactly one of {', '.join(ACTION_KINDS)} (got {given or 'none'})")
        return self


class Fault(_Strict):
    """Devices failing from ``at`` until ``until`` (default: the end of the day).

    ``devices`` names them; ``share`` picks that fraction of all devices of the fleet instead, by a
    seeded hash (the same devices for every strategy and rerun).
    """

    at: AwareDatetime
    until: AwareDatetime | None = None
    mode: FaultMode = "offline"
    devices: list[str] | None = Field(default=None, min_length=1)
    share: float | None = Field(default=None, gt=0, le=1)
    delay_s: float = Field(default=2.0, gt=0, le=60, description="reply delay for mode 'slow'")

    @model_validator(mode="after")
    def _which(self) -> Fault:
        if (self.devices is None) == (self.share is None):
            raise ValueError("give either devices (a list of ids) or share (a fraction of all devices)")
        if self.until is not None and self.until <= self.at:
            raise ValueError("until must be after at")
        return self


class Scenario(_Strict):
    """One replayed day; see the module docstring."""

    date: dt.date = Field(description="the Europe/Berlin day this scenario describes")
    description: str = ""
    seed: int | None = Field(default=None, description="replaces simulation.seed of the fleet file")
    weather: Weather = Weather()
    prices_csv: Path | None = Field(default=None, description="CSV timestamp,eur_per_mwh, quarter-hourly")
    tariffs: dict[str, TariffConfig] = Field(default_factory=dict, description="added to the fleet's tariffs")
    grid_operators: dict[str, GridOperatorFees] = Field(
        default_factory=dict, description="added to the fleet's grid operators (§14a module 3 windows)"
    )
    site_tariffs: dict[str, str] = Field(
        default_factory=dict, description="site id (or '*' for every site) -> the name of a tariff it is on this day"
    )
    groups: list[GroupConfig] = Field(default_factory=list, description="groups added to the fleet file's")
    actions: list[Action] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list, description="what-ifs, each named in the report")
    recorded_commands: bool = Field(
        default=True, description="from history: replay the operator commands that were recorded (false: only actions)"
    )
    poll_interval_s: float | None = Field(
        default=None, gt=0, le=QUARTER_S, description="replaces dispatch.poll_interval_s; divides 900 s"
    )
    dispatch_interval_s: float | None = Field(
        default=None, gt=0, le=86_400, description="replaces dispatch.dispatch_interval_s; a multiple of the poll"
    )

    @model_validator(mode="after")
    def _cadence(self) -> Scenario:
        if self.poll_interval_s is not None and not _divides(self.poll_interval_s, QUARTER_S):
            raise ValueError(f"poll_interval_s: {self.poll_interval_s:g} s does not divide the quarter-hour (900 s)")
        return self


CadenceSource = Literal["config", "scenario"]


@dataclass(frozen=True)
class Cadence:
    """The intervals a replay polls and dispatches at (s), and where each came from."""

    poll_interval_s: float
    dispatch_interval_s: float
    poll_source: CadenceSource
    dispatch_source: CadenceSource

    def as_report(self) -> dict[str, float | str]:
        """The report's ``cadence`` entry (report.json)."""
        return {
            "poll_interval_s": self.poll_interval_s,
            "dispatch_interval_s": self.dispatch_interval_s,
            "poll_interval_source": self.poll_source,
            "dispatch_interval_source": self.dispatch_source,
        }


def _divides(part: float, whole: float) -> bool:
    """Whether ``whole`` is a whole multiple of ``part`` (to a millisecond)."""
    n = round(whole / part)
    return n >= 1 and abs(n * part - whole) < 1e-3


def cadence(cfg: FleetConfig, scenario: Scenario | None) -> Cadence:
    """The twin's cadence: the scenario's intervals where it sets them, else the fleet file's ``dispatch``.

    Raises ScenarioError naming the field (the scenario's or the fleet file's) when the poll interval
    does not divide 900 s or the dispatch interval is not a whole multiple of the poll interval.
    """
    s_poll = scenario.poll_interval_s if scenario is not None else None
    s_dispatch = scenario.dispatch_interval_s if scenario is not None else None
    c = Cadence(
        poll_interval_s=s_poll if s_poll is not None else cfg.dispatch.poll_interval_s,
        dispatch_interval_s=s_dispatch if s_dispatch is not None else cfg.dispatch.dispatch_interval_s,
        poll_source="scenario" if s_poll is not None else "config",
        dispatch_source="scenario" if s_dispatch is not None else "config",
    )
    where = {"scenario": "", "config": "dispatch."}
    poll_field = f"{where[c.poll_source]}poll_interval_s ({c.poll_source})"
    dispatch_field = f"{where[c.dispatch_source]}dispatch_interval_s ({c.dispatch_source})"
    problems = []
    if not _divides(c.poll_interval_s, QUARTER_S):
        problems.append(
            f"{poll_field}: {c.poll_interval_s:g} s does not divide the quarter-hour (900 s); the twin samples "
            "its ground truth at every poll. Set poll_interval_s in the scenario"
        )
    elif not _divides(c.poll_interval_s, c.dispatch_interval_s):
        problems.append(
            f"{dispatch_field}: {c.dispatch_interval_s:g} s is not a whole multiple of the poll interval "
            f"({c.poll_interval_s:g} s); set dispatch_interval_s in the scenario"
        )
    if problems:
        raise ScenarioError("scenario", problems)
    return c


def day_bounds(day: dt.date) -> tuple[float, float]:
    """Unix s of the Europe/Berlin day's start and end (23, 24 or 25 hours apart)."""
    start = dt.datetime.combine(day, dt.time(), BERLIN)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), BERLIN)
    return start.timestamp(), end.timestamp()


def _resolve(base: Path, p: Path | None) -> Path | None:
    return None if p is None or p.is_absolute() else base / p


def _times(s: Scenario) -> list[tuple[str, dt.datetime]]:
    out: list[tuple[str, dt.datetime]] = []
    for i, a in enumerate(s.actions):
        out.append((f"actions[{i}].at", a.at))
        for name in ("stage", "para14a", "pool_limit"):
            req = getattr(a, name)
            if req is not None:
                out.append((f"actions[{i}].{name}.expires_at", req.expires_at))
        if a.schedule is not None:
            out += [(f"actions[{i}].schedule.points[{j}].start", p.start) for j, p in enumerate(a.schedule.points)]
    for i, f in enumerate(s.faults):
        out.append((f"faults[{i}].at", f.at))
        if f.until is not None:
            out.append((f"faults[{i}].until", f.until))
    return out


def _check_csv(path: Path, columns: tuple[str, str], field: str, day: tuple[float, float]) -> list[str]:
    """Problems with a scenario CSV: missing file, wrong columns, values without offset, no value on the day."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        return [f"{field}: cannot read {path}: {exc.strerror}"]
    inside = 0
    for n, row in enumerate(rows, start=2):
        try:
            t = dt.datetime.fromisoformat(row[columns[0]])
            float(row[columns[1]])
        except (KeyError, TypeError, ValueError):
            return [f"{field}: {path}:{n}: needs the columns {','.join(columns)} with numbers"]
        if t.tzinfo is None:
            return [f"{field}: {path}:{n}: timestamp {row[columns[0]]} needs a UTC offset"]
        inside += day[0] <= t.timestamp() < day[1]
    if not inside:
        return [f"{field}: {path} has no row within the replayed day"]
    return []


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raise ScenarioError with one line per problem, naming its field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), [f"(file): not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ScenarioError(str(path), ["(file): expected a mapping with at least 'date'"])
    try:
        s = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(str(path), error_lines(exc, data)) from None
    base = path.resolve().parent
    s.weather.clearness_csv = _resolve(base, s.weather.clearness_csv) or s.weather.clearness_csv
    s.prices_csv = _resolve(base, s.prices_csv) or s.prices_csv
    for a in s.actions:
        a.schedule_csv = _resolve(base, a.schedule_csv) or a.schedule_csv
    day = day_bounds(s.date)
    problems = [
        f"{field}: {t.isoformat()} lies outside the scenario's day {s.date} (Europe/Berlin)"
        for field, t in _times(s)
        if not day[0] <= t.timestamp() <= day[1]
    ]
    if s.weather.clearness_csv is not None:
        problems += _check_csv(s.weather.clearness_csv, ("timestamp", "clearness"), "weather.clearness_csv", day)
    if s.prices_csv is not None:
        problems += _check_csv(s.prices_csv, ("timestamp", "eur_per_mwh"), "prices_csv", day)
    for i, a in enumerate(s.actions):
        if a.schedule_csv is not None:
            problems += _check_csv(a.schedule_csv, ("timestamp", "export_kw"), f"actions[{i}].schedule_csv", day)
    if problems:
        raise ScenarioError(str(path), problems)
    return s


def schedule_request(a: Action) -> ScheduleRequest | None:
    """The action's export schedule as the API's request (CSV kW → W), or None if it sends none."""
    if a.schedule is not None:
        return a.schedule
    if a.schedule_csv is None:
        return None
    with open(a.schedule_csv, newline="", encoding="utf-8") as f:
        points = [
            SchedulePoint(start=dt.datetime.fromisoformat(r["timestamp"]), export_w=float(r["export_kw"]) * 1000.0)
            for r in csv.DictReader(f)
        ]
    return ScheduleRequest(points=points)


def pick_share(device_ids: list[str], share: float, seed: int) -> list[str]:
    """``share`` of the devices (at least one), chosen by a seeded hash: stable across runs and strategies."""
    n = max(1, round(share * len(device_ids)))
    return sorted(device_ids, key=lambda d: stream_key(seed, "twin-fault", d))[:n]


def apply_scenario(cfg: FleetConfig, scenario: Scenario | None) -> FleetConfig:
    """A copy of the fleet config with the scenario's seed, weather, prices, faults and cadence in place.

    Raises ScenarioError when a fault names a device the fleet does not have, or the cadence does not
    fit the twin (:func:`cadence`).
    """
    out = cfg.model_copy(deep=True)
    if out.simulation is None:
        out.simulation = SimulationConfig()
    c = cadence(out, scenario)
    out.dispatch.poll_interval_s = c.poll_interval_s
    out.dispatch.dispatch_interval_s = c.dispatch_interval_s
    if scenario is None:
        return out
    out = _with_tariffs(out, scenario)
    sim = out.simulation
    assert sim is not None  # set above, kept by _with_tariffs
    if scenario.seed is not None:
        sim.seed = scenario.seed
    w = scenario.weather
    if w.cloudiness is not None:
        sim.weather.cloudiness = w.cloudiness
        sim.weather.irradiance_csv = None
    if w.clearness_csv is not None:
        sim.weather.irradiance_csv = w.clearness_csv
    if w.load_noise is not None:
        sim.load_noise = w.load_noise
    if scenario.prices_csv is not None:
        out.market.prices_csv = scenario.prices_csv
    all_ids = [d.id for s in out.sites for d in s.devices]
    known = set(all_ids)
    faults = list(sim.faults)
    problems = []
    for i, f in enumerate(scenario.faults):
        ids = f.devices if f.devices is not None else pick_share(all_ids, f.share or 0.0, sim.seed)
        for j, dev in enumerate(ids):
            if dev not in known:
                problems.append(f"faults[{i}].devices[{j}]: unknown device '{dev}' in this fleet")
                continue
            faults.append(FaultSpec(device=dev, mode=f.mode, start=f.at, end=f.until, delay_s=f.delay_s))
    if scenario.groups:
        groups = out.groups + scenario.groups
        problems += external_problems(groups, out.pool, out.relay_inputs, {s.id for s in out.sites})
        if not problems:
            out.groups = groups
    if problems:
        raise ScenarioError("scenario", problems)
    sim.faults = faults
    return out


def _with_tariffs(cfg: FleetConfig, scenario: Scenario) -> FleetConfig:
    """The fleet with the scenario's tariffs and grid operators added and its sites put on them,
    validated as a fleet file (an unknown site, tariff or grid operator is a ScenarioError)."""
    if not (scenario.tariffs or scenario.grid_operators or scenario.site_tariffs):
        return cfg
    data = cfg.model_dump(mode="python", by_alias=True)
    data["tariffs"] = {
        **data.get("tariffs", {}),
        **{k: v.model_dump(by_alias=True) for k, v in scenario.tariffs.items()},
    }
    data["grid_operators"] = {
        **data.get("grid_operators", {}),
        **{k: v.model_dump() for k, v in scenario.grid_operators.items()},
    }
    ids = {s["id"] for s in data["sites"]}
    problems = [
        f"site_tariffs.{sid}: unknown site in this fleet"
        for sid in scenario.site_tariffs
        if sid != "*" and sid not in ids
    ]
    for s in data["sites"]:
        name = scenario.site_tariffs.get(s["id"], scenario.site_tariffs.get("*"))
        if name is not None:
            s["tariff"] = name
    if problems:
        raise ScenarioError("scenario", problems)
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError("scenario", error_lines(exc, data)) from None


def drop_invisible_delays(cfg: FleetConfig) -> tuple[FleetConfig, list[str]]:
    """Slow-reply faults as the stepped clock sees them, and a note on each one changed.

    Simulated time stands still while a reply is delayed, and the twin's controller waits longer
    than the production timeout (see ``twin.replay.TWIN_MODBUS_TIMEOUT_S``). So a
    ``slow`` fault below the configured Modbus timeout, which changes nothing the controller sees,
    is dropped (it would only cost wall time), and one at or above it, which fails every read in
    production, becomes ``no_reply``.
    """
    if cfg.simulation is None:
        return cfg, []
    timeout = cfg.dispatch.modbus_timeout_s
    out = cfg.model_copy(deep=True)
    sim = out.simulation
    assert sim is not None  # a copy of cfg, which has one
    faults, notes = [], []
    for f in cfg.simulation.faults:
        if f.mode != "slow":
            faults.append(f)
        elif f.delay_s < timeout:
            notes.append(
                f"simulation.faults: '{f.device}' slow by {f.delay_s} s (below the {timeout} s Modbus timeout) is "
                "not replayed: on the stepped clock it changes nothing but wall time"
            )
        else:
            faults.append(f.model_copy(update={"mode": "no_reply"}))
            notes.append(
                f"simulation.faults: '{f.device}' slow by {f.delay_s} s (at least the {timeout} s Modbus timeout) "
                "is replayed as no_reply: every read fails, as in the field"
            )
    sim.faults = faults
    return out, notes


def apply_what_ifs(
    cfg: FleetConfig, scenario: Scenario | None, day: tuple[float, float]
) -> tuple[FleetConfig, Scenario | None, list[dict[str, object]]]:
    """The fleet and scenario with the scenario's ``overrides`` applied over ``day`` (Unix s): the
    changed fleet, the commands they send as actions at the day's start, and the report's
    ``overrides`` entries (:mod:`twin.overrides`). Raises ScenarioError naming the override's field."""
    if scenario is None or not scenario.overrides:
        return cfg, scenario, []
    try:
        out, sends, report = apply_overrides(cfg, scenario.overrides, day)
    except OverrideError as exc:
        raise ScenarioError("scenario", exc.errors) from None
    at = dt.datetime.fromtimestamp(day[0], dt.UTC)
    actions = [
        Action(at=at, stage=req) if isinstance(req, StageRequest) else Action(at=at, pool_limit=req) for _, req in sends
    ]
    return out, scenario.model_copy(update={"actions": [*actions, *scenario.actions]}), report
