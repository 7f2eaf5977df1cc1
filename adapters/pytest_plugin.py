"""The pytest plugin: a real smtpcore server and a scripted fake server, as fixtures.

Installed with smtpcore through the ``pytest11`` entry point, so any test suite
of a project that installs smtpcore can ask for:

* ``smtp_server`` -- a real smtpcore server on ``127.0.0.1`` with an ephemeral
  port, running on a background thread for the test, that keeps every accepted
  message (an ``EmailMessage`` plus its envelope).  Options come from the
  ``@pytest.mark.smtp_server(...)`` marker, from ``indirect`` parametrization,
  or from the ``smtp_server_factory`` fixture.
* ``fake_smtp_server`` -- a scripted server for testing *clients*: refusals,
  greylisting, 421, hanging up during the content, slow replies.
* ``smtp_ca`` -- the session's throwaway certificate authority (trustme).

The machinery lives in ``adapters._testserver`` and ``adapters._fakeserver``;
this module only turns it into fixtures.  It imports nothing beyond the
standard library and smtpcore until a test asks for TLS or a particular
adapter, so being loaded into every pytest run costs next to nothing.
docs/testing.md has every option, with examples.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from smtpcore import ServerConfig

    from ._fakeserver import FakeMessage, FakeSMTPServer, ReplySpec
    from ._testserver import CapturedMessage, SMTPTestServer, TestCA, TlsMode

# Nothing of smtpcore is imported until a fixture runs: this module is loaded
# into every pytest run through the entry point, before coverage starts, and an
# early import would hide the module-level lines of smtpcore from coverage.
ADAPTERS = ("blocking", "asyncio", "trio", "gevent")
_LAZY = {
    "CapturedMessage": "._testserver",
    "SMTPTestServer": "._testserver",
    "TestCA": "._testserver",
    "FakeMessage": "._fakeserver",
    "FakeSMTPServer": "._fakeserver",
    "ReplySpec": "._fakeserver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'adapters.pytest_plugin' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __package__), name)


__all__ = [
    "ADAPTERS",
    "CapturedMessage",
    "FakeMessage",
    "FakeSMTPServer",
    "ReplySpec",
    "SMTPServerFactory",
    "SMTPTestServer",
    "TestCA",
    "fake_smtp_server",
    "fake_smtp_server_factory",
    "smtp_ca",
    "smtp_server",
    "smtp_server_factory",
]

_MARKER = (
    "smtp_server(adapter='blocking', *, tls=None, auth=None, auth_required=False, allow_insecure_auth=False, "
    "lmtp=False, config=None, shutdown_timeout=1.0): options of the smtp_server fixture (smtpcore)"
)
_INI_ADAPTER = "smtp_server_adapter"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI_ADAPTER, f"default adapter of the smtp_server fixture: {', '.join(ADAPTERS)}", default="blocking"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)


class SMTPServerFactory:
    """What ``smtp_server_factory`` gives: call it to start a server; all stop when the test ends."""

    OPTIONS = (
        "adapter",
        "tls",
        "auth",
        "tokens",
        "auth_required",
        "allow_insecure_auth",
        "lmtp",
        "config",
        "shutdown_timeout",
    )

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._default_adapter = str(request.config.getini(_INI_ADAPTER) or "blocking")
        self.servers: list[SMTPTestServer] = []

    def __call__(
        self,
        adapter: str | None = None,
        *,
        tls: TlsMode | bool | None = None,
        auth: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        auth_required: bool = False,
        allow_insecure_auth: bool = False,
        lmtp: bool = False,
        config: ServerConfig | None = None,
        shutdown_timeout: float = 1.0,
    ) -> SMTPTestServer:
        """Start a server.

        ``adapter``: ``"blocking"`` (default, or the ``smtp_server_adapter`` ini
        value), ``"asyncio"``, ``"trio"`` or ``"gevent"``.  ``tls``:
        ``"starttls"`` (or True), ``"required"`` or ``"implicit"``, with a
        certificate from ``smtp_ca``.  ``auth``: ``{"user": "password"}`` for
        PLAIN and LOGIN (offered only over TLS unless ``allow_insecure_auth``);
        ``tokens``: ``{"user": "bearer token"}`` for XOAUTH2 and OAUTHBEARER (a
        wrong token is told why in a 334, as Gmail does, then gets 535);
        ``auth_required``: no mail without it.  ``lmtp``: speak LMTP.
        ``config``: any ``ServerConfig``, with the options above applied on top.
        """
        from ._testserver import SMTPTestServer, build_config

        final = build_config(
            config,
            tls=tls,
            auth=auth,
            auth_required=auth_required,
            allow_insecure_auth=allow_insecure_auth,
            lmtp=lmtp,
            tokens=tokens,
        )
        needs_tls = final.implicit_tls or final.tls.value != "off"
        ca: TestCA | None = self._request.getfixturevalue("smtp_ca") if needs_tls else None
        server = SMTPTestServer(
            adapter or self._default_adapter,
            final,
            users=auth,
            tokens=tokens,
            ca=ca,
            shutdown_timeout=shutdown_timeout,
        )
        server.start()
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        while self.servers:
            try:
                self.servers.pop().stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def smtp_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The session's test CA: ``.ca`` (a ``trustme.CA``), ``.ca_file``, ``.client_context()``."""
    from ._testserver import TestCA

    return TestCA(str(tmp_path_factory.mktemp("smtpcore-ca") / "ca.pem"))


@pytest.fixture
def smtp_server_factory(request: pytest.FixtureRequest) -> Iterator[SMTPServerFactory]:
    """Start as many real smtpcore servers as the test needs, each with its own options."""
    factory = SMTPServerFactory(request)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest, smtp_server_factory: SMTPServerFactory) -> SMTPTestServer:
    """A real smtpcore server for this test, configured by ``@pytest.mark.smtp_server(...)``.

    ``@pytest.mark.parametrize("smtp_server", ["blocking", "asyncio"], indirect=True)``
    runs the test once per adapter (a parameter may also be a dict of options).
    """
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("smtp_server"))):  # the closest marker wins
        if len(marker.args) > 1:
            raise TypeError("@pytest.mark.smtp_server takes at most one positional argument, the adapter")
        if marker.args:
            options["adapter"] = marker.args[0]
        options.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, str):
        options["adapter"] = param
    elif isinstance(param, Mapping):
        options.update(param)
    elif param is not None:
        raise TypeError(f"an smtp_server parameter is an adapter name or a dict of options, not {param!r}")
    unknown = sorted(set(options) - set(SMTPServerFactory.OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown smtp_server option(s) {', '.join(unknown)}; known: {', '.join(SMTPServerFactory.OPTIONS)}"
        )
    return smtp_server_factory(**options)


@pytest.fixture
def fake_smtp_server_factory() -> Iterator[Callable[..., FakeSMTPServer]]:
    """Start as many scripted fake servers as the test needs (``hostname=``, ``max_line=``, ...)."""
    started: list[FakeSMTPServer] = []

    def start(**options: Any) -> FakeSMTPServer:
        from ._fakeserver import FakeSMTPServer

        fake = FakeSMTPServer(**options).start()
        started.append(fake)
        return fake

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for fake in started:
            try:
                fake.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def fake_smtp_server(fake_smtp_server_factory: Callable[..., FakeSMTPServer]) -> FakeSMTPServer:
    """A scripted fake SMTP server on ``127.0.0.1`` for testing clients."""
    return fake_smtp_server_factory()
