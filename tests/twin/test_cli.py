"""`sparcs twin` on the command line: mistakes exit 2 naming the option or field; a whole day end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.config.schema import CONFIG_DIR
from tests.controller.conftest import small_fleet_data

JUNE = CONFIG_DIR / "scenarios" / "june-sunny-negative-prices.yaml"


@pytest.fixture
def fleet_file(tmp_path):
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(small_fleet_data(2)), encoding="utf-8")
    return p


def twin(*args: str):
    return CliRunner().invoke(app, ["twin", *args])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--date", "2026-06-21", "--strategy", "greedy"], "--strategy: unknown 'greedy'"),
        (["--date", "21.06.2026"], "--date: '21.06.2026' is not a date"),
        (["--date", "2026-06-22", "--scenario", str(JUNE)], "date: the scenario describes 2026-06-21"),
    ],
)
def test_mistakes_exit_2_with_one_line_naming_the_option(fleet_file, tmp_path, extra, message):
    result = twin("--config", str(fleet_file), "--out", str(tmp_path / "out"), *extra)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_bad_scenario_field_is_named(fleet_file, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("date: 2026-06-21\nactions:\n  - at: 2026-06-21T12:00:00\n    stage: {stage: K9}\n")
    result = twin("--config", str(fleet_file), "--date", "2026-06-21", "--scenario", str(bad))
    assert result.exit_code == 2
    assert "actions[0].at: " in result.output and "actions[0].stage.stage: " in result.output


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_whole_day_end_to_end(tmp_path):
    fleet_file = tmp_path / "one-site.yaml"
    data = small_fleet_data(1)
    data["dispatch"].update(poll_interval_s=60, dispatch_interval_s=900)  # the twin follows the fleet file
    fleet_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "out"
    result = twin(
        "--config", str(fleet_file), "--date", "2026-06-21", "--scenario", str(JUNE),
        "--strategy", "self-consumption", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["minutes"] == 1440 and report["quarter_hours"] == 96
    assert report["cadence"] == {
        "poll_interval_s": 60.0,
        "dispatch_interval_s": 900.0,
        "poll_interval_source": "config",
        "dispatch_interval_source": "config",
    }
    assert report["polls"] == 1440
    for row in report["strategies"]:
        assert row["dispatches"] == 96
        assert row["cap_violations"] == 0
    for sites in report["balance"]["sites"].values():
        for b in sites:  # PV + import + discharge = load + export + charge + losses, per site and day
            assert abs(b["residual"]) < 0.005 and abs(b["storage_residual"]) < 0.005
            assert b["pv_kwh"] > 10  # a sunny June day
    (row,) = report["strategies"]
    assert row["strategy"] == "self-consumption" and row["import_kwh"] > 0 and row["export_kwh"] > 0
    assert "self-consumption" in (out / "summary.md").read_text()


@pytest.mark.timeout(180)
def test_a_twin_killed_with_9_leaves_no_replay_running(fleet_file, tmp_path):
    """Regression: the replay process (and with it its fleet and solver) went on replaying its day
    after `sparcs twin` was killed with -9."""
    twin_cmd = [sys.executable, "-m", "sparcs", "twin", "--config", str(fleet_file), "--date", "2026-06-21"]
    proc = subprocess.Popen(
        [*twin_cmd, "--strategy", "none", "--out", str(tmp_path / "out"), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        twin_proc = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while not (workers := [c for c in twin_proc.children() if "spawn_main" in " ".join(c.cmdline())]):
            assert proc.poll() is None and time.monotonic() < deadline, "no replay process started"
            time.sleep(0.2)
        family = list(workers)
        time.sleep(3.0)  # the replay has started its fleet
        family += [c for w in workers for c in w.children(recursive=True)]
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
