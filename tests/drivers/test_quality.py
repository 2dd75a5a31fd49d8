"""Quality at the source (docs/definitions.md "Quality"): a point the device's model does not define is
no value, so never counted as missing; a defined point that was not read is missing."""

from __future__ import annotations

from sparcs.drivers.sunspec_map import to_raw_si
from sparcs.drivers.telemetry import Bounds, judge

BOUNDS = Bounds(pv_rating_w=5000.0, battery_power_w=3000.0, grid_limit_w=20_000.0)


def test_a_sunspec_meter_reports_no_operating_state_and_nothing_missing() -> None:
    raw = to_raw_si("meter", {203: {"W": -1200.0, "TotWhImp": 10.0, "TotWhExp": 20.0, "Evt": 0.0}})
    values = judge("meter", raw, BOUNDS)
    assert "operating_state" not in values  # model 203 has no such point
    assert {k: r.quality for k, r in values.items()} == dict.fromkeys(
        ("grid_w", "import_wh", "export_wh", "alarms"), "good"
    )
    assert values["grid_w"].value == -1200.0


def test_a_defined_point_that_was_not_read_is_missing() -> None:
    raw = to_raw_si("meter", {203: {"W": None, "TotWhImp": 10.0, "TotWhExp": 20.0, "Evt": 0.0}})
    values = judge("meter", raw, BOUNDS)
    assert values["grid_w"].quality == "missing" and values["grid_w"].value is None
