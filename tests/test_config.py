from pathlib import Path

import pytest

from plugin_backend.config import load_settings
from plugin_backend.errors import ConfigError


def test_defaults_serve_the_demo_on_8080():
    settings = load_settings({})
    assert settings.port == 8080
    assert settings.uses_demo_source
    assert settings.advertised_url() == "http://127.0.0.1:8080"


def test_environment_values_are_parsed_and_typed():
    settings = load_settings(
        {
            "PLUGIN_BACKEND_PROMETHEUS_URL": "http://mimir:8080/prometheus",
            "PLUGIN_BACKEND_PORT": "9000",
            "PLUGIN_BACKEND_PROMETHEUS_TLS_VERIFY": "false",
            "PLUGIN_BACKEND_PROMETHEUS_HEADERS": "X-Scope-OrgID=tenant-1, X-Extra = y",
        }
    )
    assert str(settings.prometheus_url) == "http://mimir:8080/prometheus"
    assert settings.port == 9000
    assert settings.prometheus_tls_verify is False
    assert settings.prometheus_headers == {"X-Scope-OrgID": "tenant-1", "X-Extra": "y"}
    assert not settings.uses_demo_source


def test_headers_also_accept_json():
    settings = load_settings({"PLUGIN_BACKEND_PROMETHEUS_HEADERS": '{"X-Scope-OrgID": "t2"}'})
    assert settings.prometheus_headers == {"X-Scope-OrgID": "t2"}


def test_set_but_empty_means_unset_for_every_setting():
    # Shells, compose files and Helm values write VAR= for "not set".
    from plugin_backend.config import Settings

    assert load_settings({"PLUGIN_BACKEND_PROMETHEUS_URL": ""}).uses_demo_source
    defaults = load_settings({})
    every_empty = {f"PLUGIN_BACKEND_{name.upper()}": " " for name in Settings.model_fields}
    assert load_settings(every_empty) == defaults


def test_bad_value_names_the_variable():
    with pytest.raises(ConfigError, match="PLUGIN_BACKEND_PORT"):
        load_settings({"PLUGIN_BACKEND_PORT": "eighty"})


def test_bad_url_names_the_variable():
    with pytest.raises(ConfigError, match="PLUGIN_BACKEND_PROMETHEUS_URL"):
        load_settings({"PLUGIN_BACKEND_PROMETHEUS_URL": "not a url"})


def test_unknown_setting_is_reported_so_typos_do_not_pass_silently():
    with pytest.raises(ConfigError, match="PLUGIN_BACKEND_PROMETEUS_URL: unknown setting"):
        load_settings({"PLUGIN_BACKEND_PROMETEUS_URL": "http://x"})


def test_secrets_are_redacted_in_repr_and_str():
    settings = load_settings(
        {
            "PLUGIN_BACKEND_PROMETHEUS_URL": "http://prom:9090",
            "PLUGIN_BACKEND_PROMETHEUS_USERNAME": "grafana",
            "PLUGIN_BACKEND_PROMETHEUS_PASSWORD": "hunter2-secret",
        }
    )
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)
    assert settings.prometheus_password is not None
    assert settings.prometheus_password.get_secret_value() == "hunter2-secret"


def test_password_without_username_is_refused():
    with pytest.raises(ConfigError, match="USERNAME and _PASSWORD must be set together"):
        load_settings({"PLUGIN_BACKEND_PROMETHEUS_PASSWORD": "x"})


def test_yaml_file_is_read_and_environment_wins(tmp_path):
    path = tmp_path / "backend.yaml"
    path.write_text("port: 9100\nprometheus_url: http://from-file:9090\nworkers: 3\n")
    settings = load_settings({"PLUGIN_BACKEND_CONFIG": str(path), "PLUGIN_BACKEND_PORT": "9200"})
    assert settings.port == 9200
    assert settings.workers == 3
    assert str(settings.prometheus_url) == "http://from-file:9090/"


def test_bad_yaml_value_names_the_file_key(tmp_path):
    path = tmp_path / "backend.yaml"
    path.write_text("workers: many\n")
    with pytest.raises(ConfigError, match=r"'workers' in .*backend.yaml"):
        load_settings({}, config_path=path)


def test_missing_or_malformed_yaml_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"PLUGIN_BACKEND_CONFIG": str(tmp_path / "absent.yaml")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings({}, config_path=bad)


def test_cli_overrides_win_over_environment():
    settings = load_settings({"PLUGIN_BACKEND_PORT": "9000"}, overrides={"port": 9001})
    assert settings.port == 9001


def test_each_worker_warms_up_the_default_detector_unless_told_otherwise():
    from plugin_backend.scoring.registry import DEFAULT_DETECTOR

    assert load_settings({}).warm_detectors == [DEFAULT_DETECTOR]
    assert load_settings({"PLUGIN_BACKEND_WARM_DETECTORS": "none"}).warm_detectors == []
    told = load_settings({"PLUGIN_BACKEND_WARM_DETECTORS": "stl,transformer"})
    assert told.warm_detectors == ["stl", "transformer"]


def test_the_broker_is_a_redis_url_and_unset_by_default():
    assert load_settings({}).broker_url is None
    assert load_settings({"PLUGIN_BACKEND_BROKER_URL": ""}).broker_url is None
    url = "redis://:hunter2hunter2@redis:6379/0"
    broker = load_settings({"PLUGIN_BACKEND_BROKER_URL": url}).broker_url
    assert broker is not None
    assert broker.get_secret_value() == url
    assert "hunter2" not in repr(broker)  # `plugin-backend config` prints it redacted
    with pytest.raises(ConfigError, match=r"PLUGIN_BACKEND_BROKER_URL.*redis://"):
        load_settings({"PLUGIN_BACKEND_BROKER_URL": "localhost:6379"})


def test_plugin_backend_config_never_prints_a_password(capsys, monkeypatch):
    from plugin_backend.cli import main

    monkeypatch.setenv("PLUGIN_BACKEND_STORE_URL", "postgresql+psycopg://app:s3cret@db:5432/pb")
    monkeypatch.setenv("PLUGIN_BACKEND_API_TOKEN", "t0ken-that-is-long-enough")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "store_url = 'postgresql+psycopg://app:***@db:5432/pb'" in out
    assert "s3cret" not in out
    assert "t0ken-that-is-long-enough" not in out


def test_the_test_suites_own_variables_are_not_settings():
    # Settings refuse an unknown PLUGIN_BACKEND_* variable, so a test switch named so
    # would stop every plugin-backend process the tests start (as it did under .ci/run).
    from plugin_backend.config import ENV_PREFIX
    from tests.needs import EXPECT_SHARED

    assert not EXPECT_SHARED.startswith(ENV_PREFIX)
    ci_run = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert f"export {EXPECT_SHARED}=1" in ci_run
