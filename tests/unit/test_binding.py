"""Network and GeoIP binding against the test databases of ``tests/geoip_data.py``.

Addresses used (the networks are listed there):

- ASN: 89.160.20.112 and 89.160.20.130 are AS29518 in 89.160.0.0/17; 216.160.83.56 is AS209;
  12.81.92.10 is AS7018 in 12.81.92.0/22 and 12.81.100.10 is AS7018 in 12.81.96.0/19;
  81.2.69.142 and 2.125.160.216 are not in the ASN database.
- City: 81.2.69.142 and 81.2.69.160 are EU/GB/London, 2.125.160.216 is EU/GB/Boxford,
  89.160.20.112 is EU/SE/Linköping, 216.160.83.56 is NA/US/Milton, 214.0.0.1 is AS/SG and
  214.0.1.1 OC/AU (both AS721 in 214.0.0.0/8); 2.3.3.1 is listed with a continent (EU) but no
  country, 214.1.1.1 is listed with nothing; 1.128.0.1 is not in the City database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

import orchestrator.binding
from orchestrator.binding import (
    BindingModeError,
    BindingOk,
    BindingViolation,
    BoundSession,
    GeoipBinding,
    GeoipClosedError,
    GeoipDatabaseError,
    GeoipReader,
    InvalidAddressError,
    NetworkBinding,
    UnlistedAddressPolicy,
    evaluate,
    is_special_address,
    parse_address,
)
from orchestrator.errors import ConfigurationError
from schemas.events import (
    ASN,
    BINDING_REASONS,
    Geo,
    GeoipBindingChange,
    HttpRequest,
    NetworkBindingChange,
    SessionBindingViolation,
    event_adapter,
)
from tests.geoip_data import GeoipFiles

ALLOW = UnlistedAddressPolicy.ALLOW
ENFORCE = UnlistedAddressPolicy.ENFORCE
N = NetworkBinding
G = GeoipBinding


@pytest.fixture(scope="module")
def databases(geoip_files: GeoipFiles) -> GeoipFiles:
    """The City and ASN test databases (written once per run)."""
    return geoip_files


@pytest.fixture(scope="module")
def reader(databases: GeoipFiles) -> Iterator[GeoipReader]:
    """One reader on both test databases, shared by the module's tests."""
    with GeoipReader(databases.city, databases.asn) as opened:
        yield opened


def bound(
    reader: GeoipReader,
    login_ip: str,
    network: NetworkBinding = N.NO_BINDING,
    geoip: GeoipBinding = G.NO_BINDING,
) -> BoundSession:
    """A session bound at login from ``login_ip``, its facts read from the test databases."""
    return BoundSession.at_login(
        "session-1", reader.lookup(login_ip), network_binding=network, geoip_binding=geoip
    )


# --- the reader -------------------------------------------------------------------------------


def test_lookup_reads_both_databases(reader: GeoipReader) -> None:
    """A listed address gets its ASN, the ASN network, continent, country, city and location."""
    facts = reader.lookup("89.160.20.112")
    assert (facts.ip, facts.asn, facts.as_org, facts.network) == (
        "89.160.20.112",
        29518,
        "Bredband2 AB",
        "89.160.0.0/17",
    )
    assert (facts.continent, facts.country, facts.city) == ("EU", "SE", "Linköping")
    assert (facts.lat, facts.long) == (58.4167, 15.6167)
    assert (facts.asn_listed, facts.city_listed, facts.special) == (True, True, False)


def test_lookup_of_addresses_one_database_lacks(reader: GeoipReader) -> None:
    """An address missing from one database has only the other one's facts."""
    london = reader.lookup("81.2.69.142")
    assert (london.asn, london.network, london.asn_listed) == (None, None, False)
    assert (london.continent, london.country, london.city) == ("EU", "GB", "London")
    telstra = reader.lookup("1.128.0.1")
    assert (telstra.asn, telstra.network, telstra.city_listed) == (1221, "1.128.0.0/11", False)
    assert telstra.continent is None
    empty = reader.lookup("214.1.1.1")
    assert empty.city_listed
    assert (empty.continent, empty.country, empty.city) == (None, None, None)


