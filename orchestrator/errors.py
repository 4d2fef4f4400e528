"""The exception root and failure types (defined in :mod:`schemas.errors`, re-exported)."""

from schemas.errors import (
    ConfigurationError,
    DeliveryError,
    HandlerLoadError,
    InputError,
    LogoutError,
    PermanentDeliveryError,
    Problem,
    TransientDeliveryError,
)

__all__ = [
    "ConfigurationError",
    "DeliveryError",
    "HandlerLoadError",
    "InputError",
    "LogoutError",
    "PermanentDeliveryError",
    "Problem",
    "TransientDeliveryError",
]
