"""SPARCS optimizer: forecasts, the fleet dispatch LP, regulatory caps, fallback, baselines. No I/O.

- ``problem``: the interface — :class:`DispatchProblem` in, :class:`DispatchPlan` out (signs, units).
- ``forecast``: PV, load and price forecasts fed with arrays; MAE against later measurements.
- ``dispatch``: ``plan(problem)``: monolithic Pyomo model or hierarchical (``aggregate`` →
  ``pyomo_model`` → ``site_lp`` split-back), netted, clamped by ``caps``, scored by ``scoring``.
- ``solver``: :class:`PlanningWorker` — a solver subprocess with a wall-clock bound and fallbacks.
- ``fleet_arrays``: the problem as ``(sites, periods)`` arrays, every hard bound in one place.
- ``baselines``: no control and rule-based self-consumption, as plans.
- ``curves``: clear-sky PV and BDEW H0 load shared with the simulators.
- ``synthetic`` and ``bench``: seeded synthetic fleets and `sparcs bench dispatch`.

The grid rules (stages, installer ceiling, feed-in and export caps, the negative-price rule) come
from ``sparcs.config.grid_rules``; this package adds only its planning margin below a feed-in cap.
"""
