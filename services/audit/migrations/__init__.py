"""Alembic migrations of the audit store (``env.py`` and ``versions/``)."""
