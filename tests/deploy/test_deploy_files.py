"""The deployment files, checked without a Docker engine or a cluster.

``docker-compose.yml`` and ``deploy/k8s`` are validated against their published
JSON schemas (``deploy/schemas``, sources in its SOURCE.md), and every image,
command, setting, secret file and port they name is checked against the code:
a command must parse with the real ``oix`` CLI, an ``OIX_*`` variable must be a
setting with a value the settings accept, a probe must hit a path the service
serves on the port it listens on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings
from referencing import Registry, Resource
from typer.testing import CliRunner

from services.audit._settings import AuditSettings
from services.bus import Router, Settings, TopicNaming, load_agreement
from services.bus._provision import Layout
from services.bus._strimzi import render_strimzi
from services.bus._topics import AUDIT_USER, kafka_user
from services.cli import app
from services.gateway import GatewaySettings
from services.liaison import LiaisonSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
SCHEMAS = REPO / "deploy" / "schemas"
AGREEMENT = REPO / "deploy" / "agreement.example.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
EXTERNAL_IMAGES = {"apache/kafka:3.9.1", "postgres:16"}
OIX_IMAGES = {"oix:lab", f"registry.example.org/oix:{VERSION}"}

SETTINGS_CLASSES: dict[str, type[BaseSettings]] = {
    "OIX_GATEWAY_": GatewaySettings,
    "OIX_AUDIT_": AuditSettings,
    "OIX_LIAISON_": LiaisonSettings,
    "OIX_": Settings,
}
READ_ELSEWHERE = {
    "OIX_SECRETS_DIR": "services/bus/_settings.py",  # where secret files are read from
    "OIX_CONFIG": "services/bus/_settings.py",
}
LIBPQ_ENV = {"PGPASSFILE"}  # asyncpg reads it, as libpq does


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, document)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
    ]


def _oix_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("image") in OIX_IMAGES
    }


def _containers() -> list[tuple[str, dict[str, Any]]]:
    """Every OIX container of the k8s manifests: (workload name, container spec)."""
    found = []
    for _path, document in _k8s_documents():
        spec = document.get("spec", {})
        template = spec.get("template", {}).get("spec", {})
        found += [
            (document["metadata"]["name"], container)
            for container in template.get("containers", [])
            if container["image"] in OIX_IMAGES
        ]
    return found


# --- schemas -----------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_compose_schema_check_can_fail() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    broken = _compose()
    broken["services"]["audit"]["depends_on"]["oix-migrate"]["condition"] = "service_finished"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def _k8s_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = SCHEMAS / "kubernetes-v1.33"
    path = directory / f"{kind.lower()}-{group_version}.json"
    assert path.is_file(), f"no schema kept for {kind} {api_version}: add it (SOURCE.md)"
    schema = json.loads(path.read_text(encoding="utf-8"))
    definitions = json.loads((directory / "_definitions.json").read_text(encoding="utf-8"))
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize(
    ("path", "document"),
    _k8s_documents(),
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in _k8s_documents()],
)
def test_k8s_manifests_are_valid_against_the_kubernetes_schemas(
    path: Path, document: dict[str, Any]
) -> None:
    validator = _k8s_validator(document["kind"], document["apiVersion"])
    errors = list(validator.iter_errors(document))
    assert not errors, "\n".join(
        f"{path.name} {list(e.absolute_path)}: {e.message}" for e in errors
    )


def test_the_k8s_schema_check_can_fail() -> None:
    _path, document = next((p, d) for p, d in _k8s_documents() if d["kind"] == "StatefulSet")
    document["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/"
    assert list(_k8s_validator("StatefulSet", "apps/v1").iter_errors(document))


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_every_workload_has_probes_requests_and_a_disruption_budget() -> None:
    documents = [d for _p, d in _k8s_documents()]
    budgets = {
        tuple(sorted(d["spec"]["selector"]["matchLabels"].items()))
        for d in documents
        if d["kind"] == "PodDisruptionBudget"
    }
    for document in documents:
        if document["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        selector = tuple(sorted(document["spec"]["selector"]["matchLabels"].items()))
        assert selector in budgets, document["metadata"]["name"]
        for container in document["spec"]["template"]["spec"]["containers"]:
            assert container["readinessProbe"]["httpGet"]["path"] in {"/readyz", "/healthz"}
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_secrets_are_referenced_never_embedded() -> None:
    kinds = {d["kind"] for _p, d in _k8s_documents()}
    assert "Secret" not in kinds
    for _name, container in _containers():
        for variable in container.get("env", []):
            if re.search(r"PASSWORD|DATABASE_URL", variable["name"]):
                assert "value" not in variable, variable


# --- cross-check with the code ---------------------------------------------------------


def _settings_class(variable: str) -> tuple[type[BaseSettings], str] | None:
    for prefix, cls in SETTINGS_CLASSES.items():
        if variable.startswith(prefix):
            return cls, variable.removeprefix(prefix).lower()
    return None


def _check_environment(where: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every OIX_* variable is a setting, and the settings accept the values together."""
    for variable in env:
        if variable in READ_ELSEWHERE:
            source = (REPO / READ_ELSEWHERE[variable]).read_text(encoding="utf-8")
            assert f'"{variable}"' in source, variable
            continue
        if variable in LIBPQ_ENV:
            continue
        found = _settings_class(variable)
        assert found is not None, f"{where}: {variable} is not an OIX setting"
        cls, field = found
        assert field in cls.model_fields, f"{where}: {variable} is not a field of {cls.__name__}"
    with monkeypatch.context() as patch:
        for variable in list(os.environ):
            if variable.startswith("OIX_"):
                patch.delenv(variable)
        for variable, value in env.items():
            if variable not in READ_ELSEWHERE:
                patch.setenv(variable, str(value))
        for cls in SETTINGS_CLASSES.values():
            cls()  # raises, naming the variable, on a value the service would refuse


