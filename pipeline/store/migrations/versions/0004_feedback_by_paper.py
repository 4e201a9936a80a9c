"""an index on feedback.paper_id: planning counts other readers' presses per paper

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 07:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_feedback_paper_id", "feedback", ["paper_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_feedback_paper_id", table_name="feedback")
