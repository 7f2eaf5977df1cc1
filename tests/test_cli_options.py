"""How ``smtpcore serve``'s options, on the command line or in a TOML file, become its configuration.

In-process and without binding a socket: ``test_cli.py`` runs the command itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from adapters import cli
from smtpcore import BareNewlinePolicy, LongLinePolicy


def options(*argv: str) -> dict[str, Any]:
    """The merged options of ``smtpcore serve argv...``: defaults, then the TOML file, then the command line."""
    return cli._merge_options(cli.build_parser().parse_args(["serve", *argv]))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('adapter = "nonsense"', "adapter must be one of asyncio, trio, gevent, blocking, not 'nonsense'"),
        ('tls = "maybe"', "tls must be one of optional, required, off, not 'maybe'"),
        ('auth = "yes"', "auth must be one of optional, required, off, not 'yes'"),
        ('log-level = "loud"', "log-level must be one of debug, info, warning, error, not 'loud'"),
    ],
)
def test_a_config_file_value_outside_an_options_choices_is_refused(tmp_path: Path, line: str, message: str) -> None:
    # argparse checks the command line's choices; the file's got through, to a
    # traceback (adapter), a misleading message (tls), or were ignored (log-level).
    path = tmp_path / "bad.toml"
    path.write_text(f"{line}\n")
    with pytest.raises(cli.ConfigError) as caught:
        options("--config", str(path))
    assert str(caught.value) == f"config file {path}: {message}"


def test_long_lines_and_bare_newlines_are_refused_unless_told_otherwise() -> None:
    plan = cli.build_plan(options("--discard", "--hostname", "mx.test"))
    assert plan.config.long_lines is LongLinePolicy.REJECT
    assert plan.config.bare_newlines is BareNewlinePolicy.REJECT
    plan = cli.build_plan(options("--discard", "--hostname", "mx.test", "--long-lines", "accept"))
    assert plan.config.long_lines is LongLinePolicy.ACCEPT
    assert plan.config.bare_newlines is BareNewlinePolicy.REJECT
    plan = cli.build_plan(options("--discard", "--hostname", "mx.test", "--bare-newlines", "accept"))
    assert plan.config.long_lines is LongLinePolicy.REJECT
    assert plan.config.bare_newlines is BareNewlinePolicy.ACCEPT


def test_long_lines_and_bare_newlines_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "smtpcore.toml"
    path.write_text('long-lines = "accept"\nbare_newlines = "accept"\ndiscard = true\nhostname = "mx.test"\n')
    plan = cli.build_plan(options("--config", str(path)))
    assert (plan.config.long_lines, plan.config.bare_newlines) == (
        LongLinePolicy.ACCEPT,
        BareNewlinePolicy.ACCEPT,
    )
    plan = cli.build_plan(options("--config", str(path), "--long-lines", "reject"))  # the command line wins
    assert plan.config.long_lines is LongLinePolicy.REJECT
    # "normalise" is the client's policy: a server never rewrites what it stores.
    path.write_text('bare-newlines = "normalise"\n')
    with pytest.raises(cli.ConfigError, match="bare-newlines must be one of reject, accept, not 'normalise'"):
        options("--config", str(path))
    with pytest.raises(SystemExit) as usage:
        options("--bare-newlines", "normalise")
    assert usage.value.code == 2


def test_xclient_from_offers_xclient_and_takes_networks_only() -> None:
    assert not cli.build_plan(options("--discard", "--hostname", "mx.test")).config.xclient
    plan = cli.build_plan(options("--discard", "--hostname", "mx.test", "--xclient-from", "10.0.0.5"))
    assert plan.config.xclient
    with pytest.raises(cli.ConfigError, match=r"--xclient-from 'nginx': not an IP address or network"):
        cli.build_plan(options("--discard", "--hostname", "mx.test", "--xclient-from", "nginx"))


@pytest.mark.parametrize("command", ["serve", "send"])
def test_docs_cli_md_documents_every_option(command: str) -> None:
    subparsers = next(
        action for action in cli.build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split(f"\n## `smtpcore {command}`\n", 1)[1].split("\n## ", 1)[0]
    options = [name for action in subparsers.choices[command]._actions for name in action.option_strings]
    missing = [name for name in options if name.startswith("--") and name != "--help" and f"`{name}" not in section]
    assert missing == [], f"docs/cli.md, smtpcore {command}: no row for {', '.join(missing)}"
