"""The operator page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against `sparcs run`.

It loads without console errors, shows the numbers the API returns, sends commands that reach the API
and its audit log, keeps the token out of every URL, and a viewer cannot command. Screenshots go to
test-artifacts/ at the repository root.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.dashboard.browser import Session
from tests.dashboard.live import GROUP, LiveController, wait_for

pytestmark = pytest.mark.slow
# The page refreshes every 5 s and after each command; on a busy CI machine that can take a few seconds more.
expect.set_options(timeout=15_000)
TILES = {"t-pv": "pv_w", "t-load": "load_w", "t-battery": "battery_w", "t-export": "export_w", "t-grid": "grid_w"}
TILES |= {"t-flex-up": "flex_up_w", "t-flex-down": "flex_down_w"}


@pytest.fixture
def tab(browser, live) -> Iterator[Session]:
    s = Session(browser, live)
    try:
        yield s
    finally:
        s.close()


def kw_text(watts: float) -> str:
    return f"{watts / 1000:,.1f} kW"


def audit_ids(live: LiveController) -> list[int]:
    return [a["id"] for a in live.get("/api/v1/audit")]


# What the page shows, read in one script run: the page cannot re-render half-way through it.
PAGE_NUMBERS = """() => ({
  ts: document.getElementById("tiles").dataset.ts,
  tiles: Object.fromEntries([...document.querySelectorAll("#tiles .value")]
    .map((e) => [e.id, [e.textContent, e.dataset.w]])),
  sites: Object.fromEntries([...document.querySelectorAll("#sites tr[data-site]")]
    .map((r) => [r.dataset.site, [...r.cells].map((c) => c.textContent)])),
})"""


SITE_POWER_COLUMNS = {2: "pv_w", 3: "load_w", 4: "battery_w", 5: "export_w"}  # columns of the sites table


def differences(fleet: dict, sites: list, shown: dict) -> list[str]:
    """Where the page's numbers differ from the API's (formatted as the page formats them)."""
    now = fleet["now"]
    want = {tile: kw_text(now[key]) for tile, key in TILES.items()}
    want["t-soc"] = f"{int(now['soc'] * 100 + 0.5)} %"
    want["t-devices"] = f"{now['online']} / {now['stale']} / {now['total']}"
    out = [f"tile {t}: page {shown['tiles'][t][0]!r}, API {w!r}" for t, w in want.items() if shown["tiles"][t][0] != w]
    out += [
        f"tile {t}: data-w {shown['tiles'][t][1]}, API {now[k]}"
        for t, k in TILES.items()
        if float(shown["tiles"][t][1]) != pytest.approx(now[k])
    ]
    if list(shown["sites"]) != [s["id"] for s in sites]:
        return [*out, f"sites: page {list(shown['sites'])}, API {[s['id'] for s in sites]}"]
    for s in sites:
        cells, n, cap = shown["sites"][s["id"]], s["now"], s["feed_in_cap_w"]
        want_cells = {c: "–" if n[k] is None else f"{n[k] / 1000:,.1f}" for c, k in SITE_POWER_COLUMNS.items()}
        want_cells[6] = "none" if cap is None else f"{cap / 1000:,.1f}"
        want_cells[7] = "–" if n["soc"] is None else f"{int(n['soc'] * 100 + 0.5)} %"
        out += [
            f"site {s['id']} column {c}: page {cells[c]!r}, API {w!r}" for c, w in want_cells.items() if cells[c] != w
        ]
    return out


def page_shows_the_api_numbers(live: LiveController, page: Page) -> dict:
    """Waits until the page and the API show the same poll (the fleet is polled every 2 s; the page reads its
    endpoints in parallel, so one refresh may straddle a poll) and returns the API's fleet; fails with the
    differences of the last try when they never agree."""
    last: list[str] = []

    def attempt():
        nonlocal last
        before = live.get("/api/v1/fleet")
        sites = live.get("/api/v1/sites")
        after = live.get("/api/v1/fleet")
        shown = page.evaluate(PAGE_NUMBERS)
        if not before["now"]["ts"] == after["now"]["ts"] == shown["ts"]:
            return None
        last = differences(after, sites, shown)
        return None if last else after

    try:
        return wait_for(attempt, 60, "the page and the API to show the same poll")
    except AssertionError:
        pytest.fail("the page never showed the API's numbers: " + ("; ".join(last) or "never the same poll"))


def test_page_loads_without_console_errors_and_shows_the_numbers_the_api_returns(tab, live):
    page = tab.sign_in(live.operator_token)
    now = page_shows_the_api_numbers(live, page)["now"]
    assert now["stale"] == 1 and now["total"] > now["online"]
    sites = live.get("/api/v1/sites")
    devices = live.get("/api/v1/devices")
    expect(page.locator("#devices tr[data-device]")).to_have_count(len(devices))
    stale_row = page.locator(f"#devices tr[data-device='{live.offline_device}']")
    expect(stale_row).to_contain_text("stale")
    expect(page.locator("#devices")).to_contain_text("revert timer")  # each device's fail-safe is shown
    # the operator is told plainly about the stale device and sees its alarm
    expect(page.locator("#banners")).to_contain_text("1 device stale.")
    expect(page.locator("#alarms")).to_contain_text(f"device:{live.offline_device}")
    # the chart draws the plan, the forecast and the caps in force
    for series in ("pv-plan", "pv-fc", "load-fc", "battery-plan", "export-plan"):
        assert page.locator(f"#chart path[data-series='{series}']").count() == 1, series
    caps = live.get("/api/v1/caps")["sites"]
    cap_sum_w = sum(min(c["feed_in_cap_w"] or c["connection_limit_w"], c["connection_limit_w"]) for c in caps)
    expect(page.locator("#chart")).to_contain_text(f"export ceiling, sum of sites: {cap_sum_w / 1000:,.0f} kW")
    assert page.locator("#chart path[data-series='ceiling']").count() == 1
    tab.screenshot("dashboard-operator.png")
    # a click on a site shows that site's chart (its history, plan and cap) and its devices
    site = sites[1]
    page.locator(f"#sites tr[data-site='{site['id']}'] button").click()
    expect(page.locator("#chart-title")).to_have_text(f"Site {site['id']}")
    expect(page.locator("#chart")).to_contain_text(f"export ceiling: {site['feed_in_cap_w'] / 1000:,.1f} kW")
    expect(page.locator("#devices tr[data-device]")).to_have_count(len(site["devices"]))
    assert any(f"site={site['id']}" in r.url for r in tab.requests if "/api/v1/history" in r.url)
    assert tab.errors == []
    # the token travels only in the Authorization header, never in a URL
    api_requests = [r for r in tab.requests if "/api/v1/" in r.url]
    assert api_requests and all(r.headers.get("authorization") == f"Bearer {live.operator_token}" for r in api_requests)
    assert not [r.url for r in tab.requests if live.operator_token in r.url]


def test_the_page_draws_the_export_ceilings_and_curtailment_the_api_serves_and_computes_none(tab, live):
    """The API's answers are rewritten to values no grid rule gives for this fleet: the page shows them as served."""
    n_sites = len(live.get("/api/v1/sites"))

    def totals(route: Route) -> None:
        body = route.fetch().json()
        scale = body["sites"]
        body["export_ceiling_now_w"] = 1000.0 * scale
        n = len(body["plan"]["period_s"])
        body["plan"]["export_ceiling_w"] = [0.0] + [2500.0 * scale] * (n - 1)
        route.fulfill(json=body)

    def sites(route: Route) -> None:
        body = route.fetch().json()
        for i, s in enumerate(body if isinstance(body, list) else []):
            s.update(curtailed=i == 0, stage="K4" if i == 1 else None, guard_limit_w=None)
        route.fulfill(json=body)

    tab.context.route("**/api/v1/plan/totals*", totals)
    tab.context.route("**/api/v1/sites?*", sites)
    page = tab.sign_in(live.operator_token)
    # the fleet's ceiling: the sum of the sites' values per period, its highest named (1 kW now, 2.5 kW later)
    expect(page.locator("#chart")).to_contain_text(f"export ceiling, sum of sites: {2.5 * n_sites:,.0f} kW")
    assert page.locator("#chart path[data-series='ceiling']").count() == 1
    first, second = page.locator("#sites tr[data-site]").nth(0), page.locator("#sites tr[data-site]").nth(1)
    expect(first).to_contain_text("curtailed")
    expect(second).to_contain_text("stage K4")
    expect(second).not_to_contain_text("curtailed")  # a stage in force is not curtailment unless the API says so
    second.locator("button").click()
    expect(page.locator("#chart")).to_contain_text("export ceiling: 2.5 kW")
    assert tab.errors == []


