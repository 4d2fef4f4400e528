"""Unit tests of ``load_handlers``: protocol handlers found through entry points.

Each test installs a fake distribution (a module plus a ``.dist-info`` folder with an
``entry_points.txt``) in ``tmp_path`` and puts it on ``sys.path``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator import HandlerLoadError, Settings
from orchestrator.errors import ConfigurationError
from orchestrator.handlers import load_handlers
from protocols import ENTRY_POINT_GROUP, NoSettings, ProtocolHandler, available_protocols

HANDLERS_SOURCE = """
from protocols import ProtocolHandler


class GoodHandler(ProtocolHandler):
    protocol = "good"


class OtherGoodHandler(ProtocolHandler):
    protocol = "good2"


class MismatchHandler(ProtocolHandler):
    protocol = "something-else"


class NotAHandler:
    protocol = "plain"


def factory(settings, host):
    return GoodHandler(settings, host)


class FailingHandler(ProtocolHandler):
    protocol = "failing"

    def __init__(self, settings, host):
        raise RuntimeError("needs a signing key")
"""

BROKEN_SOURCE = 'raise ImportError("the xmlsec library is not installed")\n'

#: Install a fake distribution: module sources by name, entry points by protocol name.
Install = Callable[[Mapping[str, str], Mapping[str, str]], str]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Install fake distributions under ``tmp_path``; returns the module-name prefix used."""
    prefix = f"lo_fake_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("LOGOUT_PROTOCOLS", raising=False)
    monkeypatch.delenv("LOGOUT_CONFIG", raising=False)
    count = 0

    def make(modules: Mapping[str, str], entries: Mapping[str, str]) -> str:
        nonlocal count
        count += 1
        for name, source in modules.items():
            (site / f"{prefix}_{name}.py").write_text(source)
        info = site / f"{prefix}_dist{count}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {prefix}-dist{count}\nVersion: 0.1\n"
        )
        lines = [f"[{ENTRY_POINT_GROUP}]"]
        lines += [f"{name} = {prefix}_{value}" for name, value in entries.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        importlib.invalidate_caches()
        return prefix

    yield make
    for name in [m for m in sys.modules if m.startswith(prefix)]:
        del sys.modules[name]


def _settings(tmp_path: Path, protocols: list[str] | None) -> Settings:
    return Settings.load(None, data_dir=tmp_path, protocols=protocols)


def _module(prefix: str, name: str) -> ModuleType:
    return importlib.import_module(f"{prefix}_{name}")


ALL_ENTRIES = {
    "good": "handlers:GoodHandler",
    "good2": "handlers:OtherGoodHandler",
    "broken": "broken:Handler",
    "plain": "handlers:NotAHandler",
    "func": "handlers:factory",
    "mismatch": "handlers:MismatchHandler",
    "failing": "handlers:FailingHandler",
    "nosuchattr": "handlers:NoSuchClass",
}
ALL_MODULES = {"handlers": HANDLERS_SOURCE, "broken": BROKEN_SOURCE}


def test_good_handler_loads(install: Install, tmp_path: Path) -> None:
    """An enabled handler loads as an instance of its class, built with its own (empty)
    settings and what it may know of the host."""
    prefix = install(ALL_MODULES, ALL_ENTRIES)
    settings = _settings(tmp_path, ["good"])
    handlers = load_handlers(settings)
    assert list(handlers) == ["good"]
    handler = handlers["good"]
    assert isinstance(handler, _module(prefix, "handlers").GoodHandler)
    assert isinstance(handler, ProtocolHandler)
    assert handler.protocol == "good"
    assert handler.settings == NoSettings()
    assert handler.host.issuer == settings.issuer
    assert handler.host.data_dir == settings.data_dir


def test_several_handlers_load_from_several_distributions(install: Install, tmp_path: Path) -> None:
    """Handlers from two installed distributions load together, one instance each."""
    install({"handlers": HANDLERS_SOURCE}, {"good": "handlers:GoodHandler"})
    install({}, {"good2": "handlers:OtherGoodHandler"})
    handlers = load_handlers(_settings(tmp_path, ["good", "good2"]))
    assert sorted(handlers) == ["good", "good2"]
    assert handlers["good"] is not handlers["good2"]
    assert handlers["good2"].protocol == "good2"


def test_available_protocols_lists_installed_entry_points(install: Install) -> None:
    """Every installed entry point is listed, loadable or not."""
    install(ALL_MODULES, ALL_ENTRIES)
    assert set(ALL_ENTRIES) <= set(available_protocols())


def test_missing_protocol_is_named(install: Install, tmp_path: Path) -> None:
    """Enabling a protocol nobody installed raises HandlerLoadError naming it."""
    install(ALL_MODULES, {"good": "handlers:GoodHandler"})
    with pytest.raises(HandlerLoadError) as caught:
        load_handlers(_settings(tmp_path, ["good", "missing"]))
    message = str(caught.value)
    assert "missing" in message
    assert "not installed" in message
    assert "good" in message  # the installed ones are listed to help
    assert isinstance(caught.value, ConfigurationError)


def test_import_error_names_the_protocol(install: Install, tmp_path: Path) -> None:
    """A handler module that fails to import gives HandlerLoadError naming the protocol."""
    install(ALL_MODULES, ALL_ENTRIES)
    with pytest.raises(HandlerLoadError) as caught:
        load_handlers(_settings(tmp_path, ["good", "broken"]))
    message = str(caught.value)
    assert "'broken'" in message
    assert "ImportError" in message
    assert "xmlsec" in message
    assert isinstance(caught.value.__cause__, ImportError)


def test_missing_attribute_names_the_protocol(install: Install, tmp_path: Path) -> None:
    """An entry point naming a class the module lacks gives HandlerLoadError."""
    install(ALL_MODULES, ALL_ENTRIES)
    with pytest.raises(HandlerLoadError, match="'nosuchattr'"):
        load_handlers(_settings(tmp_path, ["nosuchattr"]))


@pytest.mark.parametrize("protocol", ["plain", "func"])
def test_not_a_handler_subclass_is_refused(install: Install, tmp_path: Path, protocol: str) -> None:
    """An entry point to a plain class or a function is refused as not a ProtocolHandler."""
    install(ALL_MODULES, ALL_ENTRIES)
    with pytest.raises(HandlerLoadError) as caught:
        load_handlers(_settings(tmp_path, [protocol]))
    assert f"'{protocol}'" in str(caught.value)
    assert "not a ProtocolHandler subclass" in str(caught.value)


def test_protocol_name_mismatch_is_refused(install: Install, tmp_path: Path) -> None:
    """A handler whose ``protocol`` differs from its entry-point name is refused."""
    install(ALL_MODULES, ALL_ENTRIES)
    with pytest.raises(HandlerLoadError) as caught:
        load_handlers(_settings(tmp_path, ["mismatch"]))
    assert "'mismatch'" in str(caught.value)
    assert "'something-else'" in str(caught.value)


def test_handler_failing_to_start_is_named(install: Install, tmp_path: Path) -> None:
    """A handler whose constructor raises gives HandlerLoadError naming it and the cause."""
    install(ALL_MODULES, ALL_ENTRIES)
    with pytest.raises(HandlerLoadError) as caught:
        load_handlers(_settings(tmp_path, ["failing"]))
    assert "'failing'" in str(caught.value)
    assert "needs a signing key" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_empty_protocol_list_loads_nothing(install: Install, tmp_path: Path) -> None:
    """``protocols=[]`` loads no handler even though some are installed (and some broken)."""
    install(ALL_MODULES, ALL_ENTRIES)
    assert "good" in available_protocols()
    assert load_handlers(_settings(tmp_path, [])) == {}


def test_none_loads_every_installed_handler(install: Install, tmp_path: Path) -> None:
    """``protocols=None`` loads every installed handler, the fake ones included."""
    prefix = install({"handlers": HANDLERS_SOURCE}, {"good": "handlers:GoodHandler"})
    install({}, {"good2": "handlers:OtherGoodHandler"})
    settings = _settings(tmp_path, None)
    assert settings.protocols is None
    handlers = load_handlers(settings)
    assert {"good", "good2"} <= set(handlers)
    assert set(handlers) == set(available_protocols())
    assert isinstance(handlers["good"], _module(prefix, "handlers").GoodHandler)


def test_none_with_a_broken_handler_installed_fails(install: Install, tmp_path: Path) -> None:
    """With every installed handler enabled, a broken one stops the start-up."""
    install(ALL_MODULES, {"good": "handlers:GoodHandler", "broken": "broken:Handler"})
    with pytest.raises(HandlerLoadError, match="'broken'"):
        load_handlers(_settings(tmp_path, None))


def test_protocols_package_imports_on_its_own(tmp_path: Path) -> None:
    """A handler package can ``import protocols`` in a fresh interpreter (no import cycle)."""
    result = subprocess.run(
        [sys.executable, "-c", "import protocols; print(protocols.ProtocolHandler.__name__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ProtocolHandler"