def _parses(args: list[str]) -> None:
    """``oix ARGS`` parses with the real CLI (its --help would run instead of the command)."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"oix {' '.join(args)}: {result.output}"


def test_compose_oix_services_use_commands_settings_and_ports_that_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _oix_services()
    assert services
    for name, service in services.items():
        assert service["build"]["context"] == "."
        _parses(service["command"])
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        _check_environment(name, env, monkeypatch)
        for secret in service.get("secrets", []):
            target = secret if isinstance(secret, str) else secret["target"]
            if target.startswith("oix_"):  # read through OIX_SECRETS_DIR as a setting
                assert env.get("OIX_SECRETS_DIR") == "/run/secrets", name
                assert target.removeprefix("oix_") in Settings.model_fields, target
    gateway_port = str(GatewaySettings.model_fields["port"].default)
    audit_port = str(AuditSettings.model_fields["metrics_port"].default)
    liaison_port = str(LiaisonSettings.model_fields["port"].default)
    for name, service in services.items():
        env = service.get("environment", {})
        health = " ".join(service.get("healthcheck", {}).get("test", []))
        if service["command"][:2] == ["gateway", "run"]:
            assert str(env["OIX_GATEWAY_PORT"]) == gateway_port
            assert [p.split(":")[1] for p in service["ports"]] == [gateway_port]
            assert f"127.0.0.1:{gateway_port}/readyz" in health, name
        if service["command"][:2] == ["audit", "run"]:
            assert str(env["OIX_AUDIT_METRICS_PORT"]) == audit_port
            assert service["ports"] == [f"{audit_port}:{audit_port}"]
            assert f"127.0.0.1:{audit_port}/healthz" in health
        if service["command"][:2] == ["liaison", "run"]:
            assert str(env["OIX_LIAISON_PORT"]) == liaison_port
            assert [p.split(":")[1] for p in service["ports"]] == [liaison_port]
            assert f"127.0.0.1:{liaison_port}/readyz" in health, name
    from services.gateway._routes import operations
    from services.liaison._http import operations as liaison_operations

    assert {"/readyz", "/healthz"} <= {route.path for route in operations.routes}
    assert {"/readyz", "/healthz"} <= {route.path for route in liaison_operations.routes}
    assert '"/healthz"' in (REPO / "services/audit/_metrics.py").read_text(encoding="utf-8")


def test_compose_has_a_gateway_and_a_kafka_user_per_agency() -> None:
    agreement = load_agreement(AGREEMENT)
    compose = _compose()
    gateways = {
        service["command"][3]: service
        for service in _oix_services().values()
        if service["command"][:2] == ["gateway", "run"]
    }
    assert set(gateways) == set(agreement.parties)
    for agency, service in gateways.items():
        assert service["environment"]["OIX_KAFKA_SASL_USERNAME"] == kafka_user(agency)
        keys = {s["target"] for s in service["secrets"] if isinstance(s, dict)}
        assert f"{agreement.parties[agency].keys[0].id}.pem" in keys
    users_script = compose["services"]["kafka-users"]["command"][0]
    listed = re.search(r"for user in ([^;]+);", users_script)
    assert listed is not None
    assert set(listed.group(1).split()) == {kafka_user(p) for p in agreement.parties} | {AUDIT_USER}
    assert compose["services"]["audit"]["environment"]["OIX_KAFKA_SASL_USERNAME"] == AUDIT_USER


def test_compose_has_a_liaison_per_agency_reading_as_the_agency_through_its_gateway() -> None:
    """Each liaison reads as its agency's Kafka user, into its own database, and answers
    through its own agency's gateway with a token of its own."""
    agreement = load_agreement(AGREEMENT)
    compose = _compose()
    liaisons = {
        service["command"][3]: (name, service)
        for name, service in _oix_services().items()
        if service["command"][:2] == ["liaison", "run"]
    }
    assert set(liaisons) == set(agreement.parties)
    databases = set()
    for agency, (name, service) in liaisons.items():
        env = service["environment"]
        assert env["OIX_KAFKA_SASL_USERNAME"] == kafka_user(agency)
        gateway = f"gateway-{agency.lower()}"
        assert env["OIX_LIAISON_GATEWAY_URL"] == f"http://{gateway}:8080"
        assert gateway in service["depends_on"], name
        assert compose["services"][gateway]["command"][3] == agency
        databases.add(env["OIX_LIAISON_DATABASE_URL"].rsplit("/", 1)[1])
        targets = {s["target"]: s["source"] for s in service["secrets"] if isinstance(s, dict)}
        assert targets["liaison-gateway-token"] == f"liaison-token-{agency.lower()}"
        assert targets["oix_kafka_sasl_password"] == f"scram-{agency.lower()}"
    assert len(databases) == len(liaisons), "two agencies' stores in one database"
    roles = (REPO / "deploy/lab/postgres-roles.sh").read_text(encoding="utf-8")
    for database in databases:
        assert f"CREATE DATABASE {database} OWNER oix_liaison;" in roles


