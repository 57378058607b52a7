"""Webhook endpoints: the agency systems reports are delivered to, and how a delivery is signed.

Kept apart from the deliverer (``_webhooks.py``) so that ``oix liaison webhook``
loads no database toolkit. The verification recipe for a receiver is in
``docs/liaison.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.bus import AGENCY_CODE_PATTERN, ConfigError, read_yaml_list, write_yaml_list

ID_HEADER = "OIX-Webhook-Id"
TIMESTAMP_HEADER = "OIX-Webhook-Timestamp"
SIGNATURE_HEADER = "OIX-Webhook-Signature"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_AGENCY = re.compile(AGENCY_CODE_PATTERN)
_OWNER = re.compile(r"^[A-Z]{2}-[A-Z0-9]{2,12}(/[A-Za-z0-9._-]{1,64})?$")
_HEADER = (
    "# OIX liaison webhooks: the agency systems reports are delivered to. The secrets\n"
    "# sign each delivery (HMAC-SHA256); keep this file readable by the service only.\n"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One agency system that receives reports."""

    agency: str
    name: str
    url: str
    secret: str
    owner: str
    """The organisation the system belongs to: the agency itself, or another (handling rule)."""
    report_types: tuple[str, ...] = ()
    """Only these types (all when empty)."""


def read_endpoints(path: Path) -> list[Endpoint]:
    """Every endpoint of ``path``; a missing file has none.

    Raises:
        ConfigError: the file is not valid YAML or an entry is malformed (names which).
    """
    items = read_yaml_list(path, "webhooks", "the webhooks file")
    return [_endpoint(item, f"{path}: webhooks[{i}]") for i, item in enumerate(items)]


def _endpoint(item: Any, where: str) -> Endpoint:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with agency, name, url and secret")
    agency, name, url, secret = (item.get(k) for k in ("agency", "name", "url", "secret"))
    owner = item.get("owner", agency)
    types = item.get("report_types") or []
    if not isinstance(agency, str) or not _AGENCY.fullmatch(agency):
        raise ConfigError(f"{where}.agency: {agency!r} is not an agency code like LV-VRS")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: {name!r} is not a name (lower-case letters, digits, ._-)")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url: {url!r} is not an http(s) URL")
    if not isinstance(secret, str) or len(secret) < 16:  # noqa: PLR2004
        raise ConfigError(f"{where}.secret: at least 16 characters")
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        raise ConfigError(f"{where}.owner: {owner!r} is not an agency code (optionally /unit)")
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{where}.report_types: a list of report type names")
    return Endpoint(agency, name, url, secret, owner, tuple(types))


def add_endpoint(
    path: Path,
    agency: str,
    name: str,
    url: str,
    *,
    owner: str | None,
    report_types: list[str],
) -> str:
    """Add a webhook endpoint; returns its new secret (shown once).

    Raises:
        ConfigError: a malformed value, or the name is taken for this agency.
    """
    endpoints = read_endpoints(path)
    if any(e.agency == agency and e.name == name for e in endpoints):
        raise ConfigError(f"{path}: {agency} already has a webhook named {name!r}")
    secret = secrets.token_urlsafe(32)
    entry = _endpoint(
        {
            "agency": agency,
            "name": name,
            "url": url,
            "secret": secret,
            "owner": owner or agency,
            "report_types": report_types,
        },
        "new webhook",
    )
    items = [
        {
            "agency": e.agency,
            "name": e.name,
            "url": e.url,
            "secret": e.secret,
            "owner": e.owner,
            "report_types": list(e.report_types),
        }
        for e in [*endpoints, entry]
    ]
    write_yaml_list(path, "webhooks", items, _HEADER)
    return secret


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``OIX-Webhook-Signature`` value of a delivery."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"
