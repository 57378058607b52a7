"""Topic names and routing, derived from the agreement.

The scheme (``<prefix>`` is ``oix`` in production)::

    <prefix>.<ORIGINATOR>.<feed>              a party's feed, for every reader the
                                              agreement releases that feed to
    <prefix>.<ORIGINATOR>.direct.<RECIPIENT>  bilateral channel, for reports whose
                                              releasability is narrower than the feed's
    <prefix>.quarantine                       records a consumer could not trust

Every topic a party writes starts with ``<prefix>.<ORIGINATOR>.``, so one
prefixed WRITE ACL per party says exactly what it may publish. Reads are
literal ACLs, one per feed or channel the agreement releases to the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from services.bus._agreement import FOLLOWS_ORIGINAL, Agreement
from services.bus._errors import RoutingError

DIRECT = "direct"
QUARANTINE = "quarantine"


class TopicKind(StrEnum):
    """What a topic carries."""

    FEED = "feed"
    DIRECT = "direct"
    QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """What a topic name says."""

    kind: TopicKind
    originator: str | None = None
    feed: str | None = None
    recipient: str | None = None


@dataclass(frozen=True, slots=True)
class TopicNaming:
    """Builds and parses OIX topic names under one prefix."""

    prefix: str = "oix"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,40}", self.prefix):
            raise ValueError(
                f"topic prefix {self.prefix!r} must be lower-case letters, digits, - or _",
            )

    def feed(self, originator: str, feed: str) -> str:
        """The topic of ``originator``'s ``feed``."""
        return f"{self.prefix}.{originator}.{feed}"

    def direct(self, originator: str, recipient: str) -> str:
        """The bilateral channel from ``originator`` to ``recipient``."""
        return f"{self.prefix}.{originator}.{DIRECT}.{recipient}"

    @property
    def quarantine(self) -> str:
        """Where consumers put records they could not trust."""
        return f"{self.prefix}.{QUARANTINE}"

    @property
    def party_prefix_pattern(self) -> str:
        """A regular expression matching every OIX topic under this prefix."""
        return rf"^{re.escape(self.prefix)}\..+"

    def writer_prefix(self, party: str) -> str:
        """Prefix of every topic ``party`` writes (for a prefixed WRITE ACL)."""
        return f"{self.prefix}.{party}."

    def parse(self, topic: str) -> TopicInfo | None:
        """What ``topic`` is, or None when it is not an OIX topic under this prefix."""
        head = f"{self.prefix}."
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split(".")
        if parts == [QUARANTINE]:
            return TopicInfo(TopicKind.QUARANTINE)
        if len(parts) == 2:  # noqa: PLR2004
            return TopicInfo(TopicKind.FEED, originator=parts[0], feed=parts[1])
        if len(parts) == 3 and parts[1] == DIRECT:  # noqa: PLR2004
            return TopicInfo(TopicKind.DIRECT, originator=parts[0], recipient=parts[2])
        return None


class Router:
    """Decides which topics a report goes to, from the agreement and its releasability."""

    def __init__(self, agreement: Agreement, naming: TopicNaming) -> None:
        self.agreement = agreement
        self.naming = naming

    def topics_for(
        self,
        report_type: str,
        originator: str,
        releasable_to: list[str],
    ) -> list[str]:
        """Topics for a new report.

        The party's feed topic when the report is releasable to every reader of
        that feed; otherwise one bilateral channel per listed recipient, so no
        party can read what was not released to it.

        Raises:
            RoutingError: the originator, type or releasability does not fit the agreement.
        """
        if originator not in self.agreement.parties:
            raise RoutingError(f"header.originator: {originator} is not a party to the agreement")
        if report_type in FOLLOWS_ORIGINAL:
            raise RoutingError(
                f"{report_type} goes wherever the message it refers to went; "
                "route it with the original's topics",
            )
        feed = self.agreement.feed_of(report_type)
        readers = self.agreement.readers(originator, feed)
        wanted = set(releasable_to) - {originator}
        if not wanted:
            raise RoutingError(
                "header.releasable_to: names no party besides the originator, so nobody could "
                "read the report",
            )
        refused = sorted(wanted - readers)
        if refused:
            allowed = ", ".join(sorted(readers)) or "nobody"
            raise RoutingError(
                f"header.releasable_to: the agreement does not release {originator}'s {feed!r} "
                f"feed to {', '.join(refused)} (it is released to: {allowed})",
            )
        if wanted == readers:
            return [self.naming.feed(originator, feed)]
        return [self.naming.direct(originator, recipient) for recipient in sorted(wanted)]

    def all_topics(self) -> list[str]:
        """Every topic the agreement implies, for provisioning."""
        topics = {self.naming.quarantine}
        for release in self.agreement.releases:
            for feed in release.feeds:
                topics.add(self.naming.feed(release.from_, feed))
            for reader in release.to:
                topics.add(self.naming.direct(release.from_, reader))
        return sorted(topics)

    def readable_by(self, party: str) -> list[str]:
        """Every topic ``party`` may read (what a liaison officer may subscribe to)."""
        topics: set[str] = set()
        for release in self.agreement.releases:
            if party in release.to:
                topics.update(self.naming.feed(release.from_, feed) for feed in release.feeds)
                topics.add(self.naming.direct(release.from_, party))
        return sorted(topics)


