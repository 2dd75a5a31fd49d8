"""What one GET /api/v1/fleet costs the API process, counted over real HTTP: no store read for the
token (the tokens are read at most once per TOKENS_HELD_S, a token made meanwhile by another process
still works at once, a revoked one stops within that time), the sum over the fleet once per fleet
state, and nothing handed to the thread pool (every dependency is a coroutine)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from sparcs.controller.auth import TOKENS_HELD_S, Principal, TokenBook, create_token
from sparcs.controller.cycle import WallClock
from sparcs.controller.state import FleetState, build_state
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.conftest import site_telemetry
from tests.controller.serving import serving


def workers() -> set[int | None]:
    """The thread pool's threads now (anyio names them so)."""
    return {t.ident for t in threading.enumerate() if t.name == "AnyIO worker thread"}


def test_a_fleet_request_reads_no_store_sums_the_fleet_once_per_state_and_uses_no_thread(
    tmp_path, small_cfg, monkeypatch
):
    asyncio.run(_fleet_requests(tmp_path, small_cfg, monkeypatch))


async def _fleet_requests(tmp_path, small_cfg, monkeypatch):
    store = Store(data_dir=tmp_path)
    ctl = build_controller(small_cfg, store, WallClock())
    telemetry = {}
    for site in small_cfg.sites:
        telemetry.update(site_telemetry(site, pv=3000.0))
    ctl.state = build_state(small_cfg, telemetry, time.time())
    ctl.last_poll_s = time.time()
    viewer = create_token(store, "viewer", "viewer", 0.0)
    reads, sums = [0], [0]
    list_tokens, summary = store.list_tokens, FleetState.summary

    def counted_list_tokens():
        reads[0] += 1
        return list_tokens()

    def counted_summary(self):
        sums[0] += 1
        return summary(self)

    monkeypatch.setattr(store, "list_tokens", counted_list_tokens)
    monkeypatch.setattr(FleetState, "summary", counted_summary)
    before = workers()
    async with serving(small_cfg, tmp_path, ctl=ctl) as served:
        headers = {"Authorization": f"Bearer {viewer}"}
        async with httpx.AsyncClient(base_url=served.base_url, headers=headers) as http:
            bodies = [(await http.get("/api/v1/fleet")).json() for _ in range(20)]
            assert all(b["now"]["pv_w"] == bodies[0]["now"]["pv_w"] for b in bodies)
            assert bodies[-1]["data_age_s"] > bodies[0]["data_age_s"]  # the time-dependent fields are per request
            assert reads[0] == 1 and sums[0] == 1

            other = create_token(store, "made-by-the-cli", "viewer", 0.0)  # another process's token
            r = await http.get("/api/v1/fleet", headers={"Authorization": f"Bearer {other}"})
            assert r.status_code == 200 and reads[0] == 2  # looked for at once

            for site in small_cfg.sites:
                telemetry.update(site_telemetry(site, pv=1000.0))
            ctl.state = build_state(small_cfg, telemetry, time.time())  # the next poll
            after = [(await http.get("/api/v1/fleet")).json() for _ in range(5)]
            assert after[0]["now"]["pv_w"] < bodies[0]["now"]["pv_w"] and sums[0] == 2
    assert workers() <= before, "a /fleet request handed work to the thread pool"
    await ctl.close()
    store.close()


def test_a_revocation_by_another_process_holds_within_the_held_time(tmp_path):
    store = Store(data_dir=tmp_path)
    ticks = [0.0]
    book = TokenBook(store, time.time, lambda: ticks[0])
    token = create_token(store, "t", "viewer", 0.0)
    assert isinstance(book.check(token), Principal)
    store.revoke_token("t")  # `sparcs token revoke` in another process
    ticks[0] += TOKENS_HELD_S / 2
    assert isinstance(book.check(token), Principal)  # held
    ticks[0] += TOKENS_HELD_S / 2
    assert book.check(token) is None
    again = book.add("t2", "viewer", "admin")
    book.revoke("t2", "admin")  # through the book itself: at once
    assert book.check(again) is None
    store.close()
