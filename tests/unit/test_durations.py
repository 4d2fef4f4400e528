"""Durations: every notation, -1 for disabled, exact errors, readings, and the pydantic types."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, Field, ValidationError

from orchestrator.errors import LogoutError
from orchestrator.settings_sources import read_sources
from schemas import durations
from schemas.durations import (
    DAYS_PER_MONTH,
    DAYS_PER_YEAR,
    Duration,
    DurationError,
    DurationUnit,
    Milliseconds,
    OptionalDuration,
    Seconds,
    WholeSeconds,
    describe_duration,
    duration_fields,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("microseconds=7", timedelta(microseconds=7)),
        ("milliseconds=7", timedelta(milliseconds=7)),
        ("seconds=7", timedelta(seconds=7)),
        ("minutes=7", timedelta(minutes=7)),
        ("hours=7", timedelta(hours=7)),
        ("days=7", timedelta(days=7)),
        ("weeks=7", timedelta(weeks=7)),
        ("hours=1,minutes=2,seconds=3", timedelta(hours=1, minutes=2, seconds=3)),
        ("hours=1,minutes=2.5", timedelta(hours=1, minutes=2, seconds=30)),
        ("days=0.5", timedelta(hours=12)),
        ("seconds=.25", timedelta(milliseconds=250)),
        ("milliseconds=1.5", timedelta(microseconds=1500)),
        ("seconds=3.", timedelta(seconds=3)),
        (" hours = 1 , minutes= 30 ", timedelta(hours=1, minutes=30)),
        (
            "weeks=1,days=1,hours=1,minutes=1,seconds=1,milliseconds=1,microseconds=1",
            timedelta(days=8, hours=1, minutes=1, seconds=1, microseconds=1001),
        ),
        ("seconds=0", timedelta(0)),
    ],
)
def test_keyword_form(text: str, expected: timedelta) -> None:
    """Every timedelta keyword, floats, several keys and spaces around ',' and '='."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1y", timedelta(days=365)),
        ("1M", timedelta(days=30)),
        ("1w", timedelta(days=7)),
        ("1d", timedelta(days=1)),
        ("1h", timedelta(hours=1)),
        ("5m", timedelta(minutes=5)),
        ("30s", timedelta(seconds=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("40us", timedelta(microseconds=40)),
        ("40µs", timedelta(microseconds=40)),
        ("40\u03bcs", timedelta(microseconds=40)),
        ("1h30m", timedelta(minutes=90)),
        ("1y2M", timedelta(days=365 + 60)),
        (
            "1y1M1w1d1h1m1s1ms1us",
            timedelta(days=365 + 30 + 7 + 1, hours=1, minutes=1, seconds=1, microseconds=1001),
        ),
        ("30m1h", timedelta(minutes=90)),
        ("1h 30m", timedelta(minutes=90)),
        ("  2d  ", timedelta(days=2)),
        ("1.5h", timedelta(minutes=90)),
        ("0.5M", timedelta(days=15)),
        (".5s", timedelta(milliseconds=500)),
        ("0s", timedelta(0)),
        ("1m1s", timedelta(seconds=61)),
        ("1ms1m", timedelta(minutes=1, milliseconds=1)),
    ],
)
def test_compact_form(text: str, expected: timedelta) -> None:
    """Every unit, combinations in any order, fractions, and m (minutes) apart from M (months)."""
    assert parse_duration(text) == expected


def test_month_and_year_are_fixed_lengths() -> None:
    """A month is 30 days and a year 365 days, as documented."""
    assert (DAYS_PER_MONTH, DAYS_PER_YEAR) == (30, 365)
    assert parse_duration("12M") == timedelta(days=360) != parse_duration("1y")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", timedelta(0)), ("90", timedelta(seconds=90)), ("2.5", timedelta(seconds=2.5))],
)
def test_bare_number_is_seconds(text: str, expected: timedelta) -> None:
    """A bare number is seconds, like a numeric setting; 0 is a valid zero duration."""
    assert parse_duration(text) == expected
    assert parse_duration(text, allow_disabled=False) == expected


