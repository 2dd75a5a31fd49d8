"""Log level and format: text with the structured fields in brackets, JSON one object per line, the
options checked before anything starts, and the ``logging`` section of the fleet file."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.config.schema import CONFIG_DIR, ConfigError, validate_config
from sparcs.controller.logging_setup import configure_logging, request_id
from tests.controller.conftest import small_fleet_data


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_and_json_formats_carry_device_site_and_request(capsys, restore_root):
    log = logging.getLogger("sparcs.test")
    configure_logging("info", "text")
    log.info("written", extra={"device": "pv-1", "site": "s-1"})
    log.debug("hidden")
    token = request_id.set("abc123")
    try:
        log.warning("in a request")
    finally:
        request_id.reset(token)
    text = capsys.readouterr().err.splitlines()
    assert len(text) == 2
    assert text[0].endswith("INFO sparcs.test: written [device=pv-1 site=s-1]")
    assert dt.datetime.fromisoformat(text[0].split()[0]).utcoffset() == dt.timedelta(0)
    assert text[1].endswith("WARNING sparcs.test: in a request [request=abc123]")

    configure_logging("debug", "json")  # a reload changes level and format in place: still one handler
    assert sum(getattr(h, "sparcs", False) for h in logging.getLogger().handlers) == 1
    log.debug("now shown", extra={"site": "s-2"})
    (line,) = capsys.readouterr().err.splitlines()
    rec = json.loads(line)
    assert rec["level"] == "DEBUG" and rec["logger"] == "sparcs.test" and rec["message"] == "now shown"
    assert rec["site"] == "s-2"
    assert dt.datetime.fromisoformat(rec["time"]).utcoffset() == dt.timedelta(0)
    assert {"time", "level", "logger", "message"} <= rec.keys()


def test_logging_section_and_bad_options():
    data = small_fleet_data(1)
    data["logging"] = {"level": "info", "format": "json"}
    assert validate_config(data).logging.format == "json"
    data["logging"] = {"level": "chatty"}
    with pytest.raises(ConfigError, match=r"logging\.level"):
        validate_config(data)
    out = CliRunner().invoke(app, ["simulate", "--config", str(CONFIG_DIR / "demo.yaml"), "--log-format", "xml"])
    assert out.exit_code == 2 and "--log-format: Input should be 'text' or 'json'" in out.output
