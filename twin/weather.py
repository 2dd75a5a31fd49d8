"""The simulated world's weather forecast as a weather provider for the production planner.

The twin's optimizer plans with what a utility would have: the simulators' numerical weather
prediction (:mod:`sparcs.simulators.nwp`), issued in runs, wrong by more the further it looks
ahead, served through the same :class:`~sparcs.controller.weather.WeatherService` that carries
Open-Meteo or a CSV file in production.
"""

from __future__ import annotations

import numpy as np

from sparcs.config.schema import FleetConfig, SimulationConfig
from sparcs.controller.weather import Place, WeatherSeries, WeatherService
from sparcs.simulators.nwp import RUN_EVERY_S, forecast_run


class SimulatedNwpProvider:
    """Forecasts of the simulated fleet's weather (seed and weather of ``sim``) at grid places."""

    name = "simulated-nwp"

    def __init__(self, sim: SimulationConfig):
        self.sim = sim

    async def fetch(self, places: list[Place], now_s: float) -> dict[Place, WeatherSeries]:
        out = {}
        for place in places:
            run = forecast_run(self.sim.weather, self.sim.seed, place, now_s)
            # The simulated world has no temperature effect (simulators.nwp): no air temperature.
            no_temperature = np.full_like(run.ghi_w_m2, np.nan)
            out[place] = WeatherSeries(run.run_s, run.start_s, run.ghi_w_m2, no_temperature, run.dni_w_m2, run.dhi_w_m2)
        return out


def simulated_weather(cfg: FleetConfig) -> WeatherService:
    """The weather service of a replay: the simulated forecast, fetched once per run, on the stepped clock."""
    provider = SimulatedNwpProvider(cfg.simulation or SimulationConfig())
    places = [(s.location.lat, s.location.lon) for s in cfg.sites]
    return WeatherService(
        provider, places, refresh_s=RUN_EVERY_S / 6, cell_deg=cfg.forecast.weather.cell_deg, wait=True
    )
