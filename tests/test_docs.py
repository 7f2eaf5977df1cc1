"""The documentation runs as written and stays in step with the code."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import adapters.asyncio_server
import adapters.blocking_server
from smtpcore._commands import PARSERS
from smtpcore._params import PARAMETERS

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def python_blocks(path: Path) -> list[str]:
    return blocks(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("path", "index"),
    [(path, index) for path in DOCS for index in range(len(python_blocks(path)))],
    ids=lambda value: value.name if isinstance(value, Path) else str(value),
)
def test_python_examples_compile_and_the_readme_runs(path: Path, index: int) -> None:
    # Every example must at least be valid Python; the README's must also run as
    # written.  server.md's loop, adapters.md's servers and testing.md's tests run
    # below, client.md's in test_client.py.  The others stay compiled only, as they
    # cannot run without what they leave out: handlers.md's hooks call the
    # application's own services (a `directory`, an upload), and adapters.md's
    # clients log in to mail.example.com with a password.
    code = compile(python_blocks(path)[index], f"{path.name}[{index}]", "exec")
    if path.name == "README.md":
        exec(code, {"__name__": "docs_example"})


def test_readme_example_exists() -> None:
    assert python_blocks(ROOT / "README.md"), "the README must show a runnable example"


def test_state_diagram_is_generated_from_the_table() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from make_state_diagram import diagram  # type: ignore[import-not-found]  # docs/, on sys.path only here
    finally:
        sys.path.pop(0)
    text = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    current = text.split("<!-- state-diagram -->\n", 1)[1].split("\n<!-- /state-diagram -->", 1)[0]
    assert current == diagram(), "run: python docs/make_state_diagram.py and paste it into docs/server.md"


def test_features_page_lists_every_parameter_and_command() -> None:
    text = (ROOT / "docs" / "features.md").read_text(encoding="utf-8")
    for spec in PARAMETERS:
        assert f"`{spec.keyword}" in text, f"docs/features.md does not list the {spec.keyword} parameter"
    for verb in PARSERS:
        assert f"`{verb}`" in text, f"docs/features.md does not list the {verb} command"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in readme
    assert "<!-- test-command -->" in ci, ".ci/run must read the test command from the README"


def test_readme_serve_command_runs_the_console_script_this_project_installs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = readme.split("<!-- serve-command -->\n```\n", 1)[1].split("\n", 1)[0]
    assert command.endswith("&& smtpcore serve")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'smtpcore = "adapters.cli:main"' in pyproject


# --- the examples that run ------------------------------------------------------------------------


def test_server_md_loop_serves_a_session_over_a_socket() -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(python_blocks(ROOT / "docs" / "server.md")[0], "server.md[0]", "exec"), namespace)
    server_end, client_end = socket.socketpair()
    client_end.settimeout(10)
    with server_end, client_end, client_end.makefile("rb") as replies:
        thread = threading.Thread(target=namespace["serve_one"], args=(server_end,))
        thread.start()

        def codes(count: int) -> list[int]:
            got: list[int] = []
            while len(got) < count:
                line = replies.readline()
                if line[3:4] != b"-":  # the last line of a reply
                    got.append(int(line[:3]))
            return got

        assert codes(1) == [220]
        client_end.sendall(b"EHLO client.example\r\n")
        assert codes(1) == [250]
        # A pipelined group (the loop offers PIPELINING), then the content and QUIT.
        client_end.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert codes(3) == [250, 250, 354]
        client_end.sendall(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        assert codes(2) == [250, 221]
        thread.join(10)
        assert not thread.is_alive(), "serve_one did not return after QUIT"


# adapters.md's four servers, each as written but for three things: it listens on
# 127.0.0.1 and a free port instead of 0.0.0.0:25, spools to a temporary directory,
# and its wait for Ctrl-C (or cancellation, or a shutdown from another task) is
# replaced by one message sent with smtplib; leaving that wait then shuts the server
# down as the example does.  Its cert.pem and key.pem are made in the current directory.

MESSAGE = b"Subject: spooled\r\n\r\nHello Alice!\r\n"


def send_one(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("someone@example.org", ["alice@example.com"], MESSAGE)


def adapters_md_server_example(heading: str) -> str:
    text = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
    servers = text.split("\n# Client adapters\n", 1)[0]
    return blocks(servers.split(f"\n### {heading}\n", 1)[1])[0]


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("mx.example.com")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(tmp_path / "cert.pem"), append=index > 0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spool").mkdir()
    return tmp_path / "spool"


def run_adapters_md_server(dialect: str, spool: Path) -> None:
    handler = adapters_md_server_example("The handler (blocking and gevent)")
    assert handler.count('"/var/spool/example"') == 1
    code = adapters_md_server_example(dialect)
    assert code.count('host="0.0.0.0", port=25') == 1
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(handler.replace('"/var/spool/example"', repr(str(spool))), "adapters.md[Spool]", "exec"), namespace)
    if dialect in ("asyncio", "trio"):
        async_handler = adapters_md_server_example("The handler (asyncio and trio)")
        exec(compile(async_handler, "adapters.md[AsyncSpool]", "exec"), namespace)
    if dialect != "blocking":  # the others use the blocking example's `config`
        blocking = adapters_md_server_example("blocking").splitlines()
        setup = [line for line in blocking if line.startswith(("from smtpcore import", "config = "))]
        exec(compile("\n".join(setup), "adapters.md[config]", "exec"), namespace)
    code = code.replace('host="0.0.0.0", port=25', 'host="127.0.0.1", port=0')
    exec(compile(code, f"adapters.md[{dialect}]", "exec"), namespace)
    (stored,) = spool.iterdir()
    assert stored.suffix == ".eml"
    assert stored.read_bytes() == MESSAGE


def test_adapters_md_blocking_server(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class OneMessage(adapters.blocking_server.SMTPServer):
        def serve_forever(self) -> None:
            send_one(self.port)

    monkeypatch.setattr(adapters.blocking_server, "SMTPServer", OneMessage)
    run_adapters_md_server("blocking", spool)


def test_adapters_md_gevent_server(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gevent = pytest.importorskip("gevent")
    import adapters.gevent_server

    class OneMessage(adapters.gevent_server.SMTPServer):
        def serve_forever(self) -> None:
            # smtplib's sockets would block the hub this server runs in: send from a thread.
            gevent.get_hub().threadpool.apply(send_one, (self.port,))

    monkeypatch.setattr(adapters.gevent_server, "SMTPServer", OneMessage)
    run_adapters_md_server("gevent", spool)


def test_adapters_md_asyncio_server(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class OneMessage(adapters.asyncio_server.SMTPServer):
        async def serve_forever(self) -> None:
            await asyncio.to_thread(send_one, self.port)

    monkeypatch.setattr(adapters.asyncio_server, "SMTPServer", OneMessage)
    run_adapters_md_server("asyncio", spool)


def test_adapters_md_trio_server(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trio = pytest.importorskip("trio")
    import adapters.trio_server

    class OneMessage(adapters.trio_server.SMTPServer):
        async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(super().serve)
                task_status.started(self)
                await trio.to_thread.run_sync(send_one, self.port)
                await self.shutdown(timeout=30)

    monkeypatch.setattr(adapters.trio_server, "SMTPServer", OneMessage)
    run_adapters_md_server("trio", spool)


def test_testing_md_examples_pass_as_tests(pytester: pytest.Pytester) -> None:
    # Each example is a test file of a user's suite: the fixtures come from the
    # installed plugin (the pytest11 entry point), as they do for anyone.
    examples = python_blocks(ROOT / "docs" / "testing.md")
    pytester.makepyfile(**{f"test_testing_md_{index}": code for index, code in enumerate(examples)})
    result = pytester.inline_run(
        "-p",
        "no:cacheprovider",
        "--strict-markers",
        "-W",
        "error::pytest.PytestUnraisableExceptionWarning",
        "-W",
        "error::pytest.PytestUnhandledThreadExceptionWarning",
    )
    passed, skipped, failed = result.listoutcomes()
    assert [report.nodeid for report in failed] == []
    assert [report.nodeid for report in skipped] == []
    files = {report.nodeid.split("::", 1)[0] for report in passed}
    assert files == {f"test_testing_md_{index}.py" for index in range(len(examples))}
