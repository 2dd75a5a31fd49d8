"""The aggregation: at least k sites in every published area and in every published quarter-hour,
small districts merged into "other" (or withheld), groups that would show a few sites by difference
withheld, and values that equal the sums of the stored site history; the store records curtailment
by cause and reads it back through the migration's columns."""

from __future__ import annotations

import pytest

from sparcs.config.schema import ConfigError, validate_config
from sparcs.controller.open_data import OTHER_AREA, QUANTITY_KEYS, aggregate, areas, published_end_s
from sparcs.controller.open_data_reader import OpenDataReader
from sparcs.controller.store import Store
from tests.opendata.conftest import HOURS, SILENT_SITE, START, FixedClock, demo_cfg, demo_data, fill


@pytest.mark.parametrize("k", [2, 5, 6, 7, 12, 30, 54, 55])
def test_every_published_area_has_at_least_k_sites_and_none_overlaps(k):
    cfg = demo_cfg(k=k)
    got = areas(cfg)
    for a in got.published:
        assert len(a.sites) >= k, a.id
    seen: set[str] = set()
    for a in got.published:
        assert not (a.sites & seen)
        seen |= a.sites
    # every site is in a published area, or in the withheld "other" area with fewer than k sites
    rest = {s.id for s in cfg.sites} - seen
    assert (not rest) or (got.withheld[-1] == OTHER_AREA and len(rest) < k)


def test_districts_below_k_merge_into_other():
    got = areas(demo_cfg(k=6))
    ids = [a.id for a in got.published]
    assert ids == ["district:gohlis", "district:lindenau", "district:plagwitz", "district:reudnitz", OTHER_AREA]
    assert len(got.published[-1].sites) == 54 - 4 * 6
    assert got.published[-1].lat is None  # "other" has no place
    gohlis = got.published[0]
    assert (gohlis.name, gohlis.lat, gohlis.lon) == ("Gohlis", 51.364, 12.372)
    assert areas(demo_cfg(k=55)).published == () and areas(demo_cfg(k=55)).withheld == (OTHER_AREA,)


def test_groups_below_k_or_a_few_sites_apart_are_withheld():
    data = demo_data(aggregate_by="group", k=5)
    ids = [s["id"] for s in data["sites"]]
    data["groups"] = [
        {"id": "a", "sites": ids[0:6]},
        {"id": "b", "sites": ids[0:7]},  # a plus one site: b − a would be that household
        {"id": "c", "sites": ids[10:13]},  # too small
        {"id": "d", "sites": ids[20:26]},
        {"id": "e", "sites": ids[0:12]},  # a plus six: a difference of k or more is an aggregate itself
    ]
    got = areas(validate_config(data))
    assert [a.id for a in got.published] == ["group:a", "group:d", "group:e"]
    assert got.withheld == ("group:b", "group:c")


def test_group_mode_needs_groups():
    with pytest.raises(ConfigError) as err:
        demo_cfg(aggregate_by="group")
    assert any("open_data.aggregate_by: 'group' needs a groups section" in line for line in err.value.errors)


def test_values_equal_the_sums_of_the_stored_site_history(store_url):
    cfg = demo_cfg()
    store = Store(store_url)
    try:
        history = fill(store, cfg)
        reader = OpenDataReader(cfg, store, FixedClock(START + HOURS * 3600 + 7200).now)
        got = reader.quarters()
        published = {a.id: a for a in reader.areas.published}
        assert len(published) == 10
        seen = 0
        for aq in got:
            want = history.expected(published[aq.area_id].sites, aq.start_s)
            assert want is not None
            assert aq.sites >= 5
            for key in QUANTITY_KEYS:
                assert aq.values[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), (aq.area_id, key)
            seen += 1
        quarters = HOURS * 4
        # Schleussig (5 sites) is withheld in the quarter-hour its site lej-005 sent nothing
        assert seen == 10 * quarters - 1
        assert not any(aq.area_id == "district:schleussig" and aq.start_s == START + 900 for aq in got)
        assert SILENT_SITE in published["district:schleussig"].sites
        assert all(aq.values["curtailed_stages_wh"] > 0 for aq in got)  # every cause is counted
    finally:
        store.close()


def test_the_delay_holds_back_recent_quarter_hours(tmp_path):
    cfg = demo_cfg(delay_s=3600)
    store = Store(data_dir=tmp_path)
    try:
        fill(store, cfg)
        now = START + 2 * 3600 + 100.0  # two hours of data so far; one published
        reader = OpenDataReader(cfg, store, FixedClock(now).now)
        got = reader.quarters()
        assert max(aq.end_s for aq in got) == published_end_s(now, 3600) == START + 3600
    finally:
        store.close()


def test_the_aggregate_of_quarter_hours_is_pure_and_ordered(tmp_path):
    cfg = demo_cfg()
    store = Store(data_dir=tmp_path)
    try:
        fill(store, cfg, hours=1)
        rows = store.site_quarters(START, START + 3600)
        got = aggregate(areas(cfg).published, rows, 5)
        assert got == aggregate(areas(cfg).published, list(reversed(rows)), 5)
        assert [aq.start_s for aq in got] == sorted(aq.start_s for aq in got)
    finally:
        store.close()