def test_ipv6_and_ipv4_mapped_addresses(reader: GeoipReader) -> None:
    """IPv6 addresses are looked up, and IPv4-mapped ones as their IPv4 address."""
    assert reader.lookup("2001:480:10::1").city == "San Diego"
    mapped = reader.lookup("::ffff:89.160.20.112")
    assert (mapped.ip, mapped.asn) == ("89.160.20.112", 29518)


@pytest.mark.parametrize(
    "ip", ["10.1.2.3", "192.168.1.10", "127.0.0.1", "::1", "169.254.0.1", "fe80::1%eth0"]
)
def test_private_loopback_and_link_local_are_special(reader: GeoipReader, ip: str) -> None:
    """Private, loopback and link-local addresses are marked special and have no facts."""
    facts = reader.lookup(ip)
    assert facts.special
    assert is_special_address(parse_address(ip))
    assert (facts.asn, facts.continent) == (None, None)


@pytest.mark.parametrize("text", ["not-an-ip", "999.1.1.1", "", "81.2.69.142/32", "1.2.3"])
def test_invalid_ip_text_names_the_value(reader: GeoipReader, text: str) -> None:
    """Text that is not an address is refused with a message naming it."""
    with pytest.raises(InvalidAddressError) as caught:
        reader.lookup(text)
    assert f"{text!r} is not a valid IP address" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_database_file_names_the_path(tmp_path: Path, databases: GeoipFiles) -> None:
    """A database path that does not exist is a configuration error naming it."""
    missing = tmp_path / "GeoIP2-City.mmdb"
    with pytest.raises(GeoipDatabaseError) as caught:
        GeoipReader(missing, databases.asn)
    assert str(missing) in str(caught.value)
    assert "no such file" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)
    with pytest.raises(GeoipDatabaseError, match=r"GeoIP ASN database .*asn\.mmdb: no such file"):
        GeoipReader(databases.city, tmp_path / "asn.mmdb")


def test_file_that_is_not_a_database_names_the_path(tmp_path: Path, databases: GeoipFiles) -> None:
    """A file that is not a MaxMind database is refused, naming it."""
    bogus = tmp_path / "bogus.mmdb"
    bogus.write_bytes(b"not a MaxMind database\n" * 10)
    with pytest.raises(GeoipDatabaseError) as caught:
        GeoipReader(bogus, None)
    assert str(bogus) in str(caught.value)
    assert "not a readable MaxMind database" in str(caught.value)


def test_swapped_databases_are_refused(databases: GeoipFiles) -> None:
    """The ASN database given as the City one (or the reverse) is refused."""
    with pytest.raises(
        GeoipDatabaseError, match=r"City database .*: wrong kind of database \(GeoLite2-ASN\)"
    ):
        GeoipReader(databases.asn, None)
    with pytest.raises(
        GeoipDatabaseError, match=r"ASN database .*: wrong kind of database \(GeoIP2-City\)"
    ):
        GeoipReader(None, databases.city)


def test_absent_database_gives_nothing(databases: GeoipFiles) -> None:
    """With one database left out, its lookups give nothing and the other still answers."""
    with GeoipReader(None, databases.asn) as asn_only:
        facts = asn_only.lookup("89.160.20.112")
        assert (facts.asn, facts.continent, facts.city_listed) == (29518, None, False)
        assert (asn_only.has_asn_database, asn_only.has_city_database) == (True, False)
    with GeoipReader(databases.city, None) as city_only:
        facts = city_only.lookup("89.160.20.112")
        assert (facts.asn, facts.country) == (None, "SE")


def test_close_is_idempotent_and_refuses_later_lookups(databases: GeoipFiles) -> None:
    """After close, lookups raise GeoipClosedError; closing twice is harmless."""
    reader = GeoipReader(databases.city, databases.asn)
    reader.close()
    reader.close()
    assert reader.closed
    with pytest.raises(GeoipClosedError):
        reader.lookup("81.2.69.142")


