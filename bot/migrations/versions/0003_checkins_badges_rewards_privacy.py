"""checkins badges reward stock exit surveys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 17:07:36.092254
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('exit_surveys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exit_surveys'))
    )
    op.create_table('reward_stock',
    sa.Column('reward_key', sa.String(length=64), nullable=False),
    sa.Column('remaining', sa.Integer(), nullable=False),
    sa.CheckConstraint('remaining >= 0', name=op.f('ck_reward_stock_stock_not_negative')),
    sa.PrimaryKeyConstraint('reward_key', name=op.f('pk_reward_stock'))
    )
    op.create_table('badges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('earned_on', sa.Date(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_badges_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_badges')),
    sa.UniqueConstraint('member_id', 'kind', 'earned_on', name='uq_badges_once')
    )
    op.create_table('checkins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('streak', sa.Integer(), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_checkins_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkins')),
    sa.UniqueConstraint('member_id', 'day', name='uq_checkins_member_day')
    )
    with op.batch_alter_table('checkins', schema=None) as batch_op:
        batch_op.create_index('ix_checkins_day', ['day'], unique=False)

    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('birthday_gift_from', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('birthday_set_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('reachable', sa.Boolean(), nullable=False, server_default=sa.true()))




def downgrade() -> None:

    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('reachable')
        batch_op.drop_column('birthday_set_at')
        batch_op.drop_column('birthday_gift_from')

    with op.batch_alter_table('checkins', schema=None) as batch_op:
        batch_op.drop_index('ix_checkins_day')

    op.drop_table('checkins')
    op.drop_table('badges')
    op.drop_table('reward_stock')
    op.drop_table('exit_surveys')

