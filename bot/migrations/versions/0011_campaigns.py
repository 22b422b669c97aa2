"""campaigns, their deliveries and NPS answers; pushes know their campaign; FSM state

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fsm_states",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=200), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_fsm_states")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("start_at", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("confirmed_by", sa.BigInteger(), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("written_upto", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(op.f("ix_campaigns_state"), "campaigns", ["state"])
    op.create_table(
        "campaign_deliveries",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=1), nullable=False),
        sa.Column("coupon_id", sa.Integer(), nullable=True),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"],
            name=op.f("fk_campaign_deliveries_campaign_id_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_campaign_deliveries_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_campaign_deliveries_coupon_id_coupons")
        ),
        sa.PrimaryKeyConstraint("campaign_id", "member_id", name=op.f("pk_campaign_deliveries")),
    )
    op.create_table(
        "nps_answers",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("score BETWEEN 0 AND 10", name=op.f("ck_nps_answers_score_range")),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_nps_answers_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_nps_answers_member_id_members")
        ),
        sa.PrimaryKeyConstraint("campaign_id", "member_id", name=op.f("pk_nps_answers")),
    )
    op.create_index(op.f("ix_nps_answers_answered_at"), "nps_answers", ["answered_at"])
    op.add_column("pushes", sa.Column("campaign_id", sa.Integer(), nullable=True))
    op.create_index(
        "ix_pushes_campaign", "pushes", ["campaign_id", "status"],
        sqlite_where=sa.text("campaign_id IS NOT NULL"),
        postgresql_where=sa.text("campaign_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_pushes_campaign", table_name="pushes")
    with op.batch_alter_table("pushes") as batch:
        batch.drop_column("campaign_id")
    op.drop_index(op.f("ix_nps_answers_answered_at"), table_name="nps_answers")
    op.drop_table("nps_answers")
    op.drop_table("campaign_deliveries")
    op.drop_index(op.f("ix_campaigns_state"), table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_table("fsm_states")
