"""The audit consumer and store: every OIX record persisted exactly once, provably complete.

``oix audit run`` consumes every OIX topic into the store (SQLite embedded,
PostgreSQL in production); ``oix audit verify`` proves the store complete and
unaltered; ``oix audit query`` finds records for auditors. See ``docs/audit.md``.

Names load on first use (see ``__init__.pyi``), so that ``oix --help`` does not import SQLAlchemy,
Alembic and the Prometheus client.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
