"""indexes the monthly report reads instead of tables

The report counts members by tier, stage and status with their stage and join dates: an
index of just those columns (they change rarely, a balance change never touches it) is
read in group order, without the table or a sort. The 12-month growth per member is read
from an index that now also holds the entry's source and amount, so neither the report's
percentiles nor a card's growth sum visit the table; it replaces the index it extends.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 20:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_members_groups", "members", ["tier", "stage", "status", "stage_since", "created_at"]
    )
    op.create_index(
        "ix_growth_member_window", "growth_entries",
        ["member_id", "occurred_at", "source", "amount"],
    )
    op.drop_index("ix_growth_member_time", table_name="growth_entries")
    op.create_index("ix_ledger_period", "ledger_entries", ["created_at", "kind", "amount"])


def downgrade() -> None:
    op.drop_index("ix_ledger_period", table_name="ledger_entries")
    op.create_index("ix_growth_member_time", "growth_entries", ["member_id", "occurred_at"])
    op.drop_index("ix_growth_member_window", table_name="growth_entries")
    op.drop_index("ix_members_groups", table_name="members")