def test_compose_files_and_secrets_exist_or_are_made_by_the_lab_script(tmp_path: Path) -> None:
    compose = _compose()
    lab = "./deploy/lab/secrets/"
    made: list[str] = []
    for name, entry in {**compose["secrets"], **compose["configs"]}.items():
        if "file" not in entry:
            continue
        path = entry["file"]
        if path.startswith(lab):
            made.append(path.removeprefix(lab))
        else:
            assert (REPO / path).is_file(), f"{name}: {path}"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and volume.startswith("./"):
                assert (REPO / volume.split(":")[0]).is_file(), volume
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/lab/secrets/tls/ca.key"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "deploy/lab/secrets is not git-ignored"
    if os.geteuid() != 0:
        pytest.skip("deploy/lab/make-secrets.sh hands files to container uids: needs root")
    out = tmp_path / "secrets"
    done = subprocess.run(
        ["bash", str(REPO / "deploy/lab/make-secrets.sh")],
        env={
            **os.environ,
            "OIX_LAB_SECRETS": str(out),
            "OIX": str(Path(sys.executable).parent / "oix"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    missing = [path for path in made if not (out / path).is_file()]
    assert not missing, f"referenced by docker-compose.yml, not made by make-secrets.sh: {missing}"
    for path in made:
        mode = (out / path).stat().st_mode & 0o777
        assert mode & 0o077 == 0 or path == "tls/ca.pem", f"{path} is readable by others"


def sasl_user_of(container: dict[str, Any]) -> str:
    return next(v["value"] for v in container["env"] if v["name"] == "OIX_KAFKA_SASL_USERNAME")


def test_k8s_containers_use_commands_settings_and_ports_that_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    containers = _containers()
    assert containers
    strimzi_users = {
        document["metadata"]["name"]
        for document in yaml.safe_load_all(
            render_strimzi(Router(load_agreement(AGREEMENT), TopicNaming()), Layout(), "oix")
        )
        if document["kind"] == "KafkaUser"
    }
    for name, container in containers:
        _parses(container["args"])
        env = {v["name"]: v.get("value", "from-a-secret") for v in container["env"]}
        _check_environment(name, env, monkeypatch)
        if container["args"][1] == "run":  # services refuse the demo keys
            assert env["OIX_ENV"] == "production", name
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, (name, probe)
        if container["args"][:2] == ["gateway", "run"]:
            assert ports == {"http": int(env["OIX_GATEWAY_PORT"])}
        if container["args"][:2] == ["audit", "run"]:
            assert ports == {"metrics": int(env["OIX_AUDIT_METRICS_PORT"])}
        if container["args"][:2] == ["liaison", "run"]:
            assert ports == {"http": int(env["OIX_LIAISON_PORT"])}
            assert (
                env["OIX_LIAISON_GATEWAY_URL"] == f"http://gateway-{sasl_user_of(container)}:8080"
            )
        sasl_user = env.get("OIX_KAFKA_SASL_USERNAME")
        if sasl_user is not None:
            assert sasl_user in strimzi_users, f"{name}: no KafkaUser {sasl_user}"
            password = next(v for v in container["env"] if v["name"] == "OIX_KAFKA_SASL_PASSWORD")
            assert password["valueFrom"]["secretKeyRef"] == {"name": sasl_user, "key": "password"}
        assert container["image"] == f"registry.example.org/oix:{VERSION}"


def test_every_image_is_ours_or_a_pinned_upstream_one() -> None:
    compose_images = {service["image"] for service in _compose()["services"].values()}
    assert compose_images == EXTERNAL_IMAGES | {"oix:lab"}
    k8s_images = {
        container["image"]
        for _path, document in _k8s_documents()
        for container in document.get("spec", {})
        .get("template", {})
        .get("spec", {})
        .get("containers", [])
    }
    assert k8s_images == {f"registry.example.org/oix:{VERSION}"}


# --- the image -------------------------------------------------------------------------


def _stages(dockerfile: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for raw in dockerfile.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_dockerfile_builds_one_non_root_image_from_the_wheel() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    build, final = _stages(text)
    assert any("pip wheel" in line for line in build)
    assert any(re.search(r"pip install /wheels/oix-\*\.whl", line) for line in build)
    for line in final:
        assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", line), line
    user = next(line.split()[1] for line in final if line.startswith("USER "))
    assert int(user.split(":")[0]) != 0
    entrypoint = next(line for line in final if line.startswith("ENTRYPOINT"))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT")) == ["oix"]
    assert PYPROJECT["project"]["scripts"]["oix"] == "services.cli:main"
    exposed = {int(p) for line in final if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert exposed == {
        GatewaySettings.model_fields["port"].default,
        AuditSettings.model_fields["metrics_port"].default,
    }
    for line in build:
        if line.startswith("COPY") and "--from" not in line:
            for source in shlex.split(line)[1:-1]:
                assert (REPO / source).exists(), source


def test_dockerignore_admits_only_what_the_image_needs() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*", "the context must start from nothing"
    admitted = [line.removeprefix("!") for line in lines if line.startswith("!")]
    assert not any(a.startswith(("deploy/lab", ".venv", ".oix", "tests")) for a in admitted)
    # deploy/keys is OIX_KEYS_DIR by default: only the published demo keys, by name.
    keys = [a for a in admitted if a.startswith("deploy/keys")]
    agreement = load_agreement(AGREEMENT)
    demo = {f"deploy/keys/{k.id}.pem" for party in agreement.parties.values() for k in party.keys}
    assert set(keys) == demo


def test_the_wheel_carries_the_data_and_no_lab_secrets(tmp_path: Path) -> None:
    secrets = REPO / "deploy" / "lab" / "secrets"
    planted = secrets / "planted-by-test"
    created = not secrets.exists()
    secrets.mkdir(parents=True, exist_ok=True)
    planted.write_text("must not reach a wheel\n", encoding="utf-8")
    # A real key made with the default OIX_KEYS_DIR (deploy/keys) must not either.
    real_key = REPO / "deploy" / "keys" / "LT-VSAT-2099-9.pem"
    real_key.write_text("must not reach a wheel\n", encoding="utf-8")
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-q",
                "-w",
                str(tmp_path),
                str(REPO),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    finally:
        planted.unlink()
        real_key.unlink()
        if created:
            secrets.rmdir()
    [wheel] = tmp_path.glob("oix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "services/cli.py" in names
    assert "services/_data/deploy/agreement.example.yaml" in names
    assert "services/_data/deploy/keys/LT-VSAT-2026-1.pem" in names  # demo keys: refused in prod
    assert any(n.startswith("services/_data/schemas/released/") for n in names)
    assert not [n for n in names if "/lab/" in n or "planted" in n or "2099" in n]
