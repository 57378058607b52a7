"""Strimzi resources from the agreement: ``KafkaTopic`` and ``KafkaUser`` (SCRAM, with ACLs).

On Kubernetes a cluster operator runs Strimzi, which manages topics and users
declaratively: ``oix provision --render strimzi`` writes the same topics and
ACLs that ``oix provision`` applies to a cluster directly, as resources to
``kubectl apply`` (API ``kafka.strimzi.io/v1beta2``). Strimzi's user operator
creates each user's SCRAM-SHA-512 password in a Secret named after the user,
which the services' Deployments reference.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import yaml

from services.bus._provision import Layout, topic_specs
from services.bus._topics import AUDIT_USER, AclBinding, Router, kafka_user, render_acls

API_VERSION = "kafka.strimzi.io/v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"
_OPERATION = {"READ": "Read", "WRITE": "Write", "DESCRIBE": "Describe"}
_PATTERN = {"LITERAL": "literal", "PREFIXED": "prefix"}


def resource_name(name: str) -> str:
    """A Kubernetes object name (lower-case RFC 1123 subdomain) for a topic or user name."""
    cleaned = re.sub(r"[^a-z0-9.-]", "-", name.lower()).strip(".-")
    return cleaned[:253]


def strimzi_topics(router: Router, layout: Layout, cluster: str) -> list[dict[str, Any]]:
    """One ``KafkaTopic`` per topic the agreement implies."""
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "KafkaTopic",
            "metadata": {
                "name": resource_name(spec.name),
                "labels": {CLUSTER_LABEL: cluster},
            },
            "spec": {
                # Kubernetes names are lower case; the Kafka topic keeps its agency codes.
                "topicName": spec.name,
                "partitions": spec.partitions,
                "replicas": spec.replication_factor,
                "config": dict(sorted(spec.configs.items())),
            },
        }
        for spec in topic_specs(router, layout)
    ]


def _acl_rules(acls: list[AclBinding]) -> list[dict[str, Any]]:
    """Strimzi ACL rules: one per resource, with every operation on it."""
    operations: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for acl in acls:
        operations[(acl.resource_type, acl.pattern_type, acl.name)].append(
            _OPERATION[acl.operation]
        )
    return [
        {
            "resource": {
                "type": resource_type.lower(),
                "name": name,
                "patternType": _PATTERN[pattern],
            },
            "operations": sorted(ops),
            "host": "*",
        }
        for (resource_type, pattern, name), ops in sorted(operations.items())
    ]


def strimzi_users(router: Router, cluster: str) -> list[dict[str, Any]]:
    """One ``KafkaUser`` per party and one for the audit consumer, SCRAM-SHA-512, with ACLs."""
    by_principal: dict[str, list[AclBinding]] = defaultdict(list)
    for acl in render_acls(router):
        by_principal[acl.principal].append(acl)
    users = [kafka_user(party) for party in sorted(router.agreement.parties)] + [AUDIT_USER]
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "KafkaUser",
            "metadata": {"name": user, "labels": {CLUSTER_LABEL: cluster}},
            "spec": {
                "authentication": {"type": "scram-sha-512"},
                "authorization": {
                    "type": "simple",
                    "acls": _acl_rules(by_principal[f"User:{user}"]),
                },
            },
        }
        for user in users
    ]


def render_strimzi(router: Router, layout: Layout, cluster: str) -> str:
    """Every ``KafkaTopic`` and ``KafkaUser`` as one multi-document YAML text."""
    documents = strimzi_topics(router, layout, cluster) + strimzi_users(router, cluster)
    header = (
        f"# Strimzi resources for the agreement, rendered by `oix provision --render strimzi`.\n"
        f"# Apply with kubectl in the namespace of the Kafka cluster {cluster!r}.\n"
    )
    return header + yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)
