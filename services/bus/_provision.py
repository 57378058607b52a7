"""Provisioning: the topics and ACLs the agreement implies, made real on a Kafka cluster.

``oix provision`` compares what the agreement wants with what the cluster has,
prints the difference as a plan, and applies it: topics created or
reconfigured (partitions per feed, replication factor, ``min.insync.replicas``,
retention = the agreed replay window, ``cleanup.policy=delete``), ACLs added,
and ACLs on OIX resources that the agreement no longer implies (a removed party
or release) revoked. A second run finds nothing to do.

What it never does, and says so in the plan: delete a topic (its records are
evidence), remove partitions (Kafka cannot), or move replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from services.bus._admin import (
    ACL_APIS,
    API_CREATE_PARTITIONS,
    API_INCREMENTAL_ALTER_CONFIGS,
    Admin,
    ObservedTopic,
    broker_apis,
    missing_apis,
)
from services.bus._errors import BrokerError, ConfigError
from services.bus._logging import get_logger
from services.bus._settings import Settings
from services.bus._topics import AclBinding, Router, TopicKind, render_acls

log = get_logger(__name__)

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Layout:
    """Choices about the cluster that are not the agreement's: how many copies of each record."""

    replication_factor: int = 3
    min_insync_replicas: int = 2

    def __post_init__(self) -> None:
        if self.replication_factor < 1:
            raise ConfigError("--replication-factor must be at least 1")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ConfigError(
                f"--min-insync-replicas must be between 1 and the replication factor "
                f"({self.replication_factor}), not {self.min_insync_replicas}",
            )


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the agreement and the layout want it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]

    def describe(self) -> str:
        """``6 partitions, replication factor 3, key=value, …``."""
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.configs.items()))
        return (
            f"{self.partitions} partitions, replication factor {self.replication_factor}, "
            f"{settings}"
        )


def topic_specs(router: Router, layout: Layout) -> list[TopicSpec]:
    """Every topic the agreement implies, with partitions and configs."""
    policy = router.agreement.topics
    configs = {
        "cleanup.policy": "delete",  # every record is its own report: never compacted away
        "retention.ms": str(policy.replay_window_days * DAY_MS),
        "min.insync.replicas": str(layout.min_insync_replicas),
        "unclean.leader.election.enable": "false",  # an out-of-sync replica never leads
    }
    specs = []
    for name in router.all_topics():
        info = router.naming.parse(name)
        feed = info.feed if info is not None and info.kind is TopicKind.FEED else None
        partitions = router.agreement.partitions_of(feed) if feed else policy.partitions
        specs.append(TopicSpec(name, partitions, layout.replication_factor, dict(configs)))
    return specs


class ChangeKind(StrEnum):
    """What one step of a plan does."""

    CREATE = "create"
    CONFIGURE = "configure"
    ADD_PARTITIONS = "add-partitions"


@dataclass(frozen=True, slots=True)
class TopicChange:
    """One change to one topic."""

    kind: ChangeKind
    spec: TopicSpec
    configs: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    """For CONFIGURE: key -> (value on the cluster, value wanted)."""
    partitions_before: int = 0

    def line(self) -> str:
        """The change as one line of the plan."""
        name = self.spec.name
        if self.kind is ChangeKind.CREATE:
            return f"+ topic {name}: {self.spec.describe()}"
        if self.kind is ChangeKind.CONFIGURE:
            changes = ", ".join(
                f"{key} {before if before is not None else '(unset)'} -> {after}"
                for key, (before, after) in sorted(self.configs.items())
            )
            return f"~ topic {name}: {changes}"
        return (
            f"~ topic {name}: partitions {self.partitions_before} -> {self.spec.partitions} "
            "(keys re-map: later reports of an event may land on another partition than its "
            "earlier ones)"
        )


