"""Settings: one object from a TOML file, LOGOUT_* variables and overrides."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import structlog

from orchestrator import ConfigurationError, Settings
from orchestrator.handlers import handler_settings
from orchestrator.logging import configure_logging
from orchestrator.settings import redact_url, unknown_variables
from protocols import available_protocols
from protocols.oidc import OidcHandler, OidcSettings
from protocols.saml import SamlHandler, SamlSettings
from schemas.durations import duration_fields, format_duration


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
        ('database_url = "garbage"\n', "database_url: not a database URL; give one such as"),
        ('database_url = "sqlite://relative.db"\n', "database_url: a SQLite URL names a file"),
        (
            'database_url = "postgresql://u:p@db:5432x/logout"\n',
            "database_url: its port '5432x' is not a port number (1 to 65535)",
        ),
        (
            'broker_url = "redis://127.0.0.1:notaport/0"\n',
            "broker_url: its port 'notaport' is not a port number (1 to 65535)",
        ),
        ('broker_url = "redis://host/abc"\n', "broker_url: its database 'abc' is not a number"),
        (
            'broker_url = "redis://user:s3cr#et@host:6379/0"\n',
            "broker_url: its user or password holds '/', '?' or '#' unencoded",
        ),
        (
            'broker_url = "amqp://user:pa/ss@host:5672/"\n',
            "broker_url: its user or password holds '/', '?' or '#' unencoded",
        ),
        ('issuer = "not a url"\n', "issuer: must be an absolute http(s) URL"),
        ('issuer = "https://idp.example.com/?tenant=a"\n', "issuer: must have no query"),
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


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///relative.db",
        "sqlite:////var/lib/logout/logout.db",
        "sqlite+pysqlite:///logout.db",
        "postgresql://logout:p#ss/w@db.internal:5432/logout?sslmode=require",
        "postgresql+psycopg://logout@[::1]/logout",
        "mysql://logout@db/logout",  # parses; make_engine names the installed drivers
    ],
)
def test_database_urls_sqlalchemy_opens_are_taken(url: str) -> None:
    assert Settings(database_url=url).database_url == url


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
    own = handler_settings(Settings.load(), OidcHandler)
    assert isinstance(own, OidcSettings)
    files = own.key_files
    assert files[0] == Path("/k/a.pem")
    assert len(files) == (1 if value == "/k/a.pem" else 2)


def test_broken_json_list_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed JSON list names the setting instead of raising a traceback."""
    monkeypatch.setenv("LOGOUT_PROTOCOLS", '["oidc"')
    with pytest.raises(
        ConfigurationError, match=r"LOGOUT_PROTOCOLS \(environment\): protocols: not a JSON"
    ):
        Settings.load()


DURATION_SETTINGS = {
    "api_wait_max",
    "audit_checkpoint_interval",
    "audit_seal_interval",
    "delivery_max_age",
    "delivery_timeout",
    "expiry_interval",
    "frontchannel_frame_timeout_ms",
    "frontchannel_native_timeout_ms",
    "frontchannel_page_timeout_ms",
    "recovery_grace",
    "recovery_interval",
    "redis_heartbeat_timeout_ms",
    "remember_device",
    "retry_initial_delay",
    "retry_max_delay",
    "session_absolute_lifetime",
    "session_duration",
    "session_idle_timeout",
    "session_remember_me_lifetime",
    "session_stay_signed_in_offset",
}


def test_every_duration_setting_is_a_duration_field() -> None:
    """Each setting that holds a time span reads the duration notations (one field type)."""
    assert set(duration_fields(Settings)) == DURATION_SETTINGS


