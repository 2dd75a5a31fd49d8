"""`sparcs twin`: replay a day with each strategy, then write report.json, the plots, summary.md and report.html.

The replay follows the fleet file's poll and dispatch intervals unless the scenario sets others
(docs/definitions.md "Dispatch cadence", :func:`twin.scenario.cadence`); the report states the
cadence it used and where each interval came from (``cadence`` in report.json, the first paragraph
of summary.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue as queue_mod
import signal
import threading
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sparcs.config.schema import FleetConfig
from sparcs.optimizer.curves import BERLIN
from sparcs.twin.fidelity import fidelity, figures
from sparcs.twin.history import (
    HistoryError,
    HistorySource,
    RecordedDay,
    history_config,
    history_scenario,
    load_recorded,
    recorded_trace,
)
from sparcs.twin.kpi import captured, day_prices, energy_balance, quarter_starts, strategy_kpis
from sparcs.twin.plots import write_plots
from sparcs.twin.replay import StrategyRun, replay
from sparcs.twin.report import summary_markdown, write_json
from sparcs.twin.report_html import report_html
from sparcs.twin.scenario import (
    Scenario,
    ScenarioError,
    apply_scenario,
    apply_what_ifs,
    cadence,
    day_bounds,
    drop_invisible_delays,
    load_scenario,
)
from sparcs.twin.strategies import STRATEGIES

DEFAULT_STRATEGIES = ("optimizer", "self-consumption", "none")


class TwinError(Exception):
    """A twin run a user asked for that cannot be done; ``lines`` name the option or field and what to do."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise TwinError([f"--date: '{text}' is not a date; give YYYY-MM-DD (a Europe/Berlin day)"]) from None


