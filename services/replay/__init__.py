"""Auditors' replay and export: what exactly was exchanged, when, by whom, as checkable evidence.

``oix replay export`` reads a selected range of history from Kafka (never
joining a consumer group, never committing) or from the audit store, decodes
every record with the schema that wrote it, shows its signature status and
writes a terminal table, JSON lines, CSV or an Avro container file; or an
evidence bundle that ``oix replay check-evidence`` (or standard tools alone)
checks; or re-drives the range to another topic. ``oix replay compare``
compares the broker with the store. See ``docs/replay.md``.

Names load on first use (see ``__init__.pyi``), so that ``oix --help`` does
not import the audit store's database toolkit.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
