"""The parts of a stream change without a server: which problems name the receiver's field
and which the stream, the verification interval, and what an audit record says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.problems import ApiProblem
from api.ssf_stream_changes import check_interval, described, receiver_problem
from protocols.ssf import StreamSettings
from schemas.errors import Problem

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "where", "named"),
    [
        ("endpoint_url", "body", "delivery.endpoint_url"),
        ("subject_format", "body", "format"),
        ("status_reason", "body", "reason"),
        ("aud", "body", "aud"),
        ("owner", "stream 's-1'", "owner"),
        ("allow_http", "stream 's-1'", "allow_http"),
    ],
)
def test_a_problem_names_the_receivers_field_or_the_stream(
    field: str, where: str, named: str
) -> None:
    """A field the receiver sent is named as in its body; one this service stored (the
    owner, allow_http) names the stream instead of blaming the body."""
    problem = receiver_problem("s-1", Problem("provider 'ssf-s-1'", field, "bad"))
    assert (problem.where, problem.field, problem.message) == (where, named, "bad")


def _stream(last: datetime | None) -> StreamSettings:
    return StreamSettings(
        endpoint_url="https://rx.example/push", aud="rx", verification_requested_at=last
    )


def test_a_verification_within_the_interval_is_refused_with_retry_after() -> None:
    check_interval(_stream(None), 30, NOW)
    check_interval(_stream(NOW - timedelta(seconds=30)), 30, NOW)
    with pytest.raises(ApiProblem) as raised:
        check_interval(_stream(NOW - timedelta(seconds=10.5)), 30, NOW)
    assert raised.value.status == 429
    assert raised.value.headers == {"Retry-After": "20"}


def test_an_audit_description_never_holds_the_authorization_header() -> None:
    settings = {
        "endpoint_url": "https://user:pw@rx.example/push",
        "authorization": "Bearer rx-secret",
        "aud": "rx",
    }
    text = repr(described(settings))
    assert "rx-secret" not in text
    assert "pw@" not in text
    assert described(settings)["authorization_header"] is True
