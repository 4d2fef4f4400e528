"""SAML LogoutRequests built and signed per second: ours, python3-saml and pysaml2, side by side.

Each contestant builds the same IdP-to-SP LogoutRequest through its own API (Issuer,
Destination, a NameID with Format and SPNameQualifier, a SessionIndex; Reason and
NotOnOrAfter where the library can set them), signs it with the same 2048-bit RSA key
(enveloped signature, RSA-SHA256, SHA-256 digest) and serializes it. One output of each is
checked with the xmlsec1 command before timing; one thread, median of three timed runs.

* ours: ``SamlHandler.logout_request`` + ``sign_enveloped`` + ``serialize`` (lxml,
  python-xmlsec, the key loaded once), and the whole ``backchannel_request`` (with the
  SOAP envelope), also on two threads as the fan-out's signing pool runs it;
* python3-saml: ``OneLogin_Saml2_Logout_Request(settings, name_id=..., ...)`` then
  ``OneLogin_Saml2_Utils.add_sign(xml, key, cert, RSA_SHA256, SHA256)`` (python-xmlsec in
  process; it cannot set Reason or NotOnOrAfter);
* pysaml2: ``Server.create_logout_request(..., sign=True, sign_alg=rsa-sha256,
  digest_alg=sha256)``, which runs the xmlsec1 command for every signature (its default
  crypto backend). Its CPU column counts those child processes too.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.common import (
    RESULTS,
    BenchError,
    add_json_option,
    command_line,
    exit_on_sigterm,
    fmt,
    machine_info,
    machine_line,
    new_parser,
    render_table,
    write_json,
)
from protocols import HostInfo, LogoutContext, ProviderInfo, ProviderSessionInfo
from protocols.saml import SamlHandler, SamlSettings, self_signed, serialize, sign_enveloped

__all__ = ["main"]

IDP = "https://idp.example.com"
SP = "https://sp.example.com/metadata"
SLS = "https://sp.example.com/saml/sls"
NAME_ID = "alice@example.com"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
SESSION_INDEX = "_9c1f0f4e-sp-session"
REASON = "urn:oasis:names:tc:SAML:2.0:logout:user"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"

Build = Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class Keys:
    key_pem: str
    cert_pem: str
    key_path: Path
    cert_path: Path


def _keys(folder: Path) -> Keys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cert_pem = self_signed(key, datetime.now(UTC)).public_bytes(serialization.Encoding.PEM).decode()
    key_path, cert_path = folder / "idp-key.pem", folder / "idp-cert.pem"
    key_path.write_text(key_pem)
    cert_path.write_text(cert_pem)
    return Keys(key_pem, cert_pem, key_path, cert_path)


# -- the contestants --------------------------------------------------------------------


def ours(keys: Keys, folder: Path) -> tuple[Build, Build]:
    """(the signed LogoutRequest, the whole SOAP back-channel request) with our handler."""
    own = SamlSettings(key_file=keys.key_path, cert_file=keys.cert_path)
    handler = SamlHandler(own, HostInfo(issuer=IDP, data_dir=folder))
    settings = handler.validate_settings(
        "sp", {"entity_id": SP, "sls_url": SLS, "sls_binding": "soap"}
    )
    provider = ProviderInfo("sp", "saml", True, False, settings)
    session = ProviderSessionInfo(
        1,
        "s-1",
        "alice",
        "sp",
        {
            "name_id": NAME_ID,
            "name_id_format": EMAIL,
            "sp_name_qualifier": SP,
            "session_index": SESSION_INDEX,
        },
    )
    key = handler.identity.current.signing_key

    def context() -> LogoutContext:
        return LogoutContext("e-1", "logout.user", "user", "d-1", 1, datetime.now(UTC))

    def message() -> bytes:
        built = handler.logout_request(provider, session, context())
        sign_enveloped(built.element, key, after=built.issuer)
        return serialize(built.element)

    def soap() -> bytes:
        return handler.backchannel_request(provider, session, context()).content

    return message, soap


def python3_saml(keys: Keys) -> Build:
    """python3-saml, its roles mirrored: its "SP" is our IdP, its "IdP" the SP we log out."""
    from onelogin.saml2.constants import OneLogin_Saml2_Constants
    from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
    from onelogin.saml2.settings import OneLogin_Saml2_Settings
    from onelogin.saml2.utils import OneLogin_Saml2_Utils

    settings = OneLogin_Saml2_Settings(
        {
            "strict": True,
            "sp": {
                "entityId": IDP,
                "assertionConsumerService": {"url": f"{IDP}/acs"},
                "x509cert": keys.cert_pem,
                "privateKey": keys.key_pem,
                "NameIDFormat": EMAIL,
            },
            "idp": {
                "entityId": SP,
                "singleSignOnService": {"url": f"{SP}/sso"},
                "singleLogoutService": {"url": SLS},
                "x509cert": keys.cert_pem,
            },
        }
    )

    def build() -> bytes:
        request = OneLogin_Saml2_Logout_Request(
            settings,
            name_id=NAME_ID,
            session_index=SESSION_INDEX,
            name_id_format=EMAIL,
            spnq=SP,
        )
        signed: str | bytes = OneLogin_Saml2_Utils.add_sign(
            request.get_xml(),
            keys.key_pem,
            keys.cert_pem,
            sign_algorithm=OneLogin_Saml2_Constants.RSA_SHA256,
            digest_algorithm=OneLogin_Saml2_Constants.SHA256,
        )
        return signed if isinstance(signed, bytes) else signed.encode()

    return build


def pysaml2(keys: Keys, xmlsec1: str) -> Build:
    """pysaml2's IdP (``saml2.server.Server``), signing with its default xmlsec1 backend."""
    from saml2 import BINDING_SOAP
    from saml2.config import IdPConfig
    from saml2.saml import NameID
    from saml2.server import Server

    config = IdPConfig()
    config.load(
        {
            "entityid": IDP,
            "key_file": str(keys.key_path),
            "cert_file": str(keys.cert_path),
            "xmlsec_binary": xmlsec1,
            "service": {
                "idp": {"endpoints": {"single_logout_service": [(f"{IDP}/slo", BINDING_SOAP)]}}
            },
        }
    )
    server = Server(config=config)

    def build() -> bytes:
        name_id = NameID(text=NAME_ID, format=EMAIL, sp_name_qualifier=SP)
        expire = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%SZ")
        _, signed = server.create_logout_request(
            SLS,
            SP,
            name_id=name_id,
            reason=REASON,
            expire=expire,
            session_indexes=[SESSION_INDEX],
            sign=True,
            sign_alg=RSA_SHA256,
            digest_alg=SHA256,
        )
        return str(signed).encode()

    return build


