"""Token expiry and the run-time control switch per device (docs/operations.md, docs/security.md).

- ``tokens.expires_at``: Unix s after which the token is refused (NULL: never; every existing token).
- ``device_control``: a device's switch (controlled or monitor-only), who set it and when; a row
  only for a device an operator switched.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_version = sa.table("schema_version", sa.column("version", sa.Integer), sa.column("applied_at", sa.Float))


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.Float))
    op.create_table(
        "device_control",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("controlled", sa.Integer, nullable=False),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("changed_by", sa.String(64), nullable=False),
    )
    op.bulk_insert(_version, [{"version": 3, "applied_at": time.time()}])


def downgrade() -> None:
    """Back to 0002: switches and expiries are dropped (every token then never expires, every device
    follows the fleet file's ``control`` again)."""
    op.execute(sa.delete(_version).where(_version.c.version == 3))
    op.drop_table("device_control")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("expires_at")
