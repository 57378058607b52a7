"""The replay's errors: each says what to fix."""

from __future__ import annotations

from services.bus import ConfigError, OixError


class ReplayError(OixError):
    """A replay, export or check could not be done as asked."""


class SelectionError(ConfigError):
    """A selection (topics, party, range, filters) that cannot be read as asked."""


class EvidenceError(ReplayError):
    """An evidence bundle that cannot be read at all (not one that fails its checks)."""