def test_threads_share_a_reader_and_close_waits_for_them(databases: GeoipFiles) -> None:
    """Threads look up concurrently with correct answers; close stops them cleanly."""
    reader = GeoipReader(databases.city, databases.asn)
    expected = {"89.160.20.112": "SE", "81.2.69.142": "GB", "216.160.83.56": "US"}
    counts = [0] * 4
    outcomes: list[str | None] = [None] * 4
    wrong: list[str] = []
    busy = threading.Event()

    def work(index: int) -> None:
        try:
            while True:
                for ip, country in expected.items():
                    if reader.lookup(ip).country != country:
                        wrong.append(ip)
                    counts[index] += 1
                if min(counts) >= 30:
                    busy.set()
        except GeoipClosedError:
            outcomes[index] = "closed"

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    assert busy.wait(timeout=30), "the lookup threads did not get going"
    reader.close()
    for thread in threads:
        thread.join(timeout=10)
    assert outcomes == ["closed"] * 4
    assert wrong == []


# --- every reason -----------------------------------------------------------------------------


Record = dict[str, Any]
ReasonCase = tuple[
    str, str, NetworkBinding, GeoipBinding, UnlistedAddressPolicy, str, Record, Record
]


def asn(number: int, org: str | None, network: str) -> Record:
    """An ASN record as the binding object carries it."""
    return {"asn": number, "as_org": org, "network": network}


def geo(
    continent: str,
    country: str | None = None,
    city: str | None = None,
    lat: float | None = None,
    long: float | None = None,
) -> Record:
    """A GeoIP record as the binding object carries it."""
    return {"continent": continent, "country": country, "city": city, "lat": lat, "long": long}


# What a session records at login: the whole ASN and GeoIP records of its address.
BREDBAND_AT_LOGIN = asn(29518, "Bredband2 AB", "89.160.0.0/17")
LONDON_AT_LOGIN = geo("EU", "GB", "London", 51.5142, -0.0931)

# One pair of test-database addresses per reason: login, new, modes, policy, expected.
# fmt: off
REASON_CASES: list[ReasonCase] = [
    # the new address has no ASN data (not in the ASN database), policy enforce
    ("89.160.20.112", "81.2.69.142", N.BIND_ASN, G.NO_BINDING, ENFORCE,
     "network.missing", BREDBAND_AT_LOGIN, {}),
    ("89.160.20.112", "216.160.83.56", N.BIND_ASN, G.NO_BINDING, ALLOW,
     "network.asn", BREDBAND_AT_LOGIN, asn(209, None, "216.160.64.0/18")),
    ("12.81.92.10", "12.81.100.10", N.BIND_ASN_NETWORK, G.NO_BINDING, ALLOW,
     "network.asn_network", asn(7018, "AT&T Services", "12.81.92.0/22"),
     asn(7018, None, "12.81.96.0/19")),
    ("89.160.20.112", "89.160.20.130", N.BIND_ASN_NETWORK_IP, G.NO_BINDING, ALLOW,
     "network.ip", BREDBAND_AT_LOGIN, asn(29518, "Bredband2 AB", "89.160.0.0/17")),
    # listed in the City database, but without a country
    ("81.2.69.142", "2.3.3.1", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY, ALLOW,
     "geoip.missing", LONDON_AT_LOGIN, geo("EU")),
    ("81.2.69.142", "216.160.83.56", N.NO_BINDING, G.BIND_CONTINENT, ALLOW,
     "geoip.continent", LONDON_AT_LOGIN, geo("NA", "US", "Milton", 47.2513, -122.3149)),
    ("81.2.69.142", "89.160.20.112", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY, ALLOW,
     "geoip.country", LONDON_AT_LOGIN, geo("EU", "SE", "Linköping", 58.4167, 15.6167)),
    ("81.2.69.142", "2.125.160.216", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY_CITY, ALLOW,
     "geoip.city", LONDON_AT_LOGIN, geo("EU", "GB", "Boxford", 51.75, -1.25)),
]
# fmt: on


