"""push claims: which sender holds a pending push, and until when

Several workers on one PostgreSQL database may write pushes; the sender claims the ones it is
about to send (``FOR UPDATE SKIP LOCKED``) with a lease. A push whose sender died returns to
the queue when its lease has passed. On PostgreSQL a statement trigger on the outbox sends
``NOTIFY companion_outbox`` with every insert (delivered at commit, folded per transaction), so
the elected sender in whichever worker learns of a push written by another at once, without
one more round trip per order.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 17:40:00.000000
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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION companion_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_notify('companion_outbox', ''); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER pushes_notify AFTER INSERT ON pushes "
            "FOR EACH STATEMENT EXECUTE FUNCTION companion_outbox_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER pushes_notify ON pushes")
        op.execute("DROP FUNCTION companion_outbox_notify()")
    with op.batch_alter_table("pushes") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
