"""Kafka clients configured from settings, the same way in every service.

Production is Apache Kafka with SASL/SCRAM over TLS and the idempotent
producer; the embedded broker speaks plain Kafka protocol and has no
idempotent producer, which :func:`start_producer` detects and says.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from services.bus._errors import BrokerError
from services.bus._logging import get_logger, quiet
from services.bus._settings import Settings

log = get_logger(__name__)


def client_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Connection and security options shared by every client."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in {"SSL", "SASL_SSL"}:
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        )
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            )
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        if not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username):
            raise BrokerError(
                "OIX_KAFKA_SASL_MECHANISM and OIX_KAFKA_SASL_USERNAME are required with "
                f"OIX_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}",
            )
        password = settings.kafka_sasl_password
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else "",
        }
    return options


async def tls_problem(settings: Settings, bootstrap: str, timeout: float = 5.0) -> str | None:
    """Why a TLS handshake with the bootstrap servers fails, or None.

    aiokafka reports a refused handshake only as "Unable to bootstrap"; this
    repeats the handshake with the same settings to say why (an untrusted CA,
    a certificate for another host, ...).
    """
    if settings.kafka_security_protocol not in {"SSL", "SASL_SSL"}:
        return None
    context = client_options(settings, bootstrap)["ssl_context"]
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port), ssl=context, server_hostname=host),
                timeout,
            )
        except ssl.SSLError as exc:
            return (
                f"the TLS handshake with {server.strip()} failed: {exc} "
                f"(OIX_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile or 'the system CAs'})"
            )
        except (OSError, TimeoutError):
            continue  # not a TLS problem: the caller's error says it
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return None


async def unreachable(settings: Settings, bootstrap: str, error: Exception) -> BrokerError:
    """The error for a broker that could not be reached, naming a TLS failure if there is one."""
    problem = await tls_problem(settings, bootstrap)
    return BrokerError(f"cannot reach the broker at {bootstrap}: {problem or repr(error)}")


def producer_options(settings: Settings, bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Options for a producer that never reports success before every in-sync replica has it."""
    return {
        **client_options(settings, bootstrap),
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": 15_000,
        **overrides,
    }


_NO_IDEMPOTENCE: set[str] = set()
"""Brokers that refused the idempotent producer, warned about already."""


async def start_producer(settings: Settings, bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """Start a producer, idempotent where the broker supports it.

    With ``kafka_idempotence="auto"`` a broker that refuses InitProducerId (the
    embedded broker does) gets a plain acks=all producer and a warning saying
    that a retried send may be written twice; consumers dedupe by (originator, message id).
    """
    options = producer_options(settings, bootstrap, **overrides)
    if settings.kafka_idempotence != "off":
        producer = AIOKafkaProducer(**options, enable_idempotence=True)
        try:
            with quiet("aiokafka.producer.sender"):  # we log the refusal ourselves
                await _start(producer, settings, bootstrap)
        except KafkaError as exc:  # refused (and stopped again by _start)
            if settings.kafka_idempotence == "on":
                raise BrokerError(f"the broker refused the idempotent producer: {exc}") from exc
            # Once per broker and process: `oix up` starts a producer per service.
            warn = log.debug if bootstrap in _NO_IDEMPOTENCE else log.warning
            _NO_IDEMPOTENCE.add(bootstrap)
            warn(
                "idempotent producer not available on this broker; retries may duplicate "
                "records, consumers deduplicate by (originator, message id)",
                bootstrap=bootstrap,
                error=repr(exc),
            )
        else:
            return producer
    producer = AIOKafkaProducer(**options)
    await _start(producer, settings, bootstrap)
    return producer


def consumer(
    settings: Settings, bootstrap: str, *topics: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (after the work is durable)."""
    options: dict[str, Any] = {
        **client_options(settings, bootstrap),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **overrides,
    }
    return AIOKafkaConsumer(*topics, **options)


async def start_consumer(client: AIOKafkaConsumer, settings: Settings, bootstrap: str) -> None:
    """Start ``client``; a broker it cannot reach is one :class:`BrokerError` saying why.

    aiokafka says only "Unable to bootstrap"; this names the address and a TLS
    failure if there is one, and stops the client (else asyncio warns of it).
    """
    await _start(client, settings, bootstrap)


async def _start(
    client: AIOKafkaConsumer | AIOKafkaProducer, settings: Settings, bootstrap: str
) -> None:
    """Start ``client``; whatever interrupts the start, the client is stopped again."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        await client.stop()
        raise await unreachable(settings, bootstrap, exc) from exc
    except BaseException:
        # Cancelled or failed part-way (a service stopping while the broker restarts): an
        # unstopped client keeps its connections, and its collection fails a later test.
        with contextlib.suppress(Exception):
            await client.stop()
        raise