@pytest.mark.parametrize(
    ("login", "new", "network", "geoip", "policy", "reason", "previous", "value"),
    REASON_CASES,
)
def test_every_reason(
    reader: GeoipReader,
    login: str,
    new: str,
    network: NetworkBinding,
    geoip: GeoipBinding,
    policy: UnlistedAddressPolicy,
    reason: str,
    previous: Record,
    value: Record,
) -> None:
    """Each of the eight reasons comes from a real pair of test-database addresses."""
    result = evaluate(bound(reader, login, network, geoip), new, reader, policy)
    assert isinstance(result, BindingViolation)
    assert compared(result) == {"reason": reason, "previous_value": previous, "new_value": value}
    assert (result.ip.previous, result.ip.new) == (login, new)
    assert not result.ok


def compared(result: BindingViolation) -> Record:
    """The ``binding`` object as the event and the audit record carry it."""
    return result.binding.model_dump(mode="json")


def test_the_reason_table_covers_every_reason() -> None:
    """The parametrised pairs above produce each reason of the contract exactly once."""
    assert sorted(row[5] for row in REASON_CASES) == sorted(BINDING_REASONS)


def test_violation_describes_the_new_address(reader: GeoipReader) -> None:
    """asn and geo describe the new address, whatever the reason."""
    session = bound(reader, "81.2.69.142", N.NO_BINDING, G.BIND_CONTINENT)
    result = evaluate(session, "216.160.83.56", reader)
    assert isinstance(result, BindingViolation)
    assert result.asn.model_dump() == {"asn": 209, "as_org": None, "network": "216.160.64.0/18"}
    assert result.geo.model_dump() == {
        "continent": "NA",
        "country": "US",
        "city": "Milton",
        "lat": 47.2513,
        "long": -122.3149,
    }


def test_network_is_checked_before_geoip_and_coarsest_first(reader: GeoipReader) -> None:
    """With every level bound, the coarsest change is named: ASN before continent and city."""
    session = bound(reader, "89.160.20.112", N.BIND_ASN_NETWORK_IP, G.BIND_CONTINENT_COUNTRY_CITY)
    result = evaluate(session, "216.160.83.56", reader)
    assert isinstance(result, BindingViolation)
    assert result.reason == "network.asn"
    same_network = evaluate(
        bound(reader, "214.0.0.1", N.BIND_ASN_NETWORK, G.BIND_CONTINENT_COUNTRY_CITY),
        "214.0.1.1",
        reader,
    )
    assert isinstance(same_network, BindingViolation)
    assert compared(same_network) == {
        "reason": "geoip.continent",
        "previous_value": geo("AS", "SG", "Singapore", 1.336, 103.7716),
        "new_value": geo("OC", "AU", "Melbourne", -37.8159, 144.9669),
    }


def test_session_that_recorded_nothing_is_missing(reader: GeoipReader) -> None:
    """A session that recorded no value although its address is listed: *.missing, even allowed."""
    network = BoundSession("s", N.BIND_ASN, ip="89.160.20.112")
    result = evaluate(network, "89.160.20.130", reader, ALLOW)
    assert isinstance(result, BindingViolation)
    assert compared(result) == {
        "reason": "network.missing",
        "previous_value": {},
        "new_value": asn(29518, "Bredband2 AB", "89.160.0.0/17"),
    }
    geoip = BoundSession("s", geoip_binding=G.BIND_CONTINENT, ip="81.2.69.142")
    result = evaluate(geoip, "216.160.83.56", reader, ALLOW)
    assert isinstance(result, BindingViolation)
    assert (result.reason, compared(result)["new_value"]["continent"]) == ("geoip.missing", "NA")
    assert compared(result)["previous_value"] == {}
    unknown = BoundSession("s", N.BIND_ASN_NETWORK_IP)
    result = evaluate(unknown, "89.160.20.130", reader, ALLOW)
    assert isinstance(result, BindingViolation)
    assert result.reason == "network.missing"


