"""A missing browser or Prometheus fails the run under CI and skips only on a developer's machine."""

from __future__ import annotations

import pytest

from tests.dashboard.live import require_tool


def test_a_missing_tool_fails_under_ci_naming_the_package(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install Debian's 'chromium' package"):
        require_tool("/nonexistent/chromium", "chromium")


def test_a_missing_tool_skips_without_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="prometheus is not installed"):
        require_tool("/nonexistent/prometheus", "prometheus")


def test_an_installed_tool_is_found():
    assert require_tool("sh", "dash").endswith("/sh")
