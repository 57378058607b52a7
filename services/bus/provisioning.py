"""Provisioning a Kafka cluster from the agreement: topics, ACLs and Strimzi resources.

A public module of its own rather than part of :mod:`services.bus`'s face:
it loads librdkafka (confluent-kafka), which ``oix --help`` and every service
that never provisions should not pay for.
"""

from services.bus._provision import Layout, Plan, Provisioned, provision, topic_specs
from services.bus._strimzi import render_strimzi

__all__ = ["Layout", "Plan", "Provisioned", "provision", "render_strimzi", "topic_specs"]
