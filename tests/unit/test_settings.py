"""Settings: one object from a TOML file, LOGOUT_* variables and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import ConfigurationError, Settings
from orchestrator.settings import redact_url


def test_precedence_file_then_environment_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overrides beat LOGOUT_* variables, which beat the TOML file."""
    config = tmp_path / "logout.toml"
    config.write_text('worker_threads = 3\nworker_processes = 3\nnamespace = "file"\n')
    monkeypatch.setenv("LOGOUT_WORKER_THREADS", "5")
    monkeypatch.setenv("LOGOUT_WORKER_PROCESSES", "5")
    settings = Settings.load(config, worker_processes=7)
    assert (settings.namespace, settings.worker_threads, settings.worker_processes) == (
        "file",
        5,
        7,
    )


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LOGOUT_CONFIG names the TOML file when no path is given."""
    config = tmp_path / "c.toml"
    config.write_text('issuer = "https://idp.example.com"\n')
    monkeypatch.setenv("LOGOUT_CONFIG", str(config))
    assert Settings.load().issuer == "https://idp.example.com"


def test_comma_separated_protocols(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOGOUT_PROTOCOLS accepts a comma-separated list."""
    monkeypatch.setenv("LOGOUT_PROTOCOLS", "oidc, saml")
    assert Settings.load().protocols == ["oidc", "saml"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "bogus: Extra inputs are not permitted"),
        ("worker_threads = 0\n", "worker_threads: Input should be greater than or equal to 1"),
        ('broker_url = "kafka://x"\n', "broker_url: scheme 'kafka' is not one of"),
        ('log_level = "LOUD"\n', "log_level: Input should be 'DEBUG'"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    """An invalid setting is refused with its name, the reason and the file."""
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(config)
    assert message in str(caught.value)
    assert "bad.toml" in str(caught.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """A config path that does not exist is refused, not ignored."""
    with pytest.raises(ConfigurationError, match="no such file"):
        Settings.load(tmp_path / "absent.toml")


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    """Without database_url the embedded SQLite file lives in data_dir."""
    settings = Settings.load(None, data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'logout.db'}"


def test_redacted_settings_hide_passwords(tmp_path: Path) -> None:
    """config show never prints a password."""
    settings = Settings.load(
        None,
        data_dir=tmp_path,
        broker_url="redis://:s3cret@redis:6379/0",
        database_url="postgresql://logout:hunter2@db:5432/logout",
    )
    shown = settings.redacted()
    assert shown["broker_url"] == "redis://:***@redis:6379/0"
    assert shown["database_url"] == "postgresql://logout:***@db:5432/logout"
    assert "s3cret" not in str(shown)
    assert "hunter2" not in str(shown)


def test_redact_url_leaves_passwordless_urls() -> None:
    """A URL without a password is shown as it is."""
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_with_overrides_validates_and_keeps_the_rest(tmp_path: Path) -> None:
    """Command options override one setting and leave the others as loaded."""
    settings = Settings.load(None, data_dir=tmp_path, namespace="n1", worker_threads=4)
    changed = settings.with_overrides(worker_processes=3, worker_threads=None)
    assert (changed.worker_processes, changed.worker_threads, changed.namespace) == (3, 4, "n1")
    with pytest.raises(ConfigurationError, match="worker_processes"):
        settings.with_overrides(worker_processes=0)


@pytest.mark.parametrize("value", ["/k/a.pem", "/k/a.pem, /k/b.pem", '["/k/a.pem", "/k/b.pem"]'])
def test_key_files_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """LOGOUT_OIDC_KEY_FILES takes one path, comma-separated paths or a JSON list."""
    monkeypatch.setenv("LOGOUT_OIDC_KEY_FILES", value)
    files = Settings.load().oidc_key_files
    assert files[0] == Path("/k/a.pem")
    assert len(files) == (1 if value == "/k/a.pem" else 2)


def test_broken_json_list_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed JSON list names the setting instead of raising a traceback."""
    monkeypatch.setenv("LOGOUT_PROTOCOLS", '["oidc"')
    with pytest.raises(ConfigurationError, match=r"LOGOUT_PROTOCOLS \(environment\): protocols: not a JSON"):
        Settings.load()