@pytest.mark.parametrize("name", sorted(DURATION_SETTINGS))
def test_duration_settings_take_every_notation(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Compact, keyword and ISO 8601 text of the default gives the default, from any source."""
    default = getattr(Settings.load(None, data_dir=tmp_path), name)
    span = duration_fields(Settings)[name].as_timedelta(default)
    if span is None:  # disabled by default: any duration will do
        span, default = timedelta(minutes=90), timedelta(minutes=90)
    seconds = span.total_seconds()
    for text in (format_duration(span), f"seconds={seconds}", f"PT{seconds}S"):
        monkeypatch.setenv(f"LOGOUT_{name.upper()}", text)
        assert getattr(Settings.load(None, data_dir=tmp_path), name) == default, text
        monkeypatch.delenv(f"LOGOUT_{name.upper()}")
        config = tmp_path / "c.toml"
        config.write_text(f'{name} = "{text}"\n')
        assert getattr(Settings.load(config, data_dir=tmp_path), name) == default, text


def test_plain_numbers_keep_their_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backward compatible: a bare number is seconds, or milliseconds for *_ms settings."""
    monkeypatch.setenv("LOGOUT_DELIVERY_TIMEOUT", "2.5")
    monkeypatch.setenv("LOGOUT_REDIS_HEARTBEAT_TIMEOUT_MS", "5000")
    monkeypatch.setenv("LOGOUT_OIDC_LOGOUT_TOKEN_LIFETIME", "60")
    settings = Settings.load(None, recovery_interval=90)
    assert settings.delivery_timeout == 2.5
    assert settings.redis_heartbeat_timeout_ms == 5000
    own = handler_settings(settings, OidcHandler)
    assert isinstance(own, OidcSettings)
    assert own.logout_token_lifetime == 60
    assert settings.recovery_interval == 90.0


def test_error_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad LOGOUT_* value names the variable and says (environment), not the file."""
    monkeypatch.setenv("LOGOUT_DELIVERY_TIMEOUT", "90 minutes")
    with pytest.raises(ConfigurationError) as caught:
        Settings.load()
    message = str(caught.value)
    assert "LOGOUT_DELIVERY_TIMEOUT (environment): delivery_timeout: invalid duration" in message
    assert "unknown unit 'minutes'" in message
    assert "write '90m'" in message


def test_error_from_the_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad value in the TOML file names the file and the key; a good env value is not blamed."""
    config = tmp_path / "logout.toml"
    config.write_text('delivery_timeout = "5 mins"\nworker_threads = 4\n')
    monkeypatch.setenv("LOGOUT_WORKER_THREADS", "8")
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(config)
    message = str(caught.value)
    assert f"{config}: delivery_timeout: invalid duration '5 mins'" in message
    assert "environment" not in message


def test_environment_beats_the_file_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The value in force is the one blamed: the variable, when it overrides the file."""
    config = tmp_path / "logout.toml"
    config.write_text("delivery_timeout = 5\n")
    monkeypatch.setenv("LOGOUT_DELIVERY_TIMEOUT", "2m")
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(config)
    message = str(caught.value)
    assert message == (
        "invalid settings: LOGOUT_DELIVERY_TIMEOUT (environment): delivery_timeout: "
        "Input should be less than or equal to 60 seconds (1 minute); got 2 minutes"
    )


def test_error_from_an_option_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides (CLI options, keyword arguments) are blamed as options, also in with_overrides."""
    monkeypatch.setenv("LOGOUT_WORKER_THREADS", "8")
    with pytest.raises(ConfigurationError, match=r"option: worker_threads: Input should be"):
        Settings.load(None, worker_threads=0)
    settings = Settings.load()
    with pytest.raises(ConfigurationError) as caught:
        settings.with_overrides(worker_processes=0)
    assert "option: worker_processes: Input should be greater than or equal to 1" in str(
        caught.value
    )
    assert "environment" not in str(caught.value)


def test_unknown_file_key_suggests_the_setting(tmp_path: Path) -> None:
    """A misspelled key in the file is refused and the closest setting is suggested."""
    config = tmp_path / "logout.toml"
    config.write_text('broker_ulr = "redis://x"\n')
    with pytest.raises(ConfigurationError, match=r"did you mean broker_url\?"):
        Settings.load(config)


def test_unknown_variables_suggest_the_closest_setting() -> None:
    """Every unknown LOGOUT_* variable is reported once, with the closest known name."""
    environ = {
        "LOGOUT_BROKER_ULR": "redis://x",
        "logout_delivery_timout": "5",
        "LOGOUT_ZZZ": "1",
        "LOGOUT_CONFGI": "logout.toml",
        "LOGOUT_BROKER_URL": "redis://x",
        "logout_worker_threads": "2",
        "LOGOUT_CONFIG": "x.toml",
        "LOGOUT_TEST_REDIS_URL": "redis://x",
        "LOGOUT_TEST_NO_APT": "1",
        "LOGOUT_BENCH_REDIS_URL": "redis://x",
        "LOGOUT_PYTHON": "python3.11",
        "LOGOUT_FORCE_INSTALL": "1",
        "HOME": "/home/alice",
    }
    assert unknown_variables(environ) == [
        "LOGOUT_BROKER_ULR is not a setting (did you mean LOGOUT_BROKER_URL?); it is ignored",
        "LOGOUT_CONFGI is not a setting (did you mean LOGOUT_CONFIG?); it is ignored",
        "LOGOUT_ZZZ is not a setting; it is ignored",
        "logout_delivery_timout is not a setting (did you mean LOGOUT_DELIVERY_TIMEOUT?); "
        "it is ignored",
    ]


def test_load_warns_once_per_unknown_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings.load logs a warning per unknown variable; internal reloads stay quiet."""
    monkeypatch.setenv("LOGOUT_BROKER_ULR", "redis://x")
    configure_logging("INFO", "json")  # structlog configured: the warning goes through it
    with structlog.testing.capture_logs() as logs:
        settings = Settings.load()
        settings.with_overrides(worker_threads=3)
        Settings.load(warn_unknown=False)
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert [w["event"] for w in warnings] == [
        "LOGOUT_BROKER_ULR is not a setting (did you mean LOGOUT_BROKER_URL?); it is ignored"
    ]


def test_config_show_before_logging_is_json_on_stderr_only(tmp_path: Path) -> None:
    """Before logging is set up the warning is a JSON log line on stderr; stdout stays JSON."""
    env = {
        **os.environ,
        "LOGOUT_DATA_DIR": str(tmp_path),
        "LOGOUT_BROKER_ULR": "redis://x",
        "LOGOUT_SESSION_ABSOLUTE_LIFETIME": "30M",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from workers.cli import main; main()", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    shown = json.loads(result.stdout)
    assert shown["session_absolute_lifetime"] == {"value": "900d", "reading": "900 days"}
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if "LOGOUT_BROKER_ULR" in x]
    assert line["level"] == "warning"
    assert line["event"].startswith("LOGOUT_BROKER_ULR is not a setting (did you mean")


def test_config_show_gives_effective_values_and_readings(tmp_path: Path) -> None:
    """Derived defaults show their value in force; durations carry a plain-words reading."""
    settings = Settings.load(
        None,
        data_dir=tmp_path,
        issuer="https://idp.example.com",
        session_absolute_lifetime="30M",
        session_idle_timeout="30m",
        redis_heartbeat_timeout_ms="PT1M",
        protocols=None,
    )
    shown = settings.redacted()
    assert shown["database_url"] == f"sqlite:///{tmp_path / 'logout.db'}"
    assert shown["protocol_settings"] == {}
    assert shown["protocols"] == available_protocols()
    assert shown["session_absolute_lifetime"] == {"value": "900d", "reading": "900 days"}
    assert shown["session_idle_timeout"] == {"value": "30m", "reading": "30 minutes"}
    assert shown["session_remember_me_lifetime"] == {"value": "-1", "reading": "disabled"}
    assert shown["delivery_timeout"] == {"value": 5.0, "reading": "5 seconds"}
    assert shown["redis_heartbeat_timeout_ms"] == {"value": 60000, "reading": "1 minute"}
    assert json.loads(json.dumps(shown)) == shown


def test_config_show_redacts_every_url(tmp_path: Path) -> None:
    """Passwords are masked in every URL: broker, database, the SAML endpoints (an issuer
    with credentials is refused: it is published in every token)."""
    settings = Settings.load(
        None,
        data_dir=tmp_path,
        broker_url="amqp://guest:pw1@rabbit:5672/",
        database_url="postgresql://logout:pw2@[::1]:5432/logout",
        issuer="https://idp.example.com",
        protocol_settings={"saml": {"slo_urls": {"soap": "https://sp:pw4@idp.example.com/slo"}}},
    )
    shown = settings.redacted()
    text = json.dumps(shown)
    for secret in ("pw1", "pw2", "pw3", "pw4"):
        assert secret not in text
    assert shown["database_url"] == "postgresql://logout:***@[::1]:5432/logout"
    assert shown["protocol_settings"]["saml"]["slo_urls"] == {
        "soap": "https://sp:***@idp.example.com/slo"
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("redis://u:pw@[::1:6379/0", "redis://u:***@[::1:6379/0"),
    ],
)
def test_redact_url_keeps_the_rest_as_written(url: str, shown: str) -> None:
    """No password: unchanged; IPv6 hosts keep their brackets; an unparseable URL is masked."""
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOGOUT_SESSION_DURATION", "1000000y"),
        ("LOGOUT_SESSION_IDLE_TIMEOUT", "P200Y"),
        ("LOGOUT_RECOVERY_INTERVAL", "1e308"),
        ("LOGOUT_RETRY_MAX_DELAY", "1e300"),
        ("LOGOUT_EXPIRY_INTERVAL", "99999999999999"),
        ("LOGOUT_FRONTCHANNEL_FRAME_TIMEOUT_MS", "999999999999999"),
    ],
)
def test_durations_beyond_a_century_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A duration so large it overflows a deadline (a unit left out) is refused on load, naming
    the variable, never accepted to crash a login or config show later."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=rf"{variable} \(environment\).*too large"):
        Settings.load(None)


def test_a_boolean_is_no_duration(tmp_path: Path) -> None:
    """TOML's ``true`` is refused (Python would count it as 1 second)."""
    config = tmp_path / "logout.toml"
    config.write_text("delivery_timeout = true\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"delivery_timeout.*true/false is not a duration"):
        Settings.load(config)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://user:pw@db/x?password=qpw&sslpassword=kp",
            "postgresql://user:***@db/x?password=***&sslpassword=***",
        ),
        ("postgresql://db/x?user=a&password=qpw2", "postgresql://db/x?user=a&password=***"),
        ("rediss://default:pw@h:6380/0?password=xx", "rediss://default:***@h:6380/0?password=***"),
        ("postgresql://u@db/x?passfile=/p&sslmode=require", "postgresql://u@db/x?passfile=/p&sslmode=require"),
        ("sqlite:////var/lib/logout/logout.db", "sqlite:////var/lib/logout/logout.db"),
    ],
)  # fmt: skip
def test_passwords_in_the_query_are_masked_too(url: str, shown: str) -> None:
    """libpq and redis take a password in the query as well; it never shows."""
    assert redact_url(url) == shown


