"""API 令牌表 api_tokens；jobs 增加 run_as_user（作业以哪个 Unix 用户运行）。

Revision ID: 0003_auth
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_auth"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("account", sa.String(255), nullable=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("note", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_tokens_token_hash", "api_tokens", ["token_hash"], unique=True)
    op.add_column("jobs", sa.Column("run_as_user", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "run_as_user")
    op.drop_table("api_tokens")
