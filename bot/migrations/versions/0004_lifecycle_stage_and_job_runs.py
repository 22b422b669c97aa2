"""lifecycle stage and job runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:23:19.747805
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('job_runs',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('occasion', sa.String(length=32), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('result', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_runs'))
    )
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.String(length=16), nullable=False, server_default='new'))
        batch_op.add_column(sa.Column('stage_since', sa.Date(), nullable=True))
        batch_op.create_index(batch_op.f('ix_members_stage'), ['stage'], unique=False)
        batch_op.create_index('ix_members_birthday', ['birthday_month', 'birthday_day'])
        batch_op.create_index('ix_members_created_at', ['created_at'])
    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.create_index('ix_coupons_status_valid_until', ['status', 'valid_until'])




def downgrade() -> None:
    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.drop_index('ix_coupons_status_valid_until')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_index('ix_members_created_at')
        batch_op.drop_index('ix_members_birthday')

    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_members_stage'))
        batch_op.drop_column('stage_since')
        batch_op.drop_column('stage')

    op.drop_table('job_runs')

