"""Shared fixtures: a real Kafka-protocol broker for the session, fresh topic names per test.

The broker is, in order of preference: the cluster ``OIX_BOOTSTRAP`` names,
Apache Kafka in a testcontainer when a Docker engine answers, or the embedded
tansu broker. Never a mock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.bus import EmbeddedBroker, Exchange, Settings, configure_logging

REPO = Path(__file__).resolve().parents[1]

configure_logging("json", "WARNING")


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _broker_kind() -> str:
    if os.environ.get("OIX_BOOTSTRAP"):
        return "external"
    wanted = os.environ.get("OIX_TEST_BROKER", "auto")
    if wanted == "auto":
        return "kafka" if _docker_engine_answers() else "tansu"
    return wanted


@pytest.fixture(scope="session")
def broker_kind() -> str:
    """``external`` (OIX_BOOTSTRAP), ``kafka`` (testcontainers) or ``tansu`` (embedded)."""
    return _broker_kind()


@pytest.fixture(scope="session")
def _kafka_container(broker_kind: str) -> Iterator[str | None]:
    if broker_kind != "kafka":
        yield None
        return
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as container:
        yield container.get_bootstrap_server()


@pytest.fixture(scope="session")
async def bootstrap(broker_kind: str, _kafka_container: str | None) -> AsyncIterator[str]:
    """Bootstrap servers of the session's real broker."""
    if broker_kind == "external":
        yield os.environ["OIX_BOOTSTRAP"]
    elif _kafka_container is not None:
        yield _kafka_container
    else:
        async with EmbeddedBroker() as broker:
            yield broker.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(bootstrap: str, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, its own topics and data directory."""
    return Settings(
        bootstrap=bootstrap,
        topic_prefix=topic_prefix,
        data_dir=tmp_path,
        agreement=REPO / "deploy" / "agreement.example.yaml",
        keys_dir=REPO / "deploy" / "keys",
        schemas_dir=REPO / "schemas",
        log_format="json",
    )


@pytest.fixture
def exchange(settings: Settings) -> Exchange:
    """The example agreement and the repository's schemas under the test's topic prefix."""
    return Exchange.from_settings(settings)
