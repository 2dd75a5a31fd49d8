"""Tariff maths (config/tariffs.py): §14a module 3 windows in Europe/Berlin time across the clock
changes, dynamic and fixed import, export with the negative-price rule, and the schema's references."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.config.schema import (
    ConfigError,
    ExportTariff,
    GridFeeWindow,
    GridOperatorFees,
    ImportTariff,
    validate_config,
)
from sparcs.config.tariffs import (
    BERLIN,
    SiteTariff,
    export_price_eur_per_kwh,
    grid_fee_eur_per_kwh,
    import_price_eur_per_kwh,
    site_tariff,
)
from tests.controller.conftest import small_fleet_data

FEES = GridOperatorFees(
    standard_eur_per_kwh=0.09,
    windows=[
        GridFeeWindow(start="22:00", end="06:00", eur_per_kwh=0.03, name="NT"),
        GridFeeWindow(start="17:00", end="20:00", eur_per_kwh=0.16, name="HT", quarters=[1, 4]),
    ],
)


def local_quarters(day: dt.date) -> np.ndarray:
    """Unix s of every quarter-hour start of a Europe/Berlin day (92, 96 or 100 of them)."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=BERLIN).timestamp()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=BERLIN).timestamp()
    return np.arange(start, end, 900.0)


def local_hours(t: np.ndarray) -> list[str]:
    return [dt.datetime.fromtimestamp(x, BERLIN).strftime("%H:%M") for x in t]


@pytest.mark.parametrize(
    ("day", "quarters"),
    [(dt.date(2026, 3, 29), 92), (dt.date(2026, 10, 25), 100), (dt.date(2026, 1, 14), 96)],
)
def test_windows_hold_their_local_hours_on_every_day_including_the_clock_changes(day, quarters):
    t = local_quarters(day)
    assert t.size == quarters
    fee = grid_fee_eur_per_kwh(FEES, t)
    hours = local_hours(t)
    for h, f in zip(hours, fee, strict=True):
        if h >= "22:00" or h < "06:00":
            expected = 0.03
        elif "17:00" <= h < "20:00" and day.month in (1, 2, 3, 10, 11, 12):
            expected = 0.16
        else:
            expected = 0.09
        assert f == expected, (day, h)
    # The 23-hour day loses 02:00–03:00 local time, all of it inside the night window: 4 quarters fewer.
    nt = int((fee == 0.03).sum())
    assert nt == {92: 28, 96: 32, 100: 36}[quarters]


def test_summer_time_shifts_the_window_in_utc():
    winter = dt.datetime(2026, 3, 28, 17, 0, tzinfo=BERLIN).timestamp()  # 16:00 UTC
    summer = dt.datetime(2026, 3, 30, 17, 0, tzinfo=BERLIN).timestamp()  # 15:00 UTC
    assert dt.datetime.fromtimestamp(winter, dt.UTC).hour == 16
    assert dt.datetime.fromtimestamp(summer, dt.UTC).hour == 15
    fee = grid_fee_eur_per_kwh(FEES, [winter, winter - 900, summer, summer - 900])
    assert fee.tolist() == [0.16, 0.09, 0.16, 0.09]


def test_a_window_only_in_its_quarters():
    july = dt.datetime(2026, 7, 8, 18, 0, tzinfo=BERLIN).timestamp()
    assert grid_fee_eur_per_kwh(FEES, [july])[0] == 0.09


def test_dynamic_import_is_day_ahead_plus_fees_plus_grid_fee_with_vat_and_unknown_stays_unknown():
    t = [dt.datetime(2026, 1, 14, h, 0, tzinfo=BERLIN).timestamp() for h in (3, 12, 18)]
    tariff = SiteTariff("d", ImportTariff(kind="dynamic", fees_eur_per_kwh=0.13, vat=0.19), ExportTariff(), FEES)
    price = import_price_eur_per_kwh(tariff, t, [50.0, 100.0, np.nan])
    assert price[0] == pytest.approx((0.05 + 0.13 + 0.03) * 1.19)
    assert price[1] == pytest.approx((0.10 + 0.13 + 0.09) * 1.19)
    assert np.isnan(price[2])  # never a guess


def test_fixed_import_moves_with_the_module_3_windows_around_its_standard_fee():
    t = [dt.datetime(2026, 1, 14, h, 0, tzinfo=BERLIN).timestamp() for h in (3, 12, 18)]
    tariff = SiteTariff("f", ImportTariff(kind="fixed", eur_per_kwh=0.35), ExportTariff(), FEES)
    price = import_price_eur_per_kwh(tariff, t, [np.nan] * 3)
    assert price == pytest.approx([0.35 - 0.06 * 1.19, 0.35, 0.35 + 0.07 * 1.19])
    plain = SiteTariff("f", ImportTariff(kind="fixed", eur_per_kwh=0.35), ExportTariff())
    assert import_price_eur_per_kwh(plain, t, [np.nan] * 3).tolist() == [0.35] * 3


def test_export_earns_the_market_or_the_remuneration_and_nothing_at_negative_prices_under_the_rule():
    da = np.array([40.0, -5.0])
    out = export_price_eur_per_kwh([True, False, True, False], [0.08] * 4, [False, False, True, True], da)
    assert out.tolist() == [[0.04, -0.005], [0.08, 0.08], [0.04, 0.0], [0.08, 0.0]]


def test_sites_refer_to_named_tariffs_and_unknown_names_are_errors():
    data = small_fleet_data(2)
    data["grid_operators"] = {"op": FEES.model_dump()}
    data["tariffs"] = {"dyn": {"import": {"kind": "dynamic", "fees_eur_per_kwh": 0.1, "grid_operator": "op"}}}
    data["sites"][0]["tariff"] = "dyn"
    cfg = validate_config(data)
    t = site_tariff(cfg, cfg.sites[0])
    assert t.dynamic and t.grid_fees == FEES and not t.market_export
    inline = site_tariff(cfg, cfg.sites[1])
    assert inline.import_.kind == "fixed" and inline.import_.eur_per_kwh == cfg.sites[1].tariff.import_eur_per_kwh  # type: ignore[union-attr]

    data["sites"][1]["tariff"] = "nope"
    data["tariffs"]["dyn"]["import"]["grid_operator"] = "elsewhere"
    with pytest.raises(ConfigError) as exc:
        validate_config(data)
    text = "\n".join(exc.value.errors)
    assert f"sites[1:{data['sites'][1]['id']}].tariff: unknown tariff 'nope'" in text
    assert "tariffs.dyn.import.grid_operator: unknown grid operator 'elsewhere'" in text


def test_overlapping_windows_and_a_fixed_tariff_without_a_price_are_refused():
    with pytest.raises(ValueError, match="windows overlap at 05:00 in quarter 1"):
        GridOperatorFees(
            standard_eur_per_kwh=0.1,
            windows=[
                GridFeeWindow(start="22:00", end="06:00", eur_per_kwh=0.03),
                GridFeeWindow(start="05:00", end="07:00", eur_per_kwh=0.2),
            ],
        )
    with pytest.raises(ValueError, match="a fixed import tariff needs eur_per_kwh"):
        ImportTariff(kind="fixed")
