"""Creating missing topics on the fly, for ``oix up`` and the tests.

Production clusters are provisioned with ``oix provision`` (:mod:`services.bus.provisioning`)
instead; this stays apart from it so that the core never loads librdkafka.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.bus._kafka import client_options
from services.bus._logging import get_logger
from services.bus._settings import Settings

log = get_logger(__name__)


async def ensure_topics(
    settings: Settings,
    bootstrap: str,
    topics: list[str],
    partitions: int = 4,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created (``oix up``).

    Production clusters are provisioned with ``oix provision`` instead.
    """
    admin = AIOKafkaAdminClient(**client_options(settings, bootstrap))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            configs = {"min.insync.replicas": "2"} if replication_factor >= 3 else {}  # noqa: PLR2004
            try:
                await admin.create_topics(
                    [
                        NewTopic(t, partitions, replication_factor, topic_configs=configs)
                        for t in missing
                    ],
                )
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process", topics=missing)
        return missing
    finally:
        await admin.close()
