"""docker-compose.yml and the Dockerfile: valid, pinned, wired to files that exist.

Docker has no engine here: `docker-compose config` validates the file, and the
backend's own parsers check every command and setting the services use.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from plugin_backend import demoapp
from plugin_backend.cli import build_parser
from plugin_backend.config import Settings, load_settings
from tests.needs import require_binary
from tests.stack.support import COMPOSE_FILE, ROOT, load_yaml

# Contract ports (README "Grafana stack"): service -> (published port, container port).
PUBLISHED = {"api": 8080, "demo": 8000, "grafana": 3000, "prometheus": 9090}
# Settings the compose file passes that the backend does not know yet (they land with
# the API-auth issue); every other PLUGIN_BACKEND_* variable must load today.
PINNED_TAG = re.compile(r"^[\w./-]+:v?\d+\.\d+(\.\d+)?([\w.-]*)?(@sha256:[0-9a-f]{64})?$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_docker_compose_config_accepts_the_file() -> None:
    binary = require_binary("docker-compose", "Debian package docker-compose")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},  # no DOCKER_HOST or .env surprises
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_every_service_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        assert PINNED_TAG.match(image), f"{name}: image {image!r} is not pinned to a version"
        if "build" in service:
            build = service["build"]
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()


def test_the_dockerfile_is_pinned_and_installs_the_locked_project() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases
    for base in bases:
        assert PINNED_TAG.match(base), f"base image {base} is not pinned"
    assert "-c requirements.lock" in text
    assert '".[local-llm,postgres,scale]"' in text
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY {path}: missing"
    assert re.search(r"^USER\s+\w+", text, flags=re.MULTILINE), "runs as root"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    for needed in ("pyproject.toml", "requirements.lock", "README.md", "plugin_backend/"):
        assert f"!{needed}" in ignored, f".dockerignore leaves out {needed}"


def test_bind_mounts_exist_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts missing {source}"


def test_ports_healthchecks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name, port in PUBLISHED.items():
        assert f"{port}:{port}" in services[name]["ports"], name
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        if service.get("restart", "no") != "no":
            assert "healthcheck" in service, f"{name}: long-running service without healthcheck"
    assert services["api"]["depends_on"]["grafana-init"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["worker"]["depends_on"]["grafana-init"]["condition"] == (
        "service_completed_successfully"
    )


def _container_path(service: dict[str, Any], container: str) -> Path | None:
    """The repository file mounted at ``container`` in ``service``, if any."""
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if not parts[0].startswith("."):
            continue
        host, target = ROOT / parts[0], PurePosixPath(parts[1])
        wanted = PurePosixPath(container)
        if wanted == target:
            return host
        if target in wanted.parents:
            return host / wanted.relative_to(target)
    return None


def test_backend_commands_parse_with_the_cli(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    checked = 0
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] != "plugin-backend":
            continue
        if command[1] not in commands:
            continue  # checked by test_the_worker_command below
        args = parser.parse_args(command[1:])
        checked += 1
        if command[1] == "llm-serve":
            assert (args.llm_host, args.llm_port) == ("0.0.0.0", 8091), name
    assert checked >= 2  # serve, llm-serve
    assert services["api"]["command"] == ["plugin-backend", "serve"]


def test_the_worker_command(services: dict[str, dict[str, Any]]) -> None:
    command = services["worker"]["command"]
    assert command == [
        "plugin-backend", "worker", "--rules", "/etc/plugin-backend/rules.yaml",
        "--metrics-port", "9466", "--metrics-host", "0.0.0.0",
    ]  # fmt: skip
    rules = _container_path(services["worker"], command[3])
    assert rules is not None
    assert rules.is_file()
    build_parser().parse_args(command[1:])  # exits (SystemExit) on an unknown command


def test_the_demo_command(services: dict[str, dict[str, Any]]) -> None:
    command = services["demo"]["command"]
    assert command[:3] == ["python", "-m", "plugin_backend.demoapp"]
    args = demoapp.build_parser().parse_args(command[3:])
    assert (args.host, args.port) == ("0.0.0.0", 8000)


def test_grafana_init_script_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    init = services["grafana-init"]
    script = _container_path(init, init["command"][1])
    assert script is not None
    assert script.is_file()
    assert (
        init["environment"]["TOKEN_FILE"] == services["api"]["environment"]["PLUGIN_BACKEND_CONFIG"]
    )


_DEFAULTED = re.compile(r"^\$\{(\w+):-(.*)\}$")


def _with_defaults(value: object) -> str:
    """``${VAR:-default}`` as compose resolves it with VAR unset."""
    found = _DEFAULTED.match(str(value))
    return found.group(2) if found else str(value)


@pytest.mark.parametrize("name", ["api", "worker", "worker-celery"])
def test_backend_environment_loads(
    services: dict[str, dict[str, Any]], name: str, tmp_path: Path
) -> None:
    service = services[name]
    env = {k: _with_defaults(v) for k, v in service["environment"].items()}
    assert env["PLUGIN_BACKEND_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert env["PLUGIN_BACKEND_LLM_URL"] == "http://llm:8091"
    # Mounted files: the repository's; the token file: what grafana-init writes.
    token_file = tmp_path / "grafana-token.yaml"
    token_file.write_text('grafana_token: "glsa_test"\n', encoding="utf-8")
    for key, value in env.items():
        if key == "PLUGIN_BACKEND_CONFIG":
            env[key] = str(token_file)
        elif value.startswith("/etc/"):
            host = _container_path(service, value)
            assert host is not None, f"{key}={value} is not mounted"
            env[key] = str(host)
    unknown = {
        key
        for key in env
        if key.removeprefix("PLUGIN_BACKEND_").lower() not in Settings.model_fields
    } - {"PLUGIN_BACKEND_CONFIG"}
    assert not unknown, f"{service} passes settings the backend does not have: {unknown}"
    settings = load_settings(env)
    assert settings.host == "0.0.0.0"
    assert settings.api_token is not None  # the JSON datasource sends it
    assert settings.grafana_token is not None
    assert settings.grafana_token.get_secret_value() == "glsa_test"
    assert settings.store_url == "sqlite:////data/plugin-backend.db"  # unless told otherwise
    assert (settings.broker_url is not None) == (name == "worker-celery")


def test_the_scale_profile_runs_celery_workers_on_redis_and_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    scale = {name for name, service in services.items() if "scale" in service.get("profiles", [])}
    assert scale == {"worker-celery", "redis", "postgres"}
    workers = services["worker-celery"]
    args = build_parser().parse_args(workers["command"][1:])
    assert (args.command, args.engine) == ("worker", "celery")
    assert _container_path(workers, args.rules) is not None
    assert workers["deploy"]["replicas"] == 2
    for needed in ("redis", "postgres", "api"):
        assert workers["depends_on"][needed]["condition"] == "service_healthy", needed
    broker = workers["environment"]["PLUGIN_BACKEND_BROKER_URL"]
    assert broker == "redis://redis:6379/0"
    # the header's command line points api and workers at the postgres service's database
    pg = services["postgres"]["environment"]
    documented = f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres/"
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("services:")[0]
    assert f"PLUGIN_BACKEND_STORE_URL={documented}{pg['POSTGRES_DB']}" in header
    assert "--profile scale up -d --scale worker=0" in header


def test_shared_token_and_store_volume(services: dict[str, dict[str, Any]]) -> None:
    for name in ("api", "worker", "grafana-init"):
        assert "plugin-backend-data:/data" in services[name]["volumes"], name
    grafana_env = services["grafana"]["environment"]
    api_env = services["api"]["environment"]
    assert grafana_env["PLUGIN_BACKEND_API_TOKEN"] == api_env["PLUGIN_BACKEND_API_TOKEN"]
    assert grafana_env["GF_PLUGINS_PREINSTALL_SYNC"] == "simpod-json-datasource@0.6.7"
