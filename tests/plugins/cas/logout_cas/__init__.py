"""CAS back-channel single logout: a handler written against the protocol contract only."""

from .handler import CasHandler, CasIdentifiers, CasProviderSettings, CasSettings

__all__ = ["CasHandler", "CasIdentifiers", "CasProviderSettings", "CasSettings"]
