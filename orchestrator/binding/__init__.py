"""Network and GeoIP session binding: look an address up, judge it against the login's.

Pure building blocks: :class:`GeoipReader` reads the MaxMind City and ASN databases, and
:func:`evaluate` compares a request's address with what a :class:`BoundSession` recorded at
login, returning :class:`BindingOk` or a :class:`BindingViolation` that builds the
``session.binding_violation`` event. No database session, no broker.
"""

from orchestrator.binding.bound_session import BoundSession
from orchestrator.binding.evaluate import evaluate
from orchestrator.binding.geoip import (
    GeoipClosedError,
    GeoipDatabaseError,
    GeoipReader,
    InvalidAddressError,
    IpAddress,
    IpFacts,
    is_special_address,
    parse_address,
)
from orchestrator.binding.modes import (
    BindingModeError,
    GeoipBinding,
    NetworkBinding,
    unserved_modes,
)
from orchestrator.binding.results import BindingOk, BindingResult, BindingViolation
from orchestrator.binding_policy import UnlistedAddressPolicy

__all__ = [
    "BindingModeError",
    "BindingOk",
    "BindingResult",
    "BindingViolation",
    "BoundSession",
    "GeoipBinding",
    "GeoipClosedError",
    "GeoipDatabaseError",
    "GeoipReader",
    "InvalidAddressError",
    "IpAddress",
    "IpFacts",
    "NetworkBinding",
    "UnlistedAddressPolicy",
    "evaluate",
    "is_special_address",
    "parse_address",
    "unserved_modes",
]
