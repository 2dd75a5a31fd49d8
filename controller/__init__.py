"""SPARCS controller: ties drivers and optimizer together and runs for months.

- ``cycle``: :class:`~controller.cycle.Controller` and its one control cycle (poll → fleet state →
  export guard → on dispatch ticks plan → caps → write), a function of an injected clock;
- ``scheduler``: APScheduler jobs that drive the cycle in real time; ``serve``: `sparcs run`;
- ``state``: fleet state and flexibility from telemetry; ``setpoints``: plan, stages and guard →
  per-device setpoints; ``planning``: forecasts + commands → dispatch problem → bounded solve;
- ``commands``: operator commands (stages, §14a, export schedule, pause); ``store``: the history
  store and audit log; ``auth``/``tokens``: API tokens; ``api``: the operator API;
  ``metrics``: Prometheus metrics; ``runtime``: wiring with the real drivers and planner.
"""
