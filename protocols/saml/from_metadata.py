"""A SAML provider's settings filled from the SP's metadata (``providers load``).

A provider entry gives ``metadata_file`` (a path, read bounded) or ``metadata`` (the XML
text), and optionally ``metadata_signed_by`` (a certificate, path or PEM: the metadata must
then carry a valid signature by it). The metadata fills ``entity_id``, ``sls_url`` and
``sls_binding``, ``sp_certificate`` (every signing certificate), ``slo_endpoints`` (every
Single Logout endpoint) and ``advertised_algorithms``.

The entry's own fields win: a field the entry gives is kept, and the metadata's value of it
is not used. Two select rather than override: ``entity_id`` picks the SP in a document of
several and must be in it (a conflict is refused), and ``sls_binding`` or ``logout_method``
pick the endpoint (which must exist). Without either, the endpoint is the first SOAP one,
else HTTP-Redirect, else HTTP-POST (back-channel first). An ``sls_url`` without
``sls_binding`` takes the binding of the metadata's endpoint at that URL.

Every problem names the provider and the field the operator wrote: a problem of a value the
metadata gave is reported on ``metadata_file`` (or ``metadata``), naming the file and the
field it filled.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from protocols.files import UnreadableFileError, read_regular_file
from protocols.saml.parsing import MessageError
from protocols.saml.settings import (
    METHOD_BINDINGS,
    LogoutMethod,
    SamlProviderSettings,
    SlsBinding,
    certificate_pem,
    load_certificates,
)
from protocols.saml.sp_metadata import METADATA_MAX, SpMetadata, read_sp_metadata
from protocols.saml.trust import Trust
from protocols.validation import input_error
from schemas.errors import InputError, Problem

__all__ = ["METADATA_FIELDS", "with_metadata"]

#: The fields read on load only, never stored.
METADATA_FIELDS: Final = frozenset({"metadata_file", "metadata", "metadata_signed_by"})
#: The fields the metadata fills when the entry leaves them out.
_FILLED: Final = frozenset(
    {"entity_id", "sls_url", "sls_binding", "sp_certificate", "slo_endpoints"}
    | {"advertised_algorithms"}
)
#: The binding chosen when the entry names neither a binding nor a logout method.
_PREFERRED: Final = (SlsBinding.SOAP, SlsBinding.REDIRECT, SlsBinding.POST)
_REQUIRED = "Field required"


def with_metadata(
    provider: str, settings: Mapping[str, Any], now: datetime
) -> SamlProviderSettings:
    """The provider's settings, filled from its metadata; :class:`InputError` with every
    problem, each naming the provider and field."""
    where = f"provider {provider!r}"
    problems: list[Problem] = []
    own = {k: v for k, v in settings.items() if k not in METADATA_FIELDS}
    document = _document(settings, where, problems)
    signers = _signers(settings, where, problems)
    filled: dict[str, Any] = {}
    field, label = document[:2] if document else ("metadata_file", "")
    if document is not None and not problems:
        entity_id = own.get("entity_id")
        try:
            metadata = read_sp_metadata(
                document[2],
                what=label,
                entity_id=entity_id if isinstance(entity_id, str) else None,
                signers=signers,
                now=now,
            )
        except MessageError as exc:
            problems.append(Problem(where, field, str(exc)))
        else:
            filled = _filled(metadata, own, where, field, label, problems)
    try:
        result = SamlProviderSettings.model_validate({**filled, **own})
    except ValidationError as exc:
        for problem in input_error(exc, provider, SamlProviderSettings, METADATA_FIELDS).problems:
            if problem.field.split(".")[0] in filled:
                message = f"{label}: its {problem.field}: {problem.message}"
                problems.append(Problem(where, field, message))
            elif not (problems and problem.field in _FILLED and problem.message == _REQUIRED):
                problems.append(problem)  # (a field the failed metadata was to fill is not)
    if problems:
        raise InputError(problems)
    return result


def _document(
    settings: Mapping[str, Any], where: str, problems: list[Problem]
) -> tuple[str, str, bytes] | None:
    """``(field, label, bytes)`` of the metadata the entry names, or None (a problem noted)."""
    given = [f for f in ("metadata_file", "metadata") if f in settings]
    if len(given) > 1:
        problems.append(Problem(where, "metadata", "give metadata_file or metadata, not both"))
        return None
    if not given:
        problems.append(
            Problem(
                where,
                "metadata_signed_by",
                "applies to the SP's metadata: give metadata_file or metadata, or leave it out",
            )
        )
        return None
    (field,) = given
    value = settings[field]
    if field == "metadata_file":
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(where, field, "must be the path of the SP's metadata XML"))
            return None
        try:
            return field, value, read_regular_file(value, METADATA_MAX)
        except UnreadableFileError as exc:
            problems.append(Problem(where, field, f"cannot read {value}: {exc}"))
            return None
    if not isinstance(value, str) or not value.strip():
        problems.append(Problem(where, field, "must be the SP's metadata XML, as a string"))
        return None
    return field, "the metadata", value.encode("utf-8")


def _signers(settings: Mapping[str, Any], where: str, problems: list[Problem]) -> Trust | None:
    """The keys ``metadata_signed_by`` names (None when not given)."""
    value = settings.get("metadata_signed_by")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(
            Problem(where, "metadata_signed_by", "must be a certificate: a PEM file's path or PEM")
        )
        return None
    try:
        return Trust.of(load_certificates(certificate_pem(value)))
    except ValueError as exc:
        problems.append(Problem(where, "metadata_signed_by", str(exc)))
        return None


def _filled(
    metadata: SpMetadata,
    own: Mapping[str, Any],
    where: str,
    field: str,
    label: str,
    problems: list[Problem],
) -> dict[str, Any]:
    """The settings the metadata gives that the entry does not."""
    filled: dict[str, Any] = {
        "entity_id": metadata.entity_id,
        "slo_endpoints": [
            {"binding": e.binding, "location": e.location, "response_location": e.response_location}
            for e in metadata.slo_endpoints
        ],
    }
    if metadata.certificates:
        filled["sp_certificate"] = "".join(metadata.certificates)
    if metadata.signing_methods or metadata.digest_methods:
        filled["advertised_algorithms"] = {
            "signing": list(metadata.signing_methods),
            "digest": list(metadata.digest_methods),
        }
    filled.update(_endpoint(metadata, own, where, field, label, problems))
    return {k: v for k, v in filled.items() if k not in own}


def _endpoint(
    metadata: SpMetadata,
    own: Mapping[str, Any],
    where: str,
    field: str,
    label: str,
    problems: list[Problem],
) -> dict[str, str]:
    """``sls_url`` and ``sls_binding`` from the metadata's endpoints, as the entry selects."""
    others = ", ".join(metadata.other_slo_bindings)
    offered = ", ".join(f"{e.binding} {e.location}" for e in metadata.slo_endpoints) or (
        "none in SOAP, HTTP-Redirect or HTTP-POST" + (f"; only {others}" if others else "")
    )
    url, sls_binding, method = own.get("sls_url"), own.get("sls_binding"), own.get("logout_method")
    if url is not None:
        if sls_binding is not None:
            return {}
        match = next((e for e in metadata.slo_endpoints if e.location == url), None)
        if match is None:
            problems.append(
                Problem(
                    where,
                    "sls_binding",
                    f"required: {label} lists no SingleLogoutService at sls_url (it lists: "
                    f"{offered})",
                )
            )
            return {}
        return {"sls_binding": match.binding}
    wanted: tuple[SlsBinding, ...]
    if sls_binding in tuple(SlsBinding):
        wanted, chooser = (SlsBinding(sls_binding),), "sls_binding"
    elif method in tuple(LogoutMethod):
        wanted, chooser = METHOD_BINDINGS[LogoutMethod(method)], "logout_method"
    elif sls_binding is None and method is None:
        wanted, chooser = _PREFERRED, field
    else:
        return {}  # an invalid binding or method: the settings model names it
    for choice in wanted:
        endpoint = next((e for e in metadata.slo_endpoints if e.binding == choice), None)
        if endpoint is not None:
            return {"sls_url": endpoint.location, "sls_binding": endpoint.binding}
    names = " or ".join(b.value for b in wanted)
    problems.append(
        Problem(
            where,
            chooser,
            f"{label} has no SingleLogoutService for {names} (it lists: {offered}); "
            "choose another, or give sls_url and sls_binding",
        )
    )
    return {}
