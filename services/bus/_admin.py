"""Kafka administration through confluent-kafka's ``AdminClient`` (librdkafka).

aiokafka's admin client has no ACL calls; librdkafka has all of them, well
kept. Before any call the broker's ApiVersions answer is read (aiokafka), and
an API the broker does not offer is reported, never called: the local broker
(tansu) offers CreateAcls but answers it with bytes that abort librdkafka, and
it offers neither DeleteAcls nor CreatePartitions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.protocol.admin import ApiVersionRequest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding as KafkaAclBinding,
)
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from services.bus._errors import BrokerError
from services.bus._kafka import client_options, unreachable
from services.bus._logging import quiet
from services.bus._settings import Settings
from services.bus._topics import AclBinding

API_DESCRIBE_ACLS = 29
API_CREATE_ACLS = 30
API_DELETE_ACLS = 31
API_CREATE_PARTITIONS = 37
API_INCREMENTAL_ALTER_CONFIGS = 44
API_NAMES = {
    API_DESCRIBE_ACLS: "DescribeAcls",
    API_CREATE_ACLS: "CreateAcls",
    API_DELETE_ACLS: "DeleteAcls",
    API_CREATE_PARTITIONS: "CreatePartitions",
    API_INCREMENTAL_ALTER_CONFIGS: "IncrementalAlterConfigs",
}
ACL_APIS = (API_DESCRIBE_ACLS, API_CREATE_ACLS, API_DELETE_ACLS)
TIMEOUT = 30.0
ANY = cast("str", None)
"""In an ACL filter None matches any name, principal or host (the stubs only say str)."""


def confluent_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Options for librdkafka, with the same security settings as every OIX client."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
        # librdkafka logs through Python logging (and so structlog), not to stderr.
        "logger": logging.getLogger("librdkafka"),
    }
    if protocol in {"SSL", "SASL_SSL"}:
        files = {
            "ssl.ca.location": settings.kafka_ssl_cafile,
            "ssl.certificate.location": settings.kafka_ssl_certfile,
            "ssl.key.location": settings.kafka_ssl_keyfile,
        }
        options |= {name: str(path) for name, path in files.items() if path is not None}
    if protocol.startswith("SASL"):
        client_options(settings, bootstrap)  # the same check for missing credentials
        password = settings.kafka_sasl_password
        options |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": password.get_secret_value() if password else "",
        }
    return options


async def broker_apis(settings: Settings, bootstrap: str) -> frozenset[int]:
    """The API keys the broker offers (its ApiVersions answer).

    Raises:
        BrokerError: the broker cannot be reached, or refused the connection.
    """
    client = AIOKafkaClient(**client_options(settings, bootstrap), request_timeout_ms=15_000)
    try:
        with quiet("aiokafka"):  # the error below says it once
            await client.bootstrap()
            node = next(iter(client.cluster.brokers())).nodeId
            response = await client.send(node, ApiVersionRequest())
    except (AioKafkaError, OSError, StopIteration) as exc:
        await client.close()
        raise await unreachable(settings, bootstrap, exc) from exc
    await client.close()
    return frozenset(api_key for api_key, _low, _high in response.api_versions)


def missing_apis(offered: frozenset[int], wanted: Iterable[int]) -> list[str]:
    """Names of the ``wanted`` APIs the broker does not offer."""
    return [API_NAMES.get(key, str(key)) for key in wanted if key not in offered]


@dataclass(frozen=True, slots=True)
class ObservedTopic:
    """A topic as the broker describes it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        return f"{error.name()}: {error.str()}"
    return repr(exc)


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
        code: int = exc.args[0].code()
        return code
    return None


def _outcomes(futures: dict[Any, Future[Any]], name: Any) -> dict[str, str | None]:
    """Wait for every future: ``{name(key): None on success, else the reason}``."""
    results: dict[str, str | None] = {}
    for key, future in futures.items():
        try:
            future.result(TIMEOUT)
        except (KafkaException, TimeoutError) as exc:
            results[name(key)] = _reason(exc)
        else:
            results[name(key)] = None
    return results


_OPERATIONS = {op.name: op for op in AclOperation}
_PATTERNS = {"LITERAL": ResourcePatternType.LITERAL, "PREFIXED": ResourcePatternType.PREFIXED}
_RESOURCES = {"TOPIC": ResourceType.TOPIC, "GROUP": ResourceType.GROUP}


def to_kafka(acl: AclBinding) -> KafkaAclBinding:
    """An OIX ACL as confluent-kafka's binding: ALLOW from any host."""
    return KafkaAclBinding(
        _RESOURCES[acl.resource_type],
        acl.name,
        _PATTERNS[acl.pattern_type],
        acl.principal,
        "*",
        _OPERATIONS[acl.operation],
        AclPermissionType.ALLOW,
    )


def from_kafka(binding: KafkaAclBinding) -> AclBinding | None:
    """An ALLOW binding on a topic or group as an OIX ACL; None for anything else."""
    if binding.permission_type != AclPermissionType.ALLOW or binding.host != "*":
        return None
    kind, pattern, operation = binding.restype, binding.resource_pattern_type, binding.operation
    if not (
        isinstance(kind, ResourceType)
        and isinstance(pattern, ResourcePatternType)
        and isinstance(operation, AclOperation)
    ):
        return None
    resource_name = {v: k for k, v in _RESOURCES.items()}.get(kind)
    pattern_name = {v: k for k, v in _PATTERNS.items()}.get(pattern)
    if resource_name is None or pattern_name is None:
        return None
    return AclBinding(binding.principal, operation.name, resource_name, pattern_name, binding.name)


