"""How ``smtpcore serve``'s options, on the command line or in a TOML file, become its configuration.

In-process and without binding a socket: ``test_cli.py`` runs the command itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters import cli


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
