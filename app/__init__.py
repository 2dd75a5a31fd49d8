"""SPARCS swarm-plant controller, installed as one package.

This package (the repository's ``app/`` folder) is the composition root: the ``sparcs`` command
line (:mod:`sparcs.cli`), the factory that builds a controller from a fleet config
(:mod:`sparcs.factory`) and `sparcs run` (:mod:`sparcs.run`). The repository's top-level folders
install as its subpackages: ``sparcs.config``, ``sparcs.drivers``, ``sparcs.optimizer``,
``sparcs.simulators``, ``sparcs.controller`` and ``sparcs.twin``. See docs/architecture.md.
"""