@dataclass(frozen=True, slots=True)
class AclBinding:
    """One Kafka ACL, as ``kafka-acls.sh`` takes it."""

    principal: str
    operation: str
    resource_type: str
    pattern_type: str
    name: str

    def describe(self) -> str:
        """One line for plans and logs: ``User:lt-vsat WRITE TOPIC oix.LT-VSAT. (prefixed)``."""
        return (
            f"{self.principal} {self.operation} {self.resource_type} {self.name} "
            f"({self.pattern_type.lower()})"
        )

    def command(self, bootstrap: str = "$BOOTSTRAP") -> str:
        """The ``kafka-acls.sh`` command that creates this binding."""
        resource = {"TOPIC": "--topic", "GROUP": "--group"}[self.resource_type]
        return (
            f"kafka-acls.sh --bootstrap-server {bootstrap} --add --allow-principal "
            f"{self.principal} --operation {self.operation} {resource} {self.name} "
            f"--resource-pattern-type {self.pattern_type.lower()}"
        )


AUDIT_USER = "oix-audit"
AUDIT_PRINCIPAL = f"User:{AUDIT_USER}"


def kafka_user(party: str) -> str:
    """The Kafka (SCRAM) user name of ``party``: its code in lower case.

    Lower case because Strimzi names a ``KafkaUser`` after its user, and
    Kubernetes names are lower case; one name everywhere avoids a mapping.
    """
    return party.lower()


def render_acls(router: Router) -> list[AclBinding]:
    """Every ACL the agreement implies on a secured Apache Kafka cluster; nothing else is allowed.

    - each party writes only topics under its own ``<prefix>.<PARTY>.``, reads
      only the feeds and bilateral channels released to it (literal names), and
      uses only consumer groups under its own prefix;
    - the audit consumer reads every topic under ``<prefix>.``, writes the
      quarantine topic and uses the ``<prefix>.audit`` groups.

    DESCRIBE is not listed: Kafka implies it from READ and WRITE.
    """
    naming = router.naming
    acls: list[AclBinding] = []
    for party in sorted(router.agreement.parties):
        principal = f"User:{kafka_user(party)}"
        prefix = naming.writer_prefix(party)
        acls.append(AclBinding(principal, "WRITE", "TOPIC", "PREFIXED", prefix))
        acls.extend(
            AclBinding(principal, "READ", "TOPIC", "LITERAL", topic)
            for topic in router.readable_by(party)
        )
        acls.append(AclBinding(principal, "READ", "GROUP", "PREFIXED", prefix))
    acls.append(AclBinding(AUDIT_PRINCIPAL, "READ", "TOPIC", "PREFIXED", f"{naming.prefix}."))
    acls.append(AclBinding(AUDIT_PRINCIPAL, "WRITE", "TOPIC", "LITERAL", naming.quarantine))
    acls.append(
        AclBinding(AUDIT_PRINCIPAL, "READ", "GROUP", "PREFIXED", f"{naming.prefix}.audit"),
    )
    return acls
