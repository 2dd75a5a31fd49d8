"""The simulation clock: Unix seconds (UTC) as a float, in real time, accelerated, or stepped.

Everything in the simulators reads time from one :class:`SimClock` so that a day can be replayed
faster than real time (``speed``) or stepped from outside (the twin), and so that revert timers,
ramps and energy counters all agree on what "now" is.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """Sim time in Unix seconds (UTC).

    Free-running: ``now() = start_s + speed × (wall() − wall at construction)``.
    Stepped (``stepped=True``): time stands still until :meth:`step` advances it.
    """

    def __init__(
        self,
        start_s: float,
        speed: float = 1.0,
        stepped: bool = False,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0 (sim seconds per wall second), got {speed}")
        self.start_s = float(start_s)
        self.speed = float(speed)
        self.stepped = stepped
        self._wall = wall
        self._wall0 = wall()
        self._offset_s = 0.0

    def now(self) -> float:
        """Current sim time, Unix seconds (UTC)."""
        if self.stepped:
            return self.start_s + self._offset_s
        return self.start_s + (self._wall() - self._wall0) * self.speed

    def step(self, seconds: float) -> None:
        """Advance a stepped clock by ``seconds`` (≥ 0) of sim time."""
        if not self.stepped:
            raise RuntimeError("step() needs a stepped clock (SimClock(..., stepped=True))")
        if seconds < 0:
            raise ValueError(f"cannot step the clock backwards ({seconds} s)")
        self._offset_s += seconds
