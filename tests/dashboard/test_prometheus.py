"""A real Prometheus (Debian's package) scrapes `sparcs run`; promtool accepts the exposition and the shipped
scrape configurations; every Grafana panel query names exported metrics and runs in that Prometheus."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.dashboard.live import REPO, LiveController, free_ports, require_tool, wait_for

pytestmark = pytest.mark.slow
PROMETHEUS_DIR = REPO / "config" / "prometheus"
GRAFANA_DIR = REPO / "config" / "grafana"
BOARD = GRAFANA_DIR / "dashboards" / "sparcs-controller.json"
# Grafana's own variables, replaced as Grafana would for a 1 s scrape interval
GRAFANA_VARS = {"$__rate_interval": "15s", "$__interval": "1s", "$__range": "5m"}
METRIC = re.compile(r"\b(sparcs_[a-z0-9_]+)\b")


def panel_queries() -> list[tuple[str, str]]:
    board = json.loads(BOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def series_names(exposition: str) -> set[str]:
    """Every series name a query may use: samples, and the declared names of families without samples yet."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(s.name for s in family.samples)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


class Prometheus:
    """A Prometheus on a free loopback port with a temp storage dir, scraping every second."""

    def __init__(self, directory: Path, live: LiveController):
        binary = require_tool("prometheus", "prometheus")
        local = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        remote = yaml.safe_load((PROMETHEUS_DIR / "prometheus-remote.yml").read_text())
        # the shipped jobs, pointed at the test's controller; the remote one carries the viewer token
        jobs = [local["scrape_configs"][0], {**remote["scrape_configs"][0], "job_name": "sparcs-remote"}]
        for job in jobs:
            job.update(scrape_interval="1s", scrape_timeout="1s")
            job["static_configs"][0]["targets"] = [f"127.0.0.1:{live.port}"]
        (directory / "sparcs.token").write_text(live.viewer_token + "\n")
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({**local, "scrape_configs": jobs}))
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (directory / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.directory = directory
        try:
            wait_for(self._ready, 60, "Prometheus to be ready")
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {(self.directory / 'prometheus.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **params: str) -> dict:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(live, tmp_path_factory) -> Iterator[Prometheus]:
    p = Prometheus(tmp_path_factory.mktemp("prometheus"), live)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def exposition(live) -> str:
    r = httpx.get(f"{live.url}/metrics")  # loopback: no token needed
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = require_tool("promtool", "prometheus")
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60)


def test_promtool_accepts_the_exposition(exposition):
    done = promtool("check", "metrics", stdin=exposition)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
    assert "sparcs_devices" in exposition


def test_promtool_accepts_the_shipped_scrape_configs(tmp_path):
    done = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    # the remote configuration reads its token from a file beside it
    shutil.copy(PROMETHEUS_DIR / "prometheus-remote.yml", tmp_path)
    done = promtool("check", "config", str(tmp_path / "prometheus-remote.yml"))
    assert done.returncode != 0 and "sparcs.token" in done.stdout + done.stderr
    (tmp_path / "sparcs.token").write_text("sparcs_example\n")
    done = promtool("check", "config", str(tmp_path / "prometheus-remote.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_the_controller_with_both_shipped_jobs(prometheus, live):
    def targets_up():
        active = prometheus.api("targets")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return health if health == {"sparcs": "up", "sparcs-remote": "up"} else None

    wait_for(targets_up, 60, "both scrape targets to be up")
    online = wait_for(lambda: prometheus.query('sparcs_devices{job="sparcs",status="online"}'), 30, "a sparcs series")
    assert online[0]["metric"]["fleet"] == "demo"  # the shipped target labels arrive

    def scraped_equals_api():
        scraped = prometheus.query('sparcs_devices{job="sparcs",status="online"}')
        return float(scraped[0]["value"][1]) == live.get("/api/v1/fleet")["now"]["online"]

    wait_for(scraped_equals_api, 30, "the scraped device count to equal the API's")
    pv = prometheus.query('sparcs_fleet_power_watts{job="sparcs-remote",quantity="pv"}')
    assert pv and float(pv[0]["value"][1]) > 0  # noon in June


def test_every_grafana_panel_query_names_metrics_the_controller_exports(exposition):
    exported = series_names(exposition)
    queries = panel_queries()
    assert len(queries) >= 15
    used = set()
    for title, expr in queries:
        names = set(METRIC.findall(expr))
        assert names, f"panel '{title}' queries no sparcs_* metric: {expr}"
        assert names <= exported, f"panel '{title}' names metrics /metrics does not export: {names - exported}"
        used |= names
    # the list: fleet power, devices by quality, poll and dispatch durations, errors, curtailment stage
    for needed in (
        "sparcs_fleet_power_watts",
        "sparcs_telemetry_values",
        "sparcs_devices",
        "sparcs_poll_cycle_duration_seconds_bucket",
        "sparcs_dispatch_duration_seconds_bucket",
        "sparcs_modbus_errors_total",
        "sparcs_curtailment_stage_sites",
    ):
        assert needed in used, needed


def test_every_grafana_panel_query_runs_in_prometheus(prometheus):
    wait_for(lambda: prometheus.query("sparcs_poll_cycle_duration_seconds_count"), 60, "a first scrape")
    time.sleep(3)  # a few more scrapes, so that rate() has samples to work with
    empty = []
    for title, expr in panel_queries():
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        if not prometheus.query(expr):
            empty.append(title)
    # errors have not happened and nobody curtailed yet: those panels may be empty, the rest must show data
    allowed_empty = {"Modbus errors", "Export guard actions", "Operator commands, per hour"}
    assert set(empty) <= allowed_empty, empty


def test_grafana_provisioning_matches_the_board():
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "sparcs.yml").read_text())
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "sparcs.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert datasources["datasources"][0]["type"] == "prometheus"
    assert providers["providers"][0]["type"] == "file" and providers["providers"][0]["options"]["path"]
    board = json.loads(BOARD.read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == uid, p["title"]
        assert all(t["datasource"]["uid"] == uid for t in p["targets"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
