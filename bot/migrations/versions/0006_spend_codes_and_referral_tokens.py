"""spend codes and referral tokens: the member code earns, only proof of presence spends

A member's code is printed on their card and shared in invite links, so it no longer spends
points: a one-time spend code from the chat (valid a few minutes, used once) does. Invite links
carry a referral token of their own instead of the member code.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        # Made when the member first opens /invite: no back-fill over every member.
        batch.add_column(sa.Column("referral_token", sa.String(length=16), nullable=True))
        batch.create_unique_constraint(op.f("uq_members_referral_token"), ["referral_token"])
    op.create_table(
        "spend_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_spend_codes_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spend_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_spend_codes_code")),
    )
    op.create_index(op.f("ix_spend_codes_member_id"), "spend_codes", ["member_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_spend_codes_member_id"), table_name="spend_codes")
    op.drop_table("spend_codes")
    with op.batch_alter_table("members") as batch:
        batch.drop_constraint(op.f("uq_members_referral_token"), type_="unique")
        batch.drop_column("referral_token")
