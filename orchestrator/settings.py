"""The one settings object, read once at the entry point and passed down explicitly.

Sources, highest priority first: keyword overrides (CLI options), environment variables
named after the fields with a ``LOGOUT_`` prefix, then a TOML file (``--config`` or
``LOGOUT_CONFIG``).
"""

from __future__ import annotations

import json
import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from orchestrator.binding_policy import UnlistedAddressPolicy
from orchestrator.durations import Duration, OptionalDuration
from orchestrator.errors import ConfigurationError

__all__ = ["BROKER_SCHEMES", "Settings", "default_data_dir", "redact_url"]

BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "memory")
SamlBinding = Literal["soap", "redirect", "post"]


def default_data_dir() -> Path:
    """Where the embedded database and generated keys live unless ``data_dir`` says otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "logout-orchestrator"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Settings(BaseSettings):
    """Everything the worker, the publisher and the CLI need to know, validated once."""

    model_config = SettingsConfigDict(env_prefix="LOGOUT_", frozen=True, extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite in data_dir"
    )
    broker_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = Field(default="logout", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    issuer: str = "http://localhost:9000"

    worker_processes: int = Field(default=2, ge=1, le=64)
    worker_threads: int = Field(default=16, ge=1, le=256)
    max_batch_events: int = Field(default=64, ge=1, le=1000)
    batch_concurrency: int = Field(default=4, ge=1, le=256)
    auto_migrate: bool = True
    redis_wakeup: bool = Field(
        default=True, description="idle Redis consumers wait for a Pub/Sub notice, not a poll"
    )
    redis_heartbeat_timeout_ms: int = Field(default=60_000, ge=1_000)
    redis_maintenance_chance: int = Field(default=1_000, ge=1, le=1_000_000)
    recovery_interval: float = Field(default=60.0, gt=0)
    recovery_grace: float = Field(default=300.0, gt=0)

    protocols: Annotated[list[str] | None, NoDecode] = None

    oidc_key_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="PEM private keys (RS256 or ES256); all are published"
    )
    oidc_active_kid: str | None = Field(default=None, description="kid of the signing key")
    logout_token_lifetime: int = Field(default=120, ge=10, le=120)

    saml_entity_id: str | None = Field(
        default=None, min_length=1, max_length=1024, description="default: the issuer"
    )
    saml_key_file: Path | None = Field(default=None, description="PEM RSA key signing SAML")
    saml_cert_file: Path | None = Field(default=None, description="its PEM X.509 certificate")
    saml_request_lifetime: int = Field(default=120, ge=10, le=3600)
    saml_slo_urls: dict[SamlBinding, str] = Field(
        default_factory=dict, description="the IdP's SLO endpoints in its metadata"
    )
    saml_sso_urls: dict[SamlBinding, str] = Field(
        default_factory=dict, description="the IdP's SSO endpoints in its metadata"
    )

    delivery_timeout: float = Field(default=5.0, gt=0, le=60)
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    delivery_max_age: float = Field(default=6 * 3600.0, gt=0)
    retry_initial_delay: float = Field(default=2.0, gt=0)
    retry_max_delay: float = Field(default=600.0, gt=0)
    max_concurrent_deliveries: int = Field(default=256, ge=1)
    signing_threads: int = Field(default=2, ge=1, le=64)
    max_concurrent_per_host: int = Field(default=8, ge=1)
    response_body_limit: int = Field(default=64 * 1024, ge=1024)

    frontchannel_frame_timeout_ms: int = Field(
        default=5000, ge=100, le=120_000, description="per iframe of the iframe stage"
    )
    frontchannel_page_timeout_ms: int = Field(
        default=10_000, ge=100, le=300_000, description="the whole iframe stage"
    )
    frontchannel_native_timeout_ms: int = Field(
        default=10_000, ge=100, le=300_000, description="per step of the native chain"
    )

    # Session policy (durations: ``hours=1,minutes=30`` or ``1h30m``; ``-1`` disables).
    session_duration: Duration = Field(
        default=timedelta(days=1), description="a new session's lifetime; 0 = browser session"
    )
    session_stay_signed_in_offset: Duration = Field(
        default=timedelta(0), description="added to session_duration when 'stay signed in'"
    )
    session_remember_me_lifetime: OptionalDuration = Field(
        default=None, description="lifetime of a remember-me session instead of the above"
    )
    session_absolute_lifetime: OptionalDuration = Field(
        default=None, description="hard cap on any session's age since login"
    )
    session_idle_timeout: OptionalDuration = Field(
        default=None, description="a session unseen this long expires"
    )
    max_sessions_per_user: int = Field(
        default=0, ge=0, description="over it the oldest sessions end; 0 = unlimited"
    )
    expiry_interval: float = Field(default=30.0, gt=0, description="seconds between sweeps")
    expiry_batch: int = Field(default=500, ge=1, le=10_000)
    expiry_max_per_sweep: int = Field(default=20_000, ge=1)

    geoip_city_db: Path | None = Field(default=None, description="MaxMind City database")
    geoip_asn_db: Path | None = Field(default=None, description="MaxMind ASN database")
    binding_unlisted_addresses: UnlistedAddressPolicy = UnlistedAddressPolicy.ALLOW

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in BROKER_SCHEMES:
            raise ValueError(f"scheme {scheme!r} is not one of {', '.join(BROKER_SCHEMES)}")
        return value

    @field_validator("saml_slo_urls", "saml_sso_urls")
    @classmethod
    def _absolute_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for binding, url in value.items():
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.netloc:
                raise ValueError(f"{binding}: {url!r} is not an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _saml_pair(self) -> Self:
        if (self.saml_key_file is None) != (self.saml_cert_file is None):
            raise ValueError("saml_key_file and saml_cert_file go together: set both or neither")
        return self

    @field_validator("protocols", "oidc_key_files", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """Lists from the environment: JSON (``["a", "b"]``) or comma-separated (``a,b``)."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc.msg}") from exc
        return [item.strip() for item in value.split(",") if item.strip()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Read the settings once: overrides, then ``LOGOUT_*`` variables, then the TOML file."""
        path = config_file or os.environ.get("LOGOUT_CONFIG") or None
        if path is not None and not Path(path).is_file():
            raise ConfigurationError(f"config file {path}: no such file")
        config = SettingsConfigDict(**{**cls.model_config, "toml_file": path})
        bound = type(cls.__name__, (cls,), {"model_config": config, "__module__": cls.__module__})
        try:
            return bound(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[no-any-return]
        except SettingsError as exc:
            raise ConfigurationError(f"invalid settings: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:  # the message ends "(at line L, column C)"
            raise ConfigurationError(
                f"config file {path}: not valid TOML: {exc}; fix that line of the file"
            ) from exc
        except OSError as exc:
            raise ConfigurationError(
                f"config file {path}: cannot read it: {exc.strerror}; check its permissions"
            ) from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                for err in exc.errors()
            )
            source = f" (from {path})" if path else ""
            raise ConfigurationError(f"invalid settings{source}: {problems}") from exc

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        data = {**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
        return type(self).load(None, **data)

    @property
    def effective_database_url(self) -> str:
        """The database URL in force: the configured one, or SQLite inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'logout.db'}"

    def redacted(self) -> dict[str, Any]:
        """The effective settings as JSON-ready data, with every secret masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = redact_url(self.effective_database_url)
        data["broker_url"] = redact_url(self.broker_url)
        return data
