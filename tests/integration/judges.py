"""Independent SAML service providers as judges: Shibboleth SP 3 (Apache httpd with
``mod_shib`` and ``shibd``) and SimpleSAMLphp (PHP's built-in server), each from Debian's
packages, with every file of its configuration in a directory of its own: its key pair
(generated here), its settings and the IdP metadata given, byte for byte. When the tests run
as root both run as ``www-data`` (Apache refuses to serve as root); the directory is that
user's.

Each is reached through a recording reverse proxy on its public address (both ports from
:func:`server_port`), as an SP behind a load balancer: the SP builds its URLs, and checks a
message's ``Destination``, with that address, and the test reads what it answered (a SOAP
LogoutResponse's signature algorithm, say) from :meth:`_Judge.exchanges`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import pytest

from tests.saml_support import KeyPair, make_pair

from .servers import server_port
from .support import missing, tcp_reachable, wait_until

__all__ = ["Exchange", "ShibbolethSp", "SimpleSamlPhpSp"]

_START_TIMEOUT = 30.0
_RUN_AS = "www-data"
_APACHE = Path("/usr/sbin/apache2")
_APACHE_MODULES = Path("/usr/lib/apache2/modules")
_SHIBD = Path("/usr/sbin/shibd")
_SHIB_ETC = Path("/etc/shibboleth")  # the package's attribute map and policies
_SIMPLESAMLPHP = Path("/usr/share/simplesamlphp")
_PHP = Path("/usr/bin/php")


def _need(path: Path, package: str, what: str) -> None:
    if not path.exists():
        missing(
            f"{path} is missing ({what})",
            f"./scripts/test installs Debian's {package} unless LOGOUT_TEST_NO_APT=1 "
            f"(or: apt-get install {package})",
        )


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request through the proxy and the judge's answer."""

    method: str
    path: str
    request: bytes
    status: int
    response: bytes
    location: str | None


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream: str) -> None:
        super().__init__(("127.0.0.1", port), _Forward)
        self.upstream = upstream
        self.lock = threading.Lock()
        self.exchanges: list[Exchange] = []