def test_minus_one_disables_only_where_allowed() -> None:
    """-1 gives None (disabled) by default and is refused when the caller forbids it."""
    assert parse_duration("-1") is None
    assert parse_duration(" -1 ") is None
    with pytest.raises(DurationError, match=r"'-1'.*not allowed here"):
        parse_duration("-1", allow_disabled=False)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("hourz=1", "unknown key 'hourz'"),
        ("Hours=1", "unknown key 'Hours'"),
        ("hours=1,hours=2", "duplicate key 'hours'"),
        ("hours=1,", "empty item"),
        ("hours=1,,minutes=2", "empty item"),
        ("hours=", "missing number for the value of 'hours'"),
        ("=5", "missing key"),
        ("hours=abc", "'abc' is not a plain decimal number"),
        ("hours=1e3", "'1e3' is not a plain decimal number"),
        ("hours=-1", "the value of 'hours' is negative"),
        ("hours=1,5m", "'5m' is not key=value"),
        ("hours==1", "'=1' is not a plain decimal number"),
        ("1h30", "'30' has no unit"),
        ("1h,30m", "unexpected ',30m'"),
        ("1h30m!", "unexpected '!'"),
        ("abc", "not a duration: 'abc'"),
        ("5H", "unknown unit 'H'"),
        ("1hour", "unknown unit 'hour'"),
        ("1h1h", "duplicate unit 'h'"),
        ("1us2µs", "duplicate unit 'µs'"),
        ("-5m", "'-5m' is negative"),
        ("-2", "number of seconds is negative; -1 alone means disabled"),
        ("-1.0", "is negative"),
        ("+5m", "'+5' is not a plain decimal number"),
        ("1.2.3s", "'1.2.3' is not a plain decimal number"),
        ("1000000000d", "too large"),
        ("9" * 100 + ".0s", "too large"),
    ],
)
def test_malformed_durations_quote_the_text(text: str, problem: str) -> None:
    """A malformed duration raises DurationError quoting the text and naming the problem."""
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert message.startswith(f"invalid duration {text!r}: ")
    assert problem in message
    assert caught.value.text == text
    assert problem in caught.value.problem


def test_duration_error_is_a_value_error_and_a_logout_error() -> None:
    """DurationError fits pydantic validators (ValueError) and the project's exception root."""
    assert issubclass(DurationError, ValueError)
    assert issubclass(DurationError, LogoutError)


def test_long_text_is_shortened_in_the_message() -> None:
    """A very long offending text is quoted in part, and kept whole on the exception."""
    for text in ("x" * 500, "9" * 500 + "s", "1h" + "x" * 500):
        with pytest.raises(DurationError) as caught:
            parse_duration(text)
        assert str(caught.value).startswith(f"invalid duration {text[:120]!r}...")
        assert text not in str(caught.value)
        assert len(str(caught.value)) < 800  # two quotes of 120 and the accepted notations
        assert caught.value.text == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-1"),
        (timedelta(0), "0s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(hours=1, minutes=2, seconds=30), "1h2m30s"),
        (timedelta(days=14), "2w"),
        (timedelta(days=30), "30d"),
        (timedelta(days=15, hours=1), "15d1h"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(microseconds=1001), "1ms1us"),
    ],
)
def test_format_duration(value: timedelta | None, text: str) -> None:
    """The compact form with exact units only; None is -1."""
    assert format_duration(value) == text


@pytest.mark.parametrize(
    "value",
    [
        timedelta(0),
        timedelta(microseconds=1),
        timedelta(days=365, seconds=1, microseconds=999_999),
        timedelta(weeks=3, hours=23),
        timedelta(days=36500),
    ],
)
def test_format_then_parse_round_trips(value: timedelta) -> None:
    """What format_duration writes, parse_duration reads back exactly."""
    assert parse_duration(format_duration(value)) == value


