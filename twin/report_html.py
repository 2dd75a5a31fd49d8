"""The twin's page a person can read: ``report.html`` beside report.json, one self-contained file.

- the run: period, fleet, scenario, the cadence (:func:`twin.report.cadence_text`);
- the goals' table (:func:`twin.report.goals`: goal with its figure, met / missed);
- the KPIs side by side (the summary's :data:`twin.report.SUMMARY_FIELDS`, then every other scalar
  a strategy's row carries);
- per strategy one figure (PNG, matplotlib Agg, embedded as a data URI) of four panels over the day:
  fleet power (PV, load, battery + discharge, meter + import; kW), fleet state of charge (stored
  energy / capacity, %), caps (fleet export at the meters against the sum of the feed-in caps and
  the operator's schedule, kW), and curtailment by cause (kW, stacked; :func:`curtailment_by_cause`);
- every other field of the report, rendered generically (nested tables), so fields this module
  does not know (a fidelity figure, what-if overrides) appear as they are.

Signs as in docs/definitions.md "Signs"; all figures are the simulators' ground truth.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.config.schema import FleetConfig
from sparcs.optimizer.curves import BERLIN
from sparcs.twin.plots import draw_fleet_export, draw_fleet_power, draw_fleet_soc, format_time_axis
from sparcs.twin.replay import StrategyRun
from sparcs.twin.report import SUMMARY_FIELDS, cadence_text, goals

CAUSES = ("stage", "negative price", "feed-in cap", "other")
"""Curtailment causes in the order they are attributed (the first that holds at a sample)."""
CAP_NEAR = 0.95
"""A site exporting at least this share of its feed-in cap is curtailed by the cap."""
SHOWN_ROWS = 60
"""Rows of a list shown in the generic tables; the rest are counted."""
HEADER_FIELDS = ("date", "start", "end", "scenario", "description", "fleet", "strategies", "plots", "html")


@dataclass(frozen=True)
class Curtailment:
    """Curtailed PV (available − produced, W ≥ 0) per cause (:data:`CAUSES`): ``(sites, samples)`` each."""

    by_cause: dict[str, np.ndarray]

    def fleet_kw(self, cause: str) -> np.ndarray:
        return self.by_cause[cause].sum(axis=0) / 1000.0

    def kwh(self, cause: str, step_s: float) -> float:
        """Energy of a cause over the run (kWh); sample 0 is the start, not an interval."""
        return float(self.by_cause[cause][:, 1:].sum() * step_s / 3.6e6)


def curtailment_by_cause(run: StrategyRun, cfg: FleetConfig, prices_eur_per_mwh: np.ndarray) -> Curtailment:
    """Split each sample's curtailed PV (available − produced, W ≥ 0) by the condition in force there.

    The first that holds: ``stage`` (a stage ceiling in force during the poll before the sample),
    ``negative price`` (the site is under the negative-price rule and the quarter-hour's price is
    below 0 EUR/MWh), ``feed-in cap`` (the site exports at least :data:`CAP_NEAR` of its feed-in
    cap), else ``other`` (the plan's choice, a pool limit, a device's floor). ``prices_eur_per_mwh``:
    one per quarter-hour of the run; sample k ≥ 1 ends an interval of quarter-hour (k − 1) // n.
    """
    trace = run.trace
    curtailed = np.maximum(trace.power("available_w") - trace.power("pv_w"), 0.0)
    sites = {s.id: s for s in cfg.sites}
    rule = np.array([sites[sid].grid.negative_price_rule for sid in trace.site_ids], dtype=bool)
    caps = [feed_in_cap_w(sites[sid]) for sid in trace.site_ids]
    cap_w = np.array([np.inf if c is None else c for c in caps])[:, None]
    n = curtailed.shape[1]
    quarter = np.clip((np.arange(n) - 1) // trace.samples_per_quarter(), 0, max(len(prices_eur_per_mwh) - 1, 0))
    negative_now = (
        np.asarray(prices_eur_per_mwh, dtype=float)[quarter] < 0 if len(prices_eur_per_mwh) else np.zeros(n, bool)
    )
    conditions = {
        "stage": np.isfinite(run.stage_ceiling_w),
        "negative price": rule[:, None] & negative_now[None, :],
        "feed-in cap": -trace.power("grid_w") >= CAP_NEAR * cap_w,
    }
    left = np.ones_like(curtailed, dtype=bool)
    out: dict[str, np.ndarray] = {}
    for cause in CAUSES:
        here = left & conditions[cause] if cause in conditions else left
        out[cause] = np.where(here, curtailed, 0.0)
        left &= ~here
    return Curtailment(out)


def strategy_figure(run: StrategyRun, cfg: FleetConfig, curtailment: Curtailment) -> str:
    """The strategy's four panels (see the module docstring) as a PNG data URI."""
    x = [dt.datetime.fromtimestamp(t, BERLIN) for t in run.trace.times]
    fig, (power, soc, caps, curt) = plt.subplots(4, 1, figsize=(9.0, 10.0), sharex=True)
    draw_fleet_power(power, run)
    power.set_ylabel("fleet power, kW")
    power.legend(fontsize=7, loc="upper left", ncol=4)
    draw_fleet_soc(soc, run, cfg)
    soc.set_ylabel("fleet SoC, %")
    draw_fleet_export(caps, run, cfg)
    caps.set_ylabel("export, kW")
    caps.legend(fontsize=7, loc="upper left")
    curt.stackplot(x, *[curtailment.fleet_kw(c) for c in CAUSES], labels=CAUSES, alpha=0.8)
    curt.set_ylabel("curtailed, kW")
    curt.legend(fontsize=7, loc="upper left", ncol=4)
    for ax in (power, soc, caps, curt):
        format_time_axis(ax, every_h=3)
    power.set_title(run.strategy)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _scalar(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def value_html(v: Any) -> str:
    """Any JSON value of the report as HTML: mappings and lists of mappings as tables, at most
    :data:`SHOWN_ROWS` rows a list (the rest counted), scalars as text."""
    if isinstance(v, dict):
        if not v:
            return "–"
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{value_html(x)}</td></tr>" for k, x in v.items())
        return f"<table>{rows}</table>"
    if isinstance(v, list):
        if not v:
            return "–"
        more = f"<p>… {len(v) - SHOWN_ROWS} more</p>" if len(v) > SHOWN_ROWS else ""
        shown = v[:SHOWN_ROWS]
        if all(isinstance(x, dict) for x in shown):
            keys = list(dict.fromkeys(k for x in shown for k in x))
            head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
            body = "".join("<tr>" + "".join(f"<td>{value_html(x.get(k))}</td>" for k in keys) + "</tr>" for x in shown)
            return f"<table><tr>{head}</tr>{body}</table>{more}"
        return ", ".join(value_html(x) for x in shown) + more
    return _scalar(v)


def _goals_table(report: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td>{html.escape(g.text)}</td><td class="{"met" if g.met else "missed"}">'
        f"{'met' if g.met else 'missed'}</td></tr>"
        + (f'<tr><td colspan="2" class="note">{html.escape(g.note)}</td></tr>' if g.note else "")
        for g in goals(report)
    )
    return f"<table><tr><th>goal (measured)</th><th></th></tr>{rows}</table>"


def _kpi_table(strategies: list[dict[str, Any]], curtailed: dict[str, dict[str, float]]) -> str:
    names = [s["strategy"] for s in strategies]
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    rows = []
    for key, label, fmt in SUMMARY_FIELDS:
        cells = "".join(
            f"<td>{'–' if s.get(key) is None else html.escape(fmt.format(s[key]))}</td>" for s in strategies
        )
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    for cause in CAUSES:
        cells = "".join(f"<td>{curtailed[n][cause]:.1f}</td>" for n in names)
        rows.append(f"<tr><th>curtailed by {html.escape(cause)}, kWh</th>{cells}</tr>")
    known = {"strategy", *(k for k, _, _ in SUMMARY_FIELDS)}
    for key in dict.fromkeys(k for s in strategies for k in s if k not in known):
        cells = "".join(f"<td>{value_html(s.get(key))}</td>" for s in strategies)
        rows.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td.met { color: #176317; font-weight: bold; } td.missed { color: #a11; font-weight: bold; }
td.note { font-size: 0.85em; color: #555; } img { max-width: 100%; }
"""


def report_html(report: dict[str, Any], runs: list[StrategyRun], cfg: FleetConfig, prices: np.ndarray) -> str:
    """The page (see the module docstring) of ``report`` (:func:`twin.run.build_report`) and its ``runs``.

    ``cfg``: the fleet config the runs replayed (scenario applied); ``prices``: EUR/MWh per
    quarter-hour of the run (:func:`twin.kpi.day_prices`).
    """
    split = {r.strategy: curtailment_by_cause(r, cfg, prices) for r in runs}
    curtailed = {r.strategy: {c: split[r.strategy].kwh(c, r.trace.step_s) for c in CAUSES} for r in runs}
    title = (
        f"Digital twin: {report['start']} – {report['end']} "
        f"({report['fleet']['sites']} sites, {report['fleet']['devices']} devices)"
    )
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Scenario: {html.escape(report.get('scenario') or 'none (the fleet file as it is)')}"
        + (f" — {html.escape(report['description'])}" if report.get("description") else "")
        + "</p>",
        f"<p>Each strategy replayed {report['minutes']} simulated minutes ({report['quarter_hours']} quarter-hours), "
        f"{html.escape(cadence_text(report))}, with a fresh simulated fleet over Modbus TCP on loopback. All figures "
        "come from the simulators' ground truth, sampled at every poll.</p>",
        "<h2>Goals</h2>",
        _goals_table(report),
        "<h2>Strategies</h2>",
        _kpi_table(report["strategies"], curtailed),
        "<p>Curtailment by cause: the first condition in force at a sample of stage, negative price "
        f"(rule sites), feed-in cap (export ≥ {CAP_NEAR:.0%} of the cap), else other (the plan, a pool limit, "
        "a device's floor).</p>",
    ]
    for r in runs:
        parts += [
            f"<h2>{html.escape(r.strategy)}</h2>",
            f"<img alt='{html.escape(r.strategy)}: fleet power, SoC, caps, curtailment by cause' "
            f"src='{strategy_figure(r, cfg, split[r.strategy])}'>",
        ]
    others = {k: v for k, v in report.items() if k not in HEADER_FIELDS}
    parts += ["<h2>Report fields</h2>", value_html(others), "</body></html>"]
    return "\n".join(parts) + "\n"
