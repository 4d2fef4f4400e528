"""The exception root and failure types (defined in :mod:`schemas.errors`, re-exported)."""

from schemas.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DatabaseUnavailableError,
    DeliveryError,
    EgressRefusedError,
    HandlerLoadError,
    IncompleteError,
    InputError,
    LogoutError,
    PermanentDeliveryError,
    Problem,
    SchemaOutdatedError,
    TransientDeliveryError,
    UnavailableError,
)

__all__ = [
    "BrokerUnavailableError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeliveryError",
    "EgressRefusedError",
    "HandlerLoadError",
    "IncompleteError",
    "InputError",
    "LogoutError",
    "PermanentDeliveryError",
    "Problem",
    "SchemaOutdatedError",
    "TransientDeliveryError",
    "UnavailableError",
]
