"""``oix provision`` against the real broker: topics as agreed, idempotent, exact plans.

The topics are read back with confluent-kafka's AdminClient directly, not with
OIX's own admin code. On the local broker ACL calls are not supported: the
plan says so and the topics are provisioned all the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from services.bus import Exchange, Router, Settings, TopicNaming, parse_agreement
from services.bus._admin import API_CREATE_PARTITIONS, broker_apis
from services.bus._provision import ChangeKind, Layout, Plan, provision

REPO = Path(__file__).resolve().parents[2]
AGREEMENT = REPO / "deploy" / "agreement.example.yaml"
LAB = Layout(replication_factor=1, min_insync_replicas=1)
DAY_MS = 86_400_000


def _agreement(tmp_path: Path, name: str, change: Any = None) -> Path:
    """The example agreement with a small layout, optionally changed by ``change(data)``."""
    data = yaml.safe_load(AGREEMENT.read_text(encoding="utf-8"))
    data["topics"] = {"partitions": 2, "replay_window_days": 10}
    data["feeds"]["incidents"]["partitions"] = 3
    data["feeds"]["situation"]["partitions"] = 1
    if change is not None:
        change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _router(path: Path, prefix: str) -> Router:
    return Router(parse_agreement(path.read_text(encoding="utf-8"), str(path)), TopicNaming(prefix))


def _described(bootstrap: str, prefix: str) -> dict[str, tuple[int, dict[str, str]]]:
    """Partitions and configs of every topic under ``prefix``, as librdkafka reads them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = {
        name: len(t.partitions)
        for name, t in admin.list_topics(timeout=30).topics.items()
        if name.startswith(f"{prefix}.")
    }
    if not topics:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in topics])
    return {
        resource.name: (
            topics[resource.name],
            {k: e.value for k, e in future.result(30).items() if e.value is not None},
        )
        for resource, future in futures.items()
    }


def _kinds(plan: Plan) -> set[tuple[ChangeKind, str]]:
    return {(change.kind, change.spec.name) for change in plan.topics}


async def test_topics_get_the_agreed_partitions_and_configs_and_a_rerun_changes_nothing(
    settings: Settings, bootstrap: str, topic_prefix: str, tmp_path: Path, broker_kind: str
) -> None:
    router = _router(_agreement(tmp_path, "a.yaml"), topic_prefix)
    first = await provision(settings, bootstrap, router, LAB)
    assert first.applied
    assert first.failures == []
    expected = set(router.all_topics())
    assert _kinds(first.plan) == {(ChangeKind.CREATE, t) for t in expected}
    described = _described(bootstrap, topic_prefix)
    assert set(described) == expected
    for topic, (partitions, configs) in described.items():
        wanted = 3 if topic.endswith(".incidents") else 1 if topic.endswith(".situation") else 2
        assert partitions == wanted, topic
        assert configs["retention.ms"] == str(10 * DAY_MS), topic
        assert configs["cleanup.policy"] == "delete", topic
        assert configs["min.insync.replicas"] == "1", topic
        assert configs["unclean.leader.election.enable"] == "false", topic
    if broker_kind == "tansu":
        assert first.plan.acls_unavailable is not None
        assert first.plan.acls_unavailable.startswith("not supported by this broker")
        assert "DeleteAcls" in first.plan.acls_unavailable

    second = await provision(settings, bootstrap, router, LAB)
    assert second.plan.empty
    assert not second.applied
    assert sorted(second.plan.unchanged) == sorted(expected)
    assert "= nothing to change" in second.plan.lines()


