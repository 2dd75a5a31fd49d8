"""The twin's outputs: ``report.json`` (machine-readable, stable field names) and ``summary.md``.

Both state the cadence of the replay: ``cadence`` in report.json holds ``poll_interval_s``,
``dispatch_interval_s`` and where each came from (``config`` or ``scenario``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY_FIELDS = (
    ("cost_eur", "cost, EUR", "{:.2f}"),
    ("captured", "captured", "{:.3f}"),
    ("import_kwh", "import, kWh", "{:.1f}"),
    ("export_kwh", "export, kWh", "{:.1f}"),
    ("self_consumption", "self-consumption", "{:.1%}"),
    ("self_sufficiency", "self-sufficiency", "{:.1%}"),
    ("curtailed_kwh", "curtailed, kWh", "{:.1f}"),
    ("tracking_mae_kw", "schedule MAE, kW", "{:.2f}"),
    ("cap_violations", "cap violations", "{}"),
    ("stage_violations", "stage violations", "{}"),
    ("negative_price_violations", "negative-price export (rule sites), site-quarter-hours", "{}"),
    ("negative_price_export_kwh", "export at negative prices (rule sites), kWh", "{:.1f}"),
    ("fallbacks", "fallback plans", "{}"),
    ("solve_s_p50", "plan time p50, s", "{:.2f}"),
    ("solve_s_p99", "plan time p99, s", "{:.2f}"),
    ("soc_end_kwh", "stored at end, kWh", "{:.1f}"),
    ("replay_wall_s", "replay wall time, s", "{:.0f}"),
    ("replay_cpu_s", "controller process CPU, s", "{:.0f}"),
)


def _cell(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")


REPLAY_GOAL_S = 300.0
CAPTURED_GOAL = 0.97
CAPTURED_LEAD_GOAL = 0.10


@dataclass(frozen=True)
class Goal:
    """One goal the report can judge: the goal with its measured figure (``text``), and whether it was met."""

    text: str
    met: bool
    note: str = ""  # said once after the goal (the summary's indented line)


GOALS_NOTE = (
    "both goals are set for the June scenario with negative midday prices; cost alone ignores an "
    "operator's export schedule, which the optimizer pays to track and self-consumption ignores"
)


def goals(report: dict[str, Any]) -> list[Goal]:
    """The twin's goals that this report can judge, each with the measured figure and met / missed."""
    rows = {s["strategy"]: s for s in report["strategies"]}
    out = []
    jobs = report.get("jobs", 1)
    at_once = f"; {jobs} strategies replayed at a time on this machine" if jobs > 1 else ""
    for name, r in rows.items():
        out.append(
            Goal(
                f"{name}: replay {r['replay_wall_s']:.0f} s wall (goal ≤ {REPLAY_GOAL_S:.0f} s per strategy for the "
                f"demo day{at_once})",
                r["replay_wall_s"] <= REPLAY_GOAL_S,
            )
        )
    cap = report.get("captured") or {}
    if cap.get("optimizer") is not None:
        captured_goals = [
            Goal(f"captured(optimizer) = {cap['optimizer']:.3f} ≥ {CAPTURED_GOAL}", cap["optimizer"] >= CAPTURED_GOAL)
        ]
        if cap.get("self-consumption") is not None:
            lead = cap["optimizer"] - cap["self-consumption"]
            captured_goals.append(
                Goal(
                    f"captured(optimizer) − captured(self-consumption) = {lead:.3f} ≥ {CAPTURED_LEAD_GOAL}",
                    lead >= CAPTURED_LEAD_GOAL,
                )
            )
        last = captured_goals.pop()
        out += [*captured_goals, Goal(last.text, last.met, GOALS_NOTE)]
    for name, r in rows.items():
        if name != "none":
            out.append(Goal(f"{name}: {r['cap_violations']} cap violations (goal 0)", r["cap_violations"] == 0))
    return out


def goal_lines(report: dict[str, Any]) -> list[str]:
    """The goals of :func:`goals` as the summary's markdown section."""
    out = ["## Goals", ""]
    for g in goals(report):
        out.append(f"- {g.text}: {'met' if g.met else '**missed**'}")
        if g.note:
            out.append(f"  ({g.note})")
    return [*out, ""]