def test_format_refuses_negative() -> None:
    """A negative timedelta has no notation."""
    with pytest.raises(DurationError, match="negative"):
        format_duration(timedelta(seconds=-1))


class Policy(BaseModel):
    """A model with both annotated types, as the settings use them."""

    lifetime: Duration
    idle: OptionalDuration = timedelta(minutes=30)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hours=1,minutes=2.5", timedelta(hours=1, minutes=2, seconds=30)),
        ("1h30m", timedelta(minutes=90)),
        ("1M", timedelta(days=30)),
        (3600, timedelta(hours=1)),
        (2.5, timedelta(seconds=2.5)),
        (0, timedelta(0)),
        ("0", timedelta(0)),
        (timedelta(days=2), timedelta(days=2)),
    ],
)
def test_pydantic_duration_accepts_every_form(raw: object, expected: timedelta) -> None:
    """Duration takes both notations, seconds as int or float, and timedelta."""
    assert Policy.model_validate({"lifetime": raw}).lifetime == expected


@pytest.mark.parametrize("raw", [-1, -1.0, "-1", " -1 ", None])
def test_pydantic_optional_duration_disabled(raw: object) -> None:
    """OptionalDuration turns -1 (number or text) and None into None: disabled."""
    assert Policy.model_validate({"lifetime": "1h", "idle": raw}).idle is None


@pytest.mark.parametrize(
    ("field", "raw", "problem"),
    [
        ("lifetime", -1, "invalid duration '-1': -1 (disabled) is not allowed here"),
        ("lifetime", "-1", "invalid duration '-1': -1 (disabled) is not allowed here"),
        ("lifetime", None, "not NoneType"),
        ("lifetime", True, "not bool"),
        ("lifetime", -5, "invalid duration '-5'"),
        ("lifetime", float("inf"), "invalid duration 'inf'"),
        ("lifetime", timedelta(seconds=-1), "negative"),
        ("lifetime", ["1h"], "not list"),
        ("idle", "5 minutes", "invalid duration '5 minutes'"),
        ("idle", -2, "invalid duration '-2'"),
        ("idle", "hours=1,weeks=x", "invalid duration 'hours=1,weeks=x'"),
    ],
)
def test_pydantic_refusals_name_the_field_and_text(field: str, raw: object, problem: str) -> None:
    """A refused value gives a ValidationError naming the field and quoting the text."""
    data = {"lifetime": "1h", field: raw}
    with pytest.raises(ValidationError) as caught:
        Policy.model_validate(data)
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert problem in error["msg"]


