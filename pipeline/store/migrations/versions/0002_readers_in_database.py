"""readers' settings in the database, versioned; outbox rows record the version; meta

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("origin", sa.String(length=16), nullable=False, server_default="config")
        )
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC")
        )
        batch_op.add_column(
            sa.Column("frequency", sa.String(length=128), nullable=False, server_default="daily")
        )
        batch_op.add_column(
            sa.Column("send_at", sa.String(length=5), nullable=False, server_default="08:00")
        )
        batch_op.add_column(
            sa.Column("on_empty", sa.String(length=8), nullable=False, server_default="skip")
        )
        batch_op.add_column(
            sa.Column("profile", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        # An empty fingerprint never equals a real one: the next sync rewrites every reader.
        batch_op.add_column(
            sa.Column("fingerprint", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("subscriber_version", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meta")),
    )


def downgrade() -> None:
    op.drop_table("meta")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("subscriber_version")
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        for column in (
            "updated_at",
            "fingerprint",
            "profile",
            "on_empty",
            "send_at",
            "frequency",
            "timezone",
            "version",
            "origin",
        ):
            batch_op.drop_column(column)
