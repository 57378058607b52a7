"""Codec benchmark: OIX validate+encode+sign and verify+decode against their raw floors.

The floors are measured in the same run on the same record: raw fastavro
schemaless write/read and raw Ed25519 sign/verify (libsodium, which OIX uses;
OpenSSL through ``cryptography`` is shown for reference). One core, one
process; each figure is the best of several timed rounds after a warm-up.

Run: ``make bench-codec`` (or ``.venv/bin/python bench/codec.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastavro import schemaless_reader, schemaless_writer
from rich.console import Console
from rich.table import Table

from services.bus import PREFIX_SIZE, Exchange, load_settings, parse_report

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "examples" / "02-lv-incident-ladders.json"
TARGET_ENCODE = 25_000
TARGET_DECODE = 12_000
TARGET_RATIO = 0.7


def rate(fn: Callable[[], object], seconds: float, rounds: int) -> float:
    """Best operations per second over ``rounds`` rounds of about ``seconds`` each."""
    for _ in range(200):
        fn()
    batch = 1000
    best = 0.0
    for _ in range(rounds):
        count = 0
        start = time.perf_counter()
        while True:
            for _ in range(batch):
                fn()
            count += batch
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, count / elapsed)
    return best


def combined(*rates: float) -> float:
    """The rate of doing each of several steps once, in sequence."""
    return 1.0 / sum(1.0 / r for r in rates)


@dataclass
class Row:
    name: str
    per_second: float
    floor: float | None = None
    target: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.per_second / self.floor if self.floor else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per figure")
    args = parser.parse_args()

    exchange = Exchange.from_settings(load_settings(bootstrap=None, log_format="json"))
    data = json.loads(EXAMPLE.read_text())
    report = parse_report(data)
    sealer = exchange.sealer(report.header.originator)
    opener = exchange.opener
    sealed = sealer.seal(report)
    schema = exchange.codec.registry.current[report.report_type].parsed
    record = report.model_dump()
    body = sealed.value[PREFIX_SIZE:]

    def raw_write() -> bytes:
        out = BytesIO()
        schemaless_writer(out, schema, record)
        return out.getvalue()

    assert raw_write() == body, "raw fastavro must write the very bytes OIX writes"
    sodium = nacl.signing.SigningKey.generate()
    sodium_verify = sodium.verify_key
    signature = sodium.sign(sealed.value).signature
    openssl = Ed25519PrivateKey.generate()
    openssl_public = openssl.public_key()
    openssl_signature = openssl.sign(sealed.value)
    opened = opener.open(sealed.value, sealed.headers)
    assert opened.trusted, opened.problem

    # As the services do after start-up: long-lived objects leave the collector's view.
    gc.collect()
    gc.freeze()
    s, n = args.seconds, args.rounds
    write = rate(raw_write, s, n)
    read = rate(lambda: schemaless_reader(BytesIO(body), schema, None), s, n)
    sign = rate(lambda: sodium.sign(sealed.value), s, n)
    verify = rate(lambda: sodium_verify.verify(sealed.value, signature), s, n)
    ossl_sign = rate(lambda: openssl.sign(sealed.value), s, n)
    ossl_verify = rate(lambda: openssl_public.verify(openssl_signature, sealed.value), s, n)
    validate = rate(lambda: parse_report(data), s, n)
    oix_encode = rate(lambda: sealer.seal(parse_report(data)), s, n)
    oix_decode = rate(lambda: opener.open(sealed.value, sealed.headers), s, n)

    encode_floor = combined(write, sign)
    decode_floor = combined(read, verify)
    rows = [
        Row("raw fastavro schemaless write", write),
        Row("raw fastavro schemaless read", read),
        Row("raw Ed25519 sign (libsodium)", sign),
        Row("raw Ed25519 verify (libsodium)", verify),
        Row("raw Ed25519 sign (OpenSSL, reference)", ossl_sign),
        Row("raw Ed25519 verify (OpenSSL, reference)", ossl_verify),
        Row("floor: raw write + raw sign", encode_floor),
        Row("floor: raw read + raw verify", decode_floor),
        Row("OIX validate (pydantic) alone", validate),
        Row("OIX validate+encode+sign", oix_encode, encode_floor, TARGET_ENCODE),
        Row("OIX verify+decode", oix_decode, decode_floor, TARGET_DECODE),
    ]
    table = Table(title=f"codec: {report.report_type}, {len(sealed.value)} B value, one core")
    for column in ("operation", "per second", "µs each", "ratio to floor", "target", "met"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    for row in rows:
        ratio = row.ratio
        met = ""
        if row.target is not None and ratio is not None:
            ok = row.per_second >= row.target and ratio >= TARGET_RATIO
            met = "yes" if ok else "NO"
        table.add_row(
            row.name,
            f"{row.per_second:,.0f}",
            f"{1e6 / row.per_second:.1f}",
            f"{ratio:.2f}" if ratio is not None else "",
            f">= {row.target:,} and >= {TARGET_RATIO}" if row.target else "",
            met,
        )
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
