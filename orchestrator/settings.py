"""The one settings object, read once at the entry point and passed down explicitly.

Sources, highest priority first: keyword overrides (CLI options), environment variables
named after the fields with a ``LOGOUT_`` prefix, then a TOML file (``--config`` or
``LOGOUT_CONFIG``). A refused value is reported with its source (``LOGOUT_X (environment)``,
``logout.toml: x``, ``option: x``); a ``LOGOUT_`` variable that is no setting is warned about.
Each protocol handler's own settings are kept as given (``[protocols.<name>]`` of the file,
``LOGOUT_<NAME>_<FIELD>`` variables) and validated by :mod:`orchestrator.handlers`.

Every duration setting takes the notations of :mod:`schemas.durations` (``1h30m``,
``hours=1``, ``PT30M``) besides a plain number of its unit (seconds, or ms for ``*_ms``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.api_tokens import ApiToken
from orchestrator.binding_policy import UnlistedAddressPolicy
from orchestrator.egress import parse_allow_entry
from orchestrator.errors import ConfigurationError
from orchestrator.settings_environment import (
    ENV_PREFIX,
    NON_SETTING_VARIABLES,
    handler_variables,
    redact_url,
    redact_urls,
    shape_file,
)
from orchestrator.settings_environment import unknown_variables as _unknown_variables
from orchestrator.settings_origins import SettingsOrigins
from orchestrator.settings_sources import NoDecode, read_sources
from orchestrator.settings_urls import BROKER_SCHEMES, BrokerUrl, DatabaseUrl, IssuerUrl, PublicUrl
from orchestrator.ssf_transmitters import SsfTransmitter
from schemas.durations import (
    Duration,
    Milliseconds,
    OptionalDuration,
    Seconds,
    describe_duration,
    duration_fields,
)

__all__ = [
    "BROKER_SCHEMES",
    "ENV_PREFIX",
    "NON_SETTING_VARIABLES",
    "Settings",
    "default_data_dir",
    "redact_url",
    "unknown_variables",
]


def default_data_dir() -> Path:
    """Where the embedded database and generated keys live unless ``data_dir`` says otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "logout-orchestrator"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning for each ``LOGOUT_*`` variable in ``environ`` that is no setting (see
    :func:`orchestrator.settings_environment.unknown_variables`)."""
    return _unknown_variables(environ, Settings.model_fields)


class Settings(BaseModel):
    """Everything the worker, the publisher and the CLI need to know, validated once.

    ``Settings(**values)`` holds exactly ``values`` (and the defaults); :meth:`load` reads
    the environment and the file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: DatabaseUrl | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite in data_dir"
    )
    broker_url: BrokerUrl = "redis://127.0.0.1:6379/0"
    namespace: str = Field(default="logout", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    issuer: IssuerUrl = "http://localhost:9000"

    worker_processes: int = Field(default=2, ge=1, le=64)
    worker_threads: int = Field(default=16, ge=1, le=256)
    max_batch_events: int = Field(default=64, ge=1, le=1000)
    batch_concurrency: int = Field(default=4, ge=1, le=256)
    auto_migrate: bool = True
    redis_wakeup: bool = Field(
        default=True, description="idle Redis consumers wait for a Pub/Sub notice, not a poll"
    )
    redis_heartbeat_timeout_ms: Milliseconds = Field(default=15_000, ge=1_000)
    redis_maintenance_chance: int = Field(default=1_000, ge=1, le=1_000_000)
    recovery_interval: Seconds = Field(default=60.0, gt=0)
    recovery_grace: Seconds = Field(default=300.0, gt=0)
    audit_seal_interval: Seconds = Field(
        default=5.0,
        gt=0,
        description="how often each worker links new audit records into the chain",
    )
    audit_checkpoint_interval: Seconds = Field(
        default=3600.0,
        gt=0,
        description="how often the chain's head is signed (a checkpoint), when it moved",
    )

    protocols: Annotated[list[str] | None, NoDecode] = None

    protocol_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="each handler's own settings, by protocol: [protocols.<name>] in the file, "
        "LOGOUT_<NAME>_<FIELD> in the environment; the handler validates them",
    )

    delivery_timeout: Seconds = Field(default=5.0, gt=0, le=60)
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    delivery_max_age: Seconds = Field(default=6 * 3600.0, gt=0)
    retry_initial_delay: Seconds = Field(default=2.0, gt=0)
    retry_max_delay: Seconds = Field(default=600.0, gt=0)
    max_concurrent_deliveries: int = Field(default=256, ge=1)
    signing_threads: int = Field(default=2, ge=1, le=64)
    max_concurrent_per_host: int = Field(default=8, ge=1)
    response_body_limit: int = Field(default=64 * 1024, ge=1024)
    egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs, addresses and host names the worker may send to although the "
        "egress policy refuses them (loopback, private, link-local, metadata ...)",
    )

    frontchannel_frame_timeout_ms: Milliseconds = Field(
        default=5000, ge=100, le=120_000, description="per iframe of the iframe stage"
    )
    frontchannel_page_timeout_ms: Milliseconds = Field(
        default=10_000, ge=100, le=300_000, description="the whole iframe stage"
    )
    frontchannel_native_timeout_ms: Milliseconds = Field(
        default=10_000, ge=100, le=300_000, description="per step of the native chain"
    )

    # Session policy (durations: ``hours=1,minutes=30``, ``1h30m``, ``PT1H30M``; ``-1`` disables).
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
    remember_device: Duration = Field(
        default=timedelta(0),
        description="a login is from a known device when its cookie id was seen for the user "
        "this recently, or the user has an open session from its IP; 0 = off",
    )
    expiry_interval: Seconds = Field(default=30.0, gt=0, description="seconds between sweeps")
    expiry_batch: int = Field(default=500, ge=1, le=10_000)
    expiry_max_per_sweep: int = Field(default=20_000, ge=1)

    geoip_city_db: Path | None = Field(default=None, description="MaxMind City database")
    geoip_asn_db: Path | None = Field(default=None, description="MaxMind ASN database")
    binding_unlisted_addresses: UnlistedAddressPolicy = UnlistedAddressPolicy.ALLOW

    # The HTTP service (``serve``) and the metrics endpoints.
    api_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="serve's address (and the worker's metrics', unless metrics_host)",
    )
    api_port: int = Field(default=8080, ge=1, le=65535, description="serve: port")
    api_workers: int = Field(default=1, ge=1, le=64, description="serve: processes")
    api_tokens: list[ApiToken] = Field(
        default_factory=list, description="bearer tokens as hashes, with their scopes"
    )
    api_public_url: PublicUrl | None = Field(
        default=None,
        description="the service's URL as others reach it (https://logout.example.com): the "
        "endpoints the SSF metadata names; default http://<api_host>:<api_port>",
    )
    api_body_limit: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="request bytes, at most"
    )
    api_wait_max: Seconds = Field(
        default=30.0, gt=0, le=300, description="longest ?wait= a long-poll accepts"
    )
    ssf_transmitters: list[SsfTransmitter] = Field(
        default_factory=list,
        description="upstream Shared Signals transmitters: POST /v1/ssf/push/<name> each",
    )
    metrics_public: bool = Field(
        default=False, description="/metrics answers without a token (else scope read)"
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="worker: serve Prometheus metrics here"
    )
    metrics_host: str | None = Field(
        default=None, min_length=1, description="worker: the metrics' address; default api_host"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    _sources: SettingsOrigins | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _retry_delays_in_order(self) -> Settings:
        if self.retry_initial_delay > self.retry_max_delay:
            raise ValueError(
                f"retry_initial_delay ({self.retry_initial_delay:g} s) is longer than "
                f"retry_max_delay ({self.retry_max_delay:g} s): the first wait would already "
                "be cut to the longest; lower retry_initial_delay or raise retry_max_delay"
            )
        return self

    @property
    def public_url(self) -> str:
        """Where others reach the HTTP service: ``api_public_url``, else the address it
        listens on; never a request's ``Host`` header (which a client chooses)."""
        if self.api_public_url is not None:
            return self.api_public_url
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def worker_metrics_host(self) -> str:
        """Where a worker serves its metrics (on ``metrics_port``): ``metrics_host``, else
        ``api_host``."""
        return self.metrics_host or self.api_host

    @field_validator("ssf_transmitters")
    @classmethod
    def _distinct_streams(cls, value: list[SsfTransmitter]) -> list[SsfTransmitter]:
        names = [t.name for t in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"the name {repeated[0]!r} is used twice; each stream needs its own")
        return value

    @field_validator("egress_allow")
    @classmethod
    def _egress_entries(cls, value: list[str]) -> list[str]:
        for index, entry in enumerate(value):
            try:
                parse_allow_entry(entry)
            except ValueError as exc:
                raise ValueError(f"entry {index + 1}: {exc}") from None
        return value

    @field_validator("protocols", "egress_allow", mode="before")
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
    def load(
        cls, config_file: str | Path | None = None, *, warn_unknown: bool = True, **overrides: Any
    ) -> Settings:
        """Read the settings once: overrides, then ``LOGOUT_*`` variables, then the TOML file.

        A refused value raises :class:`ConfigurationError` naming its source. With
        ``warn_unknown``, every ``LOGOUT_*`` variable that is no setting is logged as a warning
        (through structlog when it is configured, else as one line on stderr in the format the
        settings ask for).
        """
        path = config_file or os.environ.get("LOGOUT_CONFIG") or None
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = cls._read(path, given, options=given)
        warnings = unknown_variables(os.environ) if warn_unknown else []
        if warnings:
            # Imported only when there is something to say: structlog costs a command's start.
            from orchestrator.logging import startup_logger

            log = startup_logger(settings.log_level, settings.log_format)
            for warning in warnings:
                log.warning(warning)
        return settings

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        given = {k: v for k, v in changes.items() if v is not None}
        copy = self._read(None, {**self.model_dump(), **given}, options=given)
        before = self._sources
        copy._sources = SettingsOrigins(
            {**before.given, **given} if before else given, before.path if before else None
        )
        return copy

    def for_child(self) -> dict[str, Any]:
        """These settings as a worker process rebuilds them (:meth:`from_parent`): the
        values in force, and where each came from, so its messages name the real source."""
        sources = self._sources
        return {
            "values": self.model_dump(mode="json"),
            "given": dict(sources.given) if sources else {},
            "path": str(sources.path) if sources and sources.path is not None else None,
        }

    @classmethod
    def from_parent(cls, data: Mapping[str, Any]) -> Settings:
        """The settings :meth:`for_child` gave: the same values, read from no other source."""
        settings = cls(**data["values"])
        settings._sources = SettingsOrigins(data["given"], data["path"])
        return settings

    def origin(self, field: str) -> str:
        """Where ``field``'s value came from, for a message that says what to fix:
        ``LOGOUT_DATABASE_URL (environment)``, ``database_url in logout.toml``,
        ``database_url (option)``, or ``database_url (LOGOUT_DATABASE_URL)`` for a default."""
        return self._sources.origin(field) if self._sources else SettingsOrigins.default(field)

    def protocol_origin(self, protocol: str, field: str) -> str:
        """Where a protocol handler's setting came from, as the start of a message
        (``LOGOUT_SAML_KEY_FILE (environment): ``, ``logout.toml: ``, or ``""``)."""
        return self._sources.section_label(protocol, field) if self._sources else ""

    @classmethod
    def _read(
        cls, path: str | Path | None, values: dict[str, Any], *, options: Mapping[str, Any]
    ) -> Settings:
        """Validate ``values`` over the environment and the file; errors name their source."""
        file = Path(path) if path is not None else None
        sections = handler_variables(os.environ, cls.model_fields)
        extra = {"protocol_settings": sections} if sections else None
        merged = read_sources(cls, ENV_PREFIX, values, file, shape=shape_file, extra=extra)
        try:
            settings = cls(**merged)
            settings._sources = SettingsOrigins(options, path)
            return settings
        except ValidationError as exc:
            sources = SettingsOrigins(options, path)
            problems = "; ".join(sources.describe(err, cls) for err in exc.errors())
            raise ConfigurationError(f"invalid settings: {problems}") from exc

    @property
    def effective_database_url(self) -> str:
        """The database URL in force: the configured one, or SQLite inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'logout.db'}"

    def duration_readings(self) -> dict[str, str]:
        """Every duration setting's value in plain words (``900 days``, ``disabled``)."""
        return {
            name: describe_duration(unit.as_timedelta(getattr(self, name)))
            for name, unit in duration_fields(type(self)).items()
        }

    def redacted(self) -> dict[str, Any]:
        """The effective settings as JSON-ready data, for ``config show``.

        Every URL's password is masked; derived defaults show the value in force
        (``database_url``, ``saml_entity_id``, the SAML endpoints, ``protocols``); each
        duration is ``{"value": <as configured, in its unit or notation>, "reading": <plain
        words>}``, e.g. ``{"value": "900d", "reading": "900 days"}`` for ``30M``.
        """
        data = self.model_dump(mode="json")
        data["database_url"] = self.effective_database_url
        if self.protocols is None:
            from protocols.loading import available_protocols

            data["protocols"] = available_protocols()
        for name, reading in self.duration_readings().items():
            data[name] = {"value": data[name], "reading": reading}
        return redact_urls(data)  # type: ignore[no-any-return]
