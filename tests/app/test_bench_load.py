"""`sparcs bench load` at a tiny size: it runs `sparcs run` with its simulators, loads the API, and
prints the JSON fields the benchmark promises (README.md "Command line"), with figures that fit."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparcs.bench_load import Keepalive, bucket_quantile, percentile
from sparcs.controller.metrics import POLL_BUCKETS_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_percentiles_from_samples_and_from_histogram_buckets():
    assert percentile([], 0.99) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    # 10 polls: 4 at most 0.1 s, 9 at most 0.2 s, all at most 0.5 s
    buckets = {0.1: 4.0, 0.2: 9.0, 0.5: 10.0, float("inf"): 10.0}
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1 + 0.1 * (5 - 4) / 5)
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * (9.9 - 9) / 1)
    assert bucket_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert bucket_quantile(0.99, {0.1: 1.0, float("inf"): 5.0}) == 0.1  # beyond the last bound: that bound


def test_poll_cycle_buckets_are_fine_enough_for_the_p99_the_bench_reads():
    """A poll's p99 read from buckets is off by up to a bucket's width: bounds 0.75 s and 1 s apart
    read one slow poll of 0.76 s as ~1 s, a third more than it took."""
    steps = list(itertools.pairwise(POLL_BUCKETS_S))
    assert all(hi / lo <= 1.1 + 1e-9 for lo, hi in steps if 0.5 <= lo < 2)
    assert all(hi / lo <= 7 / 6 + 1e-9 for lo, hi in steps if 0.3 <= lo < 5)
    assert list(POLL_BUCKETS_S) == sorted(set(POLL_BUCKETS_S))


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


async def test_a_request_the_server_closed_its_idle_connection_under_is_sent_again_on_a_new_one():
    """The server closes a kept-alive connection as the client reuses it (its idle timeout): the client
    sends the GET once more on a new connection, as HTTP clients do; a fresh connection that fails is
    an error."""
    connections = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        if len(connections) == 1:  # the first connection: the second request is read, then it is closed
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = Keepalive("127.0.0.1", port, "t")
    try:
        assert await conn.get("/api/v1/fleet") == 200
        assert await conn.get("/api/v1/fleet") == 200
        assert len(connections) == 2
    finally:
        conn.close()
        server.close()
        await server.wait_closed()


def test_bench_load_prints_its_json(tmp_path):
    args = ["--devices", "6", "--clients", "2", "--phase-s", "4", "--rounds", "1", "--poll-interval", "1"]
    args += ["--fleet-rate", "20"]
    done = subprocess.run(
        [sys.executable, "-m", "sparcs", "bench", "load", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["devices"] == 6 and got["clients"] == 2 and got["poll_interval_s"] == 1.0
    for key in (
        "poll_cycle_p50_s_unloaded",
        "poll_cycle_p99_s_unloaded",
        "poll_cycle_p50_s_loaded",
        "poll_cycle_p99_s_loaded",
        "poll_cycle_p99_ratio",
        "data_age_max_s",
    ):
        assert isinstance(got[key], float) and got[key] >= 0, key
    assert got["modbus_timeouts"] == 0 and got["write_alarms"] == 0  # six healthy devices, light load
    for route in ("/api/v1/devices", "/api/v1/sites", "/api/v1/fleet", "fleet_stream"):
        figures = got["api"][route]
        assert figures["requests"] > 0 and figures["errors"] == 0, route
        assert figures["p50_ms"] <= figures["p99_ms"], route
    assert got["fleet_alone"]["requests"] > 0
    for phase in ("unloaded", "loaded", "stream"):
        assert got["phases"][phase]["polls"] >= 1, phase
    assert set(got["goals"]) == {
        "poll_p99_loaded_within_1_5x_unloaded",
        "data_age_within_2_poll_intervals",
        "no_false_modbus_timeouts",
        "no_write_alarms",
        "fleet_p99_within_50_ms_at_rate",
    }
