"""Compact plans (one row, per-site series packed), the setpoints written and read back, history gaps.

- ``plans``: the JSON ``data`` becomes ``header`` (JSON), ``site_ids`` (JSON) and ``site_data`` (the
  per-site series as zlib-compressed float32, :mod:`sparcs.controller.plan_codec`); stored plans are
  converted both ways.
- ``setpoints``: per device each setpoint written (or released, or failed) with its read-back.
- ``history_gaps``: spans whose history was not stored (the store failed longer than the writer's
  queue holds).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from sparcs.controller.plan import Plan
from sparcs.controller.plan_codec import PackedPlan, pack_plan, unpack_plan

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_plans = sa.table(
    "plans",
    sa.column("id", sa.Integer),
    sa.column("data", sa.JSON),
    sa.column("header", sa.JSON),
    sa.column("site_ids", sa.JSON),
    sa.column("site_data", sa.LargeBinary),
)
_version = sa.table("schema_version", sa.column("version", sa.Integer), sa.column("applied_at", sa.Float))


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("header", sa.JSON))
        batch.add_column(sa.Column("site_ids", sa.JSON))
        batch.add_column(sa.Column("site_data", sa.LargeBinary))
    conn = op.get_bind()
    for row in conn.execute(sa.select(_plans.c.id, _plans.c.data)).all():
        packed = pack_plan(Plan.from_record(row.data))
        conn.execute(
            sa.update(_plans)
            .where(_plans.c.id == row.id)
            .values(header=packed.header, site_ids=packed.site_ids, site_data=packed.site_data)
        )
    with op.batch_alter_table("plans") as batch:
        batch.alter_column("header", existing_type=sa.JSON, nullable=False)
        batch.alter_column("site_ids", existing_type=sa.JSON, nullable=False)
        batch.alter_column("site_data", existing_type=sa.LargeBinary, nullable=False)
        batch.drop_column("data")
    op.create_table(
        "setpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("requested_w", sa.Float),
        sa.Column("written_w", sa.Float),
        sa.Column("readback_w", sa.Float),
        sa.Column("clamped", sa.Boolean, nullable=False),
        sa.Column("mismatch", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_setpoints_device_ts", "setpoints", ["device_id", "ts"])
    op.create_index("ix_setpoints_ts", "setpoints", ["ts"])
    op.create_table(
        "history_gaps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("writes_lost", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_history_gaps_start_s", "history_gaps", ["start_s"])
    op.bulk_insert(_version, [{"version": 2, "applied_at": time.time()}])


def downgrade() -> None:
    op.execute(sa.delete(_version).where(_version.c.version == 2))
    op.drop_table("history_gaps")
    op.drop_table("setpoints")
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("data", sa.JSON))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_plans.c.id, _plans.c.header, _plans.c.site_ids, _plans.c.site_data)).all()
    for row in rows:
        plan = unpack_plan(PackedPlan(row.header, row.site_ids, row.site_data))
        conn.execute(sa.update(_plans).where(_plans.c.id == row.id).values(data=plan.to_record()))
    with op.batch_alter_table("plans") as batch:
        batch.alter_column("data", existing_type=sa.JSON, nullable=False)
        batch.drop_column("site_data")
        batch.drop_column("site_ids")
        batch.drop_column("header")