def test_listed_address_without_data_is_missing_even_when_allowed(reader: GeoipReader) -> None:
    """214.1.1.1 is in the City database with no continent: geoip.missing under both policies."""
    session = bound(reader, "81.2.69.142", N.NO_BINDING, G.BIND_CONTINENT)
    for policy in UnlistedAddressPolicy:
        result = evaluate(session, "214.1.1.1", reader, policy)
        assert isinstance(result, BindingViolation)
        assert compared(result) == {
            "reason": "geoip.missing",
            "previous_value": LONDON_AT_LOGIN,
            "new_value": {},  # listed with an empty record: the lookup found nothing
        }


# --- ok for every mode ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login", "new", "network", "geoip"),
    [
        ("89.160.20.112", "216.160.83.56", N.NO_BINDING, G.NO_BINDING),
        ("12.81.92.10", "12.81.100.10", N.BIND_ASN, G.NO_BINDING),
        ("89.160.20.112", "89.160.20.130", N.BIND_ASN_NETWORK, G.NO_BINDING),
        ("89.160.20.112", "89.160.20.112", N.BIND_ASN_NETWORK_IP, G.NO_BINDING),
        ("89.160.20.112", "::ffff:89.160.20.112", N.BIND_ASN_NETWORK_IP, G.NO_BINDING),
        ("81.2.69.142", "89.160.20.112", N.NO_BINDING, G.BIND_CONTINENT),
        ("81.2.69.142", "2.125.160.216", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY),
        ("81.2.69.142", "81.2.69.160", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY_CITY),
        ("89.160.20.112", "89.160.20.130", N.BIND_ASN_NETWORK, G.BIND_CONTINENT_COUNTRY_CITY),
    ],
)
def test_ok_for_each_mode(
    reader: GeoipReader, login: str, new: str, network: NetworkBinding, geoip: GeoipBinding
) -> None:
    """An address that keeps every bound level passes, in each mode, under both policies."""
    session = bound(reader, login, network, geoip)
    for policy in UnlistedAddressPolicy:
        result = evaluate(session, new, reader, policy)
        assert isinstance(result, BindingOk)
        assert result.ok
        assert result.facts.ip == str(parse_address(new))


def test_same_address_passes_even_if_the_database_changed(reader: GeoipReader) -> None:
    """The address recorded at login passes even when the recorded facts no longer match."""
    session = BoundSession(
        "s", N.BIND_ASN_NETWORK_IP, G.BIND_CONTINENT_COUNTRY_CITY, ip="89.160.20.112", asn=1
    )
    assert isinstance(evaluate(session, "89.160.20.112", reader, ENFORCE), BindingOk)


# --- private, loopback and unlisted addresses --------------------------------------------------


@pytest.mark.parametrize("new", ["10.20.30.40", "127.0.0.1", "::1", "1.128.0.1"])
def test_unlisted_new_address_allowed(reader: GeoipReader, new: str) -> None:
    """With allow, a private, loopback or unlisted new address passes the levels lacking data."""
    session = bound(reader, "81.2.69.142", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY_CITY)
    assert isinstance(evaluate(session, new, reader, ALLOW), BindingOk)
    assert isinstance(evaluate(session, new, reader), BindingOk)  # allow is the default


@pytest.mark.parametrize("new", ["10.20.30.40", "127.0.0.1", "::1", "1.128.0.1"])
def test_unlisted_new_address_enforced(reader: GeoipReader, new: str) -> None:
    """With enforce, a private, loopback or unlisted new address is geoip.missing."""
    session = bound(reader, "81.2.69.142", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY_CITY)
    result = evaluate(session, new, reader, ENFORCE)
    assert isinstance(result, BindingViolation)
    assert compared(result) == {
        "reason": "geoip.missing",
        "previous_value": LONDON_AT_LOGIN,
        "new_value": {},
    }


