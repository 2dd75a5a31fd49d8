"""One `sparcs run` for the whole tests/dashboard package (see live.py), torn down after its last test; one
headless Chromium per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.dashboard.browser import CHROMIUM_ARGS
from tests.dashboard.live import LiveController, require_tool


@pytest.fixture(scope="package")
def live(tmp_path_factory):
    ctl = LiveController(tmp_path_factory.mktemp("live"))
    try:
        yield ctl
    finally:
        ctl.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_tool("/usr/bin/chromium", "chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
