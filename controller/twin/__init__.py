"""The digital twin: replay a day of the fleet with the controller's real cycle and compare strategies.

``sparcs twin --config FILE --date YYYY-MM-DD [--scenario FILE] --strategy S ... --out DIR`` runs
:func:`controller.twin.run.run_twin`: per strategy a fresh simulated fleet (its own process,
:mod:`~controller.twin.fleet_process`) on a stepped clock, the same :class:`controller.cycle.Controller`
with that strategy's planner (:mod:`~controller.twin.strategies`), one poll per simulated minute and a
dispatch per quarter-hour (:mod:`~controller.twin.replay`); KPIs from the simulators' ground truth
(:mod:`~controller.twin.kpi`), plots (:mod:`~controller.twin.plots`), report.json and summary.md
(:mod:`~controller.twin.report`). Scenario files: :mod:`~controller.twin.scenario`, config/scenarios/.
"""