@pytest.mark.parametrize(
    ("new", "policy", "reason"),
    [
        ("192.168.1.10", ALLOW, None),
        ("127.0.0.1", ALLOW, None),
        ("192.168.1.10", ENFORCE, "network.missing"),
        ("127.0.0.1", ENFORCE, "network.missing"),
    ],
)
def test_private_and_loopback_against_network_binding(
    reader: GeoipReader, new: str, policy: UnlistedAddressPolicy, reason: str | None
) -> None:
    """Network binding: a private or loopback new address passes if allowed, else is missing."""
    session = bound(reader, "89.160.20.112", N.BIND_ASN_NETWORK, G.BIND_CONTINENT_COUNTRY)
    result = evaluate(session, new, reader, policy)
    if reason is None:
        assert isinstance(result, BindingOk)
    else:
        assert isinstance(result, BindingViolation)
        assert compared(result) == {
            "reason": reason,
            "previous_value": BREDBAND_AT_LOGIN,
            "new_value": {},
        }
        assert result.asn.asn is None
        assert result.geo.continent is None


def test_private_address_still_breaks_ip_binding(reader: GeoipReader) -> None:
    """bind_asn_network_ip compares the IP itself, which a private address has: network.ip."""
    session = bound(reader, "89.160.20.112", N.BIND_ASN_NETWORK_IP)
    result = evaluate(session, "10.0.0.1", reader, ALLOW)
    assert isinstance(result, BindingViolation)
    assert compared(result) == {
        "reason": "network.ip",
        "previous_value": BREDBAND_AT_LOGIN,
        "new_value": {},  # a private address has no ASN record; the addresses are in ip
    }
    assert (result.ip.previous, result.ip.new) == ("89.160.20.112", "10.0.0.1")


@pytest.mark.parametrize("login", ["192.168.1.10", "127.0.0.1"])
def test_session_from_a_private_address(reader: GeoipReader, login: str) -> None:
    """A session bound at a private or loopback address: allow passes, enforce is missing."""
    session = bound(reader, login, N.BIND_ASN, G.BIND_CONTINENT)
    assert (session.asn, session.continent) == (None, None)
    assert isinstance(evaluate(session, "89.160.20.112", reader, ALLOW), BindingOk)
    result = evaluate(session, "89.160.20.112", reader, ENFORCE)
    assert isinstance(result, BindingViolation)
    assert compared(result) == {
        "reason": "network.missing",
        "previous_value": {},  # nothing recorded for a private login address
        "new_value": asn(29518, "Bredband2 AB", "89.160.0.0/17"),
    }


def test_custom_database_data_for_private_addresses_is_ignored(reader: GeoipReader) -> None:
    """A private address counts as unlisted even if recorded facts would match it."""
    session = BoundSession("s", geoip_binding=G.BIND_CONTINENT, ip="81.2.69.142", continent="EU")
    result = evaluate(session, "10.0.0.1", reader, ENFORCE)
    assert isinstance(result, BindingViolation)
    assert compared(result) == {
        "reason": "geoip.missing",
        "previous_value": geo("EU"),
        "new_value": {},
    }


# --- errors -----------------------------------------------------------------------------------


def test_evaluate_refuses_invalid_ip_text(reader: GeoipReader) -> None:
    """The new address must be an IP address; the error names the value."""
    session = bound(reader, "81.2.69.142", N.NO_BINDING, G.BIND_CONTINENT)
    with pytest.raises(InvalidAddressError, match=r"'81\.2\.69\.300' is not a valid IP address"):
        evaluate(session, "81.2.69.300", reader)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"network_binding": "bind_everything"}, "network_binding: 'bind_everything' is not one"),
        ({"geoip_binding": "bind_country"}, "geoip_binding: 'bind_country' is not one of"),
        ({"ip": "localhost"}, "ip: 'localhost' is not a valid IP address"),
        ({"as_network": "12.81.92.0/33"}, "as_network: '12.81.92.0/33' is not a valid network"),
        ({"session_id": ""}, "needs a session_id"),
    ],
)
def test_bound_session_refuses_invalid_values(fields: dict[str, str], message: str) -> None:
    """Invalid modes, addresses and networks are refused with the field and the value."""
    values: dict[str, str] = {"session_id": "s", **fields}
    with pytest.raises(BindingModeError, match=message):
        BoundSession(**values)  # type: ignore[arg-type]


