"""The schema of the 0.1.0 release (its ``schema_version`` 1), frozen here as it was.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    sv = op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("applied_at", sa.Float, nullable=False),
    )
    op.create_table(
        "telemetry",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
    )
    op.create_index("ix_telemetry_device_ts", "telemetry", ["device_id", "ts"])
    op.create_index("ix_telemetry_ts", "telemetry", ["ts"])
    power = ("pv_w", "battery_w", "load_w", "grid_w", "export_w", "soc", "flex_up_w", "flex_down_w")
    op.create_table(
        "fleet",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        *(sa.Column(c, sa.Float) for c in power),
        sa.Column("online", sa.Integer),
        sa.Column("stale", sa.Integer),
        sa.Column("total", sa.Integer),
    )
    op.create_index("ix_fleet_ts", "fleet", ["ts"])
    op.create_table(
        "site_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        *(
            sa.Column(c, sa.Float)
            for c in ("pv_w", "battery_w", "grid_w", "load_w", "export_w", "soc", "flex_up_w", "flex_down_w")
        ),
    )
    op.create_index("ix_site_history_site_ts", "site_history", ["site_id", "ts"])
    op.create_index("ix_site_history_ts", "site_history", ["ts"])
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("path", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("objective_eur", sa.Float),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_plans_created_at", "plans", ["created_at"])
    op.create_table(
        "commands",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("who", sa.String(64), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("expires_s", sa.Float),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("cancelled_at", sa.Float),
        sa.Column("cancelled_by", sa.String(64)),
    )
    op.create_index("ix_commands_active", "commands", ["cancelled_at", "expires_s"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("who", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_ts", "audit", ["ts"])
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("raised_at", sa.Float, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("cleared_at", sa.Float),
    )
    op.create_index("ix_alarms_raised_at", "alarms", ["raised_at"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.bulk_insert(sv, [{"version": 1, "applied_at": time.time()}])


def downgrade() -> None:
    for table in ("tokens", "alarms", "audit", "commands", "plans", "site_history", "fleet", "telemetry"):
        op.drop_table(table)
    op.drop_table("schema_version")