async def test_a_changed_agreement_yields_exactly_the_expected_plan(
    settings: Settings, bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    before = _router(_agreement(tmp_path, "before.yaml"), topic_prefix)
    await provision(settings, bootstrap, before, LAB)

    def change(data: dict[str, Any]) -> None:
        data["feeds"]["situation"]["partitions"] = 2  # grow: CreatePartitions
        data["topics"]["replay_window_days"] = 20  # every kept topic's retention.ms
        del data["parties"]["EE-PPA"]  # its topics stay (evidence), noted
        data["releases"] = [r for r in data["releases"] if r["from"] != "EE-PPA"]
        for release in data["releases"]:
            release["to"] = [p for p in release["to"] if p != "EE-PPA"]
        data["feeds"]["incidents"]["report_types"] = ["IncidentReport"]
        data["feeds"]["warnings"] = {"report_types": ["EarlyWarning"]}  # a new feed topic
        data["releases"].append({"from": "UA-DPSU", "feeds": ["warnings"], "to": ["PL-SG"]})

    after = _router(_agreement(tmp_path, "after.yaml", change), topic_prefix)
    dry = await provision(settings, bootstrap, after, LAB, dry_run=True)
    assert not dry.applied
    old, new = set(before.all_topics()), set(after.all_topics())
    assert new - old == {f"{topic_prefix}.UA-DPSU.warnings"}
    expected = (
        {(ChangeKind.CREATE, t) for t in new - old}
        | {(ChangeKind.CONFIGURE, t) for t in new & old}
        | {(ChangeKind.ADD_PARTITIONS, t) for t in new & old if t.endswith(".situation")}
    )
    assert _kinds(dry.plan) == expected
    for change_ in dry.plan.topics:
        if change_.kind is ChangeKind.CONFIGURE:
            assert change_.configs == {"retention.ms": (str(10 * DAY_MS), str(20 * DAY_MS))}
    removed = sorted(old - new)
    assert removed
    assert all(t.startswith(f"{topic_prefix}.EE-PPA.") or ".direct.EE-PPA" in t for t in removed)
    assert [n.split()[1] for n in dry.plan.notes] == removed
    assert all("not in the agreement" in n and "kept" in n for n in dry.plan.notes)
    assert _described(bootstrap, topic_prefix)[f"{topic_prefix}.LT-VSAT.incidents"][1][
        "retention.ms"
    ] == str(10 * DAY_MS), "a dry run changed the cluster"

    applied = await provision(settings, bootstrap, after, LAB)
    described = _described(bootstrap, topic_prefix)
    assert all(described[t][1]["retention.ms"] == str(20 * DAY_MS) for t in new)
    grows = {t for t in new & old if t.endswith(".situation")}
    if API_CREATE_PARTITIONS in await broker_apis(settings, bootstrap):
        assert applied.failures == []
        assert all(described[t][0] == 2 for t in grows)
        remaining: set[tuple[ChangeKind, str]] = set()
    else:
        # The local broker: reported, never crashed, and the rest was applied.
        assert sorted(applied.failures) == sorted(
            f"add partitions to {t}: not supported by this broker (it does not offer "
            "CreatePartitions); the topic keeps its partitions"
            for t in grows
        )
        assert all(described[t][0] == 1 for t in grows)
        remaining = {(ChangeKind.ADD_PARTITIONS, t) for t in grows}
    third = await provision(settings, bootstrap, after, LAB, dry_run=True)
    assert _kinds(third.plan) == remaining


async def test_a_shrunk_or_under_replicated_topic_is_noted_not_touched(
    settings: Settings, bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    router = _router(_agreement(tmp_path, "a.yaml"), topic_prefix)
    await provision(settings, bootstrap, router, LAB)
    fewer = _router(
        _agreement(tmp_path, "b.yaml", lambda d: d["feeds"]["incidents"].update(partitions=1)),
        topic_prefix,
    )
    plan = (await provision(settings, bootstrap, fewer, LAB, dry_run=True)).plan
    assert plan.empty
    incident_topics = [t for t in fewer.all_topics() if t.endswith(".incidents")]
    assert sorted(plan.notes) == sorted(
        f"topic {t} has 3 partitions, the agreement says 1: Kafka cannot remove partitions; "
        "left at 3"
        for t in incident_topics
    )


def _oix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OIX_LOG_FORMAT": "json", **env},
        timeout=120,
        check=False,
    )


def test_oix_provision_dry_run_then_apply(
    bootstrap: str, topic_prefix: str, tmp_path: Path, broker_kind: str
) -> None:
    env = {
        "OIX_BOOTSTRAP": bootstrap,
        "OIX_TOPIC_PREFIX": topic_prefix,
        "OIX_AGREEMENT": str(_agreement(tmp_path, "a.yaml")),
    }
    too_big = _oix("provision", env=env)
    assert too_big.returncode == 1
    assert "replication factor 3 needs at least 3 brokers" in too_big.stderr
    lab = ("--replication-factor", "1", "--min-insync-replicas", "1")
    dry = _oix("provision", "--dry-run", *lab, env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"+ topic {topic_prefix}.LT-VSAT.incidents: 3 partitions, replication factor 1" in (
        dry.stdout
    )
    assert "applied" not in dry.stdout
    assert _described(bootstrap, topic_prefix) == {}
    done = _oix("provision", *lab, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("applied")
    if broker_kind == "tansu":
        assert "! acls: not supported by this broker" in done.stdout
    again = _oix("provision", *lab, env=env)
    assert again.returncode == 0, again.stderr
    assert "= nothing to change" in again.stdout
    assert len(_described(bootstrap, topic_prefix)) == len(
        _router(Path(env["OIX_AGREEMENT"]), topic_prefix).all_topics()
    )


@pytest.mark.parametrize("bad", [(0, 1), (2, 3)])
def test_a_bad_layout_is_refused_naming_the_option(
    bad: tuple[int, int], exchange: Exchange
) -> None:
    done = _oix(
        "provision",
        "--render",
        "strimzi",
        "--replication-factor",
        str(bad[0]),
        "--min-insync-replicas",
        str(bad[1]),
        env={},
    )
    assert done.returncode == 2
    assert "--replication-factor" in done.stderr or "--min-insync-replicas" in done.stderr
