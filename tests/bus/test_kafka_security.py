"""Security settings for Apache Kafka, rendered and validated.

The embedded broker cannot enable SASL or TLS, so this is as far as tests on
this machine go; the README says so.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.bus import BrokerError, Settings, client_options, producer_options


def _self_signed(tmp_path: Path) -> Path:
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "oix-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_sasl_ssl_renders_scram_credentials_and_a_verifying_tls_context(tmp_path: Path) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="LT-VSAT",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
        kafka_ssl_cafile=_self_signed(tmp_path),
    )
    options = client_options(settings, "kafka-1:9093")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "LT-VSAT"
    assert options["sasl_plain_password"] == "s3cret"
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "s3cret" not in repr(settings)


def test_sasl_without_credentials_is_refused() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(BrokerError, match="OIX_KAFKA_SASL_MECHANISM and OIX_KAFKA_SASL_USERNAME"):
        client_options(settings, "kafka-1:9093")


def test_producers_wait_for_every_in_sync_replica() -> None:
    options = producer_options(Settings(), "kafka-1:9092")
    assert options["acks"] == "all"
    assert options["security_protocol"] == "PLAINTEXT"
