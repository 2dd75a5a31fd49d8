"""Alembic migrations of the history store (docs/storage.md "Migrations"): ``env.py`` and ``versions/``.

Revision 0001 is the schema of the 0.1.0 release, which recorded it as ``schema_version`` 1; a store
of that release is stamped 0001 and upgraded from there (:mod:`sparcs.controller.migrate`).
"""