class Admin:
    """A synchronous admin session on one cluster (run it in a thread from async code)."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._client = AdminClient(confluent_options(settings, bootstrap))

    def broker_count(self) -> int:
        """How many brokers the cluster has.

        Raises:
            BrokerError: no metadata from the cluster.
        """
        try:
            metadata = self._client.list_topics(timeout=TIMEOUT)
        except KafkaException as exc:
            raise BrokerError(f"no metadata from {self.bootstrap}: {_reason(exc)}") from exc
        return len(metadata.brokers)

    def topics(self, prefix: str) -> dict[str, ObservedTopic]:
        """Every topic whose name starts with ``prefix``, with partitions, replicas and configs.

        Raises:
            BrokerError: the broker did not describe them.
        """
        try:
            metadata = self._client.list_topics(timeout=TIMEOUT)
        except KafkaException as exc:
            raise BrokerError(f"cannot list topics on {self.bootstrap}: {_reason(exc)}") from exc
        found = {
            name: topic
            for name, topic in metadata.topics.items()
            if name.startswith(prefix) and topic.error is None
        }
        if not found:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in sorted(found)]
        configs: dict[str, dict[str, str]] = {}
        for resource, future in self._client.describe_configs(
            resources, request_timeout=TIMEOUT
        ).items():
            try:
                entries = future.result(TIMEOUT)
            except KafkaException as exc:
                raise BrokerError(
                    f"cannot describe the configs of {resource.name}: {_reason(exc)}"
                ) from exc
            configs[resource.name] = {
                key: entry.value for key, entry in entries.items() if entry.value is not None
            }
        return {
            name: ObservedTopic(
                name,
                len(topic.partitions),
                max((len(p.replicas) for p in topic.partitions.values()), default=0),
                configs.get(name, {}),
            )
            for name, topic in found.items()
        }

    def create_topics(
        self, topics: list[tuple[str, int, int, dict[str, str]]]
    ) -> dict[str, str | None]:
        """Create ``(name, partitions, replication factor, configs)``; per topic None or why not."""
        if not topics:
            return {}
        new = [NewTopic(name, parts, rf, config=configs) for name, parts, rf, configs in topics]
        futures = self._client.create_topics(
            new, operation_timeout=TIMEOUT, request_timeout=TIMEOUT
        )
        results = _outcomes(futures, str)
        # Created meanwhile by someone else (or auto-created): the next run compares configs.
        already = f"{KafkaError(KafkaError.TOPIC_ALREADY_EXISTS).name()}:"
        return {k: None if v and v.startswith(already) else v for k, v in results.items()}

    def alter_configs(self, changes: dict[str, dict[str, str]]) -> dict[str, str | None]:
        """Set topic configs (IncrementalAlterConfigs); per topic None or why not."""
        if not changes:
            return {}
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                name,
                incremental_configs=[
                    ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                    for key, value in sorted(configs.items())
                ],
            )
            for name, configs in sorted(changes.items())
        ]
        futures = self._client.incremental_alter_configs(resources, request_timeout=TIMEOUT)
        return _outcomes(futures, lambda resource: resource.name)

    def add_partitions(self, counts: dict[str, int]) -> dict[str, str | None]:
        """Grow topics to ``counts`` partitions; per topic None or why not."""
        if not counts:
            return {}
        futures = self._client.create_partitions(
            [NewPartitions(name, count) for name, count in sorted(counts.items())],
            operation_timeout=TIMEOUT,
            request_timeout=TIMEOUT,
        )
        return _outcomes(futures, str)

    def acls(self, prefix: str) -> tuple[set[AclBinding], str | None]:
        """OIX's ACLs: ALLOW bindings on topics and groups named under ``prefix``.

        Returns the bindings, and None, or an empty set and why ACLs are off on
        this broker (no authorizer configured).

        Raises:
            BrokerError: the broker refused to describe its ACLs for another reason.
        """
        everything = AclBindingFilter(
            ResourceType.ANY,
            ANY,
            ResourcePatternType.ANY,
            ANY,
            ANY,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        try:
            bindings = self._client.describe_acls(everything, request_timeout=TIMEOUT).result(
                TIMEOUT
            )
        except KafkaException as exc:
            if _code(exc) == KafkaError.SECURITY_DISABLED:
                return set(), (
                    "not enabled on this broker: no authorizer is configured "
                    f"(authorizer.class.name): {_reason(exc)}"
                )
            raise BrokerError(f"cannot describe ACLs on {self.bootstrap}: {_reason(exc)}") from exc
        found = (from_kafka(binding) for binding in bindings)
        return {acl for acl in found if acl is not None and acl.name.startswith(prefix)}, None

    def create_acls(self, acls: list[AclBinding]) -> dict[str, str | None]:
        """Create ``acls``; per binding (its kafka-acls command) None or why not."""
        if not acls:
            return {}
        by_binding = {to_kafka(acl): acl for acl in acls}
        futures = self._client.create_acls(list(by_binding), request_timeout=TIMEOUT)
        return _outcomes(futures, lambda binding: by_binding[binding].describe())

    def delete_acls(self, acls: list[AclBinding]) -> dict[str, str | None]:
        """Delete exactly ``acls``; per binding None or why not."""
        if not acls:
            return {}
        filters = {}
        for acl in acls:
            binding = to_kafka(acl)
            exact = AclBindingFilter(
                binding.restype,
                binding.name,
                binding.resource_pattern_type,
                binding.principal,
                binding.host,
                binding.operation,
                binding.permission_type,
            )
            filters[exact] = acl
        futures = self._client.delete_acls(list(filters), request_timeout=TIMEOUT)
        return _outcomes(futures, lambda binding: filters[binding].describe())
