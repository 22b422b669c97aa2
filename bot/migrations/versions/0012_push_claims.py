"""push claims: which sender holds a pending push, and until when

Several workers on one PostgreSQL database may write pushes; the sender claims the ones it is
about to send (``FOR UPDATE SKIP LOCKED``) with a lease. A push whose sender died returns to
the queue when its lease has passed.

Revision ID: 0012
Revises: 0011
Create Date: 2027-01-10 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pushes") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pushes") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
