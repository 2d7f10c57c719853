"""Alembic migrations of the console's schema, run by `operator_console.db.schema`."""
