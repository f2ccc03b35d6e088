"""One portable schema for SQLite and PostgreSQL (migrations in `migrations/` mirror it).

Times are epoch milliseconds in BIGINTs: no timezone ambiguity on SQLite, and the dialects
publish milliseconds anyway.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SeqType = BigInteger().with_variant(Integer, "sqlite")
JsonType = JSON().with_variant(JSONB, "postgresql")

ACTIVE = "status IN ('queued', 'running', 'finalizing')"

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    # Webhooks: the key's default callback URL and its Standard Webhooks signing secret (`whsec_…`,
    # kept as is: signing needs it). Every key gets a secret at creation (migration 0002 backfilled).
    Column("webhook_url", String(4096), nullable=True),
    Column("webhook_secret", String(100), nullable=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(26), nullable=False, unique=True),
    Column("public_id", String(128), nullable=False, unique=True),
    Column("dialect", String(32), nullable=False),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("parent_id", String(26), nullable=True, index=True),
    Column("model", String(100), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("params", JsonType, nullable=False),
    Column("request", JsonType, nullable=False),
    Column("channel", String(100), nullable=True),
    Column("upstream_id", String(256), nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("next_run_at", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False, default=0),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("upstream", JsonType, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    # The driver's "what is due" scan only ever looks at unfinished tasks.
    Index("ix_tasks_due", "next_run_at", sqlite_where=text(ACTIVE), postgresql_where=text(ACTIVE)),
    Index("ix_tasks_key_created", "key_id", "created_at"),
)

assets = Table(
    "assets",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("task_id", String(26), ForeignKey("tasks.id"), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("idx", Integer, nullable=False, default=0),
    Column("key", String(400), nullable=False),
    Column("mime", String(100), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("duration", Float, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

task_events = Table(
    "task_events",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("task_id", String(26), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False),
    Column("detail", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
)

PENDING = "state = 'pending'"

# The webhook outbox: one row per event, inserted in the transaction of the task change it reports.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),  # `msg_<ulid>`: the webhook-id header
    Column("task_id", String(26), nullable=False),
    Column("public_id", String(128), nullable=False),
    Column("dialect", String(32), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("type", String(32), nullable=False),  # task.running | task.succeeded | …
    Column("task_status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("url", String(4096), nullable=False),
    Column("payload", Text, nullable=True),  # the JSON body, frozen when first rendered
    Column("state", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=True),
    Column("delivered_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("task_id", "version", name="uq_webhook_events_task_version"),
    Index(
        "ix_webhook_events_due", "next_attempt_at", sqlite_where=text(PENDING), postgresql_where=text(PENDING)
    ),
    Index("ix_webhook_events_key_seq", "key_id", "seq"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("event_seq", SeqType, ForeignKey("webhook_events.seq"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("response", Text, nullable=True),  # the first bytes of the receiver's answer
)

# -- billing (docs/billing.md): money is integer micro-units of the operator's currency ----------------

# One row per key: its balance, its total net spend (`used`) and its limits. `credit_limit` NULL means
# unlimited credit (postpaid: the balance may go below zero without bound); N means it may go down to -N.
accounts = Table(
    "accounts",
    metadata,
    Column("key_id", String(32), ForeignKey("api_keys.id"), primary_key=True),
    Column("balance", BigInteger, nullable=False, default=0),
    Column("used", BigInteger, nullable=False, default=0),
    Column("credit_limit", BigInteger, nullable=True),
    Column("daily_cap", BigInteger, nullable=True),
    Column("max_concurrent", Integer, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)

HAS_TASK = "task_id IS NOT NULL"
HAS_REFERENCE = "reference IS NOT NULL"

# Append-only: every movement of a balance, with the balance right after it. No foreign key to tasks:
# the ledger outlives a deleted task. One charge, refund or settle per task; one entry per reference
# (a top-up's Idempotency-Key) and key.
ledger = Table(
    "ledger",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("task_id", String(26), nullable=True),
    Column("kind", String(16), nullable=False),  # topup | charge | refund | settle | adjust
    Column("amount", BigInteger, nullable=False),  # signed: what it added to the balance
    Column("balance_after", BigInteger, nullable=False),
    Column("reference", String(255), nullable=True),
    Column("note", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index(
        "uq_ledger_task_kind",
        "task_id",
        "kind",
        unique=True,
        sqlite_where=text(HAS_TASK),
        postgresql_where=text(HAS_TASK),
    ),
    Index(
        "uq_ledger_key_reference",
        "key_id",
        "reference",
        unique=True,
        sqlite_where=text(HAS_REFERENCE),
        postgresql_where=text(HAS_REFERENCE),
    ),
    Index("ix_ledger_key_id", "key_id", "id"),
)

# The billing state of each task that does work (a fan-out parent has none: its children do): the price
# snapshot taken at submit, the pre-deducted estimate, the current net charge, and open | settled |
# refunded. Open rows are the key's active tasks. No foreign key to tasks (deleted tasks keep theirs).
task_charges = Table(
    "task_charges",
    metadata,
    Column("task_id", String(26), primary_key=True),
    Column("public_id", String(128), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("dialect", String(32), nullable=False),
    Column("model", String(100), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("channel", String(100), nullable=True),
    Column("price", JsonType, nullable=False),
    Column("estimate", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=True),
    Index("ix_task_charges_key_state", "key_id", "state"),
    Index("ix_task_charges_key_created", "key_id", "created_at"),
)

# `Idempotency-Key` of a submit: the same key and body within the retention window is the same task.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("idem_key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("task_id", String(26), nullable=False),
    Column("created_at", BigInteger, nullable=False, index=True),
)

# The price table set through the admin API (one row, id 1); without it, mediarelay.toml's applies.
billing_prices = Table(
    "billing_prices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("rules", JsonType, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# -- relay channels (docs/channels.md) -----------------------------------------------------------------

# Channels defined or overridden through the admin API: the whole channel definition as JSON (the keys
# of a `[[channels]]` table). A row named like a channel of mediarelay.toml replaces that definition.
channels = Table(
    "channels",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("config", JsonType, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

BUSY = "status IN ('queued', 'running')"

# Tasks a channel's upstream is working on, counted at every dispatch for the deployment-wide
# concurrency limit.
Index("ix_tasks_channel_busy", tasks.c.channel, sqlite_where=text(BUSY), postgresql_where=text(BUSY))
