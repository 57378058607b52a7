"""Property-based requests from the gateway's own OpenAPI document: never a 500.

The gateway runs as its own process (``oix gateway run``, the real command)
against the session's broker, since schemathesis calls it synchronously. The
fixture also proves the command line: a token made by ``oix gateway token
create``, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from gateway_support import bearer, example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from polling import eventually_sync
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.bus import free_port

REPO = Path(__file__).resolve().parents[2]

# The batch endpoint's NDJSON body is text, one report per line.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@pytest.fixture(scope="module")
def gateway_process(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("fuzzed-gateway")
    port = free_port()
    env = {
        **os.environ,
        "OIX_BOOTSTRAP": bootstrap,
        "OIX_DATA_DIR": str(data),
        "OIX_TOPIC_PREFIX": f"fz{uuid.uuid4().hex[:10]}",
        "OIX_LOG_FORMAT": "json",
        "OIX_LOG_LEVEL": "WARNING",
        "OIX_GATEWAY_AGENCY": "LV-VRS",
        "OIX_GATEWAY_PORT": str(port),
        "COLUMNS": "200",
    }
    cli = [sys.executable, "-m", "services.cli", "gateway"]
    made = subprocess.run(
        [*cli, "token", "create", "LV-VRS", "--name", "fuzzer"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip()  # stdout carries the token alone, for scripts
    assert token.startswith("oixgw_"), made.stdout
    log = (data / "gateway.log").open("wb")
    process = subprocess.Popen([*cli, "run"], env=env, cwd=REPO, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (data / "gateway.log").read_text()
            try:
                return httpx.get(f"{url}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        # Not ready (no answer, or 503): fuzzing it would test nothing.
        eventually_sync(
            ready,
            lambda: f"the gateway to be ready:\n{(data / 'gateway.log').read_text()}",
            timeout=30,
            interval=0.1,
        )
        os.environ["_OIX_FUZZ_TOKEN"] = token
        yield url
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (data / "gateway.log").read_text()
    finally:
        os.environ.pop("_OIX_FUZZ_TOKEN", None)
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def gateway_api(gateway_process: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{gateway_process}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(
    gateway_api: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    token = os.environ["_OIX_FUZZ_TOKEN"]
    operations = [result.ok() for result in gateway_api.get_all_operations()]
    assert len(operations) == 7  # with GET /v1/findings
    for operation in operations:
        takes_input = operation.method.upper() == "POST" or "{" in operation.path
        if mode is GenerationMode.NEGATIVE and not takes_input:
            continue  # nothing to get wrong in a GET without parameters
        _fuzz(operation.as_strategy(generation_mode=mode), token)


def _fuzz(strategy: SearchStrategy[schemathesis.Case], token: str) -> None:
    @given(case=strategy)
    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def every_operation(case: schemathesis.Case) -> None:
        response = case.call(headers=bearer(token), timeout=30)
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    every_operation()


# Deep nesting on every body-parsing path. orjson reads 1024 levels but writes
# 255: what lies between used to crash the request fingerprint with a 500.
_DEEP_PATHS = {
    "description": ("description",),
    "unknown field": ("extra",),
    "header.purpose": ("header", "purpose"),
    "header.message_id": ("header", "message_id"),
    "type": ("type",),
    "header.originator": ("header", "originator"),
    "header.links": ("header", "links"),
}


def _incident(message_id: bool) -> dict[str, Any]:
    report = example("02-lv-incident-ladders")
    if message_id:
        report["header"]["message_id"] = str(uuid.uuid4())
    return report


def _nested_json(depth: int, kinds: list[bool]) -> bytes:
    opening = b"".join(b'{"d":' if kinds[i % len(kinds)] else b"[" for i in range(depth))
    closing = b"".join(b"}" if kinds[i % len(kinds)] else b"]" for i in reversed(range(depth)))
    return opening + b'"x"' + closing


def _with_deep(report: dict[str, Any], where: tuple[str, ...], deep: bytes) -> bytes:
    target = report
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = "@@deep@@"
    return orjson.dumps(report).replace(b'"@@deep@@"', deep)


@given(
    depth=st.integers(min_value=200, max_value=1100),
    kinds=st.lists(st.booleans(), min_size=1, max_size=3),
    field=st.sampled_from(sorted(_DEEP_PATHS)),
    door=st.sampled_from(["single", "single with Idempotency-Key", "JSON batch", "NDJSON batch"]),
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_deep_nesting_never_gets_a_server_error(
    gateway_process: str, depth: int, kinds: list[bool], field: str, door: str
) -> None:
    token = os.environ["_OIX_FUZZ_TOKEN"]
    keyed = door == "single with Idempotency-Key"
    deep = _with_deep(
        _incident(message_id=not keyed), _DEEP_PATHS[field], _nested_json(depth, kinds)
    )
    headers = {**bearer(token), "content-type": "application/json"}
    if door.startswith("single"):
        if keyed:
            headers["Idempotency-Key"] = f"deep-{uuid.uuid4()}"
        answer = httpx.post(
            f"{gateway_process}/v1/reports", content=deep, headers=headers, timeout=30
        )
        assert answer.status_code in {400, 403, 422}, answer.text[:500]
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == answer.status_code
        return
    good = [orjson.dumps(_incident(message_id=True)) for _ in range(2)]
    if door == "JSON batch":
        content = b"[" + b",".join([*good, deep]) + b"]"
    else:
        content = b"\n".join([*good, deep])
        headers["content-type"] = "application/x-ndjson"
    answer = httpx.post(
        f"{gateway_process}/v1/reports:batch", content=content, headers=headers, timeout=30
    )
    if answer.status_code == 400:
        # Past orjson's reading limit (1024 levels, the batch's array included):
        # the whole body is not JSON, and nothing of it was published.
        assert door == "JSON batch", answer.text[:500]
        assert depth + len(_DEEP_PATHS[field]) + 1 > 1000, answer.text[:500]
        assert answer.headers["content-type"] == "application/problem+json"
        return
    assert answer.status_code == 200, answer.text[:500]
    statuses = [r["status"] for r in answer.json()["results"]]
    assert statuses[:2] == [201, 201], answer.text[:500]
    assert statuses[2] in {400, 403, 422}, answer.text[:500]


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = [
    ("type",),
    ("header",),
    ("header", "message_id"),
    ("header", "originator"),
    ("header", "created_at"),
    ("header", "releasable_to"),
    ("header", "links"),
    ("detected_at",),
    ("location",),
    ("location", "border_section"),
    ("persons",),
    ("unknown",),
]


@given(
    value=_JSON_VALUES,
    where=st.sampled_from(_FIELDS),
    door=st.sampled_from(["single", "single with Idempotency-Key", "JSON batch", "NDJSON batch"]),
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_any_json_in_any_field_gets_an_answer_never_a_server_error(
    gateway_process: str, value: Any, where: tuple[str, ...], door: str
) -> None:
    token = os.environ["_OIX_FUZZ_TOKEN"]
    report = _incident(message_id=door != "single with Idempotency-Key")
    target = report
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    # The standard library writes integers past 64 bits (orjson, the client here, would not).
    body = json.dumps(report).encode()
    headers = {**bearer(token), "content-type": "application/json"}
    if door.startswith("single"):
        if door.endswith("Key"):
            headers["Idempotency-Key"] = f"any-{uuid.uuid4()}"
        answer = httpx.post(
            f"{gateway_process}/v1/reports", content=body, headers=headers, timeout=30
        )
        assert answer.status_code in {201, 400, 403, 409, 422}, answer.text[:500]
        if answer.status_code != 201:
            assert answer.headers["content-type"] == "application/problem+json"
        return
    good = orjson.dumps(_incident(message_id=True))
    if door == "JSON batch":
        content = b"[" + good + b"," + body + b"]"
    else:
        content = good + b"\n" + body
        headers["content-type"] = "application/x-ndjson"
    answer = httpx.post(
        f"{gateway_process}/v1/reports:batch", content=content, headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text[:500]
    statuses = [r["status"] for r in answer.json()["results"]]
    assert statuses[0] == 201, answer.text[:500]
    assert statuses[1] in {201, 400, 403, 409, 422}, answer.text[:500]