def test_a_stage_from_the_panel_reaches_the_api_and_the_audit_log_and_can_be_cancelled(tab, live):
    page = tab.sign_in(live.operator_token)
    site = live.get("/api/v1/sites")[0]["id"]
    page.select_option("#stage-select", "K2")
    page.select_option("#stage-minutes", "30")
    page.fill("#cmd-sites", site)  # typing a site switches the scope to "chosen sites"
    page.click("#stage-send")
    expect(page.locator("#cmd-result")).to_contain_text("Stage K2 accepted")
    stage = next(c for c in live.get("/api/v1/commands") if c["kind"] == "stage")
    assert stage["params"] == {"stage": "K2", "sites": [site]} and stage["who"] == live.operator_name
    valid_s = (dt.datetime.fromisoformat(stage["expires_at"]) - dt.datetime.fromisoformat(stage["created_at"])).seconds
    assert valid_s == pytest.approx(30 * 60, abs=60)
    first_audit = page.locator("#audit tr").first
    expect(first_audit).to_contain_text(live.operator_name)
    expect(first_audit).to_contain_text("stage")
    expect(first_audit).to_contain_text(f"sites={site}")
    expect(page.locator(f"#sites tr[data-site='{site}']")).to_contain_text("curtailed K2")
    assert live.get("/api/v1/caps")["sites"][0]["stage"] == "K2"

    page.locator("#active-commands tr", has_text="stage K2").get_by_role("button", name="Cancel").click()
    expect(page.locator("#cmd-result")).to_contain_text(f"Command #{stage['id']} cancelled")
    assert not [c for c in live.get("/api/v1/commands") if c["id"] == stage["id"]]
    expect(page.locator("#audit tr").first).to_contain_text("cancel")
    assert tab.errors == []


