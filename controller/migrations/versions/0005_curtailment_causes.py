"""Curtailment by cause in the site history (docs/open-data.md "Curtailment"): ``curtailed_w``, the
forecast PV power the limit in force holds back, and ``curtail_cause`` (caps, stages,
negative_prices). Rows stored before have neither (NULL: unknown).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_version = sa.table("schema_version", sa.column("version", sa.Integer), sa.column("applied_at", sa.Float))


def upgrade() -> None:
    with op.batch_alter_table("site_history") as batch:
        batch.add_column(sa.Column("curtailed_w", sa.Float, nullable=True))
        batch.add_column(sa.Column("curtail_cause", sa.String(16), nullable=True))
    op.bulk_insert(_version, [{"version": 5, "applied_at": time.time()}])


def downgrade() -> None:
    op.execute(sa.delete(_version).where(_version.c.version == 5))
    with op.batch_alter_table("site_history") as batch:
        batch.drop_column("curtail_cause")
        batch.drop_column("curtailed_w")