def test_bound_session_accepts_strings_and_normalises() -> None:
    """Modes may be strings (as in sessions import); addresses and networks are normalised."""
    session = BoundSession(
        "s",
        "bind_asn_network",  # type: ignore[arg-type]
        "bind_continent",  # type: ignore[arg-type]
        ip="::ffff:81.2.69.142",
        as_network="2001:0DB8::/32",
    )
    assert session.network_binding is N.BIND_ASN_NETWORK
    assert session.geoip_binding is G.BIND_CONTINENT
    assert (session.ip, session.as_network) == ("81.2.69.142", "2001:db8::/32")


def test_mode_needing_an_absent_database_is_a_configuration_error(databases: GeoipFiles) -> None:
    """A binding mode whose database the reader lacks is a configuration error, not a violation."""
    with GeoipReader(None, databases.asn) as asn_only:
        session = BoundSession("s", geoip_binding=G.BIND_CONTINENT, ip="81.2.69.142")
        with pytest.raises(ConfigurationError, match="needs the GeoIP City database"):
            evaluate(session, "89.160.20.112", asn_only)
    with GeoipReader(databases.city, None) as city_only:
        session = BoundSession("s", N.BIND_ASN, ip="89.160.20.112")
        with pytest.raises(ConfigurationError, match="needs the GeoIP ASN database"):
            evaluate(session, "216.160.83.56", city_only)


# --- the event --------------------------------------------------------------------------------


def test_violation_builds_the_event(reader: GeoipReader) -> None:
    """event() gives a valid session.binding_violation with binding, ip, asn, geo and request."""
    session = bound(reader, "89.160.20.112", N.BIND_ASN)
    result = evaluate(session, "216.160.83.56", reader)
    assert isinstance(result, BindingViolation)
    http = HttpRequest(path="/if/flow/", method="GET", args={"next": "/"}, user_agent="Firefox")
    before = datetime.now(UTC)
    event = result.event("session-1", request=http)
    assert isinstance(event, SessionBindingViolation)
    assert event.type == "session.binding_violation"
    assert isinstance(event.event_id, UUID)
    assert before <= event.occurred_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert (event.session_id, event.initiator, event.actor) == ("session-1", "policy", None)
    assert event.model_dump(mode="json")["binding"] == {
        "reason": "network.asn",
        "previous_value": BREDBAND_AT_LOGIN,
        "new_value": asn(209, None, "216.160.64.0/18"),
    }
    assert event.ip.model_dump() == {"previous": "89.160.20.112", "new": "216.160.83.56"}
    assert event.asn.asn == 209
    assert (event.geo.country, event.geo.city) == ("US", "Milton")
    assert event.http_request == http
    assert event.request is not None
    assert (event.request.ip, event.request.path, event.request.user_agent) == (
        "216.160.83.56",
        "/if/flow/",
        "Firefox",
    )
    parsed = event_adapter.validate_json(event.model_dump_json())
    assert parsed == event


LEGACY_EVENT: Record = {
    "type": "session.binding_violation",
    "event_id": "4b1f6c3e-8f0a-4c1e-9a57-3f1f0e2d9a10",
    "occurred_at": "2026-01-01T12:00:00+00:00",
    "initiator": "policy",
    "session_id": "s-1",
    "ip": {"previous": "89.160.20.112", "new": "216.160.83.56"},
}


