"""live lots expiry index: only lots with points left, by expiry day and member

Expiry and the expiry reminders only ever look for lots that still hold points; spent and
expired lots (most of them, over time) left the old index's range scans ever longer. A
partial index holds the live ones only, in the order both jobs read them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LIVE = sa.text("remaining > 0")


def upgrade() -> None:
    op.drop_index("ix_points_lots_expires_on", table_name="points_lots")
    op.create_index(
        "ix_points_lots_live_expiry", "points_lots", ["expires_on", "member_id"],
        sqlite_where=LIVE, postgresql_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_points_lots_live_expiry", table_name="points_lots")
    op.create_index("ix_points_lots_expires_on", "points_lots", ["expires_on"])
