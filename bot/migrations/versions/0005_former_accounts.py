"""former accounts: a keyed hash of the Telegram id of members who erased their data

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "former_accounts",
        sa.Column("telegram_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("telegram_hash", name=op.f("pk_former_accounts")),
    )


def downgrade() -> None:
    op.drop_table("former_accounts")
