"""At 1,000 sites and 3,000 devices one refresh of the page transfers at most 200 KB.

A generated fleet (simulators/fleetgen.py: every site a PV inverter, a meter and a battery; ten groups
of 100 sites) runs under its own `sparcs run`, simulated over Modbus on loopback. The page signs in;
the test adds up the bytes (headers and bodies, as sent) of every request of one refresh: the first
one after sign-in (with the chart's 12 h history) and a following one (the 5 s refresh). The figures
are written to test-artifacts/transfer-1000-sites.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from playwright.sync_api import Browser, Request, expect

from sparcs.drivers.bench import free_port_range
from sparcs.simulators.fleetgen import synthetic_fleet
from tests.dashboard.browser import Session
from tests.dashboard.live import ARTIFACTS, LiveController, wait_for

# Starting 3,000 simulated devices and planning 1,000 sites takes minutes on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
N_SITES = 1000
BUDGET_BYTES = 200 * 1024


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Iterator[LiveController]:
    directory = tmp_path_factory.mktemp("big")
    data = synthetic_fleet(N_SITES, seed=7, port_start=free_port_range(3 * N_SITES), battery_share=1.0)
    data["simulation"]["start"] = "2026-06-21T10:00:00+00:00"
    data["dispatch"] = {"poll_interval_s": 10, "solve_timeout_s": 30}
    ids = [s["id"] for s in data["sites"]]
    data["groups"] = [
        {"id": f"district-{g}", "name": f"District {g}", "kind": "grid_area", "sites": ids[g * 100 : (g + 1) * 100]}
        for g in range(10)
    ]
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    ctl = LiveController(directory, config=path, start_timeout_s=600)
    try:
        yield ctl
    finally:
        ctl.close()


def refresh_bytes(requests: list[Request]) -> tuple[int, list[tuple[str, int]]]:
    """Bytes of the requests' answers (headers + body as sent), in all and per request."""
    sizes = []
    for r in requests:
        wait_for(lambda r=r: r.response() is not None, 60, f"the answer to {r.url}")
        s = r.sizes()
        sizes.append((r.url.split("/", 3)[-1], s["responseHeadersSize"] + s["responseBodySize"]))
    return sum(n for _, n in sizes), sizes


def test_one_refresh_transfers_at_most_200_kb_at_1000_sites(browser: Browser, big: LiveController):
    fleet = wait_for(
        lambda: (f := big.get("/api/v1/fleet"))["now"] and f["now"]["total"] == 3000 and f, 300, "3,000 devices"
    )
    assert len(big.get("/api/v1/sites")) == N_SITES
    tab = Session(browser, big)
    done: list[Request] = []
    tab.page.on("request", lambda r: done.append(r))  # in the order the page asked
    try:
        page = tab.sign_in(big.operator_token)
        expect(page.locator("#sites tr[data-site]")).to_have_count(25)
        expect(page.locator("#sites-count")).to_have_text(f"{N_SITES:,} sites")

        # Playwright's sync API takes in the page's events while the test waits in it: wait in the page
        def fleet_requests() -> list[int]:
            page.wait_for_timeout(500)
            return [i for i, r in enumerate(done) if r.url.endswith("/api/v1/fleet")]

        # a refresh: from its /fleet request to the one of the next refresh; three make two refreshes
        starts = wait_for(lambda: (s := fleet_requests())[2:] and s, 600, "three refreshes")
        first_refresh = done[starts[0] : starts[1]]
        steady_refresh = done[starts[1] : starts[2]]
        first_total, first_sizes = refresh_bytes(first_refresh)
        steady_total, steady_sizes = refresh_bytes(steady_refresh)
        figures = {
            "sites": N_SITES,
            "devices": fleet["now"]["total"],
            "first_refresh_bytes": first_total,
            "steady_refresh_bytes": steady_total,
            "budget_bytes": BUDGET_BYTES,
            "first_refresh": dict(first_sizes),
            "steady_refresh": dict(steady_sizes),
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "transfer-1000-sites.json").write_text(json.dumps(figures, indent=2))
        print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}))
        tab.screenshot("dashboard-en-1000-sites.png")
        assert any("api/v1/history" in u for u in figures["first_refresh"])  # the first one draws the chart's past
        assert first_total <= BUDGET_BYTES, figures
        assert steady_total <= BUDGET_BYTES, figures
        assert tab.errors == []
    finally:
        tab.close()
