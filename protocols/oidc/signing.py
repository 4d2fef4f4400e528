"""Handlers that sign with the host's key ring (OIDC logout tokens, SSF SETs): the two
settings that name the keys, the ring built from them, loaded on start and the directory a
key will be generated into, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypeVar

from protocols.base import HostInfo, ProtocolHandler
from protocols.keyfiles import KeyDirectory
from protocols.oidc.keys import KeyRing, host_key_ring, pending_key_directories
from protocols.validation import text_list

__all__ = ["SigningHandler", "SigningSettings"]


class SigningSettings(BaseModel):
    """``key_files`` and ``active_kid`` of a signing handler's own settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_files: list[Path] = Field(
        default_factory=list,
        description="PEM private keys (RS256 or ES256); all are published. A variable takes "
        "one path, comma-separated paths or a JSON list. Default: one generated into "
        "<data_dir>/oidc-keys",
    )
    active_kid: str | None = Field(default=None, description="kid of the signing key")

    _key_files = field_validator("key_files", mode="before")(text_list)


K_co = TypeVar("K_co", bound=SigningSettings, default=SigningSettings, covariant=True)


class SigningHandler(ProtocolHandler[K_co]):
    """A handler signing with ``keys``: its ``key_files`` and the keys generated into
    ``<data_dir>/oidc-keys`` (shared by every signing handler that names no files).

    ``keys_of`` names the protocol whose ``key_files`` and ``active_kid`` the host gives
    this handler when its own section sets neither, so one key ring is configured once.
    """

    keys_of: ClassVar[str | None] = None

    def __init__(self, settings: K_co, host: HostInfo) -> None:
        super().__init__(settings, host)
        self.keys: KeyRing = host_key_ring(settings.key_files, host.data_dir, settings.active_kid)

    def start(self) -> None:
        """Load the signing keys, generating the default one when there is none."""
        self.keys.load()

    def key_directories(self) -> list[KeyDirectory]:
        """``<data_dir>/oidc-keys`` when a signing key will be generated there."""
        name = self.protocol
        setting = f"key_files of [protocols.{name}] (LOGOUT_{name.upper()}_KEY_FILES)"
        return pending_key_directories(self.settings.key_files, self.host.data_dir, setting)
