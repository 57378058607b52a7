"""Alembic migrations of the liaison store (``env.py`` and ``versions/``)."""
