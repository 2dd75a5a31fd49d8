"""Loopback ports for tests that start servers in another process."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports below the ephemeral range.

    Below it, no port-0 bind (the simulators' internal servers, outgoing connections) can take one
    of them between this check and the moment another process binds it, e.g. after a restart.
    """
    low, _high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports
