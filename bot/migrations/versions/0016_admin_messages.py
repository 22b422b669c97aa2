"""admin messages: the outbox of the shop's own news for its admins

The monthly report and the red-line alert go to admins, who need not be members, so they
cannot be pushes (a push belongs to a member). Until now they were sent straight after the
job, and a network error or a 429 at that moment lost them. Each is now a row, rendered in
the admin's language and keyed by notice, occasion and admin, that the sender delivers
with its pace, retries and backoff: never twice (the key), never lost to a passing error.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 20:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_messages")),
        sa.UniqueConstraint("key", name=op.f("uq_admin_messages_key")),
    )
    op.create_index(
        "ix_admin_messages_pending", "admin_messages", ["not_before"],
        sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_admin_messages_pending", table_name="admin_messages")
    op.drop_table("admin_messages")