class _Forward(BaseHTTPRequestHandler):
    server: _Proxy

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        answer = httpx.request(
            self.command,
            self.server.upstream + self.path,
            headers=headers,
            content=body,
            timeout=30,
        )
        with self.server.lock:
            self.server.exchanges.append(
                Exchange(
                    self.command,
                    self.path,
                    body,
                    answer.status_code,
                    answer.content,
                    answer.headers.get("location"),
                )
            )
        self.send_response(answer.status_code)
        for name, value in answer.headers.multi_items():
            if name.lower() not in _HOP_BY_HOP | {"content-encoding", "date", "server"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_HEAD = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Judge:
    """A directory of its own, processes started in it (as ``www-data`` under root) that
    listen on ``backend_port``, the recording proxy in front of them on ``port``, and their
    stop at :meth:`close`."""

    name = "judge"

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=f"logout-test-{self.name}-"))
        self.port = server_port()
        self.backend_port = server_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._proxy = _Proxy(self.port, f"http://127.0.0.1:{self.backend_port}")
        self._proxy_thread = threading.Thread(
            target=self._proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._proxy_thread.start()
        self._prefix: list[str] = []
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam(_RUN_AS)
            self._prefix = ["runuser", "-u", _RUN_AS, "--"]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.key_pair: KeyPair = make_pair(self.directory, "sp")

    def _own(self) -> None:
        """Hand the directory to the user the judge runs as."""
        if self._user is None:
            return
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> None:
        with (self.directory / log).open("ab") as out:
            self.processes.append(
                subprocess.Popen(
                    [*self._prefix, *args],
                    cwd=self.directory,
                    env={**os.environ, **(env or {})},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            )

    def _wait_http(self, path: str, logs: list[str]) -> None:
        def answers() -> bool:
            if any(p.poll() is not None for p in self.processes):
                return True
            if not tcp_reachable("127.0.0.1", self.backend_port, timeout=0.2):
                return False
            try:
                return httpx.get(self.base_url + path, timeout=2).status_code < 500
            except httpx.HTTPError:
                return False

        if wait_until(answers, _START_TIMEOUT, interval=0.1) is None or any(
            p.poll() is not None for p in self.processes
        ):
            self.close()
            tails = "\n".join(f"{log}:\n{self._tail(log)}" for log in logs)
            pytest.fail(f"{self.name} did not come up on {self.base_url}\n{tails}", pytrace=False)

    def _tail(self, log: str) -> str:
        try:
            return (self.directory / log).read_text(errors="replace")[-3000:]
        except OSError:
            return "(none)"

    def exchanges(self, path: str) -> list[Exchange]:
        """What went through the proxy to ``path`` (without its query), oldest first."""
        with self._proxy.lock:
            return [e for e in self._proxy.exchanges if e.path.split("?")[0] == path]

    def close(self) -> None:
        """Stop the proxy and every process (SIGTERM to its group, SIGKILL after 10 s);
        delete the files."""
        self._proxy.shutdown()
        self._proxy.server_close()
        self._proxy_thread.join(timeout=10)
        for process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        self.processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_LOGGER = """log4j.rootCategory=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.fileName={path}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=%d{{%H:%M:%S}} %p %c %x: %m%n
"""

_SHIBBOLETH2 = """<SPConfig xmlns="urn:mace:shibboleth:3.0:native:sp:config"
    xmlns:conf="urn:mace:shibboleth:3.0:native:sp:config" clockSkew="180">
  <OutOfProcess logger="{dir}/shibd.logger"/>
  <InProcess logger="{dir}/native.logger"/>
  <UnixListener address="{dir}/shibd.sock"/>
  <ApplicationDefaults entityID="{entity_id}" REMOTE_USER="eppn" signing="true">
    <Sessions lifetime="28800" timeout="3600" relayState="ss:mem" checkAddress="false"
        handlerSSL="false" cookieProps="http" redirectLimit="exact">
      <SSO entityID="{idp_entity_id}">SAML2</SSO>
      <Logout>SAML2 Local</Logout>
      <Handler type="MetadataGenerator" Location="/Metadata" signing="false"/>
      <Handler type="Status" Location="/Status" acl="127.0.0.1 ::1"/>
      <Handler type="Session" Location="/Session" showAttributeValues="false"/>
    </Sessions>
    <Errors supportContact="root@localhost"/>
    <MetadataProvider type="XML" validate="true" path="{dir}/idp-metadata.xml"/>
    <AttributeExtractor type="XML" validate="true" reloadChanges="false"
        path="{etc}/attribute-map.xml"/>
    <CredentialResolver type="File" use="signing" key="{key}" certificate="{cert}"/>
  </ApplicationDefaults>
  <SecurityPolicyProvider type="XML" validate="true" path="{etc}/security-policy.xml"/>
  <ProtocolProvider type="XML" validate="true" reloadChanges="false" path="{etc}/protocols.xml"/>
</SPConfig>
"""

_HTTPD = """ServerRoot "{dir}"
ServerName 127.0.0.1:{public_port}
UseCanonicalName On
Listen 127.0.0.1:{port}
PidFile "{dir}/httpd.pid"
DefaultRuntimeDir "{dir}"
Mutex file:{dir} default
ErrorLog "{dir}/httpd-error.log"
LogLevel warn
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule mod_shib {modules}/mod_shib.so
StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
ShibConfig "{dir}/shibboleth2.xml"
<Location /Shibboleth.sso>
  SetHandler shib
  Require all granted
</Location>
"""


class ShibbolethSp(_Judge):
    """Shibboleth SP 3: ``shibd`` and Apache httpd with ``mod_shib``, trusting the IdP of
    ``idp_metadata`` (kept byte for byte), signing its messages (``signing="true"``) with a
    key pair of its own. Its handlers are under ``/Shibboleth.sso``: ``SAML2/POST`` (the ACS),
    ``SLO/SOAP``, ``Metadata`` and ``Session``."""

    name = "shibboleth"

    def __init__(self, idp_metadata: bytes, idp_entity_id: str) -> None:
        for path, what in ((_SHIBD, "shibd"), (_APACHE_MODULES / "mod_shib.so", "mod_shib")):
            _need(path, "libapache2-mod-shib", f"Shibboleth SP's {what}")
        super().__init__()
        self.entity_id = f"{self.base_url}/shibboleth"
        d = self.directory
        (d / "idp-metadata.xml").write_bytes(idp_metadata)
        (d / "shibd.logger").write_text(_LOGGER.format(path=d / "shibd.log"))
        (d / "native.logger").write_text(_LOGGER.format(path=d / "native.log"))
        (d / "shibboleth2.xml").write_text(
            _SHIBBOLETH2.format(
                dir=d,
                etc=_SHIB_ETC,
                entity_id=self.entity_id,
                idp_entity_id=idp_entity_id,
                key=self.key_pair.key_path,
                cert=self.key_pair.cert_path,
            )
        )
        (d / "httpd.conf").write_text(
            _HTTPD.format(
                dir=d, port=self.backend_port, public_port=self.port, modules=_APACHE_MODULES
            )
        )

    def handler(self, path: str) -> str:
        """The URL of one of its handlers (``Metadata``, ``SAML2/POST``, ``Session`` ...)."""
        return f"{self.base_url}/Shibboleth.sso/{path}"

    def start(self) -> Self:
        """Start shibd, then Apache; returns once the metadata handler answers."""
        self._own()
        config = str(self.directory / "shibboleth2.xml")
        self._spawn(
            [str(_SHIBD), "-F", "-f", "-c", config, "-p", str(self.directory / "shibd.pid")],
            "shibd.out",
        )
        if wait_until(lambda: (self.directory / "shibd.sock").exists(), _START_TIMEOUT) is None:
            self.close()
            pytest.fail(f"shibd did not start:\n{self._tail('shibd.out')}", pytrace=False)
        self._spawn(
            [str(_APACHE), "-d", str(self.directory), "-f", "httpd.conf", "-DFOREGROUND"],
            "httpd.out",
        )
        self._wait_http("/Shibboleth.sso/Metadata", ["shibd.log", "httpd-error.log"])
        return self

    def session(self, cookies: httpx.Cookies) -> str:
        """What its Session handler shows for the browser holding ``cookies``."""
        return httpx.get(self.handler("Session"), cookies=cookies, timeout=10).text

    def logs(self) -> str:
        """shibd's log (for a failing test's message)."""
        return self._tail("shibd.log")


_SSP_CONFIG = """<?php
$config = [
    'baseurlpath' => '{base_url}/',
    'certdir' => '{dir}/',
    'loggingdir' => '{dir}/',
    'datadir' => '{dir}/',
    'tempdir' => '{dir}/tmp',
    'technicalcontact_name' => 'logout-orchestrator tests',
    'technicalcontact_email' => 'tests@example.org',
    'secretsalt' => '{secret}',
    'auth.adminpassword' => '{secret}',
    'admin.protectindexpage' => true,
    'admin.protectmetadata' => false,
    'timezone' => 'UTC',
    'logging.level' => SimpleSAML\\Logger::DEBUG,
    'logging.handler' => 'file',
    'logging.logfile' => 'simplesamlphp.log',
    'session.cookie.secure' => false,
    'session.phpsession.savepath' => '{dir}/sessions',
    'store.type' => 'phpsession',
    'enable.saml20-idp' => false,
    'trusted.url.domains' => ['127.0.0.1:{port}'],
    'metadata.sources' => [['type' => 'xml', 'file' => '{dir}/idp-metadata.xml']],
];
"""

_SSP_AUTHSOURCES = """<?php
$config = [
    'admin' => ['core:AdminPassword'],
    'default-sp' => [
        'saml:SP',
        'entityID' => '{entity_id}',
        'idp' => '{idp_entity_id}',
        'privatekey' => '{key}',
        'certificate' => '{cert}',
        'sign.logout' => true,
        'validate.logout' => true,
        'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    ],
];
"""


class SimpleSamlPhpSp(_Judge):
    """SimpleSAMLphp 1.19 as an SP (a ``saml:SP`` auth source, ``default-sp``) under PHP's
    built-in server, trusting the IdP of ``idp_metadata`` read as XML (``metadata.sources``
    of type ``xml``: the file byte for byte), signing its logout messages (``sign.logout``)
    and checking ours (``validate.logout``) with a key pair of its own."""

    name = "simplesamlphp"
    source = "default-sp"

    def __init__(self, idp_metadata: bytes, idp_entity_id: str) -> None:
        _need(_SIMPLESAMLPHP / "www" / "module.php", "simplesamlphp", "SimpleSAMLphp")
        _need(_PHP, "php-cli", "PHP's command line and built-in server")
        for extension, package in (("dom", "php-xml"), ("mbstring", "php-mbstring")):
            check = f"exit(extension_loaded('{extension}') ? 0 : 1);"
            if subprocess.run([str(_PHP), "-r", check], check=False, timeout=30).returncode:
                missing(
                    f"PHP's {extension} extension is missing (SimpleSAMLphp needs it; Debian's "
                    "simplesamlphp does not depend on it)",
                    f"./scripts/test installs Debian's {package} unless LOGOUT_TEST_NO_APT=1 "
                    f"(or: apt-get install {package})",
                )
        super().__init__()
        self.entity_id = f"{self.base_url}/sp"
        d = self.directory
        for sub in ("config", "sessions", "tmp"):
            (d / sub).mkdir()
        (d / "idp-metadata.xml").write_bytes(idp_metadata)
        secret = secrets.token_hex(16)
        (d / "config" / "config.php").write_text(
            _SSP_CONFIG.format(base_url=self.base_url, dir=d, port=self.port, secret=secret)
        )
        (d / "config" / "authsources.php").write_text(
            _SSP_AUTHSOURCES.format(
                entity_id=self.entity_id,
                idp_entity_id=idp_entity_id,
                key=self.key_pair.key_path,
                cert=self.key_pair.cert_path,
            )
        )

    def url(self, path: str) -> str:
        """The URL of one of the SP's pages: ``metadata.php``, ``saml2-acs.php`` ... of its
        ``saml`` module for the auth source."""
        return f"{self.base_url}/module.php/saml/sp/{path}/{self.source}"

    @property
    def login_url(self) -> str:
        """The auth source's test page: it shows the session, or sends the browser to the
        IdP (a redirect) when there is none."""
        return f"{self.base_url}/module.php/core/authenticate.php?as={self.source}"

    def start(self) -> Self:
        """Start PHP's built-in server on SimpleSAMLphp's ``www``; returns once the SP's
        metadata answers."""
        self._own()
        self._spawn(
            [
                str(_PHP),
                "-S",
                f"127.0.0.1:{self.backend_port}",
                "-t",
                str(_SIMPLESAMLPHP / "www"),
            ],
            "php.out",
            env={"SIMPLESAMLPHP_CONFIG_DIR": str(self.directory / "config")},
        )
        self._wait_http(
            f"/module.php/saml/sp/metadata.php/{self.source}", ["php.out", "simplesamlphp.log"]
        )
        return self

    def logs(self) -> str:
        """SimpleSAMLphp's log (for a failing test's message)."""
        return self._tail("simplesamlphp.log")