def test_pydantic_serialises_to_the_compact_form_in_json() -> None:
    """JSON output (config show) is the compact form, -1 if disabled; Python output is timedelta."""
    enabled = Policy(lifetime="hours=1,minutes=30", idle="days=14")
    assert enabled.model_dump(mode="json") == {"lifetime": "1h30m", "idle": "2w"}
    assert enabled.model_dump() == {"lifetime": timedelta(minutes=90), "idle": timedelta(days=14)}
    disabled = Policy(lifetime=timedelta(0), idle=None)
    assert disabled.model_dump_json() == '{"lifetime":"0s","idle":"-1"}'
    assert Policy.model_validate_json(disabled.model_dump_json()) == disabled
    assert Policy.model_validate_json(enabled.model_dump_json()) == enabled


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables carry either notation, including the comma of the keyword form."""

    class EnvSettings(BaseModel):
        lifetime: Duration = timedelta(hours=8)
        idle: OptionalDuration = timedelta(minutes=30)

        @classmethod
        def load(cls) -> EnvSettings:
            return cls(**read_sources(cls, "DURATIONTEST_", {}))

    monkeypatch.setenv("DURATIONTEST_LIFETIME", "hours=1,minutes=2.5")
    monkeypatch.setenv("DURATIONTEST_IDLE", "-1")
    settings = EnvSettings.load()
    assert settings.lifetime == timedelta(hours=1, minutes=2, seconds=30)
    assert settings.idle is None
    monkeypatch.setenv("DURATIONTEST_IDLE", "1y2M")
    assert EnvSettings.load().idle == timedelta(days=425)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT30M", timedelta(minutes=30)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H30M", timedelta(days=1, hours=2, minutes=30)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("P1W", timedelta(weeks=1)),
        ("P1M", timedelta(days=DAYS_PER_MONTH)),
        ("P1Y", timedelta(days=DAYS_PER_YEAR)),
        ("P0D", timedelta(0)),
        (" PT1H ", timedelta(hours=1)),
    ],
)
def test_iso_8601(text: str, expected: timedelta) -> None:
    """ISO 8601 durations; M is months before T and minutes after, with our fixed lengths."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("PT", "not an ISO 8601 duration (input is too short)"),
        ("P", "not an ISO 8601 duration"),
        ("PT1H30", "not an ISO 8601 duration"),
        ("Pxx", "not an ISO 8601 duration"),
        ("-PT1H", "negative durations are not allowed"),
    ],
)
def test_bad_iso_8601_says_what_iso_looks_like(text: str, problem: str) -> None:
    """A malformed ISO 8601 duration names the problem, an example, and every notation."""
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert problem in caught.value.problem
    if "ISO" in problem:
        assert "'PT30M'" in caught.value.problem
        assert "keywords 'hours=1,minutes=30'" in caught.value.problem


@pytest.mark.parametrize(
    ("text", "unit", "fix"),
    [
        ("90 minutes", "'minutes'", "write '90m' (m = minutes, M = months)"),
        ("5 mins", "'mins'", "write '5m'"),
        ("1 hour", "'hour'", "write '1h' (h = hours)"),
        ("2days", "'days'", "write '2d'"),
        ("3 Months", "'Months'", "write '3M' (M = months of 30 days, m = minutes)"),
        ("5H", "'H'", "write '5h'"),
    ],
)
def test_unit_words_name_the_unit_problem(text: str, unit: str, fix: str) -> None:
    """A unit written as a word (or in the wrong case) is named, with the fix and the notations."""
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    problem = caught.value.problem
    assert f"unknown unit {unit}" in problem
    assert fix in problem
    assert "accepted: compact '1h30m'" in problem
    assert "ISO 8601 'PT1H30M'" in problem
    assert "a bare number of seconds" in problem


def test_a_space_before_a_known_unit_is_refused_with_the_fix() -> None:
    """'1 h' is not silently read: the message says to write '1h'."""
    with pytest.raises(DurationError, match="a space between '1' and its unit; write '1h'"):
        parse_duration("1 h")


def test_bare_unit_changes_what_a_bare_number_counts() -> None:
    """A bare number counts bare_unit (milliseconds for the *_ms settings); units stay units."""
    assert parse_duration("1500", bare_unit="milliseconds") == timedelta(milliseconds=1500)
    assert parse_duration("2s", bare_unit="milliseconds") == timedelta(seconds=2)
    with pytest.raises(DurationError, match="a bare number of milliseconds"):
        parse_duration("5 mins", bare_unit="milliseconds")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "disabled"),
        (timedelta(0), "0 seconds"),
        (timedelta(days=900), "900 days"),
        (timedelta(minutes=30), "30 minutes"),
        (timedelta(hours=1, minutes=30), "1 hour, 30 minutes"),
        (timedelta(days=1, seconds=1), "1 day, 1 second"),
        (timedelta(milliseconds=250), "250 milliseconds"),
        (timedelta(microseconds=1001), "1 millisecond, 1 microsecond"),
    ],
)
def test_describe_duration(value: timedelta | None, words: str) -> None:
    """Plain words, days never folded into months, so 30M reads 900 days."""
    assert describe_duration(value) == words


