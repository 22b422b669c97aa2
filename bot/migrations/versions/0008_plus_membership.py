"""plus membership: the paid membership's state on members, and every Stars payment

PLUS is bought, tiers are earned: a member's PLUS is a state (none | trial | paid) with the
instant it ends, whether the trial was used and whether the subscription was cancelled (PLUS
then stays to the end of the paid period). Each Telegram Stars payment is a row, unique by
Telegram's charge id, with its period and status, for the shop's accounts and refunds.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(
            sa.Column("plus_state", sa.String(length=8), nullable=False, server_default="none")
        )
        batch.add_column(sa.Column("plus_until", sa.DateTime(), nullable=True))
        batch.add_column(
            sa.Column(
                "plus_trial_used", sa.Boolean(), nullable=False, server_default=sa.text("false")
            )
        )
        batch.add_column(
            sa.Column(
                "plus_cancelled", sa.Boolean(), nullable=False, server_default=sa.text("false")
            )
        )
        batch.create_index("ix_members_plus", ["plus_state", "plus_until"])
    op.create_table(
        "star_payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("charge_id", sa.String(length=128), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("period_end", sa.DateTime(), nullable=False),
        sa.Column("is_recurring", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("refund_reason", sa.String(length=255), nullable=True),
        sa.Column("refunded_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_star_payments_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_star_payments")),
        sa.UniqueConstraint("charge_id", name=op.f("uq_star_payments_charge_id")),
    )
    op.create_index(op.f("ix_star_payments_member_id"), "star_payments", ["member_id"])
    op.create_index(op.f("ix_star_payments_created_at"), "star_payments", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_star_payments_created_at"), table_name="star_payments")
    op.drop_index(op.f("ix_star_payments_member_id"), table_name="star_payments")
    op.drop_table("star_payments")
    with op.batch_alter_table("members") as batch:
        batch.drop_index("ix_members_plus")
        batch.drop_column("plus_cancelled")
        batch.drop_column("plus_trial_used")
        batch.drop_column("plus_until")
        batch.drop_column("plus_state")