def test_dict_settings_merge_file_and_environment_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dict setting from the file and from LOGOUT_* merges key by key, the variable first
    (a handler's setting too: [protocols.saml] slo_urls and LOGOUT_SAML_SLO_URLS)."""
    config = tmp_path / "logout.toml"
    config.write_text(
        '[protocols.saml]\nslo_urls = {redirect = "https://f.test/r", post = "https://f.test/p"}\n'
    )
    monkeypatch.setenv("LOGOUT_SAML_SLO_URLS", '{"post": "https://e.test/p"}')
    own = handler_settings(Settings.load(config), SamlHandler)
    assert isinstance(own, SamlSettings)
    assert own.slo_urls == {
        "redirect": "https://f.test/r",
        "post": "https://e.test/p",
    }


def test_a_dict_variable_that_is_no_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LOGOUT_SAML_SLO_URLS must be JSON: anything else is refused naming it and the reason."""
    monkeypatch.setenv("LOGOUT_SAML_SLO_URLS", '{"post": ')
    with pytest.raises(
        ConfigurationError,
        match=r"^invalid settings: LOGOUT_SAML_SLO_URLS \(environment\): "
        r"protocols\.saml\.slo_urls: not valid JSON \(Expecting value",
    ):
        handler_settings(Settings.load(), SamlHandler)


def test_the_protocols_table_enables_and_configures_handlers(tmp_path: Path) -> None:
    """[protocols] enabled = [...] and [protocols.<name>] sections; the older top-level
    protocols = [...] list still works; a section's refused value names the file."""
    config = tmp_path / "logout.toml"
    config.write_text(
        '[protocols]\nenabled = ["oidc"]\n[protocols.oidc]\nlogout_token_lifetime = 60\n'
        '[protocols.saml]\nentity_id = "urn:idp"\n'
    )
    settings = Settings.load(config)
    assert settings.protocols == ["oidc"]
    assert settings.protocol_settings == {
        "oidc": {"logout_token_lifetime": 60},
        "saml": {"entity_id": "urn:idp"},
    }
    config.write_text('protocols = ["saml"]\n')
    assert Settings.load(config).protocols == ["saml"]
    config.write_text("[protocols.oidc]\nlogout_token_lifetime = 600\n")
    with pytest.raises(
        ConfigurationError,
        match=rf"^invalid settings: {re.escape(str(config))}: "
        r"protocols\.oidc\.logout_token_lifetime: Input should be less than or equal to 120",
    ):
        handler_settings(Settings.load(config), OidcHandler)


def test_settings_that_moved_to_a_handler_name_their_new_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """saml_key_file and the like are refused naming the section, field and variable that
    replace them; LOGOUT_LOGOUT_TOKEN_LIFETIME is warned about the same way."""
    config = tmp_path / "logout.toml"
    config.write_text('saml_key_file = "/k/key.pem"\n')
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(config)
    assert str(caught.value) == (
        f"invalid settings: {config}: saml_key_file: saml_key_file moved to the saml handler's "
        "settings: set key_file under [protocols.saml] (LOGOUT_SAML_KEY_FILE; from Python, "
        "protocol_settings={'saml': {'key_file': ...}})"
    )
    monkeypatch.setenv("LOGOUT_LOGOUT_TOKEN_LIFETIME", "60")
    (warning,) = unknown_variables(os.environ)
    assert warning.startswith("LOGOUT_LOGOUT_TOKEN_LIFETIME is ignored: logout_token_lifetime ")
    assert "[protocols.oidc] (LOGOUT_OIDC_LOGOUT_TOKEN_LIFETIME" in warning


def test_a_worker_process_rebuilds_the_settings_with_their_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the supervisor hands a worker process: the same values (the environment is not
    read again) and the same sources, so the worker's messages name the variable, the file
    or the option, not "option" for everything."""
    config = tmp_path / "logout.toml"
    config.write_text('namespace = "from-file"\n', encoding="utf-8")
    monkeypatch.setenv("LOGOUT_DATA_DIR", str(tmp_path / "env"))
    parent = Settings.load(config, worker_threads=3)
    monkeypatch.setenv("LOGOUT_DATA_DIR", str(tmp_path / "changed"))
    child = Settings.from_parent(parent.for_child())
    assert child.model_dump() == parent.model_dump()
    assert child.origin("data_dir") == "LOGOUT_DATA_DIR (environment)"
    assert child.origin("namespace") == f"namespace in {config}"
    assert child.origin("worker_threads") == "worker_threads (option)"


def test_handler_durations_take_every_notation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler's lifetimes take the notations of every other duration setting (``2m``,
    ``PT90S``), and stay whole seconds; out of range is refused in the reader's unit."""
    config = tmp_path / "logout.toml"
    config.write_text('[protocols.oidc]\nlogout_token_lifetime = "1m30s"\n')
    oidc = handler_settings(Settings.load(config), OidcHandler)
    assert isinstance(oidc, OidcSettings)
    assert oidc.logout_token_lifetime == 90
    monkeypatch.setenv("LOGOUT_SAML_REQUEST_LIFETIME", "PT10M")
    saml = handler_settings(Settings.load(), SamlHandler)
    assert isinstance(saml, SamlSettings)
    assert saml.request_lifetime == 600
    config.write_text('[protocols.oidc]\nlogout_token_lifetime = "5m"\n')
    with pytest.raises(ConfigurationError, match=r"logout_token_lifetime: .*120"):
        handler_settings(Settings.load(config), OidcHandler)


def test_public_url_is_configured_or_the_listening_address(tmp_path: Path) -> None:
    """What the SSF metadata's endpoints are built on: never a request's Host header."""
    settings = Settings.load(None, data_dir=tmp_path, api_host="10.0.0.5", api_port=8443)
    assert settings.public_url == "http://10.0.0.5:8443"
    ipv6 = Settings.load(None, data_dir=tmp_path, api_host="::1")
    assert ipv6.public_url == "http://[::1]:8080"
    public = Settings.load(None, data_dir=tmp_path, api_public_url="https://logout.example/")
    assert public.public_url == "https://logout.example"


def test_the_worker_metrics_address_is_its_own_or_the_service_s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``metrics_host`` (file, variable) where a worker serves its metrics; without it the
    service's ``api_host``, as before the setting existed; an empty one names the field."""
    assert Settings.load(None, data_dir=tmp_path, api_host="10.0.0.5").worker_metrics_host == (
        "10.0.0.5"
    )
    config = tmp_path / "logout.toml"
    config.write_text('api_host = "0.0.0.0"\nmetrics_host = "10.0.0.7"\n')
    assert Settings.load(config).worker_metrics_host == "10.0.0.7"
    monkeypatch.setenv("LOGOUT_METRICS_HOST", "127.0.0.2")
    assert Settings.load(config).worker_metrics_host == "127.0.0.2"
    monkeypatch.setenv("LOGOUT_METRICS_HOST", "")
    with pytest.raises(ConfigurationError, match="metrics_host"):
        Settings.load(config)


@pytest.mark.parametrize(
    "value", ["logout.example", "ftp://logout.example", "https://logout.example/?x=1"]
)
def test_a_bad_public_url_names_the_setting(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOGOUT_API_PUBLIC_URL", value)
    with pytest.raises(ConfigurationError, match="api_public_url"):
        Settings.load(None, data_dir=tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///relative.db",
        "sqlite:////var/lib/logout/logout.db",
        "postgresql://logout:p#ss/w@db.internal:5432/logout?sslmode=require",
        "postgresql+psycopg://logout@[::1]:5433/logout",
        "postgresql://db.internal/logout",
        "garbage",
        "postgresql//db/logout",
        "://db/logout",
        "postgresql://u:p@db:5432x/logout",
        "postgresql://db:99999/logout",
        "post gres://db/logout",
    ],
)
def test_the_database_url_check_agrees_with_sqlalchemy(url: str) -> None:
    """``settings_urls`` keeps a copy of SQLAlchemy's URL pattern (to spare every command
    SQLAlchemy's import): what it takes SQLAlchemy parses, port included, and what
    SQLAlchemy cannot parse it refuses."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from orchestrator.settings_urls import check_database_url

    try:
        parsed = make_url(url)
        _ = parsed.port  # SQLAlchemy reads the port as a number when it parses
        sqlalchemy_takes = parsed.port is None or 0 < parsed.port < 65536
    except (ArgumentError, ValueError):
        sqlalchemy_takes = False
    try:
        check_database_url(url)
        ours_takes = True
    except ValueError:
        ours_takes = False
    assert ours_takes == sqlalchemy_takes


def test_a_first_retry_longer_than_the_longest_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused naming where each of the two values came from (an option, the environment,
    the default and the variable that would set it)."""
    with pytest.raises(ConfigurationError, match=r"retry_initial_delay \(700 s\) is longer") as got:
        Settings.load(None, retry_initial_delay=700, retry_max_delay=10)
    assert "(set by retry_initial_delay (option); retry_max_delay (option))" in str(got.value)
    monkeypatch.setenv("LOGOUT_RETRY_INITIAL_DELAY", "900")
    with pytest.raises(ConfigurationError) as got:
        Settings.load(None)
    assert str(got.value).endswith(
        "(set by LOGOUT_RETRY_INITIAL_DELAY (environment); "
        "retry_max_delay (LOGOUT_RETRY_MAX_DELAY))"
    )
    assert Settings.load(None, retry_initial_delay=10, retry_max_delay=10).retry_max_delay == 10


def test_the_issuer_is_kept_exactly_as_given() -> None:
    """Relying parties compare ``iss`` character by character: no slash is added or cut."""
    for issuer in (
        "https://idp.example.com/",
        "https://idp.example.com/realms/a",
        "http://localhost:9000",
    ):
        assert Settings.load(None, issuer=issuer).issuer == issuer