# The string shape of earlier releases: reason, previous, new, the records they are read as.
# fmt: off
LEGACY_CASES: list[tuple[str, str | None, str | None, Record, Record]] = [
    ("network.asn", "15169", "1221", {"asn": 15169}, {"asn": 1221}),
    ("network.asn_network", "12.81.92.0/22", "12.81.96.0/19",
     {"network": "12.81.92.0/22"}, {"network": "12.81.96.0/19"}),
    ("network.ip", "89.160.20.112", "89.160.20.130", {}, {}),  # the addresses are in ip
    ("network.missing", "29518", None, {"asn": 29518}, {}),
    ("network.missing", None, "89.160.0.0/17", {}, {"network": "89.160.0.0/17"}),
    ("geoip.continent", "EU", "NA", {"continent": "EU"}, {"continent": "NA"}),
    ("geoip.country", "GB", "SE", {"country": "GB"}, {"country": "SE"}),
    ("geoip.city", "London", "Boxford", {"city": "London"}, {"city": "Boxford"}),
    ("geoip.missing", "EU", None, {"continent": "EU"}, {}),
    ("geoip.missing", "GB", None, {"country": "GB"}, {}),
    ("geoip.missing", "Linköping", None, {"city": "Linköping"}, {}),
]
# fmt: on


@pytest.mark.parametrize(
    ("reason", "previous", "new", "previous_record", "new_record"), LEGACY_CASES
)
def test_events_queued_in_the_string_shape_are_read_as_records(
    reason: str, previous: str | None, new: str | None, previous_record: Record, new_record: Record
) -> None:
    """A rolling upgrade rejects nothing: the old string values become the record they came from."""
    binding = {"reason": reason, "previous_value": previous, "new_value": new}
    event = event_adapter.validate_python({**LEGACY_EVENT, "binding": binding})
    assert isinstance(event, SessionBindingViolation)
    kind = ASN if reason.startswith("network.") else Geo
    empty = dict.fromkeys(kind.model_fields)
    dumped = event.model_dump(mode="json")["binding"]
    assert dumped == {
        "reason": reason,
        "previous_value": {**empty, **previous_record} if previous_record else {},
        "new_value": {**empty, **new_record} if new_record else {},
    }
    assert event_adapter.validate_json(event.model_dump_json()) == event


def test_binding_records_follow_the_reason() -> None:
    """network.* carries ASN records, geoip.* GeoIP ones; a record of the other kind is refused."""
    network = {"reason": "network.asn", "previous_value": {"asn": 1}, "new_value": {"asn": 2}}
    event = event_adapter.validate_python({**LEGACY_EVENT, "binding": network})
    assert isinstance(event, SessionBindingViolation)
    assert isinstance(event.binding, NetworkBindingChange)
    assert event.binding.new_value == ASN(asn=2)
    placed = {"reason": "geoip.country", "previous_value": {"country": "GB"}, "new_value": {}}
    event = event_adapter.validate_python({**LEGACY_EVENT, "binding": placed})
    assert isinstance(event, SessionBindingViolation)
    assert isinstance(event.binding, GeoipBindingChange)
    assert event.binding.new_value == Geo()
    wrong = {"reason": "network.asn", "previous_value": {"country": "GB"}, "new_value": {}}
    with pytest.raises(ValidationError, match=r"previous_value\.country"):
        event_adapter.validate_python({**LEGACY_EVENT, "binding": wrong})
    unknown = {"reason": "network.planet", "previous_value": {}, "new_value": {}}
    with pytest.raises(ValidationError, match=r"network\.planet"):
        event_adapter.validate_python({**LEGACY_EVENT, "binding": unknown})


def test_event_ids_are_fresh_and_initiator_can_be_set(reader: GeoipReader) -> None:
    """Each event gets its own id; initiator and actor are the caller's to set."""
    session = bound(reader, "81.2.69.142", N.NO_BINDING, G.BIND_CONTINENT_COUNTRY)
    result = evaluate(session, "89.160.20.112", reader)
    assert isinstance(result, BindingViolation)
    first = result.event("session-1")
    second = result.event("session-1", "admin", actor="admin-7")
    assert first.event_id != second.event_id
    assert (second.initiator, second.actor) == ("admin", "admin-7")
    assert first.http_request == HttpRequest()


def test_package_exports() -> None:
    """The package's public names are pinned and sorted."""
    exported = orchestrator.binding.__all__
    assert exported == sorted(exported)
    assert set(exported) == {
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
    }
