"""The digital twin: replay a day of the fleet with the controller's real cycle and compare strategies.

``sparcs twin --config FILE --date YYYY-MM-DD [--scenario FILE] --strategy S ... --out DIR`` runs
:func:`twin.run.run_twin`: per strategy a fresh simulated fleet (its own process,
:mod:`~twin.fleet_process`) on a stepped clock, the same :class:`controller.cycle.Controller`
with that strategy's planner (:mod:`~twin.strategies`), built by :func:`sparcs.factory.build_controller`,
polling and dispatching at the fleet file's intervals unless the scenario sets others
(docs/definitions.md "Dispatch cadence"; :mod:`~twin.replay`); KPIs from the simulators' ground truth
(:mod:`~twin.kpi`), plots (:mod:`~twin.plots`), report.json and summary.md
(:mod:`~twin.report`). Scenario files: :mod:`~twin.scenario`, config/scenarios/.
"""
