"""jobs: procrastinate's job queue schema, on PostgreSQL only (scaled-out mode; SQLite needs none)

The schema is procrastinate's own (`SchemaManager.get_schema()`), applied in this migration so that one
`mediarelay db upgrade` prepares everything. Moving to a procrastinate release with schema changes needs a
new migration applying its delta files; pyproject.toml pins the minor version for that reason.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from procrastinate.schema import SchemaManager

    # On the driver connection, in the migration's transaction: no bind-parameter parsing of the SQL.
    driver = bind.connection.driver_connection
    assert driver is not None
    driver.execute(SchemaManager.get_schema())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    driver = bind.connection.driver_connection
    assert driver is not None
    driver.execute(
        """
        DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs,
            procrastinate_workers CASCADE;
        DROP TYPE IF EXISTS procrastinate_job_status, procrastinate_job_event_type,
            procrastinate_job_to_defer_v1 CASCADE;
        """
    )
