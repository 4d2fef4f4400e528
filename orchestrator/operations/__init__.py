"""What an operator does by hand: look at deliveries and retry failed ones, replay rejected
events, list, enable, disable and remove providers.

Each action is one transaction that changes the state, writes its audit record (with the
operator as ``actor``, built in :mod:`orchestrator.trail`) and puts what must follow in the
outbox: a retried delivery's message for the ``deliver`` actor, a replayed event, the logouts
that end a provider's sessions. A worker then carries them out through the normal path.
Exports are lazy: a listing loads only its own module.
"""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from orchestrator.operations.deliveries import (
        DeliveryQuery,
        DeliveryView,
        delivery_query,
        list_deliveries,
    )
    from orchestrator.operations.providers import (
        EndReport,
        ProviderView,
        end_provider_sessions,
        list_providers,
        remove_blockers,
        remove_provider,
        set_enabled,
    )
    from orchestrator.operations.rejected import (
        RejectedView,
        list_rejected,
    )
    from orchestrator.operations.replay import (
        ReplayReport,
        replay_rejected,
    )
    from orchestrator.operations.retries import (
        RetryReport,
        request_retries,
    )

__all__ = [
    "DeliveryQuery",
    "DeliveryView",
    "EndReport",
    "ProviderView",
    "RejectedView",
    "ReplayReport",
    "RetryReport",
    "delivery_query",
    "end_provider_sessions",
    "list_deliveries",
    "list_providers",
    "list_rejected",
    "remove_blockers",
    "remove_provider",
    "replay_rejected",
    "request_retries",
    "set_enabled",
]

__getattr__, __dir__ = lazy_exports(__name__)
