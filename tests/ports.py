"""Loopback ports for tests that start servers in another process."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path


def _worker_slice(first: int, end: int) -> tuple[int, int]:
    """This pytest-xdist worker's share of [first, end): workers (processes) never draw the same port."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", "gw0"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (end - first) // count
    start = first + int(worker.removeprefix("gw")) * size
    return start, start + size


_GIVEN: set[int] = set()  # handed out in this test process: a later call never repeats one


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports below the ephemeral range, none handed out before in this process.

    Below it, no port-0 bind (the simulators' internal servers, outgoing connections) can take one
    of them between this check and the moment another process binds it, e.g. after a restart.
    Ports are free when chosen but bound later by a child process: two calls for one test (device
    ports, then the API's) must not return the same port, so every port handed out is remembered.
    """
    ephemeral, _high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.Random()
    first, end = _worker_slice(max(1024, ephemeral - 12_000), ephemeral)
    if len(_GIVEN) + n > (end - first) // 2:
        _GIVEN.clear()  # long-finished tests held these; half the range stays for the collision check
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(first, end)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in _GIVEN:
            _GIVEN.add(port)
            ports.append(port)
    return ports