def check_strategies(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise TwinError([f"--strategy: unknown '{n}'; choose from {', '.join(STRATEGIES)}" for n in unknown])
    return list(dict.fromkeys(names)) or list(DEFAULT_STRATEGIES)


def prepare(
    cfg: FleetConfig, day: dt.date, scenario_path: Path | None
) -> tuple[FleetConfig, Scenario | None, list[str]]:
    """The fleet config with the scenario applied (after checking it fits the day and fleet), and notes."""
    scenario = None
    try:
        if scenario_path is not None:
            scenario = load_scenario(scenario_path)
            if scenario.date != day:
                raise TwinError(
                    [
                        f"{scenario_path}: date: the scenario describes {scenario.date}, but --date is {day}; "
                        "replay its day or change its date"
                    ]
                )
        applied, notes = drop_invisible_delays(apply_scenario(cfg, scenario))
        return applied, scenario, notes
    except ScenarioError as exc:
        raise TwinError([f"{scenario_path}: {line}" for line in exc.errors]) from None


def _exit_with_parent() -> None:
    """End this process as soon as the process that started it is gone. A `sparcs twin` killed with -9
    cannot stop its replay processes, which would replay the rest of their day on the machine's
    cores; a replay process's own fleet and solver processes end when their pipes close."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="sparcs-twin-parent-watch", daemon=True).start()


def _replay_worker(
    cfg: FleetConfig, strategy: str, bounds: tuple[float, float], scenario: Scenario | None, data_dir: Path, queue
) -> None:
    """One strategy's replay in a process of its own; reports ticks, then the run or an error, on ``queue``."""
    _exit_with_parent()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        run = asyncio.run(replay(cfg, strategy, bounds, scenario, data_dir, lambda t: queue.put(("tick", strategy, t))))
        queue.put(("done", strategy, run))
    except ScenarioError as exc:
        queue.put(("error", strategy, [f"scenario: {line}" for line in exc.errors]))
    except Exception as exc:  # handed to the parent, which reports it for this strategy
        queue.put(("error", strategy, [f"strategy {strategy}: replay failed: {type(exc).__name__}: {exc}"]))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the replay processes are stopped instead of orphaned."""
    raise SystemExit(128 + signum)


def run_all(
    cfg: FleetConfig,
    bounds: tuple[float, float],
    scenario: Scenario | None,
    strategies: list[str],
    out_dir: Path,
    *,
    jobs: int = 1,
    progress: bool = True,
) -> list[StrategyRun]:
    """Replay each strategy in a fresh process (``jobs`` at a time), with a progress bar per strategy."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    minutes = round((bounds[1] - bounds[0]) / 60.0)  # the bar counts simulated minutes, whatever the cadence
    waiting = list(strategies)
    running: dict[str, mp.process.BaseProcess] = {}
    runs: dict[str, StrategyRun] = {}
    errors: list[str] = []
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("sim min"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    ) as bar:
        tasks = {s: bar.add_task(s, total=minutes) for s in strategies}
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    s = waiting.pop(0)
                    args = (cfg, s, bounds, scenario, out_dir / "history" / s, queue)
                    running[s] = ctx.Process(target=_replay_worker, args=args, name=f"sparcs-twin-{s}")
                    running[s].start()
                try:
                    kind, s, payload = queue.get(timeout=5.0)
                except queue_mod.Empty:
                    for s, proc in list(running.items()):
                        if not proc.is_alive():  # died without a word (killed, out of memory)
                            running.pop(s)
                            errors.append(f"strategy {s}: replay process ended with code {proc.exitcode}")
                    continue
                if kind == "tick":
                    clock = dt.datetime.fromtimestamp(payload, BERLIN).strftime("%H:%M")
                    done = min(minutes, int((payload - bounds[0]) // 60.0))
                    bar.update(tasks[s], completed=done, description=f"{s} {clock}")
                    continue
                running.pop(s).join()
                if kind == "done":
                    runs[s] = payload
                else:
                    errors += payload
        finally:
            signal.signal(signal.SIGTERM, previous)
            for proc in running.values():
                proc.kill()  # its fleet and solver processes end when their pipes close
                proc.join()
    if errors:
        raise TwinError(errors)
    return [runs[s] for s in strategies]


def build_report(
    runs: list[StrategyRun],
    cfg: FleetConfig,
    bounds: tuple[float, float],
    scenario_path: Path | None,
    scenario: Scenario | None,
) -> dict[str, Any]:
    """The report of runs over ``bounds`` (Unix s; a whole day for `sparcs twin`), without plots.

    ``cfg`` has the scenario applied; ``cadence`` states the intervals the runs used and their source.
    """
    used = cadence(cfg, scenario)
    for run in runs:
        if (run.poll_interval_s, run.dispatch_interval_s) != (used.poll_interval_s, used.dispatch_interval_s):
            raise ValueError(
                f"{run.strategy} ran at {run.poll_interval_s:g}/{run.dispatch_interval_s:g} s, the config says "
                f"{used.poll_interval_s:g}/{used.dispatch_interval_s:g} s"
            )
    quarters = quarter_starts(bounds)
    prices = day_prices(cfg, quarters)
    rows = [strategy_kpis(r, cfg, prices) for r in runs]
    share = captured({r["strategy"]: r["cost_eur"] for r in rows})
    for r in rows:
        r["captured"] = None if share is None else share[r["strategy"]]
    balances = {r.strategy: energy_balance(r.trace, cfg) for r in runs}
    return {
        "date": dt.datetime.fromtimestamp(bounds[0], BERLIN).date().isoformat(),
        "start": dt.datetime.fromtimestamp(bounds[0], BERLIN).isoformat(),
        "end": dt.datetime.fromtimestamp(bounds[1], BERLIN).isoformat(),
        "scenario": None if scenario_path is None else str(scenario_path),
        "description": scenario.description if scenario else "",
        "fleet": {"sites": len(cfg.sites), "devices": sum(len(s.devices) for s in cfg.sites)},
        "minutes": round((bounds[1] - bounds[0]) / 60.0),
        "quarter_hours": len(quarters),
        "cadence": used.as_report(),
        "polls": round((bounds[1] - bounds[0]) / used.poll_interval_s),
        "strategies": rows,
        "captured": share,
        "balance": {
            "tolerance": 0.005,
            "worst_residual": {
                s: max(max(abs(b["residual"]), abs(b["storage_residual"])) for b in sites)
                for s, sites in balances.items()
            },
            "sites": balances,
        },
        "plots": [],
    }


def run_twin(
    cfg: FleetConfig,
    day: dt.date,
    scenario_path: Path | None,
    strategies: list[str],
    out_dir: Path,
    *,
    jobs: int = 1,
    progress: bool = True,
    history: HistorySource | None = None,
) -> dict[str, Any]:
    """Replay ``day`` once per strategy (``jobs`` at a time) and write report.json, the plots, summary.md and
    report.html.

    With ``history`` the simulators serve the recorded day (:mod:`twin.history`) over the span it
    covers, the recorded strategy is among those replayed, and the report gains ``history`` and
    ``fidelity`` (:mod:`twin.fidelity`). The scenario's ``overrides`` are listed under ``overrides``."""
    strategies = check_strategies(strategies)
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = day_bounds(day)
    recorded: RecordedDay | None = None
    if history is not None:
        if history.strategy not in strategies:
            strategies = [history.strategy, *strategies]
        try:
            recorded = load_recorded(history, cfg, bounds, out_dir / "recorded")
            cfg = history_config(cfg, recorded, out_dir / "recorded")
        except HistoryError as exc:
            raise TwinError(exc.lines) from None
        bounds = recorded.bounds
    recorded_cfg = cfg
    applied, scenario, notes = prepare(cfg, day, scenario_path)
    if recorded is not None:
        scenario = history_scenario(scenario, recorded, day)
        notes = [*notes, *recorded.notes]
    try:
        applied, scenario, what_ifs = apply_what_ifs(applied, scenario, bounds)
    except ScenarioError as exc:
        raise TwinError([f"{scenario_path}: {line}" for line in exc.errors]) from None
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    runs = run_all(applied, bounds, scenario, strategies, out_dir, jobs=jobs, progress=progress)
    extra: dict[str, Any] = {"overrides": what_ifs}
    if recorded is not None and history is not None:
        extra["history"] = recorded.as_report()
        run = next(r for r in runs if r.strategy == history.strategy)
        extra["fidelity"] = history_fidelity(recorded, recorded_cfg, run, applied, scenario_path is None)
    return write_outputs(runs, applied, bounds, scenario_path, scenario, out_dir, notes, jobs=jobs, extra=extra)


def history_fidelity(
    recorded: RecordedDay, recorded_cfg: FleetConfig, run: StrategyRun, cfg: FleetConfig, calibration: bool
) -> dict[str, Any]:
    """The report's ``fidelity``: the recorded day's figures (its fleet file) against the replay's (``cfg``,
    with any what-ifs), at the recorded samples."""
    quarters = quarter_starts(recorded.bounds)
    trace = recorded_trace(recorded, recorded_cfg)
    times = trace.times
    rec = figures(trace, times, recorded_cfg, recorded.bounds, day_prices(recorded_cfg, quarters))
    rep = figures(run.trace, times, cfg, recorded.bounds, day_prices(cfg, quarters))
    return fidelity(rec, rep, run.strategy, calibration)


def write_outputs(
    runs: list[StrategyRun],
    cfg: FleetConfig,
    bounds: tuple[float, float],
    scenario_path: Path | None,
    scenario: Scenario | None,
    out_dir: Path,
    notes: list[str] | None = None,
    *,
    jobs: int = 1,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.json, the plots, summary.md and report.html into ``out_dir``; returns the report.

    ``jobs``: how many strategies were replayed at a time (their wall times share the machine);
    ``extra``: more fields of report.json (``overrides``, ``history``, ``fidelity``)."""
    report = build_report(runs, cfg, bounds, scenario_path, scenario)
    report["jobs"] = jobs
    report["notes"] = notes or []
    report.update(extra or {})
    report["plots"] = write_plots(runs, cfg, out_dir)
    report["html"] = "report.html"
    write_json(report, out_dir / "report.json")
    (out_dir / "summary.md").write_text(summary_markdown(report), encoding="utf-8")
    page = report_html(report, runs, cfg, day_prices(cfg, quarter_starts(bounds)))
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    return report
