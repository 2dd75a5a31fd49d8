"""Operator commands: most restrictive stage wins, expiry hands over, schedules, pause; bad input refused."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparcs.controller.commands import (
    CommandBook,
    CommandError,
    PauseRequest,
    ScheduleRequest,
    StageRequest,
)
from sparcs.controller.store import Store

T0 = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()


def at(seconds: float) -> str:
    return dt.datetime.fromtimestamp(T0 + seconds, dt.UTC).isoformat()


@pytest.fixture
def book(tmp_path, small_cfg):
    store = Store(data_dir=tmp_path)
    yield CommandBook(store, small_cfg)
    store.close()


def test_most_restrictive_stage_wins_and_the_next_applies_at_expiry(book, small_cfg):
    site = small_cfg.sites[0]
    book.submit_stage(StageRequest(stage="K3", expires_at=at(3600)), "op", T0)
    book.submit_stage(StageRequest(stage="K2", sites=[site.id], expires_at=at(600)), "op", T0)
    assert book.stage(site.id, T0 + 10) == "K2"
    assert book.stage_ceiling_w(site.id, T0 + 10) == pytest.approx(0.3 * site.pv.rating_w)
    assert book.stage(small_cfg.sites[1].id, T0 + 10) == "K3"
    assert book.stage(site.id, T0 + 601) == "K3"  # K2 expired: K3 applies
    assert book.stage(site.id, T0 + 3601) is None


def test_period_series_sees_a_stage_that_overlaps_part_of_a_period(book, small_cfg):
    sid = small_cfg.sites[0].id
    book.submit_stage(StageRequest(stage="K1", start=at(1000), expires_at=at(1200)), "op", T0)
    starts = T0 + np.array([0.0, 900.0, 1800.0])
    ceiling, dimmed = book.period_series(sid, starts, starts + 900.0)
    assert np.isnan(ceiling[0]) and ceiling[1] == 0.0 and np.isnan(ceiling[2])
    assert not dimmed.any()


def test_commands_come_back_after_reload(book, small_cfg, tmp_path):
    book.submit_stage(StageRequest(stage="K2", expires_at=at(600)), "op", T0)
    book.submit_pause(PauseRequest(reason="maintenance"), "op", T0)
    again = CommandBook(Store(data_dir=tmp_path), small_cfg)
    again.load(T0 + 1)
    assert again.paused(T0 + 1) and again.stage(small_cfg.sites[0].id, T0 + 1) == "K2"
    assert again.resume("op", T0 + 2) and not again.paused(T0 + 3)


def test_newer_schedule_replaces_older_values_it_covers(book):
    book.submit_schedule(
        ScheduleRequest(points=[{"start": at(0), "export_w": 1000}, {"start": at(900), "export_w": 2000}]), "op", T0
    )
    book.submit_schedule(ScheduleRequest(points=[{"start": at(900), "export_w": 500}]), "op", T0)
    assert book.schedule_export_w(T0 + 10) == 1000
    assert book.schedule_export_w(T0 + 950) == 500
    assert book.schedule_export_w(T0 + 1800) is None
    series = book.schedule_series(T0 + np.array([0.0, 900.0, 1800.0]))
    assert series[0] == 1000 and series[1] == 500 and np.isnan(series[2])


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda b: b.submit_stage(StageRequest(stage="K1", expires_at=at(-1)), "op", T0), "expires_at"),
        (lambda b: b.submit_stage(StageRequest(stage="K1", expires_at=at(40 * 86400)), "op", T0), "expires_at"),
        (lambda b: b.submit_stage(StageRequest(stage="K1", start=at(600), expires_at=at(300)), "op", T0), "expires_at"),
        (
            lambda b: b.submit_stage(StageRequest(stage="K1", sites=["nowhere"], expires_at=at(60)), "op", T0),
            "sites[0]",
        ),
        (
            lambda b: b.submit_schedule(ScheduleRequest(points=[{"start": at(60), "export_w": 1}]), "op", T0),
            "points[0].start",
        ),
        (
            lambda b: b.submit_schedule(
                ScheduleRequest(points=[{"start": at(900), "export_w": 1}, {"start": at(0), "export_w": 1}]), "op", T0
            ),
            "points[1].start",
        ),
        (
            lambda b: b.submit_schedule(ScheduleRequest(points=[{"start": at(-1800), "export_w": 1}]), "op", T0),
            "points",
        ),
    ],
)
def test_bad_commands_name_the_field_and_change_nothing(book, make, field):
    with pytest.raises(CommandError) as info:
        make(book)
    assert info.value.field == field
    assert book.active(T0) == [] and book.store.audit_log() == []
