"""Every poll an edge sent, once (docs/edges.md "Link loss"): ``edge_polls`` keyed by site and
sequence number, so a poll resent after a lost acknowledgement is no duplicate.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_version = sa.table("schema_version", sa.column("version", sa.Integer), sa.column("applied_at", sa.Float))


def upgrade() -> None:
    op.create_table(
        "edge_polls",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("edge_id", sa.String(64), nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
    )
    op.create_index("ix_edge_polls_site_ts", "edge_polls", ["site_id", "ts"])
    op.bulk_insert(_version, [{"version": 4, "applied_at": time.time()}])


def downgrade() -> None:
    op.execute(sa.delete(_version).where(_version.c.version == 4))
    op.drop_index("ix_edge_polls_site_ts", table_name="edge_polls")
    op.drop_table("edge_polls")
