"""campaign recipients: a campaign's narrow queue, turned into pushes just ahead of the sender

Starting a campaign to a million members wrote a million full outbox rows (key, payload, four
indexes): 54 times a plain scan of the members. It now writes one narrow row per member here
(a table keyed by campaign and member, without rowid on SQLite), and the sender's feed makes
the pushes a few hundred at a time.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_recipients",
        sa.Column("campaign_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("member_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("variant", sa.String(length=1), nullable=False),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint(
            "campaign_id", "member_id", name=op.f("pk_campaign_recipients")
        ),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("campaign_recipients")