@dataclass
class Plan:
    """The difference between the agreement and the cluster, and what will not be changed."""

    topics: list[TopicChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What provisioning leaves alone, said plainly."""
    acls_add: list[AclBinding] = field(default_factory=list)
    acls_remove: list[AclBinding] = field(default_factory=list)
    acls_unavailable: str | None = None
    """Why ACLs cannot be provisioned on this broker, or None."""

    @property
    def empty(self) -> bool:
        """True when nothing would change."""
        return not (self.topics or self.acls_add or self.acls_remove)

    def lines(self) -> list[str]:
        """The plan as a diff: ``+`` create/add, ``~`` change, ``-`` revoke, ``!`` left alone."""
        out = [change.line() for change in self.topics]
        out += [f"+ acl {acl.describe()}" for acl in self.acls_add]
        out += [f"- acl {acl.describe()}" for acl in self.acls_remove]
        out += [f"! {note}" for note in self.notes]
        if self.acls_unavailable:
            out.append(f"! acls: {self.acls_unavailable}")
        if self.unchanged:
            out.append(f"= {len(self.unchanged)} topics already as agreed")
        if self.empty:
            out.append("= nothing to change")
        return out


def plan_topics(
    specs: Iterable[TopicSpec], observed: dict[str, ObservedTopic]
) -> tuple[list[TopicChange], list[str], list[str]]:
    """Changes, unchanged topic names, and notes on what provisioning leaves alone."""
    changes: list[TopicChange] = []
    unchanged: list[str] = []
    notes: list[str] = []
    wanted = {spec.name: spec for spec in specs}
    for name, spec in sorted(wanted.items()):
        have = observed.get(name)
        if have is None:
            changes.append(TopicChange(ChangeKind.CREATE, spec))
            continue
        differs = {
            key: (have.configs.get(key), value)
            for key, value in spec.configs.items()
            if have.configs.get(key) != value
        }
        touched = False
        if differs:
            changes.append(TopicChange(ChangeKind.CONFIGURE, spec, configs=differs))
            touched = True
        if have.partitions < spec.partitions:
            changes.append(
                TopicChange(ChangeKind.ADD_PARTITIONS, spec, partitions_before=have.partitions)
            )
            touched = True
        elif have.partitions > spec.partitions:
            notes.append(
                f"topic {name} has {have.partitions} partitions, the agreement says "
                f"{spec.partitions}: Kafka cannot remove partitions; left at {have.partitions}",
            )
        if have.replication_factor != spec.replication_factor:
            notes.append(
                f"topic {name} has replication factor {have.replication_factor}, the layout "
                f"wants {spec.replication_factor}: provisioning does not move replicas "
                "(kafka-reassign-partitions.sh does)",
            )
        if not touched:
            unchanged.append(name)
    notes += [
        f"topic {name} is not in the agreement (a removed party or release?): kept, since its "
        "records are evidence; its ACLs are revoked. Delete it by hand after its retention"
        for name in sorted(set(observed) - set(wanted))
    ]
    return changes, unchanged, notes


def plan_acls(
    desired: Iterable[AclBinding], current: set[AclBinding]
) -> tuple[list[AclBinding], list[AclBinding]]:
    """ACLs to add and to revoke so that exactly ``desired`` remain on OIX resources."""
    wanted = set(desired)
    return sorted(wanted - current, key=_acl_order), sorted(current - wanted, key=_acl_order)


def _acl_order(acl: AclBinding) -> tuple[str, str, str, str]:
    return (acl.principal, acl.resource_type, acl.name, acl.operation)


@dataclass
class Provisioned:
    """A plan, and what became of it."""

    plan: Plan
    applied: bool
    failures: list[str] = field(default_factory=list)
    """Planned changes that were not made, each with the reason."""


def _plan(admin: Admin, router: Router, layout: Layout, apis: frozenset[int]) -> Plan:
    brokers = admin.broker_count()
    if layout.replication_factor > brokers:
        raise BrokerError(
            f"replication factor {layout.replication_factor} needs at least "
            f"{layout.replication_factor} brokers; the cluster at {admin.bootstrap} has "
            f"{brokers} (on a one-broker lab: --replication-factor 1 --min-insync-replicas 1)",
        )
    prefix = f"{router.naming.prefix}."
    changes, unchanged, notes = plan_topics(topic_specs(router, layout), admin.topics(prefix))
    plan = Plan(topics=changes, unchanged=unchanged, notes=notes)
    missing = missing_apis(apis, ACL_APIS)
    if missing:
        plan.acls_unavailable = (
            f"not supported by this broker (it does not offer {', '.join(missing)}): "
            "no ACL was read or written"
        )
        return plan
    current, off = admin.acls(prefix)
    if off is not None:
        plan.acls_unavailable = off
        return plan
    plan.acls_add, plan.acls_remove = plan_acls(render_acls(router), current)
    return plan


def _apply(admin: Admin, plan: Plan, apis: frozenset[int]) -> list[str]:
    failures: list[str] = []

    def record(results: dict[str, str | None], what: str) -> None:
        failures.extend(f"{what} {key}: {reason}" for key, reason in results.items() if reason)

    creates = [c.spec for c in plan.topics if c.kind is ChangeKind.CREATE]
    record(
        admin.create_topics(
            [(s.name, s.partitions, s.replication_factor, s.configs) for s in creates]
        ),
        "create topic",
    )
    configure = {
        c.spec.name: {k: after for k, (_before, after) in c.configs.items()}
        for c in plan.topics
        if c.kind is ChangeKind.CONFIGURE
    }
    if configure and missing_apis(apis, [API_INCREMENTAL_ALTER_CONFIGS]):
        failures += [
            f"configure topic {name}: not supported by this broker (it does not offer "
            "IncrementalAlterConfigs)"
            for name in sorted(configure)
        ]
    else:
        record(admin.alter_configs(configure), "configure topic")
    grow = {
        c.spec.name: c.spec.partitions for c in plan.topics if c.kind is ChangeKind.ADD_PARTITIONS
    }
    if grow and missing_apis(apis, [API_CREATE_PARTITIONS]):
        failures += [
            f"add partitions to {name}: not supported by this broker (it does not offer "
            "CreatePartitions); the topic keeps its partitions"
            for name in sorted(grow)
        ]
    else:
        record(admin.add_partitions(grow), "add partitions to")
    record(admin.create_acls(plan.acls_add), "add acl")
    record(admin.delete_acls(plan.acls_remove), "revoke acl")
    return failures


async def provision(
    settings: Settings,
    bootstrap: str,
    router: Router,
    layout: Layout,
    *,
    dry_run: bool = False,
) -> Provisioned:
    """Plan, and unless ``dry_run`` apply, the agreement's topics and ACLs on the cluster.

    Raises:
        BrokerError: the cluster cannot be reached or described, or is too small
            for the replication factor.
    """
    apis = await broker_apis(settings, bootstrap)

    def work() -> Provisioned:
        admin = Admin(settings, bootstrap)
        plan = _plan(admin, router, layout, apis)
        if dry_run or plan.empty:
            return Provisioned(plan, applied=False)
        failures = _apply(admin, plan, apis)
        log.info(
            "provisioned",
            bootstrap=bootstrap,
            changes=len(plan.topics) + len(plan.acls_add) + len(plan.acls_remove),
            failures=len(failures),
        )
        return Provisioned(plan, applied=True, failures=failures)

    return await asyncio.to_thread(work)
