"""The page in German and English, barrier-free (WCAG 2.1 AA), and worked by keyboard alone.

Each language: the browser's language picks it; an axe-core audit of every view (sign-in, the fleet,
the chart's table, a site's drill-down, the viewer's page) finds no serious or critical violation; the
sign-in, a site drill-down, a device's control switch and a stage command are done with the keyboard
alone, each control showing its focus; numbers and times are formatted in the language. The choice of
language is remembered. Screenshots of the main views in both languages go to test-artifacts/.

axe-core is the one the axe-playwright-python package ships (axe.min.js, MPL-2.0; test-only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from axe_playwright_python.base import AXE_SCRIPT
from playwright.sync_api import Browser, Page, expect

from tests.dashboard.browser import Session
from tests.dashboard.live import LiveController, wait_for

pytestmark = pytest.mark.slow
expect.set_options(timeout=15_000)
LOCALES = {"de": "de-DE", "en": "en-GB"}
# The texts each language must show (from messages-de.js and messages-en.js).
TEXT = {
    "de": {
        "sign_in": "Anmelden",
        "site": "Anlage {id}",
        "stage": "Stufe K2 angenommen als Befehl",
        "monitor": "nur beobachten",
        "controlled": "geregelt",
        "csv": "Fahrplan nicht gesendet: Zeile 2: braucht zwei Werte, timestamp und export_kw.",
        "kw": r"^-?\d{1,3}(\.\d{3})*,\d kW$",
    },
    "en": {
        "sign_in": "Sign in",
        "site": "Site {id}",
        "stage": "Stage K2 accepted as command",
        "monitor": "monitor only",
        "controlled": "controlled",
        "csv": "Schedule not sent: line 2: needs two values, timestamp and export_kw.",
        "kw": r"^-?\d{1,3}(,\d{3})*\.\d kW$",
    },
}
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
AXE_RUN = """(tags) => axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]})
  .then((r) => r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" "))})))"""
FOCUS_VISIBLE = """() => { const e = document.activeElement; const s = getComputedStyle(e);
  return e !== document.body && s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2; }"""


def audit(page: Page, view: str) -> None:
    """No serious or critical WCAG 2.1 A/AA violation in the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT)
    found = page.evaluate(AXE_RUN, WCAG_AA)
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, f"{view}: {bad}"


