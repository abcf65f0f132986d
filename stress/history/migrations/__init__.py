"""Alembic revisions of the history schema (run by stress.history.db; no alembic.ini needed)."""
