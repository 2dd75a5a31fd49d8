"""The twin replays the controller's own history: two recorded hours reproduced within 2 %, and a what-if.

The recording is the production controller on the twin's stepped clock (:func:`twin.replay.replay`,
the factory's controller against the simulated fleet over Modbus TCP), which leaves its store as
`sparcs run` would. `sparcs twin --history` then builds each site's day from that store alone and
replays it with the strategy that ran.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import yaml

from sparcs.config.schema import CONFIG_DIR, validate_config
from sparcs.controller.store import Store
from sparcs.twin.history import HistorySource, SiteDay, estimate_clearness, read_history
from sparcs.twin.replay import replay
from sparcs.twin.run import TwinError, parse_day, run_twin
from sparcs.twin.scenario import Scenario, apply_scenario, day_bounds
from tests.controller.conftest import small_fleet_data
from tests.twin.test_cli import twin
from tests.twin.test_replay import DAY, FAULTY, at, ts

pytestmark = pytest.mark.timeout(600)

RECORDED = Scenario.model_validate(
    {
        "date": DAY,
        "weather": {"cloudiness": 0.3},
        "prices_csv": str(CONFIG_DIR / "scenarios" / "prices_2026-05-12.csv"),
        "actions": [{"at": at("11:20"), "stage": {"stage": "K2", "start": at("11:30"), "expires_at": at("12:00")}}],
        "faults": [{"at": at("12:10"), "until": at("12:25"), "devices": [FAULTY], "mode": "offline"}],
        "poll_interval_s": 60,
        "dispatch_interval_s": 900,
    }
)
BOUNDS = (ts("11:00"), ts("13:00"))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two hours of the optimizer on three sites, recorded in the controller's store; the fleet file it ran."""
    folder = tmp_path_factory.mktemp("recorded")
    cfg = apply_scenario(validate_config(small_fleet_data(3)), RECORDED)
    run = asyncio.run(replay(cfg, "optimizer", BOUNDS, RECORDED, folder / "data"))
    return {"cfg": cfg, "data": folder / "data", "run": run}


@pytest.fixture(scope="module")
def from_history(recorded, tmp_path_factory):
    out = tmp_path_factory.mktemp("twin")
    source = HistorySource(data_dir=recorded["data"], strategy="optimizer")
    run_twin(recorded["cfg"], parse_day(DAY), None, ["optimizer"], out, progress=False, history=source)
    return json.loads((out / "report.json").read_text())


def test_the_history_is_read_from_the_store_alone(recorded):
    store = Store(data_dir=recorded["data"], migrate_schema=False)
    try:
        day = read_history(store, recorded["cfg"], day_bounds(parse_day(DAY)))
    finally:
        store.close()
    assert day.bounds == BOUNDS  # the day cut to the quarter-hours recorded
    assert [a.stage.stage for a in day.actions if a.stage is not None] == ["K2"]
    assert [(f.device, f.mode) for f in day.faults] == [(FAULTY, "offline")]
    assert len(day.prices) == 8 and all(p is not None for _, p in day.prices)
    # The recorded load is the meter balance; the simulators' true load is what it should find.
    truth = recorded["run"].trace
    for i, sid in enumerate(truth.site_ids):
        true_load = truth.power("load_w")[i, :-1]
        assert abs(day.sites[sid].load_w.sum() - true_load.sum()) / true_load.sum() < 0.01
        assert abs(day.sites[sid].soc[0] - truth.counter("stored_wh")[i, 0] / 1000 / 10) < 1  # a fraction, stored


def test_a_recorded_day_replays_within_two_percent(from_history):
    fid = from_history["fidelity"]
    assert fid["strategy"] == "optimizer" and fid["calibration"] is True
    assert fid["figures"]["import_kwh"]["recorded"] > 0 and fid["figures"]["battery_throughput_kwh"]["recorded"] > 0
    assert fid["met"], fid["figures"]
    assert from_history["history"]["sites"] == 3
    assert from_history["quarter_hours"] == 8


def test_a_what_if_changes_the_figures_the_expected_way(recorded, from_history, tmp_path):
    scenario = tmp_path / "what-if.yaml"
    scenario.write_text(
        f"date: {DAY}\noverrides:\n  - name: export at most 20 % of the rating\n    export_limit_pct: 20\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(recorded["cfg"].model_dump(mode="json", by_alias=True)), encoding="utf-8")
    args = ["--config", str(fleet), "--date", DAY, "--history", str(recorded["data"]), "--scenario", str(scenario)]
    result = twin(*args, "--strategy", "optimizer", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    summary = (out / "summary.md").read_text()
    assert "What-ifs:" in summary and "Fidelity of optimizer" in summary
    assert report["overrides"][0]["name"] == "export at most 20 % of the rating"
    base, what_if = from_history["fidelity"]["figures"], report["fidelity"]["figures"]
    assert report["fidelity"]["calibration"] is False
    assert what_if["export_kwh"]["replayed"] < 0.9 * base["export_kwh"]["replayed"]
    assert what_if["curtailed_kwh"]["replayed"] > base["curtailed_kwh"]["replayed"]
    assert what_if["export_kwh"]["recorded"] == pytest.approx(base["export_kwh"]["recorded"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--history", "{tmp}", "--store", "sqlite:///x.db"], "--history and --store: give one of them"),
        (["--history", "{tmp}"], "--history: no store in"),
        (["--history", "{tmp}", "--recorded-strategy", "greedy"], "--recorded-strategy: unknown 'greedy'"),
    ],
)
def test_history_mistakes_exit_2_naming_the_option(tmp_path, extra, message):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(small_fleet_data(2)), encoding="utf-8")
    extra = [a.replace("{tmp}", str(tmp_path / "nothing")) for a in extra]
    result = twin("--config", str(fleet), "--date", DAY, "--out", str(tmp_path / "out"), *extra)
    assert result.exit_code == 2
    assert message in result.output


def test_the_replay_never_writes_into_the_recorded_store(recorded):
    source = HistorySource(data_dir=recorded["data"])
    with pytest.raises(TwinError, match="--out"):
        run_twin(recorded["cfg"], parse_day(DAY), None, [], recorded["data"] / "out", progress=False, history=source)


def test_a_curtailed_sites_clearness_comes_from_its_neighbours():
    t = np.arange(4.0)
    clear = np.full(4, 1000.0)

    def site(k: list[float], limited: list[bool]) -> SiteDay:
        k_arr = np.array(k)
        zeros = np.zeros(4)
        return SiteDay(t, k_arr * clear, zeros, zeros, zeros, zeros, np.array(limited), clear, k_arr)

    sites = {
        "a": site([0.8, 0.8, 0.5, 0.8], [False, False, True, False]),  # curtailed at sample 2
        "b": site([0.4, 0.4, 0.6, 0.4], [False] * 4),
        "c": site([0.4, 0.4, 0.6, 0.4], [False] * 4),
    }
    out = estimate_clearness(sites)
    # a runs at twice its neighbours when free; at sample 2 they are at 0.6, so a had 1.2 available
    assert out["a"].clearness.tolist() == pytest.approx([0.8, 0.8, 1.2, 0.8])
    assert out["b"].clearness.tolist() == sites["b"].clearness.tolist()
