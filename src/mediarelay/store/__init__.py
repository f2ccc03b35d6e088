"""Persistence: one schema for SQLite and PostgreSQL, repositories, Alembic migrations."""