def quarter_hours_csv(live: LiveController, values_kw: list[float]) -> tuple[str, list[list[float]]]:
    """A schedule for the next quarter-hours on the controller's clock, in Berlin time; and the points it means."""
    now = dt.datetime.fromisoformat(live.get("/api/v1/caps")["ts"])
    first = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) + dt.timedelta(minutes=15)
    berlin = dt.timezone(dt.timedelta(hours=2))  # the sim clock is in June: CEST
    lines = ["timestamp,export_kw"]
    points = []
    for i, v in enumerate(values_kw):
        t = first + dt.timedelta(minutes=15 * i)
        lines.append(f"{t.astimezone(berlin).isoformat()},{v}")
        points.append([t.timestamp(), v * 1000])
    return "\n".join(lines) + "\n", points


def test_schedule_upload_and_pause_resume_from_the_panel(tab, live, tmp_path):
    page = tab.sign_in(live.operator_token)
    text, points = quarter_hours_csv(live, [12.5, 10, 8, 0])
    csv_file = tmp_path / "schedule.csv"
    csv_file.write_text(text)
    page.set_input_files("#schedule-file", str(csv_file))
    expect(page.locator("#schedule-csv")).to_have_value(text)
    page.click("#schedule-send")
    expect(page.locator("#cmd-result")).to_contain_text("Schedule of 4 quarter-hours accepted")
    schedule = next(c for c in live.get("/api/v1/commands") if c["kind"] == "schedule")
    assert schedule["params"]["points_s"] == points
    expect(page.locator("#chart path[data-series='schedule']")).to_have_count(1)
    expect(page.locator("#audit tr").first).to_contain_text("4 quarter-hours")

    page.fill("#pause-reason", "meter exchange at lej-002")
    page.click("#pause-send")
    banner = page.locator("#banners")
    expect(banner).to_contain_text("Automatic control paused")
    expect(banner).to_contain_text("meter exchange at lej-002")
    assert live.get("/api/v1/fleet")["paused"] is True
    expect(page.locator("#t-plan")).to_have_text("paused")
    page.click("#resume-send")
    expect(page.locator("#cmd-result")).to_have_text("Automatic control resumed.")
    expect(banner).not_to_contain_text("paused")
    assert live.get("/api/v1/fleet")["paused"] is False
    actions = [a["action"] for a in live.get("/api/v1/audit")]
    assert actions[:3] == ["resume", "pause", "schedule"]
    expect(page.locator("#audit tr").first).to_contain_text("resume")
    assert tab.errors == []


def test_a_schedule_without_offsets_is_refused_on_the_page_and_nothing_is_sent(tab, live):
    page = tab.sign_in(live.operator_token)
    before = audit_ids(live)
    page.fill("#schedule-csv", "timestamp,export_kw\n2026-06-21T14:00:00,10\n")
    page.click("#schedule-send")
    expect(page.locator("#cmd-result")).to_contain_text('line 2: timestamp "2026-06-21T14:00:00" needs its UTC offset')
    page.fill("#schedule-csv", "timestamp,export_kw\n2026-06-21T14:05:00+02:00,10\n")
    page.click("#schedule-send")
    expect(page.locator("#cmd-result")).to_contain_text("line 2: 2026-06-21T14:05:00+02:00 is not the start")
    assert audit_ids(live) == before
    assert not [r for r in tab.requests if r.url.endswith("/commands/schedule")]
    assert tab.errors == []


