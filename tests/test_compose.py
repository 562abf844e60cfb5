"""docker-compose.temporal.yml and the worker's Dockerfile, checked as files (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.temporal.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two Compose forms it is written in."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def published_ports(service: dict[str, Any]) -> set[int]:
    published = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.add(int(port["published"]))
        else:
            # "HOST:CONTAINER", "IP:HOST:CONTAINER" (and an optional "/tcp").
            parts = str(port).split("/")[0].split(":")
            published.add(int(parts[-2] if len(parts) > 1 else parts[-1]))
    return published


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def command_text(service: dict[str, Any]) -> str:
    """What the container runs: its entrypoint (when the service replaces the image's) followed by its command."""
    words = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words += value if isinstance(value, list) else [str(value)]
    return " ".join(words)


def volume_sources(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source of a service's volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
    return mounts


def test_the_stack_has_every_service(services: dict[str, Any]) -> None:
    assert {"postgresql", "temporal", "temporal-admin-tools", "temporal-ui", "worker"} <= set(services)


def test_images_are_pinned_to_a_tag(services: dict[str, Any]) -> None:
    images = {name: service["image"] for name, service in services.items() if "image" in service}
    assert {"postgresql", "temporal", "temporal-admin-tools", "temporal-ui"} <= set(images)
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
    assert images["postgresql"].startswith("postgres:")
    assert images["temporal"].startswith("temporalio/auto-setup:")
    assert images["temporal-admin-tools"].startswith("temporalio/admin-tools:")
    assert images["temporal-ui"].startswith("temporalio/ui:")


def test_temporal_frontend_and_web_ui_ports_are_published(services: dict[str, Any]) -> None:
    assert 7233 in published_ports(services["temporal"])
    assert 8080 in published_ports(services["temporal-ui"])
    assert environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_temporal_persists_in_postgresql(services: dict[str, Any]) -> None:
    env = environment(services["temporal"])
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "postgresql"
    assert env["POSTGRES_USER"] and env["POSTGRES_PWD"] and env["DB_PORT"]
    assert depends_on(services["temporal"]).get("postgresql") == "service_healthy"


def test_temporal_database_keeps_its_data_and_reports_health(compose: dict[str, Any], services: dict[str, Any]) -> None:
    postgresql = services["postgresql"]
    data = volume_sources(postgresql).get("/var/lib/postgresql/data")
    assert data in (compose.get("volumes") or {}), "Temporal's PostgreSQL data must be on a named volume"
    assert "pg_isready" in " ".join(postgresql["healthcheck"]["test"])


def test_admin_tools_register_tenant_id_with_the_temporal_cli(services: dict[str, Any]) -> None:
    admin = services["temporal-admin-tools"]
    command = command_text(admin)
    assert re.search(
        r"temporal operator search-attribute create\b(?=.*--name TenantId)(?=.*--type Keyword)", command
    ), command
    assert "--namespace default" in command
    assert "tctl" not in command
    assert "until" in command, "registration must retry until the server answers"
    # The image's own entrypoint is `tini -- sleep infinity`: a bare `command` would only be arguments to sleep.
    assert admin.get("entrypoint"), "admin-tools must replace the image's entrypoint to run the registration"
    assert environment(admin)["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_worker_is_built_from_the_repository_dockerfile(services: dict[str, Any]) -> None:
    worker = services["worker"]
    build = worker["build"]
    if isinstance(build, str):
        build = {"context": build}
    context, dockerfile = build["context"], build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
    assert command_text(worker) == "python worker.py"
    assert "temporal" in depends_on(worker)


def test_worker_environment_points_at_the_stack(services: dict[str, Any]) -> None:
    env = environment(services["worker"])
    host, _, port = env["TENANTS_TEMPORAL_ADDRESS"].partition(":")
    assert host in services and port == "7233"
    assert env["TENANTS_TASK_QUEUE"] == "tenant-lifecycle"
    # The tenants' server cannot be guessed: compose must refuse to start without it.
    assert re.fullmatch(r"\$\{TENANTS_DATABASE_URL:\?.+\}", env["TENANTS_DATABASE_URL"])


def test_backups_are_on_a_volume_every_worker_shares(compose: dict[str, Any], services: dict[str, Any]) -> None:
    worker = services["worker"]
    storage = environment(worker)["TENANTS_STORAGE_URL"].removeprefix("file://")
    source = volume_sources(worker).get(storage)
    assert source in (compose.get("volumes") or {}), f"{storage} must be a named volume shared by the workers"


def test_worker_environment_sets_only_real_settings(services: dict[str, Any]) -> None:
    names = [name for name in environment(services["worker"]) if name.startswith("TENANTS_")]
    unknown = [name for name in names if name.removeprefix("TENANTS_").lower() not in Settings.model_fields]
    assert not unknown, f"not settings of tenancy.settings.Settings (ignored by the worker): {unknown}"


def test_worker_can_run_several_replicas(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed container name prevents --scale worker=N"
    assert worker.get("deploy", {}).get("replicas", 1) >= 2


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_the_worker_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11")
    cmds = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmds and "worker.py" in cmds[-1]
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_installs_matching_postgresql_client_tools() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "apt.postgresql.org" in runs and "signed-by=" in runs
    assert "postgresql-client-${PG_MAJOR}" in runs
    assert any(keyword == "ARG" and args.startswith("PG_MAJOR=") for keyword, args in instructions)
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "TENANTS_PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin" in env
    assert any(keyword == "RUN" and "pip install" in args and " ." in args for keyword, args in instructions)
