"""Alembic's environment for the history: always online, on the connection (and transaction) that
stress.history.db.upgrade hands over in ``config.attributes["connection"]``."""
from __future__ import annotations

from alembic import context

from stress.history.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the history migrations run through stress.history.db.upgrade (gpu-stress opens the "
                       "history and upgrades it itself); there is no alembic.ini")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
