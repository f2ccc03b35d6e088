"""billing: per-key accounts (balance, used, limits), the ledger, task charges, idempotency keys, prices

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
HAS_TASK = "task_id IS NOT NULL"
HAS_REFERENCE = "reference IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("credit_limit", sa.BigInteger(), nullable=True),
        sa.Column("daily_cap", sa.BigInteger(), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_accounts_key_id_api_keys")),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_accounts")),
    )
    # Keys made before billing keep working as before: unlimited credit (credit_limit NULL), no limits.
    keys = sa.table("api_keys", sa.column("id", sa.String))
    accounts = sa.table(
        "accounts",
        sa.column("key_id", sa.String),
        sa.column("balance", sa.BigInteger),
        sa.column("used", sa.BigInteger),
        sa.column("updated_at", sa.BigInteger),
    )
    now = time.time_ns() // 1_000_000
    conn = op.get_bind()
    for (key_id,) in conn.execute(sa.select(keys.c.id)).all():
        conn.execute(sa.insert(accounts).values(key_id=key_id, balance=0, used=0, updated_at=now))

    op.create_table(
        "ledger",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("task_id", sa.String(length=26), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_ledger_key_id_api_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index(
            "uq_ledger_task_kind",
            ["task_id", "kind"],
            unique=True,
            sqlite_where=sa.text(HAS_TASK),
            postgresql_where=sa.text(HAS_TASK),
        )
        batch_op.create_index(
            "uq_ledger_key_reference",
            ["key_id", "reference"],
            unique=True,
            sqlite_where=sa.text(HAS_REFERENCE),
            postgresql_where=sa.text(HAS_REFERENCE),
        )
        batch_op.create_index("ix_ledger_key_id", ["key_id", "id"], unique=False)

    op.create_table(
        "task_charges",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("public_id", sa.String(length=128), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("dialect", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=True),
        sa.Column("price", JSON, nullable=False),
        sa.Column("estimate", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_charges")),
    )
    with op.batch_alter_table("task_charges", schema=None) as batch_op:
        batch_op.create_index("ix_task_charges_key_state", ["key_id", "state"], unique=False)
        batch_op.create_index("ix_task_charges_key_created", ["key_id", "created_at"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("idem_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "idem_key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)

    op.create_table(
        "billing_prices",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_prices")),
    )


def downgrade() -> None:
    op.drop_table("billing_prices")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("task_charges", schema=None) as batch_op:
        batch_op.drop_index("ix_task_charges_key_created")
        batch_op.drop_index("ix_task_charges_key_state")
    op.drop_table("task_charges")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_key_id")
        batch_op.drop_index(
            "uq_ledger_key_reference",
            sqlite_where=sa.text(HAS_REFERENCE),
            postgresql_where=sa.text(HAS_REFERENCE),
        )
        batch_op.drop_index(
            "uq_ledger_task_kind", sqlite_where=sa.text(HAS_TASK), postgresql_where=sa.text(HAS_TASK)
        )
    op.drop_table("ledger")
    op.drop_table("accounts")