def test_a_viewer_sees_the_fleet_but_the_command_panel_is_disabled_with_the_reason(tab, live):
    page = tab.sign_in(live.viewer_token)
    expect(page.locator("#who")).to_have_text(f"{live.viewer_name} (viewer)")
    expect(page.locator("#t-devices")).not_to_have_text("–")
    reason = page.locator("#cmd-reason")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("Commands need an operator token")
    expect(reason).to_contain_text("'viewer'")
    for button in ("#stage-send", "#schedule-send", "#pause-send", "#resume-send"):
        expect(page.locator(button)).to_be_disabled()
    before = audit_ids(live)
    page.locator("#stage-send").click(force=True)  # a disabled button sends nothing
    assert not [r for r in tab.requests if r.method == "POST"]
    # and the API itself refuses the viewer's token
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    r = httpx.post(
        f"{live.url}/api/v1/commands/stage",
        json={"stage": "K1", "expires_at": expires},
        headers={"Authorization": f"Bearer {live.viewer_token}"},
    )
    assert r.status_code == 403 and "operator" in r.json()["error"]
    assert audit_ids(live) == before
    tab.screenshot("dashboard-viewer.png")
    assert tab.errors == []


def test_a_wrong_token_is_refused_and_the_token_lives_only_in_the_tab_session(tab, live):
    page = tab.page
    page.goto(live.url + "/")
    page.fill("#token-input", "sparcs_not-a-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Sign-in failed: unknown or revoked token")
    expect(page.locator("#app")).to_be_hidden()

    tab.sign_in(live.viewer_token)
    page.reload()  # same tab: the session keeps the token
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#who")).to_contain_text(live.viewer_name)
    other = tab.context.new_page()  # a new tab has its own session storage: it must sign in again
    other.goto(live.url + "/")
    expect(other.locator("#login")).to_be_visible()
    other.close()
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    page.reload()
    expect(page.locator("#login")).to_be_visible()
    assert all(live.viewer_token not in r.url for r in tab.requests)


def test_the_operator_is_told_plainly_about_stale_data_and_fallback(tab, live):
    """The API cannot be put in fallback from outside `sparcs run`: the page's own answers are rewritten."""

    def fallback(route: Route) -> None:
        body = route.fetch().json()
        body["plan_path"] = "fallback_rules"
        route.fulfill(json=body)

    def not_ready(route: Route) -> None:
        route.fulfill(status=503, json={"ready": False, "problems": ["last poll 95 s ago"]})

    tab.context.route("**/api/v1/fleet", fallback)
    tab.context.route("**/readyz", not_ready)
    page = tab.sign_in(live.operator_token)
    banner = page.locator("#banners")
    expect(banner).to_contain_text("Controller in fallback. The plan in force comes from self-consumption rules")
    expect(banner).to_contain_text("Data is stale. The controller reports: last poll 95 s ago.")
    expect(page.locator("#live")).to_have_text("data stale")
    expect(page.locator("#t-plan")).to_have_class("value small warn")
    tab.screenshot("dashboard-fallback.png")
    assert [e for e in tab.errors if "503" not in e] == []


TRAIL = "() => JSON.parse(sessionStorage.getItem('sparcs.forecastTrail') || '{}')"


