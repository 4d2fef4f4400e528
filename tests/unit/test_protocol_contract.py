"""The protocol contract: its public names pinned, its version checked when a handler loads,
its handlers typed by their own settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import protocols
import protocols.oidc
import protocols.saml
import protocols.validation
from orchestrator import HandlerLoadError
from orchestrator.handlers import handler_settings, load_handlers
from orchestrator.settings import Settings
from protocols import CONTRACT_VERSION, ENTRY_POINT_GROUP

PROTOCOLS_API = [
    "CONTRACT_VERSION",
    "ENTRY_POINT_GROUP",
    "TRANSIENT_STATUS_CODES",
    "BackchannelRequest",
    "BackchannelResponse",
    "Channel",
    "FrontchannelAnswer",
    "FrontchannelEntry",
    "HostInfo",
    "KeyDirectory",
    "LogoutContext",
    "NoSettings",
    "OpaqueIdentifiers",
    "ProtocolHandler",
    "ProviderInfo",
    "ProviderSessionInfo",
    "available_protocols",
    "classify_status",
    "handler_classes",
    "make_handler",
    "parse_retry_after",
]
OIDC_API = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "LOGOUT_TOKEN_TYPE",
    "KeyRing",
    "LogoutMethod",
    "OidcHandler",
    "OidcIdentifiers",
    "OidcProviderSettings",
    "OidcSettings",
    "SigningKey",
    "frontchannel_url",
    "generate_key",
    "load_key",
    "logout_token_claims",
    "parse_provider_settings",
    "sign",
    "thumbprint",
]
SAML_API = [
    "MAX_RELAY_STATE",
    "REASONS",
    "SOAP_HEADERS",
    "AlgorithmRefusedError",
    "DigestMismatchError",
    "IdentitySource",
    "IdpIdentity",
    "KeyMismatchError",
    "LogoutMethod",
    "LogoutRequest",
    "LogoutStatus",
    "MessageError",
    "NameId",
    "SamlHandler",
    "SamlIdentifiers",
    "SamlProviderSettings",
    "SamlSettings",
    "SignatureRefusedError",
    "SlsBinding",
    "Trust",
    "endpoints",
    "generate_identity",
    "idp_metadata",
    "load_identity",
    "logout_request",
    "logout_response",
    "parse_provider_settings",
    "parse_xml",
    "post_value",
    "read_logout_response",
    "redirect_url",
    "self_signed",
    "serialize",
    "sign_enveloped",
    "soap_body",
    "soap_envelope",
    "verify_enveloped",
]

#: The helpers any handler may use to check its settings and read its identifiers.
VALIDATION_API = [
    "URI_MAX",
    "check_uri",
    "input_error",
    "json_text",
    "stored_identifiers",
    "text_list",
    "uri_form",
]


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (protocols, PROTOCOLS_API),
        (protocols.oidc, OIDC_API),
        (protocols.saml, SAML_API),
        (protocols.validation, VALIDATION_API),
    ],
)
def test_each_protocols_package_exports_exactly_its_api(module: object, names: list[str]) -> None:
    """A name added to or dropped from a package's public API is a decision: pin it here."""
    assert list(module.__all__) == names  # type: ignore[attr-defined]
    for name in names:
        assert hasattr(module, name), name


def test_the_contract_is_typed_and_versioned() -> None:
    """``py.typed`` ships with the package; the version is ``major.minor``."""
    assert (Path(protocols.__file__).parent / "py.typed").exists()
    major, minor = CONTRACT_VERSION.split(".")
    assert major.isdigit()
    assert minor.isdigit()


def test_handlers_get_their_own_typed_settings(tmp_path: Path) -> None:
    """Each built-in handler's settings are an instance of its own model."""
    settings = Settings.load(None, data_dir=tmp_path)
    assert isinstance(
        handler_settings(settings, protocols.oidc.OidcHandler), protocols.oidc.OidcSettings
    )
    assert isinstance(
        handler_settings(settings, protocols.saml.SamlHandler), protocols.saml.SamlSettings
    )


OLD_HANDLER = """
from protocols import ProtocolHandler


class OldHandler(ProtocolHandler):
    protocol = "old"
    contract_version = "1.4"


class NewerMinor(ProtocolHandler):
    protocol = "newer"
    contract_version = "{major}.99"
"""


def test_a_handler_built_for_another_major_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contract 1.x against this host: refused at load naming both versions and the fix; a
    handler of the same major (any minor) loads."""
    (tmp_path / "versioned_handlers.py").write_text(
        OLD_HANDLER.replace("{major}", CONTRACT_VERSION.split(".")[0]), encoding="utf-8"
    )
    info = tmp_path / "versioned_handlers-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: versioned-handlers\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nold = versioned_handlers:OldHandler\n"
        "newer = versioned_handlers:NewerMinor\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "versioned_handlers", raising=False)
    with pytest.raises(HandlerLoadError) as caught:
        load_handlers(Settings.load(None, data_dir=tmp_path, protocols=["old"]))
    assert str(caught.value) == (
        f"protocol handler 'old' (versioned_handlers:OldHandler) was built for protocol "
        f"contract 1.4; this host speaks {CONTRACT_VERSION}: install a release of the "
        f"handler built for contract {CONTRACT_VERSION.split('.')[0]}.x"
    )
    loaded = load_handlers(Settings.load(None, data_dir=tmp_path, protocols=["newer"]))
    assert list(loaded) == ["newer"]
