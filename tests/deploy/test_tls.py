"""TLS for real: OIX's services and a confluent-kafka client through a TLS terminator.

The local broker cannot serve TLS itself, so Debian's stunnel4 terminates TLS
in front of it, and the broker advertises the terminator's address: every
client connection, bootstrap and partition leader alike, goes through a real
TLS handshake. The CA and the server certificate come from the documented lab
script (deploy/lab/make-certs.sh, openssl). A client that trusts another CA is
refused, and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.bus import (
    H_MESSAGE_ID,
    EmbeddedBroker,
    Exchange,
    Settings,
    free_port,
    freshen,
    load_examples,
)
from services.gateway import create_token

REPO = Path(__file__).resolve().parents[2]
MAKE_CERTS = REPO / "deploy" / "lab" / "make-certs.sh"
LAB = ("--replication-factor", "1", "--min-insync-replicas", "1")

pytestmark = pytest.mark.skipif(
    shutil.which("stunnel4") is None or shutil.which("openssl") is None,
    reason="stunnel4 and openssl are installed by `make test` (target tools)",
)


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    ca: Path
    wrong_ca: Path
    stunnel_log: Path


def _certs(directory: Path, name: str, *sans: str) -> None:
    subprocess.run(
        ["bash", str(MAKE_CERTS), str(directory), name, *sans],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
async def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsBroker]:
    root = tmp_path_factory.mktemp("tls")
    _certs(root / "lab", "broker", "IP:127.0.0.1", "DNS:localhost")
    _certs(root / "other", "other")
    plain, tls = free_port(), free_port()
    config = root / "stunnel.conf"
    log = root / "stunnel.log"
    config.write_text(
        "foreground = yes\npid =\n"
        f"output = {log}\n"
        "[kafka]\n"
        f"accept = 127.0.0.1:{tls}\n"
        f"connect = 127.0.0.1:{plain}\n"
        f"cert = {root / 'lab' / 'broker.pem'}\n"
        f"key = {root / 'lab' / 'broker.key'}\n",
        encoding="utf-8",
    )
    terminator = _start(["stunnel4", str(config)])
    try:
        async with EmbeddedBroker(port=plain, advertised=f"127.0.0.1:{tls}"):
            yield TlsBroker(
                f"127.0.0.1:{tls}", root / "lab" / "ca.pem", root / "other" / "ca.pem", log
            )
    finally:
        terminator.terminate()
        terminator.wait(10)


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _env(broker: TlsBroker, ca: Path, prefix: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OIX_BOOTSTRAP": broker.bootstrap,
        "OIX_KAFKA_SECURITY_PROTOCOL": "SSL",
        "OIX_KAFKA_SSL_CAFILE": str(ca),
        "OIX_TOPIC_PREFIX": prefix,
        "OIX_DATA_DIR": str(data_dir),
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "WARNING",
    }


def _oix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@contextlib.contextmanager
def _service(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _tls(ca: Path, **extra: object) -> dict[str, object]:
    return {"security.protocol": "SSL", "ssl.ca.location": str(ca), **extra}


async def _until(check, what: str, timeout: float = 45.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(0.2)
    pytest.fail(f"{what} within {timeout:.0f} s; last: {last!r}")


def _stored(database: Path, message_ids: set[str]) -> dict[str, str]:
    """Signature status per message id, for the ids the audit store already holds."""
    if not database.exists():
        return {}
    with contextlib.closing(sqlite3.connect(database)) as connection:
        try:
            rows = connection.execute(
                "SELECT message_id, signature_status FROM audit_record"
            ).fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return {}
    return {mid: status for mid, status in rows if mid in message_ids}


async def test_oix_and_confluent_kafka_exchange_messages_over_tls(
    tls_broker: TlsBroker, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(tls_broker, tls_broker.ca, topic_prefix, tmp_path)
    provisioned = _oix("provision", *LAB, env=env)
    assert provisioned.returncode == 0, provisioned.stderr
    assert provisioned.stdout.strip().endswith("applied")

    tokens = tmp_path / "tokens.yaml"
    token = create_token(tokens, "LV-VRS", "lv-system")
    port = free_port()
    gateway_env = {**env, "OIX_GATEWAY_TOKENS_FILE": str(tokens)}
    audit_env = {
        **env,
        "OIX_AUDIT_METRICS_PORT": "0",
        "OIX_AUDIT_SESSION_TIMEOUT_MS": "2000",
        "OIX_AUDIT_HEARTBEAT_INTERVAL_MS": "500",
        "OIX_AUDIT_REBALANCE_TIMEOUT_MS": "2000",
        "OIX_AUDIT_METADATA_MAX_AGE_MS": "500",
        "OIX_AUDIT_OPEN_PROCESSES": "0",
    }
    gateway_args = ["gateway", "run", "--agency", "LV-VRS", "--port", str(port)]
    with (
        _service(["audit", "run", "--migrate"], audit_env, tmp_path / "audit.log") as audit,
        _service(gateway_args, gateway_env, tmp_path / "gateway.log") as gateway,
    ):
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:

            async def ready() -> bool:
                assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/readyz")).status_code == 200
                return False

            deadline = time.monotonic() + 45
            while not await ready():
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
                await asyncio.sleep(0.2)
            report = _example("02-lv-incident-ladders")
            answer = await http.post(
                "/v1/reports", json=report, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 201, answer.text
            published = answer.json()
        lv_id = published["message_id"]

        # A confluent-kafka (librdkafka) producer publishes LT-VSAT's signed report over TLS.
        exchange = Exchange.from_settings(Settings(topic_prefix=topic_prefix))
        lt_id = _produce_with_librdkafka(exchange, tls_broker)

        # A confluent-kafka consumer reads what the gateway published, over TLS.
        topic = published["topic"]
        consumer = Consumer(
            {
                "bootstrap.servers": tls_broker.bootstrap,
                "group.id": f"{topic_prefix}.tls-reader",
                "enable.auto.commit": False,
                **_tls(tls_broker.ca),
            }
        )
        try:
            consumer.assign([TopicPartition(topic, published["partition"], published["offset"])])
            message = await _until(lambda: consumer.poll(0.5), "the gateway's record over TLS")
            assert message.error() is None
            assert dict(message.headers())[H_MESSAGE_ID].decode() == lv_id
            opened = exchange.opener.open(message.value(), message.headers())
            assert opened.trusted
        finally:
            consumer.close()

        # The audit consumer stored both, verified, having read them over TLS.
        database = tmp_path / "audit.db"
        wanted = {lv_id, lt_id}
        stored = await _until(
            lambda: (found := _stored(database, wanted)) and set(found) == wanted and found,
            "both records in the audit store",
        )
        assert stored == {lv_id: "valid", lt_id: "valid"}
        assert audit.poll() is None
        assert gateway.poll() is None
    assert audit.returncode == 0, (tmp_path / "audit.log").read_text()
    assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()


async def test_a_client_with_the_wrong_ca_is_refused_with_a_clear_error(
    tls_broker: TlsBroker, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(tls_broker, tls_broker.wrong_ca, topic_prefix, tmp_path)
    refused = _oix("provision", "--dry-run", *LAB, env=env)
    assert refused.returncode == 1
    assert "certificate verify failed" in refused.stderr
    assert tls_broker.bootstrap in refused.stderr

    tokens = tmp_path / "tokens.yaml"
    create_token(tokens, "LV-VRS", "lv-system")
    gateway = _oix(
        "gateway",
        "run",
        "--agency",
        "LV-VRS",
        "--port",
        str(free_port()),
        env={**env, "OIX_GATEWAY_TOKENS_FILE": str(tokens)},
    )
    assert gateway.returncode != 0
    assert "certificate verify failed" in gateway.stderr

    # The audit consumer too: one line naming the handshake's failure, no traceback.
    audit = _oix("audit", "run", "--migrate", env={**env, "OIX_AUDIT_METRICS_PORT": "0"})
    assert audit.returncode == 2
    assert "Traceback" not in audit.stderr, audit.stderr
    [line] = [line for line in audit.stderr.splitlines() if line.startswith("error:")]
    assert f"cannot reach the broker at {tls_broker.bootstrap}: the TLS handshake" in line
    assert "certificate verify failed" in line

    # librdkafka says it too (in its log), and the call fails instead of hanging.
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("tls-test-librdkafka")
    logger.addHandler(Collect())
    admin = AdminClient(
        {"bootstrap.servers": tls_broker.bootstrap, "logger": logger, **_tls(tls_broker.wrong_ca)}
    )
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(0.1)
    assert any("certificate verify failed" in line for line in records), records[:3]
    assert "unknown ca" in tls_broker.stunnel_log.read_text()


def _produce_with_librdkafka(exchange: Exchange, broker: TlsBroker) -> str:
    """LT-VSAT's example incident, sealed by OIX, produced by librdkafka; its message id."""
    report = freshen([_examples()["06-lt-incident-wetsuits-neman"]])[0]
    sealed = exchange.sealer("LT-VSAT").seal(report)
    [topic] = exchange.router.topics_for(
        report.report_type, "LT-VSAT", list(report.header.releasable_to)
    )
    delivered: list[object] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", **_tls(broker.ca)})
    producer.produce(
        topic,
        sealed.value,
        sealed.key,
        headers=sealed.headers,
        on_delivery=lambda error, message: delivered.append(error or message.offset()),
    )
    assert producer.flush(30) == 0
    assert isinstance(delivered[0], int), delivered
    return sealed.message_id


def _examples() -> dict[str, object]:
    return {e.name: e.report for e in load_examples(REPO / "deploy" / "examples")}


def _example(name: str) -> dict[str, object]:
    """An example report as an agency system sends it: no id, no created_at."""
    report = freshen([_examples()[name]])[0]
    body = report.model_dump(mode="json")
    body["type"] = report.report_type
    for field in ("message_id", "created_at", "event_id"):
        body["header"].pop(field)
    body["header"]["links"] = []
    return body
