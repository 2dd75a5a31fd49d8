"""The twin's plots (PNG, matplotlib Agg): one column per strategy, side by side, shared axes.

- ``fleet_power.png``: fleet PV, load, battery (+ discharge) and meter (+ import) in kW;
- ``export.png``: fleet export at the meters against the operator's schedule and the sum of the
  feed-in caps (top), and the highest site's export as a share of its cap (bottom, 100 % = cap);
- ``soc.png``: fleet state of charge (stored energy / capacity, %).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from sparcs.config.grid_rules import QUARTER_S, feed_in_cap_w
from sparcs.config.schema import FleetConfig
from sparcs.optimizer.curves import BERLIN
from sparcs.twin.replay import StrategyRun

SERIES = (("pv_w", "PV"), ("load_w", "load"), ("battery_w", "battery (+dis)"), ("grid_w", "meter (+imp)"))


def _times(t_s: np.ndarray) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t, BERLIN) for t in t_s]


def _columns(n: int, rows: int = 1, height: float = 3.2):
    fig, axes = plt.subplots(rows, n, figsize=(4.2 * n, height * rows), sharex=True, sharey="row", squeeze=False)
    return fig, axes


def format_time_axis(ax, every_h: int = 6) -> None:
    """Berlin clock times on the x axis every ``every_h`` hours, and a light grid."""
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=BERLIN))
    ax.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, every_h), tz=BERLIN))
    ax.grid(alpha=0.3)


def _finish(fig, axes, path: Path) -> None:
    for ax in axes.flat:
        format_time_axis(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_fleet_power(ax, run: StrategyRun) -> None:
    """Fleet PV, load, battery (+ discharge) and meter (+ import), kW."""
    tr = run.trace
    x = _times(tr.times)
    for key, label in SERIES:
        ax.plot(x, tr.power(key).sum(axis=0) / 1000.0, label=label, lw=1)


def draw_fleet_export(ax, run: StrategyRun, cfg: FleetConfig) -> None:
    """Fleet export at the meters (kW) against the operator's schedule and the sum of the feed-in caps."""
    tr = run.trace
    ax.plot(_times(tr.times), -tr.power("grid_w").sum(axis=0) / 1000.0, lw=1, label="fleet export (meters)")
    if np.isfinite(run.schedule_w).any():
        q = tr.times[0] + QUARTER_S * np.arange(run.schedule_w.size + 1)
        kw = np.append(run.schedule_w, run.schedule_w[-1]) / 1000.0
        ax.step(_times(q), kw, where="post", lw=1.5, label="schedule")
    cap_sum = sum(c for s in cfg.sites if (c := feed_in_cap_w(s)) is not None) / 1000.0
    ax.axhline(cap_sum, color="red", lw=0.8, ls="--", label="sum of feed-in caps")


def draw_fleet_soc(ax, run: StrategyRun, cfg: FleetConfig) -> None:
    """Fleet state of charge: stored energy / capacity, %."""
    capacity_wh = sum(s.battery.capacity_kwh * 1000.0 for s in cfg.sites if s.battery)
    stored = run.trace.counter("stored_wh").sum(axis=0)
    ax.plot(_times(run.trace.times), stored / capacity_wh * 100.0 if capacity_wh else stored, lw=1)
    ax.set_ylim(0, 100)


def plot_fleet_power(runs: list[StrategyRun], path: Path) -> None:
    fig, axes = _columns(len(runs))
    for ax, run in zip(axes[0], runs, strict=True):
        draw_fleet_power(ax, run)
        ax.set_title(run.strategy)
    axes[0][0].set_ylabel("fleet power, kW")
    axes[0][0].legend(fontsize=7, loc="upper left")
    _finish(fig, axes, path)


def plot_export(runs: list[StrategyRun], cfg: FleetConfig, path: Path) -> None:
    fig, axes = _columns(len(runs), rows=2)
    caps = [feed_in_cap_w(s) for s in cfg.sites]
    for col, run in enumerate(runs):
        tr = run.trace
        x = _times(tr.times)
        top, bottom = axes[0][col], axes[1][col]
        draw_fleet_export(top, run, cfg)
        top.set_title(run.strategy)
        capped = np.array([c is not None for c in caps])
        if capped.any():
            cap_w = np.array([c for c in caps if c is not None])[:, None]
            share = -tr.power("grid_w")[capped] / cap_w * 100.0
            bottom.plot(x, share.max(axis=0), lw=1, label="highest site export / its cap")
        bottom.axhline(100.0, color="red", lw=0.8, ls="--", label="cap")
        bottom.axhline(100.0 * 1.01, color="red", lw=0.5, ls=":", label="cap + 1 %")
    axes[0][0].set_ylabel("kW")
    axes[1][0].set_ylabel("% of cap")
    axes[0][0].legend(fontsize=7, loc="upper left")
    axes[1][0].legend(fontsize=7, loc="lower left")
    _finish(fig, axes, path)


def plot_soc(runs: list[StrategyRun], cfg: FleetConfig, path: Path) -> None:
    fig, axes = _columns(len(runs))
    for ax, run in zip(axes[0], runs, strict=True):
        draw_fleet_soc(ax, run, cfg)
        ax.set_title(run.strategy)
    axes[0][0].set_ylabel("fleet SoC, %")
    _finish(fig, axes, path)


def write_plots(runs: list[StrategyRun], cfg: FleetConfig, out_dir: Path) -> list[str]:
    """Write every plot into ``out_dir``; returns the file names."""
    plot_fleet_power(runs, out_dir / "fleet_power.png")
    plot_export(runs, cfg, out_dir / "export.png")
    plot_soc(runs, cfg, out_dir / "soc.png")
    return ["fleet_power.png", "export.png", "soc.png"]
