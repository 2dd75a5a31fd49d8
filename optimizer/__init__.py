"""SPARCS optimizer: forecasts, the fleet dispatch LP, regulatory caps, fallback, baselines. No I/O.

- ``problem``: the interface — :class:`DispatchProblem` in, :class:`DispatchPlan` out (signs, units).
- ``forecast``: PV, load and price forecasts fed with arrays; MAE against later measurements.
- ``dispatch``: ``plan(problem)``: monolithic Pyomo model or hierarchical (``aggregate`` →
  ``pyomo_model`` → ``site_lp`` split-back), netted, clamped by ``caps``, scored by ``scoring``.
- ``solver``: :class:`PlanningWorker` — a solver subprocess with a wall-clock bound and fallbacks.
- ``baselines``: no control and rule-based self-consumption, as plans.
- ``profiles``: clear-sky PV and BDEW H0 load shared with the simulators.
- ``synthetic`` and ``bench``: seeded synthetic fleets and `sparcs bench dispatch`.
"""