def cadence_text(report: dict[str, Any]) -> str:
    """One sentence on the cadence of the replay and where its intervals came from."""
    c = report.get("cadence")
    if c is None:
        return "polling and dispatching at an unreported cadence"

    def source(key: str) -> str:
        return "the scenario" if c[f"{key}_source"] == "scenario" else "the fleet file's dispatch section"

    return (
        f"polling every {c['poll_interval_s']:g} s ({source('poll_interval')}) and dispatching every "
        f"{c['dispatch_interval_s']:g} s aligned to the clock ({source('dispatch_interval')}), at start-up and "
        "after each operator command"
    )


def history_lines(report: dict[str, Any]) -> list[str]:
    """The what-ifs replayed and, for a day from history, its source and the fidelity figure (docs/twin.md)."""
    out = []
    if report.get("overrides"):
        out += ["", "What-ifs:", ""] + [f"- {o['name']} ({o['kind']} = {o['value']})" for o in report["overrides"]]
    h, f = report.get("history"), report.get("fidelity")
    if h is not None and f is not None:
        what = "calibration" if f["calibration"] else "the recorded day against this replay with its what-ifs"
        out += [
            "",
            f"From history: {h['source']}, {h['start']} – {h['end']}; "
            f"{h['available_pv_estimated_share']:.1%} of the available PV estimated (curtailed samples).",
            f"Fidelity of {f['strategy']} ({what}): worst error {f['worst_error']:.2%} "
            f"(bound {f['bound']:.0%}): {'met' if f['met'] else '**missed**'}.",
            "",
            "| figure | recorded | replayed | error |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {k} | {v['recorded']:.2f} | {v['replayed']:.2f} | {v['error']:.2%} |" for k, v in f["figures"].items()
        ]
    return out


def summary_markdown(report: dict[str, Any]) -> str:
    """A page a person can read: what was replayed, the KPIs side by side, the checks, the plots."""
    strategies = report["strategies"]
    names = [s["strategy"] for s in strategies]
    lines = [
        f"# Digital twin: {report['start']} – {report['end']} "
        f"({report['fleet']['sites']} sites, {report['fleet']['devices']} devices)",
        "",
        f"Scenario: {report['scenario'] or 'none (the fleet file as it is)'}"
        + (f" — {report['description']}" if report.get("description") else ""),
        "",
        f"Each strategy replayed {report['minutes']} simulated minutes ({report['quarter_hours']} quarter-hours), "
        f"{cadence_text(report)}, with a fresh simulated fleet over Modbus TCP on loopback. All figures come "
        "from the simulators' ground truth, sampled at every poll. Cost = import − export revenue − change in "
        "stored-energy value.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, fmt in SUMMARY_FIELDS:
        lines.append(f"| {label} | " + " | ".join(_cell(s.get(key), fmt) for s in strategies) + " |")
    lines.append("")
    cap = report.get("captured")
    if cap is not None:
        lines.append(
            "captured(s) = (cost_none − cost_s) / (cost_none − cost_perfect_foresight): the share of the "
            "achievable saving a strategy realises."
        )
        if cap.get("optimizer") is not None and cap.get("self-consumption") is not None:
            lines.append(
                f"Optimizer captures {cap['optimizer']:.3f}, self-consumption {cap['self-consumption']:.3f} "
                f"(difference {cap['optimizer'] - cap['self-consumption']:+.3f})."
            )
        lines.append("")
    lines += goal_lines(report)
    controlled = [s for s in strategies if s["strategy"] != "none"]
    bad = [f"{s['strategy']} ({s['cap_violations']})" for s in controlled if s["cap_violations"]]
    poll = (report.get("cadence") or {}).get("poll_interval_s")
    every = f" (one every {poll:g} s)" if poll is not None else ""
    lines.append(
        "Cap violations of controlled strategies: " + (", ".join(bad) if bad else "none") + " (site-quarter-hours "
        f"with a meter sample{every} above its cap + 1 %)."
    )
    worst = max(report["balance"]["worst_residual"].values(), default=0.0)
    lines.append(
        f"Energy balance per site and day (PV + import + discharge = load + export + charge + losses): worst "
        f"residual {worst:.4%} (tolerance 0.5 %)."
    )
    lines += history_lines(report)
    if report.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
