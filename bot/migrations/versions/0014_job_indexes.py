"""job indexes: the daily jobs find what is due by index instead of reading every member

The lifecycle job re-evaluated every member's stage each day, and the red-line watch read
every order there ever was, to find the few rows that changed or count: indexes on what
they look for (stage with the last purchase and sign-up; stage with the day it was entered;
when orders happened, with what the cost figures sum, and when coupons were made) let each
read only what is due. The single stage index is a prefix of both new ones and goes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 20:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_members_stage", table_name="members")
    op.create_index(
        "ix_members_stage_activity", "members", ["stage", "last_purchase_at", "created_at"]
    )
    op.create_index("ix_members_stage_since", "members", ["stage", "stage_since"])
    # Covering: the month's sums (red-line watch, monthly report) read the index alone.
    op.create_index(
        "ix_orders_occurred_at", "orders",
        ["occurred_at", "member_id", "amount", "coupon_discount", "offset", "paid"],
    )
    op.create_index("ix_coupons_created_at", "coupons", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_coupons_created_at", table_name="coupons")
    op.drop_index("ix_orders_occurred_at", table_name="orders")
    op.drop_index("ix_members_stage_since", table_name="members")
    op.drop_index("ix_members_stage_activity", table_name="members")
    op.create_index("ix_members_stage", "members", ["stage"])