def test_the_forecast_each_quarter_hour_had_when_it_began_stays_for_comparison_with_the_measurements(tab, live):
    page = tab.sign_in(live.operator_token)
    forecast = live.get("/api/v1/forecast")
    totals = live.get("/api/v1/plan/totals")["plan"]
    assert totals["start"] == forecast["start"]
    start_ms = dt.datetime.fromisoformat(forecast["start"]).timestamp() * 1000
    current_q = str(int(start_ms // 900_000 * 900_000))
    trail = wait_for(lambda: page.evaluate(TRAIL).get("fleet"), 15, "the page to record the forecast")
    assert len(trail) >= len(forecast["period_s"]) and current_q in trail
    assert trail[current_q] == [totals["pv_available_w"][0], totals["load_w"][0]]
    before = live.get("/api/v1/fleet")["last_dispatch"]
    assert live.http.post("/api/v1/commands/dispatch-now").status_code == 202

    def new_forecast():
        start = live.get("/api/v1/forecast")["start"]
        return start if start != forecast["start"] and live.get("/api/v1/fleet")["last_dispatch"] != before else None

    wait_for(new_forecast, 90, "a new plan")

    def chart_shows_the_plan_in_force():
        # another plan may follow the one dispatch-now made: compare with the plan in force now
        shown = page.locator("#chart").get_attribute("data-plan-start")
        return shown if shown != forecast["start"] and shown == live.get("/api/v1/forecast")["start"] else None

    wait_for(chart_shows_the_plan_in_force, 30, "the chart to show the plan in force")
    # the quarter-hour had begun: a newer plan does not rewrite what was forecast for it
    assert page.evaluate(TRAIL)["fleet"][current_q] == trail[current_q]
    page.reload()
    assert page.evaluate(TRAIL)["fleet"][current_q] == trail[current_q]  # the tab's session keeps it
    assert tab.errors == []


def test_a_lost_connection_is_shown_and_the_page_recovers_when_the_api_answers_again(tab, live):
    page = tab.sign_in(live.operator_token)
    tab.context.route("**/api/v1/fleet", lambda route: route.abort("connectionrefused"))
    banner = page.locator("#banners")
    expect(banner).to_contain_text("Connection lost. Cannot reach the controller since", timeout=15_000)
    expect(page.locator("#live")).to_have_text("connection lost")
    expect(page.locator("#t-devices")).not_to_have_text("–")  # the last values stay, marked by the banner
    tab.context.unroute("**/api/v1/fleet")
    expect(banner).not_to_contain_text("Connection lost", timeout=15_000)
    expect(page.locator("#live")).to_contain_text("live")
    assert [e for e in tab.errors if "ERR_CONNECTION_REFUSED" not in e] == []


def test_the_page_is_served_with_a_strict_content_security_policy(live):
    r = httpx.get(live.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
    for asset in (
        "app.js",
        "chart.js",
        "format.js",
        "i18n.js",
        "messages-de.js",
        "messages-en.js",
        "schedule.js",
        "style.css",
    ):
        assert httpx.get(f"{live.url}/dashboard/{asset}").status_code == 200, asset
    assert "http" not in json.dumps([line for line in r.text.splitlines() if "src=" in line or "href=" in line])


def test_a_stage_for_a_group_from_the_panel_reaches_its_sites_only_and_the_views_follow_the_group(tab, live):
    page = tab.sign_in(live.operator_token)
    group = live.get(f"/api/v1/groups/{GROUP}")
    others = [s["id"] for s in live.get("/api/v1/sites") if s["id"] not in group["sites"]]
    expect(page.locator(f"#groups tr[data-group='{GROUP}']")).to_contain_text("feeder")
    page.select_option("#stage-select", "K3")
    page.select_option("#cmd-group", GROUP)  # choosing a group switches the scope to "group"
    page.click("#stage-send")
    expect(page.locator("#cmd-result")).to_contain_text("Stage K3 accepted as command")
    expect(page.locator("#cmd-result")).to_contain_text(f"group {GROUP}")
    stage = next(c for c in live.get("/api/v1/commands") if c["kind"] == "stage")
    assert stage["params"] == {"stage": "K3", "sites": group["sites"], "group": GROUP}
    caps = {c["site"]: c["stage"] for c in live.get("/api/v1/caps")["sites"]}
    assert all(caps[s] == "K3" for s in group["sites"]) and all(caps[s] is None for s in others)
    expect(page.locator(f"#groups tr[data-group='{GROUP}']")).to_contain_text("stage K3")
    expect(page.locator("#active-commands tr", has_text="stage K3")).to_contain_text(f"group {GROUP}")
    expect(page.locator("#audit tr").first).to_contain_text("stage")

    with page.expect_request(lambda r: f"/api/v1/groups/{GROUP}/history?" in r.url, timeout=30_000):
        page.select_option("#sites-group", GROUP)  # the group's sites only, and the group's chart
    expect(page.locator("#sites tr[data-site]")).to_have_count(len(group["sites"]))
    expect(page.locator("#sites-count")).to_have_text(f"{len(group['sites'])} sites")
    expect(page.locator("#chart-title")).to_have_text(f"Group {GROUP}")
    expect(page.locator("#chart-scope")).to_have_value(f"group:{GROUP}")
    tab.screenshot("dashboard-group.png")
    page.select_option("#sites-group", "")
    expect(page.locator("#chart-title")).to_have_text("Fleet")
    expect(page.locator("#sites tr[data-site]")).to_have_count(len(group["sites"]) + len(others))

    page.locator("#active-commands tr", has_text="stage K3").get_by_role("button", name="Cancel").click()
    expect(page.locator("#cmd-result")).to_contain_text(f"Command #{stage['id']} cancelled")
    assert tab.errors == []
