"""Unit tests of ``classify_status`` and ``parse_retry_after`` (protocols.base)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from orchestrator.errors import PermanentDeliveryError, TransientDeliveryError
from protocols import (
    TRANSIENT_STATUS_CODES,
    BackchannelResponse,
    classify_status,
    parse_retry_after,
)

NOW = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)


def _response(status: int, headers: Mapping[str, str] | None = None) -> BackchannelResponse:
    return BackchannelResponse(status_code=status, headers=dict(headers or {}), content=b"")


# -- classify_status ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204])
def test_success_statuses_return_none(status: int) -> None:
    """200 and 204 mean the logout succeeded: nothing is raised."""
    classify_status(_response(status), NOW)
    classify_status(_response(status, {"retry-after": "5"}), NOW)


@pytest.mark.parametrize("status", [201, 202, 301, 302, 303, 307, 400, 401, 403, 404, 500, 501])
def test_other_statuses_are_permanent_with_status_code(status: int) -> None:
    """Every status that is neither success nor transient raises a permanent error."""
    with pytest.raises(PermanentDeliveryError) as caught:
        classify_status(_response(status, {"retry-after": "5"}), NOW)
    assert caught.value.status_code == status
    assert caught.value.detail == f"HTTP {status}"
    assert not isinstance(caught.value, TransientDeliveryError)


@pytest.mark.parametrize("status", [408, 425, 429, 502, 503, 504])
def test_transient_statuses_without_retry_after(status: int) -> None:
    """408, 425, 429, 502, 503 and 504 raise a transient error with no Retry-After."""
    with pytest.raises(TransientDeliveryError) as caught:
        classify_status(_response(status), NOW)
    assert caught.value.status_code == status
    assert caught.value.retry_after is None
    assert caught.value.detail == f"HTTP {status}"


def test_transient_status_set_is_exactly_the_documented_one() -> None:
    """The transient set is the one OIDC Back-Channel Logout implies, nothing more."""
    assert frozenset({408, 425, 429, 502, 503, 504}) == TRANSIENT_STATUS_CODES


def test_retry_after_delta_seconds_is_honoured() -> None:
    """A 429 with ``Retry-After: 7`` carries retry_after == 7 seconds."""
    with pytest.raises(TransientDeliveryError) as caught:
        classify_status(_response(429, {"retry-after": "7"}), NOW)
    assert caught.value.retry_after == 7.0


def test_retry_after_http_date_is_relative_to_now() -> None:
    """A 503 with an HTTP-date Retry-After one minute ahead carries 60 seconds."""
    headers = {"retry-after": "Thu, 01 Jan 2026 00:01:00 GMT"}
    with pytest.raises(TransientDeliveryError) as caught:
        classify_status(_response(503, headers), NOW)
    assert caught.value.retry_after == 60.0


@pytest.mark.parametrize("value", ["soon", "-3", "1.5", "", "0x10", "\u00b2"])
def test_bad_retry_after_on_transient_status_is_ignored(value: str) -> None:
    """A malformed Retry-After leaves the error transient with retry_after None."""
    with pytest.raises(TransientDeliveryError) as caught:
        classify_status(_response(503, {"retry-after": value}), NOW)
    assert caught.value.retry_after is None
    assert caught.value.status_code == 503


# -- parse_retry_after -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("86400", 86400.0),
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),
        ("Thu, 01 Jan 2026 01:00:00 GMT", 3600.0),
        ("Thu, 01 Jan 2026 00:00:00 GMT", 0.0),
        ("Thu, 01 Jan 2026 02:00:00 +0200", 0.0),
    ],
)
def test_parse_retry_after_valid_values(value: str, expected: float) -> None:
    """Delta-seconds and HTTP dates give the seconds to wait from ``now``."""
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    """An HTTP date already past means "now", never a negative delay."""
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "1e3",
        "0x10",
        "7 seconds",
        "Thu, 99 Foo 2026",
        "\u00b2",
    ],
)
def test_parse_retry_after_bad_values_give_none(value: str | None) -> None:
    """Anything that is neither delta-seconds nor an HTTP date gives None (never raises)."""
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("value", ["Thu, 01 Jan 2026 00:00:30 -0000", "Thu, 01 Jan 2026 00:00:30"])
def test_parse_retry_after_date_without_usable_zone_never_raises(value: str) -> None:
    """A date whose zone is unknown is either read as UTC or ignored, but never crashes."""
    assert parse_retry_after(value, NOW) in (None, 30.0)