# -- measuring --------------------------------------------------------------------------


def _check(name: str, output: bytes, keys: Keys, xmlsec1: str, folder: Path) -> None:
    """The output is a LogoutRequest whose signature xmlsec1 verifies with the key's cert."""
    path = folder / f"{name.split()[0]}.xml"
    path.write_bytes(output)
    result = subprocess.run(
        [
            xmlsec1,
            "--verify",
            "--pubkey-cert-pem",
            str(keys.cert_path),
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0 or NAME_ID.encode() not in output:
        raise BenchError(f"{name}: xmlsec1 did not verify its LogoutRequest:\n{result.stderr}")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True, slots=True)
class Run:
    ops: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


def _timed(build: Build, seconds: float, threads: int) -> Run:
    started, cpu = time.perf_counter(), _cpu()
    deadline = started + seconds
    if threads == 1:
        ops = 0
        while time.perf_counter() < deadline:
            build()
            ops += 1
    else:

        def loop() -> int:
            done = 0
            while time.perf_counter() < deadline:
                build()
                done += 1
            return done

        with ThreadPoolExecutor(threads) as pool:
            ops = sum(pool.map(lambda _: loop(), range(threads)))
    return Run(ops, time.perf_counter() - started, _cpu() - cpu)


def measure(build: Build, seconds: float, runs: int, threads: int = 1) -> tuple[Run, list[Run]]:
    """Warm up, then ``runs`` timed runs of ``seconds``; the median run (by rate) and all."""
    for _ in range(5):
        build()
    timed = [_timed(build, seconds, threads) for _ in range(runs)]
    median = statistics.median_low([r.rate for r in timed])
    return next(r for r in timed if r.rate == median), timed


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("saml_sign", __doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one timed run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contestant")
    add_json_option(parser, RESULTS / "saml_sign.json")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    xmlsec1 = shutil.which("xmlsec1")
    if xmlsec1 is None:
        raise BenchError("the xmlsec1 command is needed (apt-get install xmlsec1)")
    versions = {
        "lxml": version("lxml"),
        "xmlsec": version("xmlsec"),
        "python3-saml": version("python3-saml"),
        "pysaml2": version("pysaml2"),
        "xmlsec1": subprocess.run(
            [xmlsec1, "--version"], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .removeprefix("xmlsec1 "),
    }
    info = machine_info(versions)
    with tempfile.TemporaryDirectory(prefix="saml-bench-") as tmp:
        folder = Path(tmp)
        keys = _keys(folder)
        message, soap = ours(keys, folder)
        contestants: list[tuple[str, Build, int, str]] = [
            ("ours: LogoutRequest", message, 1, "lxml + python-xmlsec, key loaded once"),
            ("ours: SOAP back-channel request", soap, 1, "`SamlHandler.backchannel_request`"),
            ("ours: SOAP back-channel request", soap, 2, "2 threads (the fan-out's pool)"),
            ("python3-saml", python3_saml(keys), 1, "no Reason, no NotOnOrAfter (API)"),
            ("pysaml2", pysaml2(keys, xmlsec1), 1, "xmlsec1 command per signature"),
        ]
        for name, build, _, _ in contestants:
            _check(name, build(), keys, xmlsec1, folder)
        rows: list[list[str]] = []
        results: list[dict[str, Any]] = []
        for name, build, threads, note in contestants:
            best, timed = measure(build, args.seconds, args.runs, threads)
            spread = f"{min(r.rate for r in timed):,.0f} to {max(r.rate for r in timed):,.0f}/s"
            rows.append(
                [
                    name,
                    str(threads),
                    f"{best.ops:,}",
                    fmt(best.rate, 0),
                    fmt(best.seconds / best.ops * 1e6, 0),
                    fmt(best.cpu / best.ops * 1e3, 3),
                    f"{note}; runs {spread}",
                ]
            )
            results.append(
                {
                    "contestant": name,
                    "threads": threads,
                    "runs": [{"ops": r.ops, "seconds": r.seconds, "cpu": r.cpu} for r in timed],
                    "median_ops_per_s": best.rate,
                }
            )
            print(f"{name} ({threads} thread(s)): {best.rate:,.0f}/s", file=sys.stderr)
    shown = ", ".join(f"{k} {v}" for k, v in versions.items())
    print(f"\nMachine: {machine_line(info, shown)}\n")
    print(
        render_table(
            ["contestant", "threads", "ops", "ops/s", "µs/op", "CPU ms/op", "notes"],
            "lrrrrrl",
            rows,
        )
    )
    if args.json:
        write_json(
            args.json,
            {"command": command_line("saml_sign", argv), "machine": info, "results": results},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
