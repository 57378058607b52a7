"""How long the broker keeps the OIX topics, against what the agreement allows.

``oix audit verify`` reads each topic's ``retention.ms`` (DescribeConfigs)
and warns when the broker keeps records longer than the agreement's
``defaults.retention_days`` (or forever), or does not say. A warning, not a
finding: it says nothing about the store's integrity or trust.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from services.audit._record import DAY_MS
from services.bus import BrokerError, Settings, client_options

RETENTION_MS = "retention.ms"
_NAMED = 3
"""Topics named in the warning about the ones whose retention is not reported."""


async def read_topic_retention(
    settings: Settings, bootstrap: str, topics: list[str]
) -> dict[str, int | None]:
    """``retention.ms`` of each topic (-1: forever; None: the broker did not report it).

    Raises:
        BrokerError: the broker cannot be reached or refused DescribeConfigs.
    """
    if not topics:
        return {}
    admin = AIOKafkaAdminClient(**client_options(settings, bootstrap))
    try:
        await admin.start()
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics],
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot describe the topics' configs on {bootstrap}: {exc}") from exc
    finally:
        await admin.close()
    found: dict[str, int | None] = dict.fromkeys(topics)
    for response in responses:
        for resource in response.resources:
            _, _, _, name, entries = resource[:5]
            for entry in entries:
                key, value = entry[0], entry[1]
                if key == RETENTION_MS and value is not None:
                    found[name] = int(value)
    return found


def retention_warnings(retention: dict[str, int | None], allowed_days: int) -> list[str]:
    """One line per topic that the broker keeps longer than ``allowed_days``, or does not say."""
    allowed = allowed_days * DAY_MS
    warnings = []
    silent = sorted(topic for topic, ms in retention.items() if ms is None)
    for topic, ms in sorted(retention.items()):
        if ms is None:
            continue
        if ms < 0:
            warnings.append(
                f"{topic}: the broker keeps records forever (retention.ms={ms}); the agreement "
                f"allows {allowed_days} days (`oix topics` provisions the agreed retention)",
            )
        elif ms > allowed:
            warnings.append(
                f"{topic}: the broker keeps records {ms / DAY_MS:g} days (retention.ms={ms}); "
                f"the agreement allows {allowed_days} days (`oix topics` provisions the agreed "
                "retention)",
            )
    if silent:
        named = ", ".join(silent[:_NAMED]) + (", …" if len(silent) > _NAMED else "")
        warnings.append(
            f"{len(silent)} topic(s) whose retention.ms the broker does not report ({named}): "
            f"cannot check that it keeps records no longer than the agreed {allowed_days} days",
        )
    return warnings
