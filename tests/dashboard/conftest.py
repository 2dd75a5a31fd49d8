"""One `sparcs run` for the whole tests/dashboard package (see live.py); torn down after its last test."""

from __future__ import annotations

import pytest

from tests.dashboard.live import LiveController


@pytest.fixture(scope="package")
def live(tmp_path_factory):
    ctl = LiveController(tmp_path_factory.mktemp("live"))
    try:
        yield ctl
    finally:
        ctl.close()