def tab_to(page: Page, selector: str, limit: int = 400) -> None:
    """Presses Tab until the element ``selector`` has the focus, and checks that the focus is visible."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(sel) => document.activeElement?.matches(sel) ?? false", selector):
            assert page.evaluate(FOCUS_VISIBLE), f"{selector} has the focus but shows no focus outline"
            return
    pytest.fail(f"Tab never reached {selector}")


@pytest.fixture(params=["de", "en"])
def lang_tab(request, browser: Browser, live: LiveController) -> Iterator[tuple[str, Session]]:
    s = Session(browser, live, locale=LOCALES[request.param])
    try:
        yield request.param, s
    finally:
        s.close()


def test_every_view_is_accessible_and_keyboard_alone_signs_in_drills_down_switches_and_stages(lang_tab, live):
    lang, tab = lang_tab
    text = TEXT[lang]
    page = tab.page
    page.goto(live.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", lang)  # from the browser's language
    expect(page.locator("#login h2")).to_have_text(text["sign_in"])
    audit(page, "sign-in")
    tab.screenshot(f"dashboard-{lang}-sign-in.png")

    # sign in: the token field has the focus; type and Enter
    assert page.evaluate("() => document.activeElement.id") == "token-input"
    page.keyboard.type(live.operator_token)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()
    page.wait_for_selector("#tiles[data-ts^='2']", state="attached")
    expect(page.locator("#t-pv")).to_have_text(re.compile(text["kw"]))  # numbers in the page's language
    expect(page.locator("#sites tr[data-site]").first).to_be_visible()
    audit(page, "fleet")
    tab.screenshot(f"dashboard-{lang}-fleet.png")

    # the chart's table alternative, opened by keyboard
    tab_to(page, "#chart-table-box summary")
    page.keyboard.press("Enter")
    expect(page.locator("#chart-table-body tr").first).to_be_visible()
    audit(page, "chart table")

    # a site's drill-down: its chart and its devices
    site = live.get("/api/v1/sites")[1]
    tab_to(page, f"#sites [data-focus='site:{site['id']}']")
    page.keyboard.press("Enter")
    expect(page.locator("#chart-title")).to_have_text(text["site"].format(id=site["id"]))
    expect(page.locator("#devices tr[data-device]")).to_have_count(len(site["devices"]))
    audit(page, "site drill-down")
    tab.screenshot(f"dashboard-{lang}-site.png")

    # the device's control switch: monitor only, and back
    device = next(d for d in live.get("/api/v1/devices", site=site["id"]) if d["kind"] != "meter")
    switch = f"[data-focus='switch:{device['id']}']"
    tab_to(page, switch)
    page.keyboard.press("Enter")
    row = page.locator(f"#devices tr[data-device='{device['id']}']")
    expect(row).to_contain_text(text["monitor"])
    assert live.get(f"/api/v1/devices/{device['id']}")["control_switch"]["controlled"] is False
    assert page.evaluate("(sel) => document.activeElement.matches(sel)", switch)  # the focus stays on it
    page.keyboard.press("Enter")
    expect(row.locator("td").nth(4)).to_contain_text(text["controlled"])
    wait_for(lambda: live.get(f"/api/v1/devices/{device['id']}")["control_switch"]["controlled"], 15, "control again")

    # a stage for the drilled-down site (it joined the chosen sites): K2 for 30 min, sent by Enter
    expect(page.locator("#cmd-sites")).to_have_value(site["id"])
    tab_to(page, "input[name=cmd-scope]:checked")  # a radio group is one tab stop; the arrows choose
    page.keyboard.press("ArrowRight")
    expect(page.locator("#cmd-scope-chosen")).to_be_checked()
    tab_to(page, "#stage-select")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#stage-select")).to_have_value("K2")
    tab_to(page, "#stage-send")
    page.keyboard.press("Enter")
    expect(page.locator("#cmd-result")).to_contain_text(text["stage"])
    stage = next(c for c in live.get("/api/v1/commands") if c["kind"] == "stage")
    assert stage["params"] == {"stage": "K2", "sites": [site["id"]]} and stage["who"] == live.operator_name
    audit(page, "after a command")
    tab_to(page, f"[data-focus='cancel:{stage['id']}']")
    page.keyboard.press("Enter")
    wait_for(lambda: not [c for c in live.get("/api/v1/commands") if c["id"] == stage["id"]], 15, "the cancel")

    # a schedule the page refuses is explained in the page's language
    tab_to(page, "#schedule-csv")
    page.keyboard.type("timestamp,export_kw\n2026-06-21T14:00:00+02:00\n")
    tab_to(page, "#schedule-send")
    page.keyboard.press("Enter")
    expect(page.locator("#cmd-result")).to_have_text(text["csv"])
    assert tab.errors == []


def test_the_language_switch_is_remembered_and_the_viewer_page_is_accessible(browser, live):
    tab = Session(browser, live, locale="en-GB")
    try:
        page = tab.sign_in(live.viewer_token)
        expect(page.locator("#cmd-reason")).to_contain_text("Commands need an operator token")
        audit(page, "viewer, English")
        tab.screenshot("dashboard-en-viewer.png")
        page.select_option("#lang", "de")
        expect(page.locator("html")).to_have_attribute("lang", "de")
        expect(page.locator("#cmd-reason")).to_contain_text("Befehle brauchen ein Operator-Token")
        expect(page.locator("#sites-heading")).to_have_text("Anlagen")
        expect(page.locator("#t-pv")).to_have_text(re.compile(TEXT["de"]["kw"]))
        page.reload()  # remembered: German again, though the browser says English
        expect(page.locator("#sites-heading")).to_have_text("Anlagen")
        expect(page.locator("#lang")).to_have_value("de")
        audit(page, "viewer, German")
        tab.screenshot("dashboard-de-viewer.png")
        assert tab.errors == []
    finally:
        tab.close()
