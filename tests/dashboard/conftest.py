"""One `sparcs run` per test module (see live.py)."""

from __future__ import annotations

import pytest

from tests.dashboard.live import LiveController


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    ctl = LiveController(tmp_path_factory.mktemp("live"))
    try:
        yield ctl
    finally:
        ctl.close()
