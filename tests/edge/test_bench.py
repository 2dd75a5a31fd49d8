"""`sparcs bench edges --light`: a few light edges, the broker and the production central, on loopback."""

from __future__ import annotations

import pytest

from sparcs.edge_bench import run_edge_bench

pytestmark = pytest.mark.slow


async def test_the_edge_bench_measures_telemetry_age_and_a_fanout_every_edge_acknowledged():
    got = await run_edge_bench(3, light=True, poll_s=1.0, duration_s=10.0, workers=2)
    assert got["sites"] == 3 and got["workers"] == 2 and got["tls"] is True
    assert got["sites_online"] == 3 and got["devices_reporting"] > 3
    assert got["telemetry_msgs"] >= 3 * 5  # one per site and poll over the measured window, give or take a few
    assert 0 <= got["telemetry_age_p50_s"] <= got["telemetry_age_p99_s"]
    assert got["fanout_acked"] == 3 and got["fanout_s"] is not None and got["fanout_s"] >= 0
    assert got["publish_s"] is not None and got["plan_at_edges_max_s"] <= got["fanout_s"]
    assert got["central_cores"] > 0 and got["broker_msgs_per_s"] > 0
