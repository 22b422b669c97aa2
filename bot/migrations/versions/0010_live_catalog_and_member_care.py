"""live catalog and member care: the rewards mall and coupon templates as rows admins edit,
points adjustments by staff and admins, call-back outcomes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 17:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_rewards",
        sa.Column("key", sa.String(length=25), nullable=False),
        sa.Column("name_en", sa.String(length=120), nullable=False),
        sa.Column("name_zh", sa.String(length=120), nullable=False),
        sa.Column("cost", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("min_spend", sa.Integer(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("per_member_limit", sa.Integer(), nullable=False),
        sa.Column("min_tier", sa.String(length=32), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("cost > 0", name=op.f("ck_catalog_rewards_cost_positive")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_catalog_rewards")),
    )
    op.create_table(
        "catalog_coupon_templates",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("min_spend", sa.Integer(), nullable=False),
        sa.Column("valid_days", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_catalog_coupon_templates")),
    )
    op.create_table(
        "point_adjustments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("actor_telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("actor_role", sa.String(length=8), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_point_adjustments_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"],
            name=op.f("fk_point_adjustments_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_point_adjustments")),
    )
    op.create_index(
        "ix_point_adjustments_actor_at", "point_adjustments", ["actor_telegram_id", "at"]
    )
    op.create_table(
        "callback_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("actor_telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_callback_outcomes_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_outcomes")),
    )
    op.create_index(op.f("ix_callback_outcomes_at"), "callback_outcomes", ["at"])
    op.create_index(op.f("ix_callback_outcomes_member_id"), "callback_outcomes", ["member_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_callback_outcomes_member_id"), table_name="callback_outcomes")
    op.drop_index(op.f("ix_callback_outcomes_at"), table_name="callback_outcomes")
    op.drop_table("callback_outcomes")
    op.drop_index("ix_point_adjustments_actor_at", table_name="point_adjustments")
    op.drop_table("point_adjustments")
    op.drop_table("catalog_coupon_templates")
    op.drop_table("catalog_rewards")