def test_describe_reads_the_month_surprise() -> None:
    """The point of the reading: 30M is 900 days, 30m is 30 minutes."""
    assert describe_duration(parse_duration("30M")) == "900 days"
    assert describe_duration(parse_duration("30m")) == "30 minutes"


class Limits(BaseModel):
    """Numeric duration fields with bounds, as the settings declare them."""

    timeout: Seconds = Field(default=5.0, gt=0, le=60)
    lifetime: WholeSeconds = Field(default=120, ge=10, le=120)
    heartbeat: Milliseconds = Field(default=60_000, ge=1_000)


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("timeout", 2.5, 2.5),
        ("timeout", "2.5", 2.5),
        ("timeout", 3, 3.0),
        ("timeout", "1e1", 10.0),
        ("timeout", "500ms", 0.5),
        ("timeout", "PT30S", 30.0),
        ("timeout", "seconds=1.5", 1.5),
        ("timeout", timedelta(seconds=7), 7.0),
        ("lifetime", "2m", 120),
        ("lifetime", "PT1M", 60),
        ("lifetime", 90, 90),
        ("heartbeat", 5000, 5000),
        ("heartbeat", "5000", 5000),
        ("heartbeat", "1m", 60_000),
        ("heartbeat", "PT2.5S", 2500),
        ("heartbeat", timedelta(seconds=3), 3000),
    ],
)
def test_numeric_durations_keep_their_unit(field: str, raw: object, expected: float) -> None:
    """Plain numbers keep their unit (s, or ms); text and timedelta are converted to it."""
    value = getattr(Limits.model_validate({field: raw}), field)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("field", "raw", "problem"),
    [
        ("timeout", "2m", "less than or equal to 60"),
        ("timeout", "0s", "greater than 0"),
        ("timeout", "-1", "greater than 0"),
        ("timeout", "90 minutes", "unknown unit 'minutes'"),
        ("lifetime", "1.5s", "1 second, 500 milliseconds is not a whole number of seconds"),
        ("heartbeat", "1.5ms", "is not a whole number of milliseconds"),
        ("heartbeat", "500", "greater than or equal to 1000"),
        ("heartbeat", "5 mins", "a bare number of milliseconds"),
        ("timeout", timedelta(seconds=-1), "negative"),
    ],
)
def test_numeric_durations_keep_their_bounds(field: str, raw: object, problem: str) -> None:
    """Bounds apply after the conversion; a fraction of a whole unit is refused, named."""
    with pytest.raises(ValidationError) as caught:
        Limits.model_validate({field: raw})
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert problem in error["msg"]


def test_duration_fields_find_every_kind() -> None:
    """duration_fields lists timedelta and numeric duration fields with what they count."""

    class Mixed(Limits):
        idle: OptionalDuration = None
        count: int = 3

    fields = duration_fields(Mixed)
    assert sorted(fields) == ["heartbeat", "idle", "lifetime", "timeout"]
    assert fields["heartbeat"] == DurationUnit("milliseconds", whole=True)
    assert fields["heartbeat"].as_timedelta(1500) == timedelta(milliseconds=1500)
    assert fields["idle"].as_timedelta(None) is None


def test_package_exports() -> None:
    """The package's public names are pinned and sorted, and each is importable from it."""
    exported = list(durations.__all__)
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert set(exported) == {
        "DAYS_PER_MONTH",
        "DAYS_PER_YEAR",
        "DISABLED",
        "NOTATIONS",
        "Duration",
        "DurationError",
        "DurationUnit",
        "Milliseconds",
        "OptionalDuration",
        "Seconds",
        "WholeSeconds",
        "describe_duration",
        "duration_fields",
        "format_duration",
        "parse_duration",
    }
    assert all(hasattr(durations, name) for name in exported)
